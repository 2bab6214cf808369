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
from benchroute.params import RouterParams
from benchroute.policies import (
    POLICIES,
    cheaper_selection,
    route_with_policy,
    router_costs,
    router_proba,
    store_costs,
)
from benchroute.predictors import KNNCorrectnessPredictor, check_is_fitted
from benchroute.reference import ReferencePairs, reference_pairs
from benchroute.selection import Selection, route_rows
from benchroute.task import TaskNeighbours
from benchroute.tuning import PerInputPredictor

logger = logging.getLogger(__name__)

__all__ = ["Router", "Selection", "route", "select_model"]

_EXCLUDED_MEMO = 8


class Router(RouterParams):
    """Select the best model for a new task, or route each input, from benchmark results.

    The parameters, their meaning and defaults are those of
    :class:`~benchroute.params.RouterParams` (k=5, n_neighbours=19, threshold=0.5,
    bandwidth=0.09, eta=0.6, n_draws=1000, alphas=0, 0.02, …, 0.28, repeats=3,
    prior_strength=50, ...; docs/method.md gives the formulas).
    """

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
        from benchroute.default import pool_arrays

        check_router_params(self.get_params())
        if not isinstance(data, BenchmarkData):
            raise BenchrouteError(f"fit expects a BenchmarkData, got {type(data).__name__}")
        pool = pool_arrays(data, embeddings, self.embed)
        self.fit_arrays(pool.X, pool.Y, pool.datasets, pool.models, pool.instance_ids,
                        data.dataset_accuracy().reindex(columns=pool.models))
        self.costs_ = store_costs(data)
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
        if task_accuracy is None:
            task_accuracy = pd.DataFrame(Y, columns=models).groupby(ds).mean()
        self.task_accuracy_ = task_accuracy.reindex(columns=models).astype(float)
        self.encoder_id_ = self.encoder_identifier()
        self.reference_ = reference_pairs(
            self.predictor_, alphas=self.alphas, repeats=self.repeats, seed=self.seed,
            n_neighbours=self.n_neighbours, threshold=self.threshold)
        self._excluded: dict[tuple[str, ...], ReferencePairs] = {}
        self.costs_ = None
        self.per_input_: PerInputPredictor | None = None
        if self.tune:
            # routing searches the router's index; the tuned predictor keeps no pool of its own
            self.per_input_ = PerInputPredictor(seed=self.seed).fit(X, Y, ds).without_pool()
        logger.info("fitted router: %d inputs, %d models, %d tasks, %d reference pairs",
                    len(X), len(self.models_), len(self.tasks_), len(self.reference_.u))
        return self

    # ------------------------------------------------------------------ fitted views
    @property
    def X_(self) -> np.ndarray:
        """The pool's vectors (N, d): a copy the caller owns."""
        check_is_fitted(self, "predictor_")
        return self.predictor_.index_.vectors()

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
        return self.task_accuracy_.mean(axis=0)

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
        return int(cand[np.nanargmax(acc.mean(axis=0).to_numpy()[cand])])

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

    def task_neighbours(self, X: np.ndarray, exclude_datasets: Sequence[str] = ()) -> TaskNeighbours:
        """The pool neighbours of a task's inputs X, searched once, for selections on any split of
        them into scored and labelled inputs (see :class:`~benchroute.task.TaskNeighbours`)."""
        check_is_fitted(self, "predictor_")
        return TaskNeighbours(self, X, exclude_datasets)

    def _view(self, Q: np.ndarray, labeled_X: np.ndarray | None, labeled_Y: np.ndarray | None,
              exclude_datasets: Sequence[str]) -> tuple[TaskNeighbours, int, int]:
        """One neighbour search for the queries and the labelled inputs together."""
        check_is_fitted(self, "predictor_")
        Q = check_vectors(Q, "queries")
        if len(Q) == 0:
            raise BenchrouteError("no inputs to score")
        if (labeled_X is None) != (labeled_Y is None):
            raise BenchrouteError("labeled_X and labeled_Y go together: give both or neither")
        LX = check_vectors(labeled_X, "labeled_X") if labeled_X is not None and len(labeled_X) \
            else np.zeros((0, Q.shape[1]), np.float32)
        return self.task_neighbours(np.vstack([Q, LX]), exclude_datasets), len(Q), len(LX)

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
                     costs: Mapping[str, float] | None = None) -> Selection:
        """Choose the best model for a task from its input texts.

        ``labeled`` are a few labelled inputs of the task (``{"text": ..., "labels": {model:
        0/1}}`` records, or a DataFrame with ``text`` and one column per model): they join the
        kNN pool for this call only, update p̂ (Beta–binomial, see docs/method.md) and leave the
        examples to score; if every example is labelled, each is scored next to the others'
        labels, never its own. ``candidates`` restricts the choice (BMA is then the best of
        them); ``fallback`` applies the η rule (S3 only); ``exclude_datasets`` as in
        :meth:`select_embedded`. With ``max_quality_drop`` ε the choice moves to the cheapest
        candidate whose score is within ε of the top one (``costs`` per call, or those of the
        fit store's ``cost`` column).
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
                                   candidates, method, fallback, exclude_datasets)
        if max_quality_drop is not None:
            models = [str(m) for m in sel.scores.index]
            sel = cheaper_selection(sel, router_costs(self, costs, "max_quality_drop", models),
                                    models, max_quality_drop)
        return sel

    def select_embedded(self, Q: np.ndarray, labeled_X: np.ndarray | None = None,
                        labeled_Y: np.ndarray | None = None,
                        candidates: Iterable[str] | None = None, method: str = "S3",
                        fallback: bool = True, exclude_datasets: Sequence[str] = ()) -> Selection:
        """:meth:`select_model` on embeddings: Q (n, d), labeled_X (L, d), labeled_Y (L, M).

        ``exclude_datasets`` leaves pool tasks out exactly: the result equals that of a router
        fitted without them (pool, fallback means, BMA and reference pairs)."""
        view, n, L = self._view(Q, labeled_X, labeled_Y, exclude_datasets)
        return view.select(np.arange(n), np.arange(n, n + L), labeled_Y if L else None,
                           candidates, method, fallback)

    def reference_without(self, exclude_datasets: Sequence[str]) -> ReferencePairs:
        """The reference pairs of this pool without some tasks, equal to those of a router
        fitted without them (a task's pairs are recomputed only when they depended on an
        excluded task); the last few are kept."""
        check_is_fitted(self, "reference_")
        key = tuple(sorted(set(exclude_datasets)))
        if not key:
            return self.reference_
        memo = self.__dict__.setdefault("_excluded", {})
        if key not in memo:
            if len(memo) >= _EXCLUDED_MEMO:
                memo.pop(next(iter(memo)))
            memo[key] = reference_pairs(
                self.predictor_, self.alphas, self.repeats, self.seed, self.n_neighbours,
                self.threshold, also_exclude=key, cache=self.reference_)
        return memo[key]

    # ------------------------------------------------------------------ routing
    def predict_proba(self, texts: Texts) -> pd.DataFrame:
        """P(m, x) for each input (rows) and model (columns): the tuned per-input predictor's
        calibrated probability (``tune=True``), else g_m(x)."""
        check_is_fitted(self, "predictor_")
        P = router_proba(self, self.embed_queries(parse_texts(texts, "texts")))
        return pd.DataFrame(P, columns=self.models_)

    def route(self, texts: Texts, candidates: Iterable[str] | None = None,
              policy: str | None = None, costs: Mapping[str, float] | None = None,
              **policy_params: float | str) -> list[str] | pd.DataFrame:
        """The model with the highest P(m, x) for each input; ties go to the best model on
        average. With ``policy`` (see :mod:`benchroute.policies`: best, threshold,
        smallest_sufficient, cheapest_within, budget) and its parameters, a DataFrame with the
        model, its predicted P and its cost per input."""
        check_is_fitted(self, "predictor_")
        if policy is None and (policy_params or costs is not None):
            given = sorted(policy_params) + (["costs"] if costs is not None else [])
            raise BenchrouteError(f"{given} apply to a policy only; pass policy= (one of "
                                  f"{sorted(POLICIES)})")
        Q = self.embed_queries(parse_texts(texts, "texts"))
        if policy is not None:
            return route_with_policy(self, Q, policy, self.candidate_indices(candidates), costs,
                                     **policy_params)
        return self.route_embedded(Q, candidates)

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

    def route_embedded(self, Q: np.ndarray, candidates: Iterable[str] | None = None) -> list[str]:
        cand = self.candidate_indices(candidates)
        P = router_proba(self, Q)
        pick = route_rows(P, cand, self.bma_index(cand), tol=self.config().tie_tol)
        return [self.models_[i] for i in pick]

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


def select_model(task_examples: Texts, router: Router | None = None,
                 labeled: LabeledRecords | None = None, candidates: Iterable[str] | None = None,
                 method: str = "S3", fallback: bool = True) -> Selection:
    """Choose the best model for a task; with no router, one fitted on the bundled pack."""
    from benchroute.default import default_router

    return (router or default_router()).select_model(task_examples, labeled, candidates, method,
                                                     fallback)


def route(texts: Texts, router: Router | None = None,
          candidates: Iterable[str] | None = None, policy: str | None = None,
          costs: Mapping[str, float] | None = None,
          **policy_params: float | str) -> list[str] | pd.DataFrame:
    """Route each input to a model; with no router, one fitted on the bundled pack."""
    from benchroute.default import default_router

    return (router or default_router()).route(texts, candidates, policy, costs, **policy_params)


_MOVED = {"default_router", "pack_embeddings", "pool_arrays", "Pool"}


def __getattr__(name: str) -> object:
    """Names that moved to :mod:`benchroute.default`, still importable from here."""
    if name in _MOVED:
        import benchroute.default as default

        return getattr(default, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
