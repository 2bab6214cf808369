"""The router: model selection for a task (S1/S2/S3 with the BMA fallback) and per-input routing.

``Router`` follows scikit-learn's estimator contract: the constructor stores hyper-parameters,
``fit`` learns, fitted state ends in ``_``. The decision itself lives in
:mod:`benchroute.selection` (shared with the experiments), the reference pass in
:mod:`benchroute.reference`, saving and loading in :mod:`benchroute.persistence`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchroute import pool_state
from benchroute.data.metrics import short_repr
from benchroute.data.pool import pool_arrays
from benchroute.data.store import BenchmarkData
from benchroute.deprecation import keywords_after
from benchroute.exceptions import BenchrouteError
from benchroute.inputs import (
    LabeledRecords,
    Texts,
    check_candidates,
    check_fit_arrays,
    check_flag,
    check_instance_ids,
    check_model_name,
    check_router_params,
    task_accuracy_problem,
)
from benchroute.ood import reference_of
from benchroute.params import RouterParams
from benchroute.persistence import load_router, save_router
from benchroute.policies import canonical_params
from benchroute.predictors import check_is_fitted
from benchroute.reference import ReferencePairs
from benchroute.routing import (
    cheaper_selection,
    check_no_policy_params,
    query_vectors,
    route_indices,
    route_with_policy,
    router_costs,
    router_proba,
    store_costs,
)
from benchroute.scoring import best_on_average, model_means
from benchroute.selection import Selection
from benchroute.task import (
    TaskNeighbours,
    check_excluded,
    reference_without,
    task_vectors,
    task_view,
)
from benchroute.warning_site import user_stacklevel

logger = logging.getLogger(__name__)
DEFAULT_PROBE = pool_state.DEFAULT_PROBE  # its former home, kept for one release

__all__ = ["Router"]


class Router(RouterParams, pool_state.FittedPool):
    """Select the best model for a new task, or route each input, from benchmark results.

    The parameters, their meaning and defaults are those of
    :class:`~benchroute.params.RouterParams` (k=5, n_neighbours=19, threshold=0.5,
    bandwidth=0.09, eta=0.6, n_draws=1000, alphas=0, 0.02, …, 0.28, repeats=3,
    prior_strength=50, ...; docs/method.md gives the formulas).

    Threads: a fitted router may be read by many threads at once (``route``,
    ``select_model``, ``predict_proba``, the policies; the gateway does so). A change
    (``fit``, ``add_results``, ``add_model``, ``remove_model``, ``set_params``) must not run
    while another thread reads it, since FAISS indexes are not safe to grow under a search:
    change a copy (``Router.load`` of the saved router) and hand the readers the new object.
    """

    # ------------------------------------------------------------------ fitting
    def fit(self, data: BenchmarkData, embeddings: np.ndarray | None = None) -> Router:
        """Fit the correctness predictors and the reference pairs of the p̂ smoother on a store
        (each dataset one task); ``embeddings`` (N, d) are the vectors of ``data.instances()``
        in that order, embedded through the cache if omitted."""
        check_router_params(self.get_params())
        if not isinstance(data, BenchmarkData):
            raise BenchrouteError(f"fit expects a BenchmarkData, got {type(data).__name__}")
        # before the embedding, and naming the files (a HELM or MixInstruct model "a " was
        # refused after it, naming no file; found by fuzzing)
        where = ", ".join(data.report.sources[:3]) or "the store"
        for model in data.models:
            check_model_name(str(model), f"{where}: model name")
        pool = pool_arrays(data, embeddings, self.embed)
        enc = self.held_encoder()  # cheap: weights load on first use
        if embeddings is not None and 0 < enc.dimension != pool.X.shape[1]:
            # routing embeds its inputs with this encoder, and would refuse the pool then
            raise BenchrouteError(f"embeddings are {pool.X.shape[1]}-d, encoder "
                                  f"{enc.identifier!r} gives {enc.dimension}-d vectors; give "
                                  "vectors from the router's encoder, or set encoder= to the one "
                                  "that made them (fit_arrays takes vectors alone)")
        with pool_state.unchanged_on_error(self):  # no half-made fit over the last one
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
        X, Y, ds, models = check_fit_arrays(X, Y, datasets, models)
        ids = check_instance_ids(instance_ids, ds)
        if task_accuracy is not None:
            problem = task_accuracy_problem(task_accuracy, Y, ds, models)
            if problem is not None:
                raise BenchrouteError(f"fit_arrays task_accuracy{'.' if problem[0] else ''}"
                                      f"{problem[0]}: must be {problem[1]}")
            task_accuracy = task_accuracy.set_axis(task_accuracy.index.map(str))
        with pool_state.unchanged_on_error(self):
            pool_state.build(self, X, Y, ds, models, ids, task_accuracy)
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
        """The best model on average: the one :meth:`bma_index` (selection and routing) uses."""
        check_is_fitted(self, "predictor_")
        return self.models_[self.bma_index(np.arange(len(self.models_)))]

    def candidate_indices(self, candidates: Iterable[str] | None) -> np.ndarray:
        """Column indices of the named models, sorted (all models for None)."""
        check_is_fitted(self, "predictor_")
        return check_candidates(candidates, self.models_)

    def bma_index(self, cand: np.ndarray, exclude_datasets: Sequence[str] = ()) -> int:
        """The best model on average among ``cand`` (column indices, as
        :meth:`candidate_indices` gives), over the tasks not excluded (pool task names, checked
        as :meth:`select_model` checks them)."""
        check_is_fitted(self, "predictor_")
        cand = np.asarray(cand)
        if cand.ndim != 1 or not len(cand) or cand.dtype.kind not in "iu" \
                or not ((cand >= 0) & (cand < len(self.models_))).all():
            raise BenchrouteError(f"cand == {short_repr(cand, 60)}; expected column indices of "
                                  f"the router's {len(self.models_)} models (candidate_indices)")
        acc = self.task_accuracy_ if exclude_datasets is None or not len(exclude_datasets) \
            else self.task_accuracy_.drop(index=check_excluded(self, exclude_datasets))
        return best_on_average(acc.to_numpy(dtype=float), cand)

    # ------------------------------------------------------------------ selection
    def task_neighbours(self, X: np.ndarray, exclude_datasets: Sequence[str] = (),
                        keep_duplicates: bool = False, texts: Sequence[str] | None = None
                        ) -> TaskNeighbours:
        """The pool neighbours of a task's inputs X (and their ``texts``, for the form shift),
        searched once, for selections on any split (:class:`~benchroute.task.TaskNeighbours`)."""
        check_is_fitted(self, "predictor_")
        return TaskNeighbours(self, X, exclude_datasets, keep_duplicates, texts)

    @keywords_after(2)
    def predict_proba_embedded(self, Q: np.ndarray, *, candidates: Iterable[str] | None = None,
                               labeled_X: np.ndarray | None = None,
                               labeled_Y: np.ndarray | None = None,
                               exclude_datasets: Sequence[str] = ()) -> np.ndarray:
        """P (n inputs, candidates): g_m(x) of each embedded query, columns in the order of
        ``candidates`` as :meth:`candidate_indices` sorts them (all models by default)."""
        view, n, L = task_view(self, Q, labeled_X, labeled_Y, exclude_datasets)
        P = view.proba(np.arange(n), np.arange(n, n + L), labeled_Y if L else None)
        return P[:, self.candidate_indices(candidates)]

    @keywords_after(2)
    def select_model(self, task_examples: Texts, *, labeled: LabeledRecords | None = None,
                     candidates: Iterable[str] | None = None, method: str = "S3",
                     fallback: bool = True, exclude_datasets: Sequence[str] = (),
                     max_quality_drop: float | None = None,
                     costs: Mapping[str, float] | None = None,
                     keep_duplicates: bool = False) -> Selection:
        """Choose the best model for a task from its input texts.

        ``labeled``: a few labelled inputs of the task (records ``{"text": ..., "labels":
        {model: 0/1}}``, or a DataFrame with ``text`` and a column per model); they join the kNN
        pool for this call only and update p̂ (docs/method.md); a labelled example is scored
        next to the others' labels, never its own. ``candidates`` restricts the choice (BMA is
        then the best of them); ``fallback`` applies the η rule and the form-shift test (S3);
        ``exclude_datasets`` leaves pool tasks out exactly. ``max_quality_drop`` ε moves the
        choice to the cheapest candidate within ε of the chosen model's accuracy after the
        fallback (S3: with probability ≥ η, by the fallback's draws; S1 and S2: by their score) (``costs`` per call, else the fit
        store's). Pool inputs that are near-duplicates of an example are left out of its
        neighbours (counted in ``Selection.n_in_pool``) unless ``keep_duplicates``."""
        check_is_fitted(self, "predictor_")
        if costs is not None and max_quality_drop is None:
            raise BenchrouteError("costs are used only with max_quality_drop; give both or neither")
        Q, LX, LY, texts = task_vectors(self, task_examples, labeled)
        sel = self.select_embedded(Q, labeled_X=LX, labeled_Y=LY, candidates=candidates,
                                   method=method, fallback=fallback,
                                   exclude_datasets=exclude_datasets,
                                   keep_duplicates=keep_duplicates, texts=texts)
        if max_quality_drop is not None:
            models = [str(m) for m in sel.scores.index]
            sel = cheaper_selection(sel, router_costs(self, costs, "max_quality_drop", models),
                                    models, max_quality_drop, self.config())
        return sel

    @keywords_after(2)
    def select_embedded(self, Q: np.ndarray, *, labeled_X: np.ndarray | None = None,
                        labeled_Y: np.ndarray | None = None,
                        candidates: Iterable[str] | None = None, method: str = "S3",
                        fallback: bool = True, exclude_datasets: Sequence[str] = (),
                        keep_duplicates: bool = False, texts: Sequence[str] | None = None
                        ) -> Selection:
        """:meth:`select_model` on embeddings: Q (n, d), labeled_X (L, d), labeled_Y (L, M), their
        ``texts`` (n + L) for the form-shift test of S3. ``exclude_datasets``: as if fitted
        without those tasks (pool, fallback means, BMA and reference pairs)."""
        check_flag("fallback", fallback)
        check_flag("keep_duplicates", keep_duplicates)
        view, n, L = task_view(self, Q, labeled_X, labeled_Y, exclude_datasets, keep_duplicates, texts)
        return view.select(np.arange(n), np.arange(n, n + L), labeled_Y if L else None,
                           candidates, method, fallback)

    def reference_without(self, exclude_datasets: Sequence[str]) -> ReferencePairs:
        """The reference pairs without some pool tasks, equal to a router fitted without them
        (:func:`benchroute.task.reference_without`)."""
        return reference_without(self, exclude_datasets)

    # ------------------------------------------------------------------ routing
    def predict_proba(self, texts: Texts, keep_duplicates: bool = False) -> pd.DataFrame:
        """P(m, x) for each input (rows) and model (columns): the tuned per-input predictor's
        probability (``tune=True``; calibrated where its cross-validation kept the map), else
        g_m(x); pool inputs that are
        near-duplicates of an input are left out of its neighbours unless ``keep_duplicates``.
        Rows keep the index of a pandas Series of texts."""
        check_is_fitted(self, "predictor_")
        P = router_proba(self, query_vectors(self, texts), keep_duplicates)
        return pd.DataFrame(P, columns=self.models_, index=_index_of(texts, len(P)))

    @keywords_after(2)
    def route(self, texts: Texts, *, candidates: Iterable[str] | None = None,
              policy: str | None = None, costs: Mapping[str, float] | None = None,
              ood_alpha: float | None = None, keep_duplicates: bool = False,
              **policy_params: float | str) -> list[str]:
        """The model with the highest P(m, x) for each input, a list of names; ties go to the
        best model on average, as do inputs whose OOD p-value (:meth:`ood_p`) is below
        ``ood_alpha``. Pool inputs that are near-duplicates of an input are left out of its
        neighbours unless ``keep_duplicates``. :meth:`route_table` applies a cost-aware policy
        (``route(policy=...)`` still returns that table, with a FutureWarning, for one release)."""
        check_is_fitted(self, "predictor_")
        if policy is not None:
            warnings.warn("route(texts, policy=...) returns a DataFrame for one more release; "
                          "call route_table(texts, policy=...) for the table",
                          FutureWarning, stacklevel=user_stacklevel())
            return self.route_table(  # type: ignore[return-value]
                texts, policy, candidates=candidates, costs=costs, ood_alpha=ood_alpha,
                keep_duplicates=keep_duplicates, **policy_params)
        check_no_policy_params(costs, policy_params)
        return self.route_embedded(query_vectors(self, texts), candidates=candidates,
                                   ood_alpha=ood_alpha, keep_duplicates=keep_duplicates)

    def route_table(self, texts: Texts, policy: str = "best", *,
                    candidates: Iterable[str] | None = None,
                    costs: Mapping[str, float] | None = None, ood_alpha: float | None = None,
                    keep_duplicates: bool = False, **policy_params: float | str) -> pd.DataFrame:
        """Each input's decision under a policy (:mod:`benchroute.policies`) and its parameters:
        a DataFrame with the model, its predicted P, its cost, the input's OOD p-value
        (``ood_p``), ``ood_fallback`` (with ``ood_alpha``, as in :meth:`route`) and ``in_pool``;
        rows keep the index of a pandas Series of texts."""
        check_is_fitted(self, "predictor_")
        policy_params = canonical_params(policy, policy_params)  # old names warn here, once
        Q = query_vectors(self, texts)
        frame = route_with_policy(self, Q, policy, self.candidate_indices(candidates), costs,
                                  ood_alpha=ood_alpha, keep_duplicates=keep_duplicates,
                                  **policy_params)
        frame.index = _index_of(texts, len(frame))
        return frame

    def ood_p(self, texts: Texts) -> np.ndarray:
        """Per input, the conformal p-value of its distance to the pool against the pool's own
        inputs scored with their task left out (:mod:`benchroute.ood`): small means farther
        than new tasks' inputs usually are. NaN for a pool of one task."""
        check_is_fitted(self, "predictor_")
        return reference_of(self).p_values(query_vectors(self, texts))

    @keywords_after(2)
    def route_embedded(self, Q: np.ndarray, *, candidates: Iterable[str] | None = None,
                       ood_alpha: float | None = None, keep_duplicates: bool = False
                       ) -> list[str]:
        """:meth:`route` on embedded inputs Q (n, d)."""
        pick = route_indices(self, Q, self.candidate_indices(candidates), ood_alpha,
                             keep_duplicates)
        return [self.models_[i] for i in pick]

    # ------------------------------------------------------------------ changing the pool
    # the work is done in benchroute.pool_state; these methods are its public door
    def add_model(self, name: str, results: pd.DataFrame | Iterable[Mapping[str, object]],
                  costs: float | None = None) -> Router:
        """Add a model from its results on some inputs (``text``, or ``dataset`` +
        ``instance_id`` of a pool input, and ``correct`` or ``score``); P(new, x) borrows from
        the known models. See :func:`benchroute.pool_state.add_model`."""
        return pool_state.add_model(self, name, results, costs)

    def remove_model(self, name: str) -> Router:
        """Remove a model, pool or added (:func:`benchroute.pool_state.remove_model`)."""
        return pool_state.remove_model(self, name)

    def add_results(self, data: BenchmarkData, embeddings: np.ndarray | None = None) -> Router:
        """Append benchmark results without a refit from scratch; equal to a fit on all of them
        but for the tuned predictor's chosen values (:func:`.pool_state.add_results`)."""
        return pool_state.add_results(self, data, embeddings)

    def added_models(self) -> pd.DataFrame:
        """One row per (added model, task): estimated accuracy, its standard error, n, and how
        the model's P was fitted."""
        return pool_state.added_models(self)

    def probe_set(self, n: int, strategy: str = pool_state.DEFAULT_PROBE,
                  seed: int | None = None) -> pd.DataFrame:
        """n pool inputs to run a new model on, for :meth:`add_model`
        (:func:`benchroute.pool_state.probe_set`)."""
        return pool_state.probe_set(self, n, strategy, seed)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the fitted router atomically (see :func:`benchroute.persistence.save_router`)."""
        return save_router(self, folder)

    @classmethod
    def load(cls, folder: str | os.PathLike[str],
             cache_dir: str | os.PathLike[str] | None = None, mmap: bool = False) -> Router:
        """Read a saved router, checking every file and field; it writes embeddings only under
        ``cache_dir`` (default ``$BENCHROUTE_HOME/embeddings``). ``mmap``: map the pool's
        vectors from the index file instead of reading them into memory (pools larger than
        memory; processes sharing one pool); its vectors are then read-only (``add_results``
        refuses new inputs; labels of known inputs, models and parameters still change)."""
        return load_router(folder, cache_dir, cls, mmap)


def _index_of(texts: object, n: int) -> pd.Index:
    """The rows' index of a per-input table: a pandas Series's own (so the answer joins back on
    it), else 0..n-1."""
    return texts.index if isinstance(texts, pd.Series) and len(texts) == n else pd.RangeIndex(n)
