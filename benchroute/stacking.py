"""A cross-model stack on the tuned kNN P: each model's P(m, x) predicted from every model's.

Why: the same inputs trip many models, so the kNN P of the other models says something about
model m that m's own neighbour average misses (m's labels are noisy or sparse near x while the
others' show how hard x is). With z_j(x) = logit(clip(P_knn(j, x), ε, 1 − ε)),

    stack:  P(m, x) = σ(b_m + Σ_j A_jm z_j(x)),     one logistic regression per model m,
    blend:  P(m, x) = σ(w·z_m(x) + (1 − w)·(b_m + Σ_j A_jm z_j(x))),

both a linear map on the logits of the kNN P vector, so routing stays one index search. The
regressions are fitted on the out-of-fold kNN P that :class:`~benchroute.tuning.PerInputPredictor`
already computes for its tuning (no second search). A logistic regression rather than a
regression on the logit: labels are 0/1 (or scores in [0, 1]), whose logit is infinite; a
fractional label y enters as two rows (label 1 with weight y, label 0 with weight 1 − y), the
Bernoulli likelihood, as the learned baselines of the experiments do.

Which of the kNN (w = 1), the blends and the stack (w = 0) a predictor uses is chosen by the
same cross-validation folds: the regressions are refitted without each fold and scored on it,
and the candidate nearest the kNN whose per-input value is within one standard error of the
best candidate's is taken (so the stack must beat the kNN by more than noise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchroute.scoring import argmax_ties

#: Logits are taken of P clipped to [ε, 1 − ε], so a confident known model cannot dominate.
EPS = 0.01
#: Weights w of the kNN's own logit in the blend, the kNN first (w = 1) and the stack last.
DEFAULT_BLENDS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)
#: Inverse L2 penalty of each model's logistic regression (sklearn's C).
STACK_C = 1.0
#: ``method="auto"`` tries the stack up to this many pool models: its fit is M regressions on M
#: features per fold (time grows with M² N; 2.3× the kNN tuning's time at 2,000 × 400 here),
#: and on none of the measured pools (7 to 58 models) did CV choose it. ``method="stack"``
#: fits it at any size.
AUTO_MAX_MODELS = 100


def logits(P: np.ndarray) -> np.ndarray:
    """z = logit(clip(P, ε, 1 − ε)); a model without a prediction (NaN) counts as 0.5."""
    P = np.clip(np.nan_to_num(np.asarray(P, dtype=np.float64), nan=0.5), EPS, 1.0 - EPS)
    return np.log(P / (1.0 - P))


@dataclass(frozen=True)
class LinearStack:
    """P' = σ(logit(clip(P)) @ coef + intercept): coef (M, M), column m for model m."""

    coef: np.ndarray
    intercept: np.ndarray
    knn_weight: float = 0.0

    def __call__(self, P: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(logits(P) @ self.coef + self.intercept)))

    @property
    def n_models(self) -> int:
        return len(self.intercept)

    def blended(self, w: float) -> LinearStack:
        """The blend with weight ``w`` on the kNN's own logit, as one linear map."""
        eye = np.eye(self.n_models)
        return LinearStack(w * eye + (1.0 - w) * self.coef, (1.0 - w) * self.intercept, w)

    def to_dict(self) -> dict[str, Any]:
        return {"coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
                "knn_weight": self.knn_weight}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinearStack:
        return cls(np.asarray(d["coef"], dtype=np.float64).reshape(len(d["intercept"]), -1),
                   np.asarray(d["intercept"], dtype=np.float64), float(d.get("knn_weight", 0.0)))


def fit_soft_logistic(X: np.ndarray, y: np.ndarray, C: float = STACK_C,
                      max_iter: int = 1000) -> Any:
    """A scikit-learn LogisticRegression on labels in [0, 1]: 0/1 labels as they are, a
    fractional label y as two rows (1 with weight y, 0 with weight 1 − y), whose weighted
    log-loss is the Bernoulli cross-entropy with y. The one place this is written."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, dtype=np.float64)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    if np.isin(y, (0.0, 1.0)).all():
        return clf.fit(X, y.astype(int))
    n = len(y)
    return clf.fit(np.vstack([X, X]), np.r_[np.ones(n), np.zeros(n)],
                   sample_weight=np.r_[y, 1.0 - y])


def fit_stack(Z: np.ndarray, Y: np.ndarray, C: float = STACK_C) -> LinearStack:
    """One logistic regression per model on the logits ``Z`` (N, M) of every model's P; labels
    ``Y`` (N, M) in [0, 1], NaN = no result (that row is left out of that model's fit)."""
    M = Y.shape[1]
    coef, intercept = np.zeros((Z.shape[1], M)), np.zeros(M)
    for m in range(M):
        ok = ~np.isnan(Y[:, m])
        y = Y[ok, m]
        if len(y) == 0 or y.min() == y.max():
            mean = float(y.mean()) if len(y) else 0.5
            intercept[m] = float(logits(np.array([mean]))[0])
            continue
        clf = fit_soft_logistic(Z[ok], y, C)
        coef[:, m], intercept[m] = clf.coef_[0], clf.intercept_[0]
    return LinearStack(coef, intercept)


def per_input_value(P: np.ndarray, Y: np.ndarray, objective: str) -> np.ndarray:
    """Per input, what CV maximises: the true quality of argmax P (``route``; models without a
    result never chosen, ties by :func:`benchroute.scoring.argmax_ties`) or minus the mean
    squared error of P over the labelled cells (``brier``). NaN where nothing is known."""
    has = ~np.isnan(Y).all(axis=1)
    if objective == "route":
        pick = argmax_ties(np.where(np.isnan(Y), -np.inf, P))
        out = Y[np.arange(len(Y)), pick]
    else:
        sq = np.where(np.isnan(Y), 0.0, (P - np.nan_to_num(Y)) ** 2)
        out = -sq.sum(axis=1) / np.maximum((~np.isnan(Y)).sum(axis=1), 1)
    return np.where(has, out, np.nan)


@dataclass(frozen=True)
class StackChoice:
    """The candidate chosen (``method`` "knn", "blend" or "stack"; ``stack`` None for the kNN),
    its out-of-fold P, and the CV evidence: one row per candidate (``knn_weight``, ``value``,
    ``se`` of its difference from the best)."""

    method: str
    stack: LinearStack | None
    oof: np.ndarray
    table: pd.DataFrame


def method_name(w: float) -> str:
    return "knn" if w == 1.0 else "stack" if w == 0.0 else "blend"


def choose_stack(P: np.ndarray, Y: np.ndarray, fold: np.ndarray, objective: str = "route",
                 blends: Sequence[float] = DEFAULT_BLENDS, C: float = STACK_C) -> StackChoice:
    """Cross-validated choice among the kNN, the blends and the stack.

    Parameters
    ----------
    P : ndarray (N, M)
        Out-of-fold kNN P of the pool (uncalibrated).
    Y : ndarray (N, M)
        Labels, NaN = no result.
    fold : ndarray (N,)
        The fold of each row (the tuning folds); the regressions are refitted without each fold
        to predict it.
    blends : weights w on the kNN's own logit, in order of preference (the first is the
        simplest; 1 is the kNN itself).
    """
    Z = logits(P)
    lin = np.empty_like(P)
    for f in range(int(fold.max()) + 1):
        te = fold == f
        s = fit_stack(Z[~te], Y[~te], C)
        lin[te] = Z[te] @ s.coef + s.intercept
    cands = {w: P if w == 1.0 else 1.0 / (1.0 + np.exp(-(w * Z + (1.0 - w) * lin)))
             for w in blends}
    values = {w: per_input_value(Q, Y, objective) for w, Q in cands.items()}
    means = {w: float(np.nanmean(v)) for w, v in values.items()}
    best = max(blends, key=lambda w: means[w])  # first best in order of preference
    ses = {}
    for w in blends:
        d = values[best] - values[w]
        d = d[~np.isnan(d)]
        ses[w] = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    table = pd.DataFrame({"method": [method_name(w) for w in blends], "knn_weight": list(blends),
                          "value": [means[w] for w in blends], "se": [ses[w] for w in blends]})
    # the simplest candidate within one standard error of the best
    chosen = next(w for w in blends if means[best] - means[w] <= ses[w])
    table["chosen"] = table["knn_weight"] == chosen
    stack = None if chosen == 1.0 else fit_stack(Z, Y, C).blended(chosen)
    return StackChoice(method_name(chosen), stack, cands[chosen], table)
