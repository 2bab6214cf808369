"""Does per-input routing earn its keep? Cross-fitted comparison of correctness predictors.

Every predictor sees the same vectors and the same seeded folds over inputs; each fold is
routed by a predictor fitted on the other folds, with the router's rule
(:func:`benchroute.selection.route_rows`: argmax P, ties to the best model on average of the
other folds, only models with a result), and compared with that best single model and with the
per-input oracle. The kNN predictors are the router's own P (:func:`knn_fitter`). The share of the best-single → oracle
gap captured gets a 95% percentile interval over a paired bootstrap of inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from benchroute.experiments.bootstrap import interval, resample_rows
from benchroute.experiments.crossfit import fold_bma, routing_router
from benchroute.routing import router_proba
from benchroute.selection import route_rows
from benchroute.stacking import fit_vector_logistic
from benchroute.tuning import PerInputPredictor, brier, fold_ids

logger = logging.getLogger(__name__)

# (X_train, Y_train, X_test, tasks of the training rows or None) -> P_test
Fitter = Callable[[np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]


def knn_fitter(grouped: bool = True, **params: object) -> Fitter:
    """The router's P (:func:`benchroute.experiments.crossfit.routing_router`: its index searched,
    then a :class:`PerInputPredictor` with these parameters; fixed values skip tuning). With
    ``grouped`` (the router's way) the tuning CV holds whole tasks out, else it uses random
    folds over inputs."""
    def fit(Xtr: np.ndarray, Ytr: np.ndarray, Xte: np.ndarray, gtr: np.ndarray | None) -> np.ndarray:
        pred = PerInputPredictor(**params)  # type: ignore[arg-type]
        router = routing_router(Xtr, Ytr, gtr, predictor=pred, grouped_tuning=grouped)
        return router_proba(router, Xte)
    return fit


def logistic_fitter(C: float = 1.0) -> Fitter:
    """One scikit-learn LogisticRegression per model on the vectors, the regression the router's
    predictor can choose (:func:`benchroute.stacking.fit_vector_logistic`; a fractional label
    y enters as two rows, label 1 with weight y and label 0 with weight 1 − y)."""
    def fit(Xtr: np.ndarray, Ytr: np.ndarray, Xte: np.ndarray, gtr: np.ndarray | None) -> np.ndarray:
        reg = fit_vector_logistic(Xtr, Ytr, C)  # ignores the kNN P: coef 0
        return reg(np.full((len(Xte), Ytr.shape[1]), 0.5), Xte)
    return fit


def mlp_fitter(hidden: int = 128, seed: int = 0) -> Fitter:
    """A small scikit-learn MLP with one output per model (sigmoid outputs for 0/1 labels,
    squared loss clipped to [0, 1] for continuous ones); missing labels take the model's mean."""
    def fit(Xtr: np.ndarray, Ytr: np.ndarray, Xte: np.ndarray, gtr: np.ndarray | None) -> np.ndarray:
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        Y = np.where(np.isnan(Ytr), np.nanmean(Ytr, axis=0), Ytr)
        binary = np.isin(Y, (0.0, 1.0)).all()
        kw = dict(hidden_layer_sizes=(hidden,), alpha=1e-3, early_stopping=True,
                  max_iter=200, random_state=seed)
        if binary:
            const = Y.min(axis=0) == Y.max(axis=0)
            out = np.tile(Y[0], (len(Xte), 1)).astype(float)
            if (~const).any():
                clf = MLPClassifier(**kw).fit(Xtr, Y[:, ~const].astype(int))
                p = clf.predict_proba(Xte)
                out[:, ~const] = p if p.ndim == 2 else p[:, None]
            return out
        reg = MLPRegressor(**kw).fit(Xtr, Y)
        return np.clip(reg.predict(Xte).reshape(len(Xte), -1), 0.0, 1.0)
    return fit


def compare_predictors(X: np.ndarray, Y: np.ndarray, fitters: Mapping[str, Fitter],
                       folds: int = 5, seed: int = 0, n_boot: int = 1000,
                       groups: np.ndarray | None = None) -> pd.DataFrame:
    """Cross-fitted routing quality of each predictor against the best single model.

    Returns one row per predictor: ``routed`` (mean true quality of the routed model),
    ``best_single`` (the best model on average of the training folds,
    :func:`benchroute.scoring.best_on_average`), ``oracle``, ``gain`` = routed − best_single with its 95%
    interval, ``gap_share`` = gain / (oracle − best_single) with its interval, and the
    out-of-fold ``brier`` score of P. Every mean is over the ``n`` inputs that have the best
    single model's result.
    """
    Y = np.asarray(Y, dtype=np.float64)
    fold, _ = fold_ids(len(X), None, folds, seed)
    tasks = np.zeros(len(X), dtype=int) if groups is None else np.asarray(groups)
    single = fold_bma(Y, tasks, fold)
    rows_idx = np.arange(len(X))
    q_single = Y[rows_idx, single]
    q_oracle = np.nanmax(Y, axis=1)
    rng = np.random.default_rng(seed)
    boots = resample_rows(len(X), n_boot, rng)
    out = []
    for name, fit in fitters.items():
        P = np.empty_like(Y)
        for f in range(fold.max() + 1):
            te, tr = fold == f, fold != f
            P[te] = fit(X[tr], Y[tr], X[te], None if groups is None else np.asarray(groups)[tr])
        pick = route_rows(P, np.arange(Y.shape[1]), single, available=~np.isnan(Y))
        q = Y[rows_idx, pick]
        gain = q - q_single
        gap = q_oracle - q_single
        # an input without the best single model's result counts in no mean (per_instance_
        # routing skips it too), so that gain = routed − best_single on the same inputs
        has = ~np.isnan(q_single)
        with np.errstate(invalid="ignore", divide="ignore"):
            g_b = np.nanmean(gain[boots], axis=1)
            share_b = g_b / np.nanmean(gap[boots], axis=1)
            share = float(np.mean(gain[has]) / np.mean(gap[has]))
        gain_lo, gain_hi = interval(g_b, point=float(np.mean(gain[has])))
        share_lo, share_hi = interval(share_b, point=share)
        out.append({"predictor": name, "n": int(has.sum()), "models": Y.shape[1],
                    "routed": float(np.mean(q[has])), "best_single": float(np.mean(q_single[has])),
                    "oracle": float(np.mean(q_oracle[has])), "gain": float(np.mean(gain[has])),
                    "gain_lo": gain_lo, "gain_hi": gain_hi, "gap_share": share,
                    "gap_share_lo": share_lo, "gap_share_hi": share_hi,
                    "brier": brier(P, Y)})
        logger.info("%s: routed %.4f vs best single %.4f", name, q.mean(), q_single.mean())
    return pd.DataFrame(out)
