"""The router: model selection for a task (S1/S2/S3 with the BMA fallback) and per-input routing.

``Router`` follows scikit-learn's estimator contract: the constructor stores hyper-parameters,
``fit`` learns, fitted state ends in ``_``. The decision itself lives in
:mod:`benchroute.selection` (shared with the experiments), the reference pass in
:mod:`benchroute.reference`, saving and loading in :mod:`benchroute.persistence`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchroute.data.pool import pool_arrays
from benchroute.data.store import BenchmarkData
from benchroute.exceptions import BenchrouteError
from benchroute.inputs import (
    LabeledRecords,
    Texts,
    check_labels,
    check_router_params,
    check_vectors,
    parse_labeled,
    parse_texts,
)
from benchroute.new_models import AddedModel
from benchroute.ood import check_alpha, fall_back, reference_of
from benchroute.params import RouterParams
from benchroute.policies import POLICIES
from benchroute.predictors import KNNCorrectnessPredictor, check_is_fitted
from benchroute.reference import ReferencePairs, reference_pairs
from benchroute.routing import (
    cheaper_selection,
    route_with_policy,
    router_costs,
    router_proba,
    router_proba_ood,
    store_costs,
)
from benchroute.scoring import best_on_average, model_means, task_means
from benchroute.selection import Selection, route_rows
from benchroute.task import TaskNeighbours
from benchroute.tuning import PerInputPredictor

logger = logging.getLogger(__name__)

__all__ = ["Router"]

_EXCLUDED_MEMO = 8
#: The probe strategy that won the cold-start comparison (docs/results.md, section 8).
DEFAULT_PROBE = "spread"


class Router(RouterParams):
    """Select the best model for a new task, or route each input, from benchmark results.

    The parameters, their meaning and defaults are those of
    :class:`~benchroute.params.RouterParams` (k=5, n_neighbours=19, threshold=0.5,
    bandwidth=0.09, eta=0.6, n_draws=1000, alphas=0, 0.02, …, 0.28, repeats=3,
    prior_strength=50, ...; docs/method.md gives the formulas).
    """

    texts_: list[str] | None  # the pool's input texts, when fitted on a store

    def __repr__(self) -> str:
        """The parameters that differ from the defaults, then what a fitted (or loaded) router
        holds, since a loaded router's parameters are often all defaults."""
        params = super().__repr__()
        if getattr(self, "predictor_", None) is None:
            return params
        return (f"{params} fitted on {len(self.Y_)} inputs, {len(self.models_)} models, "
                f"{len(self.tasks_)} tasks; encoder {self.encoder_id_!r}")

    # ------------------------------------------------------------------ fitting
    def fit(self, data: BenchmarkData, embeddings: np.ndarray | None = None) -> Router:
        """Fit the correctness predictors and the reference pairs of the p̂ smoother.

        Parameters
        ----------
        data : BenchmarkData
            The benchmark results; each dataset is one task.
        embeddings : ndarray (N, d), optional
            Vectors of ``data.instances()`` in that order; embedded through the cache if omitted.
        """
        check_router_params(self.get_params())
        if not isinstance(data, BenchmarkData):
            raise BenchrouteError(f"fit expects a BenchmarkData, got {type(data).__name__}")
        pool = pool_arrays(data, embeddings, self.embed)
        self.fit_arrays(pool.X, pool.Y, pool.datasets, pool.models, pool.instance_ids,
                        data.dataset_accuracy().reindex(columns=pool.models))
        self.costs_ = store_costs(data)
        self.texts_ = list(data.instances()["text"])
        return self

    def fit_arrays(self, X: np.ndarray, Y: np.ndarray, datasets: Sequence[str] | np.ndarray,
                   models: Sequence[str], instance_ids: Sequence[str] | None = None,
                   task_accuracy: pd.DataFrame | None = None) -> Router:
        """:meth:`fit` on arrays: X (N, d) unit vectors, Y (N, M) labels in [0, 1] (NaN = no
        result), the task of each row and the M model names. ``task_accuracy`` (tasks × models,
        for the best model on average) defaults to the per-task mean label."""
        check_router_params(self.get_params())
        models = [str(m) for m in models]
        if len(set(models)) != len(models):
            raise BenchrouteError(f"models: duplicated names in {models}")
        X = check_vectors(X, "fit X")
        Y = check_labels(Y, "fit Y", len(models))
        if Y.size and np.isnan(Y).all():
            raise BenchrouteError("fit Y: every label is NaN (no result); nothing to learn from")
        ds = np.asarray(list(datasets), dtype=object)
        if len(X) != len(Y) or len(ds) != len(X):
            raise BenchrouteError(f"fit: X, Y and datasets must have the same rows; got "
                                  f"{len(X)}, {len(Y)}, {len(ds)}")
        self.predictor_ = KNNCorrectnessPredictor(
            self.k, self.weights, self.index_factory, self.nprobe, self.ef_search
        ).fit(X, Y, ds, instance_ids)
        self.models_ = models
        self.pool_models_ = list(models)
        self.added_: dict[str, AddedModel] = {}
        self.texts_ = None
        if task_accuracy is None:
            task_accuracy = pd.DataFrame(task_means(Y, ds), index=np.unique(ds), columns=models)
        self.task_accuracy_ = task_accuracy.reindex(columns=models).astype(float)
        self.encoder_id_ = self.encoder_identifier()
        self.reference_ = reference_pairs(
            self.predictor_, alphas=self.alphas, repeats=self.repeats, seed=self.seed,
            n_neighbours=self.n_neighbours, threshold=self.threshold)
        self.__dict__.pop("_excluded", None)  # pairs of the previous fit
        self.costs_ = None
        self.per_input_: PerInputPredictor | None = None
        if self.tune:
            # routing searches the router's index; the tuned predictor keeps no pool of its own
            self.per_input_ = PerInputPredictor(seed=self.seed).fit(X, Y, ds).without_pool()
        logger.info("fitted router: %d inputs, %d models, %d tasks, %d reference pairs",
                    len(X), len(self.models_), len(self.tasks_), len(self.reference_.u))
        return self

    # ------------------------------------------------------------------ fitted views
    def pool_vectors(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The pool's vectors (N, d), or those of ``rows``: read back from the index, a copy the
        caller owns (the router keeps no second copy of the pool)."""
        check_is_fitted(self, "predictor_")
        return self.predictor_.index_.vectors(rows)

    @property
    def X_(self) -> np.ndarray:
        """Deprecated: :meth:`pool_vectors`, which says that it copies the whole pool."""
        import warnings

        warnings.warn("Router.X_ copies the whole pool on every access; call "
                      "router.pool_vectors() once instead", DeprecationWarning, stacklevel=2)
        return self.pool_vectors()

    @property
    def Y_(self) -> np.ndarray:
        check_is_fitted(self, "predictor_")
        return self.predictor_.labels_

    @property
    def datasets_(self) -> np.ndarray:
        check_is_fitted(self, "predictor_")
        return self.predictor_.datasets_

    @property
    def tasks_(self) -> list[str]:
        return sorted(set(self.datasets_.tolist()))

    @property
    def model_accuracy_(self) -> pd.Series:
        check_is_fitted(self, "predictor_")
        return pd.Series(model_means(self.task_accuracy_.to_numpy(dtype=float)), index=self.models_)

    @property
    def bma_(self) -> str:
        return str(self.model_accuracy_.idxmax())

    def candidate_indices(self, candidates: Iterable[str] | None) -> np.ndarray:
        """Column indices of the named models (all models for None)."""
        check_is_fitted(self, "predictor_")
        if candidates is None:
            return np.arange(len(self.models_))
        names = [candidates] if isinstance(candidates, str) else list(candidates)
        unknown = [c for c in names if c not in self.models_]
        if unknown:
            raise BenchrouteError(f"unknown model(s) {unknown}; known models: {self.models_}")
        if not names:
            raise BenchrouteError("candidates is empty; name at least one model")
        return np.array(sorted({self.models_.index(c) for c in names}))

    def bma_index(self, cand: np.ndarray, exclude_datasets: Sequence[str] = ()) -> int:
        """The best model on average among ``cand``, over the tasks not excluded."""
        acc = self.task_accuracy_.drop(index=[t for t in exclude_datasets
                                              if t in self.task_accuracy_.index])
        return best_on_average(acc.to_numpy(dtype=float), cand)

    # ------------------------------------------------------------------ selection
    def check_excluded(self, exclude_datasets: Sequence[str]) -> list[str]:
        """The pool tasks to leave out, sorted; unknown names and all tasks are refused."""
        check_is_fitted(self, "predictor_")
        exclude = sorted(set(exclude_datasets))
        unknown = [t for t in exclude if t not in self.tasks_]
        if unknown:
            raise BenchrouteError(f"exclude_datasets: unknown task(s) {unknown}; known tasks: "
                                  f"{self.tasks_[:10]}")
        if exclude and len(exclude) >= len(self.tasks_):
            raise BenchrouteError(f"exclude_datasets names every task of the pool ({len(exclude)}); "
                                  "leave at least one")
        return exclude

    def task_neighbours(self, X: np.ndarray, exclude_datasets: Sequence[str] = (),
                        keep_duplicates: bool = False) -> TaskNeighbours:
        """The pool neighbours of a task's inputs X, searched once, for selections on any split of
        them into scored and labelled inputs (see :class:`~benchroute.task.TaskNeighbours`);
        near-duplicates of the inputs are left out unless ``keep_duplicates``."""
        check_is_fitted(self, "predictor_")
        return TaskNeighbours(self, X, exclude_datasets, keep_duplicates)

    def _view(self, Q: np.ndarray, labeled_X: np.ndarray | None, labeled_Y: np.ndarray | None,
              exclude_datasets: Sequence[str], keep_duplicates: bool = False
              ) -> tuple[TaskNeighbours, int, int]:
        """One neighbour search for the queries and the labelled inputs together."""
        check_is_fitted(self, "predictor_")
        Q = check_vectors(Q, "queries")
        if len(Q) == 0:
            raise BenchrouteError("no inputs to score")
        if (labeled_X is None) != (labeled_Y is None):
            raise BenchrouteError("labeled_X and labeled_Y go together: give both or neither")
        LX = check_vectors(labeled_X, "labeled_X") if labeled_X is not None and len(labeled_X) \
            else np.zeros((0, Q.shape[1]), np.float32)
        return (self.task_neighbours(np.vstack([Q, LX]), exclude_datasets, keep_duplicates),
                len(Q), len(LX))

    def predict_proba_embedded(self, Q: np.ndarray, candidates: Iterable[str] | None = None,
                               labeled_X: np.ndarray | None = None,
                               labeled_Y: np.ndarray | None = None,
                               exclude_datasets: Sequence[str] = ()) -> np.ndarray:
        """P (n inputs, candidates): g_m(x) of each embedded query, columns in the order of
        ``candidates`` as :meth:`candidate_indices` sorts them (all models by default)."""
        view, n, L = self._view(Q, labeled_X, labeled_Y, exclude_datasets)
        P = view.proba(np.arange(n), np.arange(n, n + L), labeled_Y if L else None)
        return P[:, self.candidate_indices(candidates)]

    def select_model(self, task_examples: Texts, labeled: LabeledRecords | None = None,
                     candidates: Iterable[str] | None = None, method: str = "S3",
                     fallback: bool = True, exclude_datasets: Sequence[str] = (),
                     max_quality_drop: float | None = None,
                     costs: Mapping[str, float] | None = None,
                     keep_duplicates: bool = False) -> Selection:
        """Choose the best model for a task from its input texts.

        ``labeled`` are a few labelled inputs of the task (``{"text": ..., "labels": {model:
        0/1}}`` records, or a DataFrame with ``text`` and one column per model): they join the
        kNN pool for this call only, update p̂ (Beta–binomial, see docs/method.md) and leave the
        examples to score; if every example is labelled, each is scored next to the others'
        labels, never its own. ``candidates`` restricts the choice (BMA is then the best of
        them); ``fallback`` applies the η rule (S3 only); ``exclude_datasets`` as in
        :meth:`select_embedded`. With ``max_quality_drop`` ε the choice moves to the cheapest
        candidate whose score is within ε of the top one (``costs`` per call, or those of the
        fit store's ``cost`` column). Pool inputs that are near-duplicates of an example
        (cosine distance below ``benchroute.predictors.NEAR_DUPLICATE``) would score the task
        with the examples' own benchmark labels: they are left out of the neighbours and
        counted in ``Selection.n_in_pool``, unless ``keep_duplicates``.
        """
        check_is_fitted(self, "predictor_")
        if costs is not None and max_quality_drop is None:
            raise BenchrouteError("costs are used only with max_quality_drop; give both or neither")
        texts = parse_texts(task_examples)
        lab_texts, lab_Y = parse_labeled(labeled, self.models_) if labeled is not None else ([], None)
        if lab_texts:
            labeled_set = set(lab_texts)
            texts = [t for t in texts if t not in labeled_set] or texts
        vectors = self.embed_queries(texts + lab_texts)
        Q, LX = vectors[:len(texts)], vectors[len(texts):]
        sel = self.select_embedded(Q, LX if lab_texts else None, lab_Y if lab_texts else None,
                                   candidates, method, fallback, exclude_datasets,
                                   keep_duplicates)
        if max_quality_drop is not None:
            models = [str(m) for m in sel.scores.index]
            sel = cheaper_selection(sel, router_costs(self, costs, "max_quality_drop", models),
                                    models, max_quality_drop)
        return sel

    def select_embedded(self, Q: np.ndarray, labeled_X: np.ndarray | None = None,
                        labeled_Y: np.ndarray | None = None,
                        candidates: Iterable[str] | None = None, method: str = "S3",
                        fallback: bool = True, exclude_datasets: Sequence[str] = (),
                        keep_duplicates: bool = False) -> Selection:
        """:meth:`select_model` on embeddings: Q (n, d), labeled_X (L, d), labeled_Y (L, M).

        ``exclude_datasets`` leaves pool tasks out exactly: the result equals that of a router
        fitted without them (pool, fallback means, BMA and reference pairs)."""
        view, n, L = self._view(Q, labeled_X, labeled_Y, exclude_datasets, keep_duplicates)
        return view.select(np.arange(n), np.arange(n, n + L), labeled_Y if L else None,
                           candidates, method, fallback)

    def reference_without(self, exclude_datasets: Sequence[str]) -> ReferencePairs:
        """The reference pairs of this pool without some tasks, equal to those of a router
        fitted without them (a task's pairs are recomputed only when they depended on an
        excluded task); the last few are kept."""
        check_is_fitted(self, "reference_")
        tasks = tuple(sorted(set(exclude_datasets)))
        if not tasks:
            return self.reference_
        # keyed by the parameters the pairs depend on too: set_params never meets a stale entry
        key = (tasks, tuple(self.alphas), self.repeats, self.seed, self.n_neighbours,
               self.threshold)
        memo = self.__dict__.setdefault("_excluded", {})
        if key not in memo:
            if len(memo) >= _EXCLUDED_MEMO:
                memo.pop(next(iter(memo)))
            memo[key] = reference_pairs(
                self.predictor_, self.alphas, self.repeats, self.seed, self.n_neighbours,
                self.threshold, also_exclude=tasks, cache=self.reference_)
        return memo[key]

    # ------------------------------------------------------------------ routing
    def predict_proba(self, texts: Texts, keep_duplicates: bool = False) -> pd.DataFrame:
        """P(m, x) for each input (rows) and model (columns): the tuned per-input predictor's
        calibrated probability (``tune=True``), else g_m(x); pool inputs that are
        near-duplicates of an input are left out of its neighbours unless ``keep_duplicates``."""
        check_is_fitted(self, "predictor_")
        P = router_proba(self, self.embed_queries(parse_texts(texts, "texts")), keep_duplicates)
        return pd.DataFrame(P, columns=self.models_)

    def route(self, texts: Texts, candidates: Iterable[str] | None = None,
              policy: str | None = None, costs: Mapping[str, float] | None = None,
              ood_alpha: float | None = None, keep_duplicates: bool = False,
              **policy_params: float | str) -> list[str] | pd.DataFrame:
        """The model with the highest P(m, x) for each input; ties go to the best model on
        average. With ``policy`` (see :mod:`benchroute.policies`: best, threshold,
        smallest_sufficient, cheapest_within, budget) and its parameters, a DataFrame with the
        model, its predicted P, its cost and the input's OOD p-value (:meth:`ood_p`) per input.
        With ``ood_alpha``, inputs whose OOD p-value is below it go to the best model on
        average among the candidates (column ``ood_fallback``). Pool inputs that are
        near-duplicates of an input (column ``in_pool``) are left out of its neighbours unless
        ``keep_duplicates``: their benchmark labels would decide, not a prediction."""
        check_is_fitted(self, "predictor_")
        if policy is None and (policy_params or costs is not None):
            given = sorted(policy_params) + (["costs"] if costs is not None else [])
            raise BenchrouteError(f"{given} apply to a policy only; pass policy= (one of "
                                  f"{sorted(POLICIES)})")
        Q = self.embed_queries(parse_texts(texts, "texts"))
        if policy is not None:
            return route_with_policy(self, Q, policy, self.candidate_indices(candidates), costs,
                                     ood_alpha=ood_alpha, keep_duplicates=keep_duplicates,
                                     **policy_params)
        return self.route_embedded(Q, candidates, ood_alpha, keep_duplicates)

    def ood_p(self, texts: Texts) -> np.ndarray:
        """Per input, the conformal p-value of its distance to the pool against the pool's own
        inputs scored with their task left out (:mod:`benchroute.ood`): small means farther
        from the pool than inputs of a task the pool never saw usually are. NaN for a pool of
        one task."""
        check_is_fitted(self, "predictor_")
        return reference_of(self).p_values(self.embed_queries(parse_texts(texts, "texts")))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`embed` for texts to score against the pool: an encoder of another dimension
        than the pool's (``encoder`` changed after fitting, or edited in a saved router) is
        refused before a vector is computed or cached."""
        enc = self.held_encoder()
        pool_d = self.predictor_.index_.dimension
        if 0 < enc.dimension != pool_d:
            raise BenchrouteError(f"encoder {enc.identifier!r} gives {enc.dimension}-d vectors, "
                                  f"the router's pool holds {pool_d}-d ones; use the encoder it "
                                  "was fitted with")
        return self.embed(texts)

    def route_embedded(self, Q: np.ndarray, candidates: Iterable[str] | None = None,
                       ood_alpha: float | None = None, keep_duplicates: bool = False
                       ) -> list[str]:
        cand = self.candidate_indices(candidates)
        bma = self.bma_index(cand)
        if ood_alpha is None:
            P, ood_p = router_proba(self, Q, keep_duplicates), None
        else:
            check_alpha(ood_alpha)
            P, ood_p, _ = router_proba_ood(self, Q, keep_duplicates)
        pick = route_rows(P, cand, bma, tol=self.config().tie_tol)
        pick, _ = fall_back(pick, ood_p, ood_alpha, bma)
        return [self.models_[i] for i in pick]

    # ------------------------------------------------------------------ changing the pool
    def add_model(self, name: str, results: pd.DataFrame | Iterable[Mapping[str, object]],
                  costs: float | None = None) -> Router:
        """Add a model from its results on some inputs; P(new, x) borrows from the known models.

        ``results``: records or a DataFrame with ``text`` (any input) or ``dataset`` +
        ``instance_id`` (a pool input, e.g. from :meth:`probe_set`), and ``correct`` or ``score``
        in [0, 1]. The estimator (docs/method.md, "Adding a model") is fitted on them; the model
        then takes part in :meth:`route`, the policies and :meth:`select_model` (its task
        accuracies estimated from P, see :meth:`added_models`), and is saved and loaded with the
        router. Calling it again for the same model adds to (and, for the same inputs, replaces)
        its results and refits. Results on every pool input make it a pool model exactly as if
        the router had been fitted with it (:meth:`add_results`). ``costs`` is its cost per call.
        """
        from benchroute.new_models import fit_added, parse_results

        check_is_fitted(self, "predictor_")
        if not isinstance(name, str) or not name:
            raise BenchrouteError(f"name == {name!r}, expected a non-empty model name")
        if name in self.pool_models_:
            raise BenchrouteError(f"model {name!r} is already a pool model with full results; "
                                  "change its results with add_results, or remove_model it first")
        if costs is not None and (not isinstance(costs, (int, float)) or not np.isfinite(costs)
                                  or costs < 0):
            raise BenchrouteError(f"costs == {costs!r}, expected a number >= 0 (cost per call)")
        frame = parse_results(results)
        X, rows = self._result_vectors(frame)
        y = frame["label"].to_numpy(dtype=np.float64)
        old = self.added_.get(name)
        if old is not None:  # earlier labels of the same inputs are replaced
            same = (1.0 - old.X @ X.T).min(axis=1) < 1e-6 if len(X) else np.zeros(len(old.y), bool)
            X, y = np.vstack([old.X[~same], X]), np.r_[old.y[~same], y]
            rows = np.r_[self._pool_rows_of(old.X[~same]), rows]
        covered = np.zeros(len(self.Y_), dtype=bool)
        covered[rows[rows >= 0]] = True
        if covered.all():
            Y = np.full(len(self.Y_), np.nan)
            Y[rows[rows >= 0]] = y[rows >= 0]
            self.added_.pop(name, None)
            self._append_columns([name], Y[:, None])
        else:
            self.added_[name] = fit_added(self, name, X, y)
            self._sync_models()
        if costs is not None:
            self.costs_ = {**(self.costs_ or {}), name: float(costs)}
        return self

    def _pool_rows_of(self, X: np.ndarray) -> np.ndarray:
        from benchroute.new_models import pool_labels_at

        return pool_labels_at(self, X)[0] if len(X) else np.zeros(0, dtype=np.int64)

    def _result_vectors(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of a results frame, and the pool row of each input (-1 if not a pool input):
        pool inputs named by dataset + instance_id (or by their text, when the router keeps its
        pool's texts) take the pool's vector; other texts are embedded."""
        index = self.predictor_.index_
        rows = np.full(len(frame), -1, dtype=np.int64)
        if {"dataset", "instance_id"} <= set(frame.columns):
            where = {(str(d), str(i)): r for r, (d, i) in
                     enumerate(zip(index.datasets_, index.instance_ids_))}
            for j, (d, i) in enumerate(zip(frame["dataset"], frame["instance_id"])):
                if not (pd.isna(d) or pd.isna(i)):
                    rows[j] = where.get((str(d), str(i)), -1)
        if "text" in frame.columns and self.texts_ is not None:
            by_text = {t: r for r, t in reversed(list(enumerate(self.texts_)))}
            for j, t in enumerate(frame["text"]):
                if rows[j] < 0 and isinstance(t, str):
                    rows[j] = by_text.get(t, -1)
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
            X[need] = self.embed(frame["text"].iloc[need].tolist())
        return X, rows

    def remove_model(self, name: str) -> Router:
        """Remove a model, pool or added. A pool model's labels leave the pool (its column of
        the labels, of the reference pairs and of the task accuracies); the tuned predictor
        keeps its cross-validated k, prior and calibration; added models are refitted, their
        features having changed."""
        check_is_fitted(self, "predictor_")
        if name in self.added_:
            del self.added_[name]
        elif name in self.pool_models_:
            if len(self.pool_models_) == 1:
                raise BenchrouteError(f"{name!r} is the only pool model; a router needs one")
            keep = [i for i, m in enumerate(self.pool_models_) if m != name]
            self._set_pool(self.predictor_.index_, self.Y_[:, keep],
                           [self.pool_models_[i] for i in keep])
            ref = self.reference_
            self.reference_ = ReferencePairs(ref.u, ref.p[:, keep], ref.task, ref.alpha,
                                             ref.touched, ref.fallback)
            self._refit_added()
        else:
            raise BenchrouteError(f"unknown model {name!r}; models: {self.models_}")
        self.task_accuracy_ = self.task_accuracy_.drop(columns=[name], errors="ignore")
        if self.costs_ and name in self.costs_:
            self.costs_ = {m: c for m, c in self.costs_.items() if m != name}
        self._sync_models()
        return self

    def add_results(self, data: BenchmarkData, embeddings: np.ndarray | None = None) -> Router:
        """Append benchmark results without refitting from scratch: new tasks and inputs join
        the index (only they are embedded), new models become pool columns, results for
        existing (input, model) cells replace the old ones.

        Equal to a router fitted on all results (the test suite checks it), except that the
        tuned per-input predictor keeps the k, prior and calibration it chose by
        cross-validation (its model means are updated); a full fit would re-tune them. The
        reference pairs are recomputed for every task, since new inputs can change any task's
        neighbours; with new inputs in an existing task, that task's few-shot draws (α > 0) pick
        by position and may differ from a full fit's, whose rows are sorted by instance id.
        """
        check_is_fitted(self, "predictor_")
        if not isinstance(data, BenchmarkData):
            raise BenchrouteError(f"add_results expects a BenchmarkData, got {type(data).__name__}")
        inst = data.instances()
        index = self.predictor_.index_
        where = {(str(d), str(i)): r for r, (d, i) in
                 enumerate(zip(index.datasets_, index.instance_ids_))}
        rows = np.array([where.get((str(d), str(i)), -1)
                         for d, i in zip(inst["dataset"], inst["instance_id"])], dtype=np.int64)
        new = np.flatnonzero(rows < 0)
        if embeddings is not None:
            embeddings = np.asarray(embeddings)
            if embeddings.ndim != 2 or len(embeddings) != len(inst):
                raise BenchrouteError(f"embeddings must have shape ({len(inst)}, d), one row per "
                                      f"input of data.instances(); got {embeddings.shape}")
            embeddings = embeddings[new]
        texts = inst["text"].iloc[new].tolist()
        pool = pool_arrays(data, np.zeros((len(inst), 1)), self.embed)  # labels only
        new_models = [m for m in pool.models if m not in self.pool_models_]
        Y = np.hstack([self.Y_, np.full((len(self.Y_), len(new_models)), np.nan, np.float32)])
        models = self.pool_models_ + new_models
        if len(new):
            Xn = check_vectors(self.embed(texts) if embeddings is None else embeddings,
                               "add_results vectors")
            index.add(Xn, inst["dataset"].iloc[new].to_numpy(dtype=object),
                      inst["instance_id"].iloc[new].astype(str).tolist())
            Y = np.vstack([Y, np.full((len(new), len(models)), np.nan, np.float32)])
            rows[new] = np.arange(len(Y) - len(new), len(Y))
            if self.texts_ is not None:
                self.texts_ = self.texts_ + texts
        cols = np.array([models.index(m) for m in pool.models], dtype=np.int64)
        given = ~np.isnan(pool.Y)
        block = Y[np.ix_(rows, cols)]
        Y[np.ix_(rows, cols)] = np.where(given, pool.Y, block)
        touched = sorted(set(inst["dataset"]))
        for name in new_models:
            self.added_.pop(name, None)
        self._set_pool(index, Y, models, touched)
        self.reference_ = reference_pairs(
            self.predictor_, alphas=self.alphas, repeats=self.repeats, seed=self.seed,
            n_neighbours=self.n_neighbours, threshold=self.threshold)
        costs = store_costs(data)
        if costs:
            self.costs_ = {**(self.costs_ or {}), **costs}
        self._refit_added()
        self._sync_models()
        return self

    def _append_columns(self, names: list[str], Y_new: np.ndarray) -> None:
        """New pool models with labels on every pool row (see :meth:`add_results`)."""
        Y = np.hstack([self.Y_, np.asarray(Y_new, dtype=np.float32)])
        self._set_pool(self.predictor_.index_, Y, self.pool_models_ + names, self.tasks_)
        self.reference_ = reference_pairs(
            self.predictor_, alphas=self.alphas, repeats=self.repeats, seed=self.seed,
            n_neighbours=self.n_neighbours, threshold=self.threshold)
        self._refit_added()
        self._sync_models()

    def _set_pool(self, index: object, Y: np.ndarray, models: list[str],
                  touched: Sequence[str] = ()) -> None:
        """Attach new labels (and index) to the predictor, recompute the task accuracies of the
        touched tasks (the mean label, as ``BenchmarkData.dataset_accuracy``) and keep the
        tuned predictor's chosen values."""
        self.predictor_ = KNNCorrectnessPredictor(
            self.k, self.weights, self.index_factory, self.nprobe, self.ef_search
        ).attach(index, Y)  # type: ignore[arg-type]
        means = pd.DataFrame(Y, columns=models, dtype=np.float64).groupby(self.datasets_).mean()
        acc = self.task_accuracy_.reindex(index=means.index, columns=models).astype(float)
        for t in touched:
            acc.loc[t] = means.loc[t]
        fresh = [m for m in models if m not in self.pool_models_]
        acc[fresh] = means[fresh]
        acc.index.name = self.task_accuracy_.index.name
        self.task_accuracy_ = acc
        self.pool_models_ = list(models)
        self.__dict__.pop("_excluded", None)
        tuned = getattr(self, "per_input_", None)
        if tuned is not None:
            self.per_input_ = PerInputPredictor.from_description(tuned.describe(), None, Y)

    def _refit_added(self) -> None:
        from benchroute.new_models import fit_added

        for name, old in list(self.added_.items()):
            self.added_[name] = fit_added(self, name, old.X, old.y)

    def restore_added(self, added: Mapping[str, AddedModel]) -> Router:
        """Put back models added from a few labels, each already fitted (what loading a saved
        router does; :meth:`add_model` is the way to add one)."""
        check_is_fitted(self, "predictor_")
        self.added_ = dict(added)
        self._sync_models()
        return self

    def _sync_models(self) -> None:
        """models_ = pool models then added ones; task accuracies likewise."""
        self.models_ = self.pool_models_ + list(self.added_)
        acc = self.task_accuracy_.reindex(columns=self.pool_models_)
        for name, a in self.added_.items():
            acc[name] = a.accuracy["accuracy"].reindex(acc.index)
        self.task_accuracy_ = acc

    def added_models(self) -> pd.DataFrame:
        """One row per (added model, task): the estimated accuracy, its standard error and the
        number of pool inputs it was averaged over, with how the model's P was fitted."""
        check_is_fitted(self, "predictor_")
        parts = []
        for name, a in self.added_.items():
            t = a.accuracy.reset_index().rename(columns={"index": "task"})
            t.insert(0, "model", name)
            t["n_labels"] = a.fit.n_labels
            t["estimator"] = a.fit.summary()
            parts.append(t)
        cols = ["model", "task", "accuracy", "se", "n", "n_labels", "estimator"]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)

    def probe_set(self, n: int, strategy: str = DEFAULT_PROBE, seed: int | None = None
                  ) -> pd.DataFrame:
        """n pool inputs to run a new model on (see
        :func:`benchroute.new_models.probe_rows`): ``dataset``, ``instance_id`` and ``text``
        (None when the router keeps no texts). Label them and pass them to :meth:`add_model`."""
        from benchroute.new_models import probe_rows

        check_is_fitted(self, "predictor_")
        rows = probe_rows(self.pool_vectors(), self.Y_, self.datasets_, n,
                          self.seed if seed is None else seed, strategy)
        index = self.predictor_.index_
        return pd.DataFrame({"dataset": index.datasets_[rows].astype(str),
                             "instance_id": index.instance_ids_[rows].astype(str),
                             "text": [self.texts_[r] if self.texts_ is not None else None
                                      for r in rows]})

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the fitted router atomically (see :func:`benchroute.persistence.save_router`)."""
        from benchroute.persistence import save_router

        return save_router(self, folder)

    @classmethod
    def load(cls, folder: str | os.PathLike[str],
             cache_dir: str | os.PathLike[str] | None = None) -> Router:
        """Read a saved router, checking every file and field; it writes embeddings only under
        ``cache_dir`` (default ``$BENCHROUTE_HOME/embeddings``)."""
        from benchroute.persistence import load_router

        return load_router(folder, cache_dir, cls)
