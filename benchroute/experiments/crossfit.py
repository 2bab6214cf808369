"""P(m, x) for the experiments by the path users get: a :class:`~benchroute.router.Router` fitted
on the training inputs, its FAISS index searched and its tuned per-input predictor applied
(:func:`benchroute.routing.router_proba`), exactly as ``Router.route`` computes P.

The cost–quality evaluation, the predictor comparison and per-instance routing all cross-fit
through :func:`routing_router`, so a number in the results is the number a user's router would
give, tuning included (the router's tuning CV holds whole tasks out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from benchroute.router import Router
from benchroute.routing import router_proba
from benchroute.scoring import best_on_average, task_means
from benchroute.tuning import PerInputPredictor

#: Task name given to every input when the caller has no tasks.
ONE_TASK = "pool"


def routing_router(X: np.ndarray, Y: np.ndarray, groups: Sequence[str] | np.ndarray | None = None,
                   models: Sequence[str] | None = None,
                   predictor: PerInputPredictor | None = None,
                   router_params: Mapping[str, object] | None = None,
                   grouped_tuning: bool = True) -> Router:
    """A router fitted on (X, Y) for per-input routing.

    Parameters
    ----------
    X : ndarray (N, d)
        Unit-norm vectors of the training inputs.
    Y : ndarray (N, M)
        Labels in [0, 1], NaN = no result.
    groups : array (N,), optional
        The task of each input (one task for all when None).
    models : list of str, optional
        Model names (default ``m0, m1, ...``).
    predictor : PerInputPredictor, optional
        An unfitted per-input predictor to use as the router's tuned P instead of the router's
        own (``tune=True``); fitted here on (X, Y) and the tasks, as :meth:`Router.fit_arrays`
        fits its own, and then kept without a pool (routing searches the router's index).
    router_params : mapping, optional
        Router parameters; the reference pass runs once at α = 0 (routing does not use p̂).
    grouped_tuning : bool
        Hold whole tasks out in the predictor's tuning CV (the router's way); False tunes on
        random folds over inputs, for comparison.
    """
    ds = np.full(len(X), ONE_TASK, dtype=object) if groups is None \
        else np.asarray(groups, dtype=object)
    names = list(models) if models is not None else [f"m{i}" for i in range(Y.shape[1])]
    params: dict[str, object] = {**dict(router_params or {}), "alphas": (0.0,), "repeats": 1}
    custom = predictor is not None or not grouped_tuning
    tune = bool(params.get("tune", True))
    if custom:
        params["tune"] = False
    router = Router().set_params(**params).fit_arrays(X, Y, ds, names)
    if custom and tune:
        pred = predictor if predictor is not None else PerInputPredictor(
            seed=router.seed, max_task_queries=router.max_task_queries,
            folds_by=router.tune_folds, calibration=router.tune_calibration)
        if not grouped_tuning:  # a copy: the caller's predictor stays as it was given
            pred = PerInputPredictor(**{**pred.get_params(), "folds_by": "random"})
        router.per_input_ = pred.fit(X, Y, ds).without_pool()
        # consistent: a tuned predictor exactly when tune, tuned as the parameters say
        router.set_params(tune=True, tune_folds=pred.folds_by, tune_calibration=pred.calibration)
    return router


def crossfit_router_proba(X: np.ndarray, Y: np.ndarray, train: np.ndarray, test: np.ndarray,
                          groups: Sequence[str] | np.ndarray | None = None,
                          predictor: PerInputPredictor | None = None,
                          router_params: Mapping[str, object] | None = None,
                          grouped_tuning: bool = True) -> tuple[np.ndarray, Router]:
    """P (len(test), M) of the test rows from a :func:`routing_router` fitted on the train rows,
    and that router."""
    g = None if groups is None else np.asarray(groups, dtype=object)[train]
    router = routing_router(X[train], Y[train], g, predictor=predictor,
                            router_params=router_params, grouped_tuning=grouped_tuning)
    return router_proba(router, X[test]), router


def fold_bma(Y: np.ndarray, tasks: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Per row, the best model on average (:func:`benchroute.scoring.best_on_average`) of the
    other folds: the "best single model" of the router that routes the row, and where its
    routing ties go."""
    tasks = np.asarray(tasks)
    out = np.empty(len(fold), dtype=np.int64)
    for f in np.unique(fold):
        train = fold != f
        out[fold == f] = best_on_average(task_means(Y[train], tasks[train]))
    return out
