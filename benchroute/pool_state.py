"""What a fitted router knows about its pool (:class:`FittedPool`), how a fit builds it, and how
it changes: adding a model from a few labelled inputs, removing one, appending benchmark
results, and the probe set a new model is run on.

The changes are made in place (the index's labels, the task accuracies, the reference pairs,
the added models) and keep the parts consistent, the way a fresh fit would leave them;
``Router.fit_arrays``, ``add_model``, ``remove_model``, ``add_results``, ``probe_set`` and
``added_models`` call them. The estimator of an added model's P is in
:mod:`benchroute.new_models`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from benchroute.data.pool import Pool, pool_labels
from benchroute.data.store import BenchmarkData
from benchroute.data.store_checks import describe_difference
from benchroute.data.text import normalize_text
from benchroute.exceptions import BenchrouteError
from benchroute.index import VectorIndex
from benchroute.inputs import check_distinct_names, check_model_name, check_vectors
from benchroute.new_models import (
    AddedModel,
    fit_added,
    parse_results,
    pool_labels_at,
    pool_penalty,
    probe_rows,
)
from benchroute.ood import OODReference
from benchroute.policies import check_number
from benchroute.predictors import SELF_DISTANCE, KNNCorrectnessPredictor, check_is_fitted
from benchroute.reference import ReferencePairs, reference_pairs
from benchroute.routing import store_costs
from benchroute.scoring import task_means
from benchroute.tuning import PerInputPredictor

logger = logging.getLogger("benchroute.router")

if TYPE_CHECKING:
    from benchroute.router import Router
    from benchroute.shift import ShiftReference

#: The probe strategy that won the cold-start comparison (docs/results.md, section 8).
DEFAULT_PROBE = "spread"


class FittedPool:
    """The fitted state a router keeps about its pool: :func:`build` sets it, the other
    functions here change its parts together, :mod:`benchroute.persistence` saves it."""

    predictor_: KNNCorrectnessPredictor  # kNN predictor; its index holds vectors, labels, tasks
    models_: list[str]  # the pool models, then the models added from a few labels
    pool_models_: list[str]  # the models with a label column in the pool
    added_: dict[str, AddedModel]  # models added from a few labels
    task_accuracy_: pd.DataFrame  # tasks × models_, for the best model on average
    encoder_id_: str  # the encoder the pool's vectors came from
    reference_: ReferencePairs  # (u, p) pairs of the p̂ smoother, from leave-one-task-out
    costs_: dict[str, float] | None  # cost per call, from the fit store or add_model
    per_input_: PerInputPredictor | None  # the tuned per-input predictor (tune=True)
    texts_: list[str] | None  # the pool's input texts, when fitted on a store
    #: the pool's leave-one-task-out OOD scores, from the reference pass's searches (or a
    #: saved router); :func:`benchroute.ood.reference_of` recomputes it for a changed pool
    ood_reference_: OODReference
    #: the pool tasks' form-shift statistics (:func:`benchroute.shift.reference_of` computes it
    #: on first use or at save; a saved router brings it); absent without pool texts
    shift_reference_: ShiftReference
    #: (folder, router.json digest) this router was loaded from or last saved to; a save over
    #: that folder refuses when another process changed it meanwhile
    _loaded_from: tuple[str, str | None] | None = None


@contextlib.contextmanager
def unchanged_on_error(router: Router) -> Iterator[None]:
    """The router's state as it was if the block raises: a refit that failed in its last step
    (the tuning's cross-validation) left the new pool's predictor beside the old pool's
    tuning, routing on a pool whose fit had failed (found by a review). Every step replaces
    attributes and changes none in place, so a shallow copy is the whole state."""
    saved = dict(router.__dict__)
    done = False
    try:
        yield
        done = True
    finally:
        if not done:
            router.__dict__.clear()
            router.__dict__.update(saved)


def build(router: Router, X: np.ndarray, Y: np.ndarray, ds: np.ndarray, models: list[str],
          instance_ids: Sequence[str] | None, task_accuracy: pd.DataFrame | None) -> None:
    """The fitted state of ``Router.fit_arrays`` from checked arrays: the kNN predictor and its
    index, the task accuracies (default: the per-task mean label), the reference pairs, no
    added model, and the tuned per-input predictor when ``tune``."""
    router.predictor_ = KNNCorrectnessPredictor(
        router.k, router.weights, router.index_factory, router.nprobe, router.ef_search
    ).fit(X, Y, ds, instance_ids)
    router.models_ = models
    router.pool_models_ = list(models)
    router.added_ = {}
    router.texts_ = None
    if task_accuracy is None:
        task_accuracy = pd.DataFrame(task_means(Y, ds), columns=models,
                                     index=pd.Index(np.unique(ds), name="dataset"))
    router.task_accuracy_ = task_accuracy.reindex(columns=models).astype(float)
    router.encoder_id_ = router.encoder_identifier()
    router.reference_ = pool_reference(router)
    router.__dict__.pop("_excluded", None)  # pairs of the previous fit
    router.costs_ = None
    router.per_input_ = None
    if router.tune:
        # routing searches the router's index; the tuned predictor keeps no pool of its own
        try:
            router.per_input_ = PerInputPredictor(
                seed=router.seed, max_task_queries=router.max_task_queries,
                folds_by=router.tune_folds, calibration=router.tune_calibration,
            ).fit(X, Y, ds).without_pool()
        except BenchrouteError as exc:
            raise type(exc)(f"tuning the per-input predictor (tune=True; tune=False fits "
                            f"without it): {exc}") from exc
    _warn_partial_models(router)
    logger.info("fitted router: %d inputs, %d models, %d tasks, %d reference pairs",
                len(X), len(models), len(np.unique(ds)), len(router.reference_.u))


def pool_reference(router: Router) -> ReferencePairs:
    """The reference pairs of the router's pool with its current parameters; the same searches
    give the router its OOD reference (``ood_reference_``): only tasks the pass skips (one
    input) are searched for it apart."""
    scores = np.full(len(router.predictor_.labels_), np.nan)
    ref = reference_pairs(router.predictor_, alphas=router.alphas, repeats=router.repeats,
                          seed=router.seed, n_neighbours=router.n_neighbours,
                          threshold=router.threshold, max_queries=router.max_task_queries,
                          ood_out=scores)
    router.ood_reference_ = OODReference(router.predictor_, router.max_task_queries,
                                         router.seed, known=scores)
    return ref


def add_model(router: Router, name: str, results: pd.DataFrame | Iterable[Mapping[str, object]],
              costs: float | None = None) -> Router:
    """Add a model from its results on some inputs; P(new, x) borrows from the known models.

    ``results``: records or a DataFrame with ``text`` (any input) or ``dataset`` +
    ``instance_id`` (a pool input, e.g. from :func:`probe_set`), and ``correct`` or ``score``
    in [0, 1]. The estimator (docs/method.md, "Adding a model") is fitted on them; the model
    then takes part in :meth:`route`, the policies and :meth:`select_model` (its task
    accuracies estimated from P, see :func:`added_models`), and is saved and loaded with the
    router. Calling it again for the same model adds to (and, for the same inputs, replaces)
    its results and refits. Results on every pool input make it a pool model through
    :func:`add_results`: with ``tune=False`` exactly as if the router had been fitted with it; a
    tuned router keeps its tuning and falls back from a stack, logistic or task map to its tuned
    kNN, as ``add_results`` does. ``costs`` is its cost per call.
    """
    check_is_fitted(router, "predictor_")
    check_model_name(name)
    check_distinct_names([name], router.models_)
    if name in router.pool_models_:
        raise BenchrouteError(f"model {name!r} is already a pool model with full results; "
                              "change its results with add_results (`benchroute add-results`), "
                              "or remove_model it first (`benchroute remove-model`)")
    if costs is not None:  # the rule a cost follows everywhere (no bool, NumPy numbers fine)
        costs = check_number("costs (cost per call)", costs, 0.0)
    frame = parse_results(results)
    X, rows = _result_vectors(router, frame)
    _refuse_repeats(frame, rows)
    y = frame["label"].to_numpy(dtype=np.float64)
    old = router.added_.get(name)
    if old is not None:  # earlier labels of the same inputs are replaced
        same = (1.0 - old.X @ X.T).min(axis=1) < SELF_DISTANCE if len(X) \
            else np.zeros(len(old.y), bool)
        X, y = np.vstack([old.X[~same], X]), np.r_[old.y[~same], y]
        rows = np.r_[_pool_rows_of(router, old.X[~same]), rows]
    covered = np.zeros(len(router.Y_), dtype=bool)
    covered[rows[rows >= 0]] = True
    if covered.all():
        Y = np.full(len(router.Y_), np.nan)
        Y[rows[rows >= 0]] = y[rows >= 0]
        outside = int((rows < 0).sum())
        if outside:  # a pool column has no place for them: say so (they vanished silently)
            warnings.warn(f"{name!r} has results on every pool input and becomes a pool model; "
                          f"its {outside} result(s) on inputs outside the pool are not kept "
                          "(a pool model's labels are the pool's inputs'; give them to "
                          "add_results as a task of their own, with the other models' results)",
                          UserWarning, stacklevel=3)
    # every step replaces attributes, none in place: a failure leaves the router as it was
    with unchanged_on_error(router):
        if covered.all():
            router.added_ = {m: a for m, a in router.added_.items() if m != name}
            _append_columns(router, [name], Y[:, None])
        else:
            router.added_ = {**router.added_,
                             name: fit_added(router, name, X, y, pool_penalty(router))}
            _sync_models(router)
        if costs is not None:
            router.costs_ = {**(router.costs_ or {}), name: float(costs)}
    return router


def _refuse_repeats(frame: pd.DataFrame, rows: np.ndarray) -> None:
    """One result per input in one call: two labels of one input (0 and 1, say) were both
    counted as if they were two inputs. Repeated trials are one record, their mean.

    The same input is the same pool row or the same normalised text, not the same vector:
    distinct texts an encoder maps to one vector (long prompts cut at the same word piece)
    are distinct inputs whose labels the kNN averages. A later call replaces earlier labels
    by vector, since a saved added model keeps its inputs' vectors, not their texts."""
    seen: dict[object, int] = {}
    texts = frame["text"] if "text" in frame.columns else pd.Series([None] * len(frame))
    for j, (row, text) in enumerate(zip(rows, texts)):
        key: object = ("pool", int(row)) if row >= 0 else ("text", normalize_text(str(text)))
        if key in seen:
            raise BenchrouteError(f"results[{seen[key]}] and results[{j}] are the same input; "
                                  "give each input once (repeated trials as one record, their "
                                  "mean in [0, 1])")
        seen[key] = j


def _pool_rows_of(router: Router, X: np.ndarray) -> np.ndarray:
    return pool_labels_at(router, X)[0] if len(X) else np.zeros(0, dtype=np.int64)


def _result_vectors(router: Router, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of a results frame, and the pool row of each input (-1 if not a pool input):
    pool inputs named by dataset + instance_id (or by their text, when the router keeps its
    pool's texts) take the pool's vector; other texts are embedded."""
    index = router.predictor_.index_
    rows = np.full(len(frame), -1, dtype=np.int64)
    if {"dataset", "instance_id"} <= set(frame.columns):
        where = {(str(d), str(i)): r for r, (d, i) in
                 enumerate(zip(index.datasets_, index.instance_ids_))}
        texts = frame["text"] if "text" in frame.columns else [None] * len(frame)
        for j, (d, i, t) in enumerate(zip(frame["dataset"], frame["instance_id"], texts)):
            if not (pd.isna(d) or pd.isna(i)):
                rows[j] = where.get((str(d), str(i)), -1)
            # a text beside the id was dropped unread, the label given to the pool input's
            # vector (found by fuzzing); add_results refuses the same
            if rows[j] >= 0 and isinstance(t, str) and router.texts_ is not None \
                    and normalize_text(t) != normalize_text(router.texts_[rows[j]]):
                raise BenchrouteError(f"results[{j}]: names pool input {d!s:.60}/{i!s:.60}, "
                                      f"whose text is not the record's {t!r:.60}; an input's "
                                      "text cannot change (give the id or the text alone)")
    if "text" in frame.columns and router.texts_ is not None:
        # by the normalised text, as the store and the cache compare texts ("q " is "q")
        by_text = {normalize_text(t): r for r, t in reversed(list(enumerate(router.texts_)))}
        for j, t in enumerate(frame["text"]):
            if rows[j] < 0 and isinstance(t, str):
                rows[j] = by_text.get(normalize_text(t), -1)
    need = np.flatnonzero(rows < 0)
    if len(need) and ("text" not in frame.columns
                      or frame["text"].iloc[need].map(lambda t: not isinstance(t, str)).any()):
        j = int(need[0])
        raise BenchrouteError(f"results[{j}]: names no pool input (dataset "
                              f"{frame.get('dataset', pd.Series([None] * len(frame))).iloc[j]!r}"
                              ") and has no text to embed")
    X = np.zeros((len(frame), index.dimension), dtype=np.float32)
    if (rows >= 0).any():
        X[rows >= 0] = index.vectors(rows[rows >= 0])
    if len(need):
        X[need] = router.embed(frame["text"].iloc[need].tolist())
    return X, rows


def remove_model(router: Router, name: str) -> Router:
    """Remove a model, pool or added. A pool model's labels leave the pool (its column of
    the labels, of the reference pairs and of the task accuracies); the tuned predictor
    keeps its cross-validated k, prior and calibration (a cross-model stack falls back to the
    kNN, see ``describe()["fallback"]``); added models are refitted, their
    features having changed. Inputs that only this model had results for leave the pool
    too (:func:`_drop_unlabelled`), as a fit on the remaining results has no such input;
    the router then equals that fit (but for the tuned predictor's chosen values, as in
    :func:`add_results`). Dropping inputs rebuilds the index in memory from the kept vectors,
    as a fit builds it (FAISS cannot cut rows out of an HNSW graph or renumber an IVF index):
    a router loaded with ``mmap=True`` then holds its index in memory until it is saved and
    loaded again. Removing a model that leaves every input labelled keeps the index as it is."""
    check_is_fitted(router, "predictor_")
    if not isinstance(name, str):
        raise BenchrouteError(f"name == {name!r:.100}, expected one model's name (a string)")
    if name not in router.added_ and name not in router.pool_models_:
        raise BenchrouteError(f"unknown model {name!r}; models: {router.models_}")
    with unchanged_on_error(router):  # every step below replaces attributes, none in place
        if name in router.added_:
            router.added_ = {m: a for m, a in router.added_.items() if m != name}
        else:
            if len(router.pool_models_) == 1:
                raise BenchrouteError(f"{name!r} is the only pool model; a router needs one")
            keep = [i for i, m in enumerate(router.pool_models_) if m != name]
            Y = router.Y_[:, keep]
            labelled = ~np.isnan(Y).all(axis=1)
            if labelled.all():  # the same neighbours: the pairs' other columns stand
                _set_pool(router, router.predictor_.index_, Y,
                          [router.pool_models_[i] for i in keep])
                router.reference_ = router.reference_.columns(keep)
            else:
                _drop_unlabelled(router, labelled, Y, [router.pool_models_[i] for i in keep])
            _refit_added(router)
        router.task_accuracy_ = router.task_accuracy_.drop(columns=[name], errors="ignore")
        if router.costs_ and name in router.costs_:
            router.costs_ = {m: c for m, c in router.costs_.items() if m != name} or None
        _sync_models(router)
    return router


def _drop_unlabelled(router: Router, labelled: np.ndarray, Y: np.ndarray,
                     models: list[str]) -> None:
    """The pool without its inputs that have no label left (``labelled`` False), ``Y`` the
    remaining models' labels of every row. Why: such an input still took one of each
    query's k neighbour places while giving no label to any model, so P averaged fewer
    labels than a fit on the remaining results (where the input does not exist), and a task
    with no labelled input stayed a task. The index is built again from the kept rows'
    vectors, as that fit builds it (FAISS cannot take rows out of the middle of an HNSW graph
    or renumber an IVF index's); the reference pairs and OOD scores are computed again, the
    neighbours having changed."""
    index = router.predictor_.index_
    kept = np.flatnonzero(labelled)
    logger.info("removing %d pool input(s) that no remaining model has a result for",
                len(labelled) - len(kept))
    smaller = VectorIndex(index.factory, index.nprobe, index.ef_search)
    smaller.encoder_id, smaller.exact_order = index.encoder_id, index.exact_order
    smaller.add(index.vectors(kept), index.datasets_[kept], index.instance_ids_[kept].tolist())
    if router.texts_ is not None:
        router.texts_ = [router.texts_[i] for i in kept]
    _set_pool(router, smaller, Y[kept], models)
    router.reference_ = pool_reference(router)


def add_results(router: Router, data: BenchmarkData, embeddings: np.ndarray | None = None) -> Router:
    """Append benchmark results without refitting from scratch: new tasks and inputs join
    the index (only they are embedded), new models become pool columns (placed by name among
    the others, where a fit on a store puts them: ties go to the first column), results for
    existing (input, model) cells replace the old ones.

    Equal to a router fitted on all results (the test suite checks it), except that the
    tuned per-input predictor keeps the k, prior, map and calibration it chose by
    cross-validation (its model means are updated; a task classifier, ``tune_folds="random"``,
    knows only the tasks of the fit); a full fit would re-tune them. The
    reference pairs are recomputed for every task, since new inputs can change any task's
    neighbours; with new inputs in an existing task, that task's few-shot draws (α > 0) pick
    by position and may differ from a full fit's, whose rows are sorted by instance id. Inputs
    equally far from a query (copies of one text) are taken in row order, and new inputs
    come after the pool's: where such a tie decides a k-th neighbour, P may differ from the
    full fit's likewise.
    """
    check_is_fitted(router, "predictor_")
    if not isinstance(data, BenchmarkData):
        raise BenchrouteError(f"add_results expects a BenchmarkData, got {type(data).__name__}")
    inst = data.instances()
    index = router.predictor_.index_
    where = {(str(d), str(i)): r for r, (d, i) in
             enumerate(zip(index.datasets_, index.instance_ids_))}
    rows = np.array([where.get((str(d), str(i)), -1)
                     for d, i in zip(inst["dataset"], inst["instance_id"])], dtype=np.int64)
    new = np.flatnonzero(rows < 0)
    pool = pool_labels(data)
    _check_additions(router, inst, rows, pool, len(new))
    costs = store_costs(data)  # refuses a mean past a float's range: before anything changes
    old_counts = {m: int((~np.isnan(router.Y_[:, j])).sum())
                  for j, m in enumerate(router.pool_models_)}
    merged = _merged_costs(router.costs_, old_counts, costs, data) if costs else None
    if embeddings is not None:
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or len(embeddings) != len(inst):
            raise BenchrouteError(f"embeddings must have shape ({len(inst)}, d), one row per "
                                  f"input of data.instances(); got {embeddings.shape}")
        embeddings = embeddings[new]
    texts = inst["text"].iloc[new].tolist()
    new_models = [check_model_name(m, "model name") for m in pool.models
                  if m not in router.pool_models_]
    check_distinct_names(new_models, router.models_)
    Y = np.hstack([router.Y_, np.full((len(router.Y_), len(new_models)), np.nan, np.float32)])
    order, models = _placed_by_name(router.pool_models_, new_models)
    Y = Y[:, order]
    if len(new):
        Xn = check_vectors(router.embed(texts) if embeddings is None else embeddings,
                           "add_results vectors")
    # all or nothing: the index is cut back (or, for an HNSW graph, its copy dropped) and every
    # attribute put back if any step below fails, so the router routes and saves as before
    growing = index.appending() if len(new) else contextlib.nullcontext(index)
    with unchanged_on_error(router), growing as index:
        if len(new):
            index.add(Xn, inst["dataset"].iloc[new].to_numpy(dtype=object),
                      inst["instance_id"].iloc[new].astype(str).tolist())
            Y = np.vstack([Y, np.full((len(new), len(models)), np.nan, np.float32)])
            rows[new] = np.arange(len(Y) - len(new), len(Y))
            if router.texts_ is not None:
                router.texts_ = router.texts_ + texts
        cols = np.array([models.index(m) for m in pool.models], dtype=np.int64)
        given = ~np.isnan(pool.Y)
        block = Y[np.ix_(rows, cols)]
        Y[np.ix_(rows, cols)] = np.where(given, pool.Y, block)
        touched = sorted(set(inst["dataset"]))
        # a new dict: unchanged_on_error puts back the old one, which must still hold them
        router.added_ = {m: a for m, a in router.added_.items() if m not in new_models}
        _set_pool(router, index, Y, models, touched)
        router.reference_ = pool_reference(router)
        if merged is not None:
            router.costs_ = merged
        _refit_added(router)
        _sync_models(router)
    _warn_partial_models(router)
    return router


def _warn_partial_models(router: Router) -> None:
    """Say which pool models have results on only some tasks: their accuracy on average is
    over those tasks alone, so three right answers on one task can make a model the best on
    average, and the default for every input."""
    acc = router.task_accuracy_
    best = router.models_[router.bma_index(np.arange(len(router.models_)))]
    for model in router.pool_models_:
        has = int(acc[model].notna().sum())
        if 0 < has < len(acc):
            logger.warning("model %r has results on %d of the pool's %d tasks; its accuracy on "
                           "average is over those only%s", model, has, len(acc),
                           "; it is now the best model on average, the default for inputs "
                           "the router has no better choice for" if model == best else "")


def _check_additions(router: Router, inst: pd.DataFrame, rows: np.ndarray, pool: Pool,
                     n_new: int) -> None:
    """Refuse, before anything changes, results that add_results would otherwise take wrongly:
    another text for a pool input (its vector and text stayed the old ones while its labels
    changed), and partial results for a model added from a few labels (they replaced its
    labels, leaving a pool column empty on most inputs)."""
    if router.texts_ is not None:
        for j in np.flatnonzero(rows >= 0):
            old, now = router.texts_[int(rows[j])], str(inst["text"].iloc[j])
            if normalize_text(old) != normalize_text(now):
                raise BenchrouteError(
                    f"add_results: input {inst['dataset'].iloc[j]!r} / "
                    f"{inst['instance_id'].iloc[j]!r} has another text here than in the "
                    f"router's pool ({describe_difference(now, old)}); an input's text cannot "
                    "change (fit again, or give it another instance_id)")
    total = len(router.Y_) + n_new
    for col, name in enumerate(pool.models):
        covered = int((~np.isnan(pool.Y[:, col])).sum())
        if name in router.added_ and covered < total:
            raise BenchrouteError(
                f"add_results: {name!r} was added from a few labels, and these results cover "
                f"{covered} of the pool's {total} inputs; add them "
                "with add_model (they join its labels), or give results on every input")


def _merged_costs(costs: dict[str, float] | None, old_counts: dict[str, int],
                  new: dict[str, float], data: BenchmarkData) -> dict[str, float]:
    """A model's cost per call over all its results, as a fit on every result computes it:
    the old mean weighted by the old results, the table's by its own (the table's alone
    replaced the old before). Results that replace old ones count on both sides, so there
    the mean is approximate."""
    out = dict(costs or {})
    counts = data.frame.dropna(subset=["cost"]).groupby("model").size()
    for model, cost in new.items():
        n_old, n_new = old_counts.get(model, 0), int(counts.get(model, 0))
        if model in out and n_old and n_new:  # a weighted mean of two finite means is finite
            w = n_old / (n_old + n_new)
            out[model] = w * out[model] + (1.0 - w) * cost
        else:
            out[model] = cost
    return out


def _append_columns(router: Router, names: list[str], Y_new: np.ndarray) -> None:
    """New pool models with labels on every pool row (see :func:`add_results`)."""
    order, models = _placed_by_name(router.pool_models_, names)
    Y = np.hstack([router.Y_, np.asarray(Y_new, dtype=np.float32)])[:, order]
    _set_pool(router, router.predictor_.index_, Y, models, router.tasks_)
    router.reference_ = pool_reference(router)
    _refit_added(router)
    _sync_models(router)


def _placed_by_name(models: list[str], new: list[str]) -> tuple[list[int], list[str]]:
    """The columns of ``models + new``, and their names, in the order a fit on a store gives
    them: each new model
    before the first of ``models`` whose name sorts after it (all sorted by name, as a fit
    leaves them, when ``models`` are). Why: new models were put last, and a tie between two
    models' P (or accuracy on average) goes to the first column, so routes went another way
    than in the fit on all the results that add_results equals (found by fuzzing)."""
    placed = list(range(len(models)))
    names = models + new
    for j in sorted(range(len(models), len(names)), key=names.__getitem__):
        at = next((p for p, i in enumerate(placed) if names[i] > names[j]), len(placed))
        placed.insert(at, j)
    return placed, [names[i] for i in placed]


def _set_pool(router: Router, index: object, Y: np.ndarray, models: list[str],
              touched: Sequence[str] = ()) -> None:
    """Attach new labels (and index) to a predictor built like the fitted one, recompute the
    task accuracies of the touched tasks (the mean label, as ``BenchmarkData.dataset_accuracy``)
    and keep the tuned predictor's chosen values (its stack or logistic regression only while
    the pool models stay the same: the coefficients are per model).

    The fitted predictor's parameters, not the router's: a ``k`` or ``weights`` set after the
    fit takes effect at the next fit, never half-way (``remove_model`` keeps the fit's pairs,
    which that ``k`` computed; ``save`` refuses the changed value until then)."""
    router.predictor_ = KNNCorrectnessPredictor(
        **router.predictor_.get_params()
    ).attach(index, Y)  # type: ignore[arg-type]
    means = pd.DataFrame(Y, columns=models, dtype=np.float64).groupby(router.datasets_).mean()
    acc = router.task_accuracy_.reindex(index=means.index, columns=models).astype(float)
    for t in touched:
        acc.loc[t] = means.loc[t]
    fresh = [m for m in models if m not in router.pool_models_]
    acc[fresh] = means[fresh]
    acc.index.name = router.task_accuracy_.index.name
    router.task_accuracy_ = acc
    tuned = getattr(router, "per_input_", None)
    if tuned is not None and list(models) != router.pool_models_:
        gone = [m for m in router.pool_models_ if m not in models]
        reason = (f"the pool models changed after the per-model {tuned.method_} map was fitted "
                  f"(removed {gone}, added {fresh}); P is the tuned kNN's until the router is "
                  "refitted")
        tuned = copy.copy(tuned).drop_stack(reason)
    router.pool_models_ = list(models)
    router.__dict__.pop("_excluded", None)
    if tuned is not None:
        router.per_input_ = PerInputPredictor.from_description(tuned.describe(), None, Y)


def _refit_added(router: Router) -> None:
    """Each added model refitted on the changed pool's features (a new dict, so that
    :func:`unchanged_on_error` can put the old one back). The warnings its labels gave when it
    was added (too few labels, labels that never vary) are not given again: under warnings
    raised as errors they broke off a pool change half way (found by fuzzing)."""
    if not router.added_:
        return
    prior = pool_penalty(router)  # one pool, one λ₀ for every added model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        router.added_ = {name: fit_added(router, name, old.X, old.y, prior)
                         for name, old in router.added_.items()}


def restore_added(router: Router, added: Mapping[str, AddedModel]) -> Router:
    """Put back models added from a few labels, each already fitted (what loading a saved
    router does; :func:`add_model` is the way to add one)."""
    check_is_fitted(router, "predictor_")
    router.added_ = dict(added)
    _sync_models(router)
    return router


def _sync_models(router: Router) -> None:
    """models_ = pool models then added ones; task accuracies likewise."""
    router.models_ = router.pool_models_ + list(router.added_)
    acc = router.task_accuracy_.reindex(columns=router.pool_models_)
    for name, a in router.added_.items():
        acc[name] = a.accuracy["accuracy"].reindex(acc.index)
    router.task_accuracy_ = acc


def added_models(router: Router) -> pd.DataFrame:
    """One row per (added model, task): the estimated accuracy, its standard error and the
    number of pool inputs it was averaged over, with how the model's P was fitted."""
    check_is_fitted(router, "predictor_")
    parts = []
    for name, a in router.added_.items():
        t = a.accuracy.reset_index().rename(columns={"index": "task"})
        t.insert(0, "model", name)
        t["n_labels"] = a.fit.n_labels
        t["estimator"] = a.fit.summary()
        parts.append(t)
    cols = ["model", "task", "accuracy", "se", "n", "n_labels", "estimator"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def probe_set(router: Router, n: int, strategy: str = DEFAULT_PROBE, seed: int | None = None
              ) -> pd.DataFrame:
    """n pool inputs to run a new model on (see
    :func:`benchroute.new_models.probe_rows`): ``dataset``, ``instance_id`` and ``text``
    (None when the router keeps no texts). Label them and pass them to :func:`add_model`."""
    check_is_fitted(router, "predictor_")
    rows = probe_rows(router.pool_vectors(), router.Y_, router.datasets_, n,
                      router.seed if seed is None else seed, strategy)
    if len(rows) < n:
        logger.warning("probe set: %d inputs asked for, the pool has %d: all of them", n,
                       len(rows))
    index = router.predictor_.index_
    return pd.DataFrame({"dataset": index.datasets_[rows].astype(str),
                         "instance_id": index.instance_ids_[rows].astype(str),
                         "text": [router.texts_[r] if router.texts_ is not None else None
                                  for r in rows]})
