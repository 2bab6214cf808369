"""Linear maps on the tuned kNN P's logits, chosen by CV: a cross-model stack, logistic
regression on the input vector, and their blends with the kNN.

Why: the same inputs trip many models, so the kNN P of the other models says something about
model m that m's own neighbour average misses (m's labels are noisy or sparse near x while the
others' show how hard x is). With z_j(x) = logit(clip(P_knn(j, x), ε, 1 − ε)),

    stack:  P(m, x) = σ(b_m + Σ_j A_jm z_j(x)),     one logistic regression per model m,
    blend:  P(m, x) = σ(w·z_m(x) + (1 − w)·(b_m + Σ_j A_jm z_j(x))),

both a linear map on the logits of the kNN P vector, so routing stays one index search. A
second family reads the query vector q instead of the other models' P:

    logistic:        P(m, x) = σ(b_m + q·W_m),   one logistic regression per model on the vectors,
    logistic blend:  P(m, x) = σ(w·z_m(x) + (1 − w)·(b_m + q·W_m)),

the learned baseline that beat the kNN on AlpacaEval (a smooth boundary over 768 dimensions where
neighbours are few). A third reads which of the pool's tasks the input belongs to:

    task:        P(m, x) = σ(b_m + Σ_j A_jm z_j(x) + Σ_t B_tm T_t(x) + q·W_m),
    task blend:  P(m, x) = σ(w·z_m(x) + (1 − w)·(…)),
                 T(x) = softmax(q·V + c), a multinomial logistic regression on the vectors
                 that predicts the pool task of an input; W penalised 1/s² = 11 times more
                 than the rest (:data:`TASK_VECTOR_SCALE`),

because on a pool of distinct benchmarks the best model is mostly a matter of which benchmark an
input is like, the neighbours mix benchmarks of one format (ARC-Easy with ARC-Challenge, CMMLU
with C-Eval), and a linear boundary over 768 dimensions separates them better (RouterDC: 90% of
held-out inputs put in their own benchmark; docs/routing.md, section 1.5). It helps inputs of
the pool's tasks only, so it is tried only when the tuning folds are random over inputs: with
whole tasks held out, T of a held-out task is noise by construction. All three families are one
:class:`LinearStack`: logit = z·A + q·W + T(q)·B + b. The
stack's regressions are fitted on the out-of-fold kNN P that :class:`~benchroute.tuning.PerInputPredictor`
already computes for its tuning (no second search). A logistic regression rather than a
regression on the logit: labels are 0/1 (or scores in [0, 1]), whose logit is infinite; a
fractional label y enters as two rows (label 1 with weight y, label 0 with weight 1 − y), the
Bernoulli likelihood, as the learned baselines of the experiments do.

Which of the kNN (w = 1), the blends, the stack and the logistic regression (w = 0) a predictor
uses is chosen by the same cross-validation folds: the regressions are refitted without each
fold and scored on it, and the candidate nearest the kNN whose per-input value is within one
standard error of the best candidate's is taken (so a regression must beat the kNN by more than
noise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchroute.exceptions import BenchrouteError
from benchroute.scoring import argmax_ties

#: Logits are taken of P clipped to [ε, 1 − ε], so a confident known model cannot dominate.
EPS = 0.01
#: Weights w of the kNN's own logit in the blend, the kNN first (w = 1) and the stack last.
DEFAULT_BLENDS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)
#: Inverse L2 penalty of each model's logistic regression (sklearn's C).
STACK_C = 1.0
#: ``method="auto"`` tries the stack and the task family (both read every model's logit) up to
#: this many pool models; past it, the logistic family alone: the stack's fit is M regressions on M
#: features per fold (time grows with M² N; 2.3× the kNN tuning's time at 2,000 × 400 here),
#: and on none of the measured pools (7 to 58 models) did CV choose it. ``method="stack"``
#: fits it at any size.
AUTO_MAX_MODELS = 100
#: ``method="auto"`` tries logistic regression on the vectors up to this many label cells
#: (inputs × models): its fit is M regressions on d features per fold, (folds + 1) · M fits in
#: all (RouterDC, 20,600 × 7: the whole tuning took 1.04× its time without them, 30 s here).
#: ``method="logistic"`` fits it at any size.
AUTO_MAX_CELLS = 2_000_000
#: Inverse L2 penalty of the task classifier T (sklearn's C; its inputs are unit vectors, so
#: a weak penalty: RouterDC's benchmarks, 90% right on held-out inputs at C = 10).
TASK_C = 10.0
#: Scale s of the vectors among the task family's features (its per-model regressions then
#: penalise their weights W 1/s² times more): a correction, not the signal. Chosen on
#: RouterDC's inner folds among 1, 0.3 and 0.1 (docs/routing.md, section 1.5): at 1 the
#: vectors' noise swamps the task signal in the routing value, at 0.1 they add nothing.
TASK_VECTOR_SCALE = 0.3
#: ``method="auto"`` tries the task family up to this many pool tasks (the classifier's
#: coefficients are d × tasks, saved with the router) and this many cells inputs × tasks (its
#: multinomial regression costs about N·d·tasks per iteration, fitted folds + 1 times:
#: RouterDC, 20,600 × 10, and MMLU, 14,042 × 57, lie well below).
AUTO_MAX_TASKS = 200
AUTO_MAX_TASK_CELLS = 2_000_000
#: The families of linear maps a predictor may choose from (``families`` of :func:`choose_stack`).
FAMILIES = ("stack", "logistic", "task")


def logits(P: np.ndarray, eps: float = EPS) -> np.ndarray:
    """z = logit(clip(P, ε, 1 − ε)); a model without a prediction (NaN) counts as 0.5."""
    P = np.clip(np.nan_to_num(np.asarray(P, dtype=np.float64), nan=0.5), eps, 1.0 - eps)
    return np.log(P / (1.0 - P))


@dataclass(frozen=True)
class TaskClassifier:
    """T(q) = softmax(q @ coef + intercept): which pool task an input belongs to; coef (d, T),
    one column per task in sorted order (``tasks``)."""

    coef: np.ndarray
    intercept: np.ndarray
    tasks: tuple[str, ...]

    def __call__(self, Q: np.ndarray) -> np.ndarray:
        from scipy.special import softmax

        return softmax(np.asarray(Q, dtype=np.float64) @ self.coef + self.intercept, axis=1)

    @classmethod
    def fit(cls, X: np.ndarray, groups: np.ndarray, C: float = TASK_C) -> TaskClassifier:
        """A multinomial logistic regression of the task on the vectors (scikit-learn's); one
        task gives T = 1 for it."""
        g = np.asarray(groups).astype(str)
        tasks = np.unique(g)
        d = np.asarray(X).shape[1]
        if len(tasks) == 1:
            return cls(np.zeros((d, 1)), np.zeros(1), tuple(tasks))
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=C, max_iter=300).fit(np.asarray(X, dtype=np.float64), g)
        coef, icpt = clf.coef_.T, clf.intercept_
        if len(tasks) == 2:  # scikit-learn keeps one column for two classes: σ(s) = softmax([0, s])
            coef, icpt = np.hstack([np.zeros((d, 1)), coef]), np.r_[0.0, icpt]
        return cls(np.asarray(coef, dtype=np.float64), np.asarray(icpt, dtype=np.float64),
                   tuple(str(t) for t in clf.classes_))

    def to_dict(self) -> dict[str, Any]:
        return {"coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
                "tasks": list(self.tasks)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskClassifier:
        T = len(d["intercept"])
        return cls(np.asarray(d["coef"], dtype=np.float64).reshape(-1, T),
                   np.asarray(d["intercept"], dtype=np.float64), tuple(d["tasks"]))


def task_oof(X: np.ndarray, groups: np.ndarray, fold: np.ndarray, C: float = TASK_C) -> np.ndarray:
    """Out-of-fold T (N, tasks in sorted order): the classifier refitted without each fold; a
    task absent from the training folds gets 0."""
    g = np.asarray(groups).astype(str)
    tasks = np.unique(g)
    T = np.zeros((len(g), len(tasks)))
    for f in range(int(fold.max()) + 1):
        te = fold == f
        clf = TaskClassifier.fit(X[~te], g[~te], C)
        T[np.ix_(te, np.searchsorted(tasks, clf.tasks))] = clf(X[te])
    return T


@dataclass(frozen=True)
class LinearStack:
    """P' = σ(logit(clip(P)) @ coef + Q @ vector_coef + task(Q) @ task_coef + intercept):
    coef (M, M), column m for model m; vector_coef (d, M) or None; task a
    :class:`TaskClassifier` and task_coef (tasks, M), or both None (without either the map
    needs no query vectors Q)."""

    coef: np.ndarray
    intercept: np.ndarray
    knn_weight: float = 0.0
    vector_coef: np.ndarray | None = None
    task: TaskClassifier | None = None
    task_coef: np.ndarray | None = None

    @property
    def reads_vectors(self) -> bool:
        return self.vector_coef is not None or self.task is not None

    def __call__(self, P: np.ndarray, Q: np.ndarray | None = None) -> np.ndarray:
        z = logits(P) @ self.coef + self.intercept
        if self.reads_vectors and Q is None:
            raise BenchrouteError("this predictor's map reads the query vectors (a logistic "
                                  "regression or a task classifier on them); pass them "
                                  "(queries=...)")
        if self.vector_coef is not None:
            z = z + np.asarray(Q, dtype=np.float64) @ self.vector_coef
        if self.task is not None and self.task_coef is not None:
            z = z + self.task(np.asarray(Q)) @ self.task_coef
        return 1.0 / (1.0 + np.exp(-z))

    @property
    def n_models(self) -> int:
        return len(self.intercept)

    def blended(self, w: float) -> LinearStack:
        """The blend with weight ``w`` on the kNN's own logit, as one linear map."""
        eye = np.eye(self.n_models)
        vec = None if self.vector_coef is None else (1.0 - w) * self.vector_coef
        tc = None if self.task_coef is None else (1.0 - w) * self.task_coef
        return LinearStack(w * eye + (1.0 - w) * self.coef, (1.0 - w) * self.intercept, w, vec,
                           self.task, tc)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
                               "knn_weight": self.knn_weight}
        if self.vector_coef is not None:
            out["vector_coef"] = self.vector_coef.tolist()
        if self.task is not None and self.task_coef is not None:
            out["task_classifier"] = self.task.to_dict()
            out["task_coef"] = self.task_coef.tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinearStack:
        M = len(d["intercept"])
        vec = d.get("vector_coef")
        task = d.get("task_classifier")
        return cls(np.asarray(d["coef"], dtype=np.float64).reshape(M, -1),
                   np.asarray(d["intercept"], dtype=np.float64), float(d.get("knn_weight", 0.0)),
                   None if vec is None else np.asarray(vec, dtype=np.float64).reshape(-1, M),
                   None if task is None else TaskClassifier.from_dict(task),
                   None if task is None
                   else np.asarray(d["task_coef"], dtype=np.float64).reshape(-1, M))


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


def _per_model_logistic(F: np.ndarray, Y: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray]:
    """One logistic regression per model on features ``F`` (N, p); labels ``Y`` (N, M) in
    [0, 1], NaN = no result (that row is left out of that model's fit). A model whose labels
    are all equal gets the intercept of its (clipped) mean and no slope."""
    M = Y.shape[1]
    coef, intercept = np.zeros((F.shape[1], M)), np.zeros(M)
    for m in range(M):
        ok = ~np.isnan(Y[:, m])
        y = Y[ok, m]
        if len(y) == 0 or y.min() == y.max():
            mean = float(y.mean()) if len(y) else 0.5
            intercept[m] = float(logits(np.array([mean]))[0])
            continue
        clf = fit_soft_logistic(F[ok], y, C)
        coef[:, m], intercept[m] = clf.coef_[0], clf.intercept_[0]
    return coef, intercept


def fit_stack(Z: np.ndarray, Y: np.ndarray, C: float = STACK_C) -> LinearStack:
    """The cross-model stack: one logistic regression per model on the logits ``Z`` (N, M) of
    every model's P."""
    return LinearStack(*_per_model_logistic(Z, Y, C))


def fit_vector_logistic(X: np.ndarray, Y: np.ndarray, C: float = STACK_C) -> LinearStack:
    """Logistic regression on the input vectors ``X`` (N, d), one per model, as a map that
    ignores the kNN P (coef 0) until blended."""
    W, b = _per_model_logistic(np.asarray(X, dtype=np.float64), Y, C)
    return LinearStack(np.zeros((Y.shape[1], Y.shape[1])), b, 0.0, W)


def task_features(Z: np.ndarray, T: np.ndarray, X: np.ndarray) -> np.ndarray:
    """The task family's regressors: [Z, T, s·X] (s = :data:`TASK_VECTOR_SCALE`)."""
    return np.hstack([Z, T, TASK_VECTOR_SCALE * np.asarray(X, dtype=np.float64)])


def fit_task_stack(Z: np.ndarray, T: np.ndarray, X: np.ndarray, task: TaskClassifier,
                   Y: np.ndarray, C: float = STACK_C) -> LinearStack:
    """The stack with the task classifier's output and the scaled vectors beside the logits:
    one logistic regression per model on :func:`task_features`, fitted on out-of-fold T
    (``T`` (N, tasks), columns in ``task.tasks``'s order), applied with ``task`` (fitted on
    every row)."""
    M, n_tasks = Y.shape[1], T.shape[1]
    coef, b = _per_model_logistic(task_features(Z, T, X), Y, C)
    return LinearStack(coef[:M], b, 0.0, TASK_VECTOR_SCALE * coef[M + n_tasks:], task,
                       coef[M:M + n_tasks])


def per_input_value(P: np.ndarray, Y: np.ndarray, objective: str,
                    prefer: int | None = None) -> np.ndarray:
    """Per input, what CV maximises: the true quality of argmax P (``route``; models without a
    result never chosen, ties to ``prefer``, the pool's best model on average, as
    ``Router.route`` breaks them) or minus the mean squared error of P over the labelled cells
    (``brier``). NaN where nothing is known."""
    has = ~np.isnan(Y).all(axis=1)
    if objective == "route":
        pick = argmax_ties(np.where(np.isnan(Y), -np.inf, P), prefer=prefer)
        out = Y[np.arange(len(Y)), pick]
    else:
        sq = np.where(np.isnan(Y), 0.0, (P - np.nan_to_num(Y)) ** 2)
        out = -sq.sum(axis=1) / np.maximum((~np.isnan(Y)).sum(axis=1), 1)
    return np.where(has, out, np.nan)


def simplest_within_one_se(values: Sequence[np.ndarray]) -> tuple[int, list[float], list[float]]:
    """The one-standard-error rule over per-input CV values (NaN = no label), candidates in order
    of preference, the simplest first: the first whose mean is within one standard error of the
    paired per-input difference from the best. Returns its position, the means and those
    standard errors. The choice of map and of calibration both use it, so neither trades
    simplicity for noise by a rule of its own."""
    with np.errstate(invalid="ignore"):
        means = [float(np.nanmean(v)) if np.isfinite(v).any() else np.nan for v in values]
    if np.isnan(means).all():  # nothing labelled to judge by: the simplest
        return 0, means, [0.0] * len(values)
    best = int(np.nanargmax(means))  # the first best in order of preference
    ses = []
    for v in values:
        d = values[best] - v
        d = d[~np.isnan(d)]
        ses.append(float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0)
    at = next(i for i in range(len(values)) if means[best] - means[i] <= ses[i] or i == best)
    return at, means, ses


def method_name(w: float, family: str = "stack") -> str:
    """"knn" (w = 1); "blend"/"stack", "logistic_blend"/"logistic" or "task_blend"/"task" for
    the three families."""
    if w == 1.0:
        return "knn"
    if family == "stack":
        return "stack" if w == 0.0 else "blend"
    return family if w == 0.0 else f"{family}_blend"


#: Every value of ``method_name``: what a saved predictor's ``method`` may be.
METHOD_NAMES = ("knn", "blend", "stack", "logistic_blend", "logistic", "task_blend", "task")


@dataclass(frozen=True)
class StackChoice:
    """The candidate chosen (``method``, one of :data:`METHOD_NAMES`; ``stack`` None for the
    kNN), its out-of-fold P, and the CV evidence: one row per candidate (``method``,
    ``knn_weight``, ``value``, ``se`` of its difference from the best, ``chosen``)."""

    method: str
    stack: LinearStack | None
    oof: np.ndarray
    table: pd.DataFrame


def _oof_logits(F: np.ndarray, Y: np.ndarray, fold: np.ndarray, C: float) -> np.ndarray:
    """Out-of-fold logits of one logistic regression per model on features ``F``."""
    lin = np.empty(Y.shape)
    for f in range(int(fold.max()) + 1):
        te = fold == f
        coef, b = _per_model_logistic(F[~te], Y[~te], C)
        lin[te] = F[te] @ coef + b
    return lin


def choose_stack(P: np.ndarray, Y: np.ndarray, fold: np.ndarray, objective: str = "brier",
                 blends: Sequence[float] = DEFAULT_BLENDS, C: float = STACK_C,
                 families: Sequence[str] = ("stack",), X: np.ndarray | None = None,
                 groups: np.ndarray | None = None, prefer: int | None = None,
                 Y_fit: np.ndarray | None = None) -> StackChoice:
    """Cross-validated choice among the kNN, the blends, the stack and the logistic regression.

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
    families : which of :data:`FAMILIES` to try ("stack": on the logits of every model's P;
        "logistic": on the input vectors ``X``, which it then needs; "task": on the logits and
        the task classifier's out-of-fold T, which needs ``X`` and the task of each row,
        ``groups``).
    """
    bad = [f for f in families if f not in FAMILIES]
    if bad or (("logistic" in families or "task" in families) and X is None) or (
            "task" in families and groups is None):
        raise BenchrouteError(f"families {list(families)}: each must be one of {list(FAMILIES)}"
                              ", 'logistic' needs the vectors X, 'task' X and the groups")
    Z = logits(P)
    Xv = None if X is None else np.asarray(X)
    T = task_oof(Xv, np.asarray(groups), fold) if "task" in families and Xv is not None else None
    feats: dict[str, np.ndarray] = {}
    for fam in families:
        if fam == "stack":
            feats[fam] = Z
        elif fam == "logistic":
            feats[fam] = np.asarray(X, dtype=np.float64)
        elif Xv is not None and T is not None:
            feats[fam] = task_features(Z, T, Xv)
    # each fold's regressions learn from Y_fit (default Y): the tuning leaves out the labels of
    # inputs with a near-copy in another fold
    lin = {fam: _oof_logits(feats[fam], Y if Y_fit is None else Y_fit, fold, C)
           for fam in families}
    # candidates in order of preference: the kNN, then each weight for each family
    order = [("knn", 1.0)] if 1.0 in blends else []
    order += [(fam, w) for w in blends if w != 1.0 for fam in families]
    cands = {c: P if c[1] == 1.0 else 1.0 / (1.0 + np.exp(-(c[1] * Z + (1.0 - c[1]) * lin[c[0]])))
             for c in order}
    values = [per_input_value(cands[c], Y, objective, prefer) for c in order]
    at, means, ses = simplest_within_one_se(values)
    chosen = order[at]
    table = pd.DataFrame({"method": [method_name(w, fam) for fam, w in order],
                          "knn_weight": [w for _, w in order], "value": means, "se": ses,
                          "chosen": [i == at for i in range(len(order))]})
    fam, w = chosen
    stack = None
    if w != 1.0:
        if fam == "stack":
            full = fit_stack(Z, Y, C)
        elif fam == "logistic":
            full = fit_vector_logistic(feats[fam], Y, C)
        elif Xv is not None and T is not None:
            full = fit_task_stack(Z, T, Xv, TaskClassifier.fit(Xv, np.asarray(groups)), Y, C)
        stack = full.blended(w)
    return StackChoice(method_name(w, fam), stack, cands[chosen], table)


def choose_map(method: str, P: np.ndarray, Y: np.ndarray, fold: np.ndarray, X: np.ndarray,
               objective: str = "brier", groups: np.ndarray | None = None,
               random_folds: bool = False, prefer: int | None = None,
               Y_fit: np.ndarray | None = None) -> StackChoice | None:
    """What :class:`~benchroute.tuning.PerInputPredictor`'s ``method`` asks for: one family
    forced ("stack", "logistic", "task"), or for "auto" the kNN against every family within its
    size limits (:data:`AUTO_MAX_MODELS`, :data:`AUTO_MAX_CELLS`, :data:`AUTO_MAX_TASKS`,
    :data:`AUTO_MAX_TASK_CELLS`; the task family only with ``random_folds``, see the module's
    text); None for "knn" or an "auto" pool past every limit (the kNN, untried)."""
    n_tasks = 0 if groups is None else len(np.unique(groups))
    if method == "task" and (n_tasks < 2 or not random_folds):
        raise BenchrouteError("method 'task' needs the task of each pool input, at least two "
                              "tasks and random tuning folds (folds_by='random'; with whole "
                              "tasks held out the classifier of a held-out task is noise)")
    if method in FAMILIES:
        return choose_stack(P, Y, fold, objective, (0.0,), families=(method,), X=X,
                            groups=groups, prefer=prefer, Y_fit=Y_fit)
    if method != "auto":
        return None
    # the stack and the task family read every model's logit (M² weights): up to
    # AUTO_MAX_MODELS; the logistic family's M regressions on the vectors grow with the cells
    few_models = Y.shape[1] <= AUTO_MAX_MODELS
    fams = [f for f in FAMILIES if (f == "logistic" or few_models)
            and (f == "stack" or Y.size <= AUTO_MAX_CELLS)]
    if not fams:
        return None
    if "task" in fams and not (random_folds and 2 <= n_tasks <= AUTO_MAX_TASKS
                               and len(Y) * n_tasks <= AUTO_MAX_TASK_CELLS):
        fams.remove("task")
    return choose_stack(P, Y, fold, objective, DEFAULT_BLENDS, families=fams, X=X,
                        groups=groups, prefer=prefer, Y_fit=Y_fit)
