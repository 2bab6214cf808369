"""A per-input correctness predictor P(m, x) whose k, weighting and shrinkage are chosen by
cross-validation at fit time, then calibrated where that cross-validation says it helps.

Why: with a small fixed k (the router's default is 5), ``argmax_m g_m(x)`` over many models picks whichever model looked best
by chance among five neighbours (a winner's curse that grows with the number of models), and
routes *worse* than always calling the best single model. Two knobs fix that, and the data can
choose them: a larger k, and a Beta–binomial posterior that shrinks each neighbour average
toward the model's mean quality,

    P(m, x) = (sum_i w_i y_im + a * mean_m) / (sum_i w_i + a),

with pseudo-count ``a`` (a = 0 is the plain kNN average; a → ∞ is "always the best single
model"). The cost-aware policies compare P with thresholds, so P is then calibrated (isotonic,
pooled over models, fitted on out-of-fold predictions) where the same cross-validation says the
map improves the Brier score, and its Brier score and reliability table are recorded.

Beside the kNN P, a cross-model stack (:mod:`benchroute.stacking`: each model's P from the
logits of every model's, one logistic regression per model, fitted on the same out-of-fold P),
logistic regression on the input vectors, and their blends with the kNN compete by the same
cross-validation (``method="auto"``); the choice is a linear map on the kNN P's logits (plus
one on the query vector) before calibration, so routing stays one search.

Everything works on arrays (X, Y, groups), so it does not depend on the router's internals.
faiss is imported only when a predictor is fitted.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from benchroute._persist import finite_or_null
from benchroute.exceptions import BenchrouteError, NotFittedError
from benchroute.predictors import (
    EXTRA_NEIGHBOURS,
    NEAR_DUPLICATE,
    Estimator,
    KNNSums,
    column_means,
    first_kept,
    kept_mask,
    knn_mean,
    past_copies,
)
from benchroute.sampling import is_cap, query_mask
from benchroute.scoring import best_on_average, task_means
from benchroute.stacking import (
    FAMILIES,
    LinearStack,
    choose_map,
    per_input_value,
    simplest_within_one_se,
)

logger = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 40, 80, 160)
DEFAULT_WEIGHTS: tuple[str, ...] = ("uniform", "distance")
DEFAULT_PRIORS: tuple[float, ...] = (0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
OBJECTIVES = ("route", "brier")
CALIBRATIONS = ("auto", "isotonic", "none")
METHODS = ("auto", "knn", "stack", "logistic", "task")
#: How the tuning folds are made: whole tasks held out ("task") or random over inputs.
FOLDS_BY = ("task", "random")
# keeps the calibrated map strictly increasing, so calibration never changes an argmax
_TILT = 1e-6


# ---------------------------------------------------------------------- array primitives
def knn_search(pool: np.ndarray, queries: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search: cosine distances (n, K) ascending and pool rows (n, K)."""
    import faiss

    pool = np.ascontiguousarray(pool, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    K = max(1, min(K, len(pool)))
    sims, rows = faiss.knn(queries, pool, K, metric=faiss.METRIC_INNER_PRODUCT)
    return 1.0 - sims.astype(np.float64), rows


#: Pool rows copied and searched at a time by :func:`knn_search_among` (64 MiB of 768-d vectors).
_SEARCH_ROWS = 21_845


def knn_search_among(pool: np.ndarray, rows: np.ndarray, queries: np.ndarray, K: int,
                     chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn_search` among the pool ``rows`` only: cosine distances (n, K) ascending and
    pool rows (n, K), -1 (distance inf) past the end of the subset.

    Why: a fold's training rows are most of the pool, and copying them to search would double
    a large pool's vectors in memory. The subset is searched a chunk of rows at a time and the
    chunks' results merged in FAISS's own result heap; a subset of one chunk (``chunk`` rows,
    default :data:`_SEARCH_ROWS`) is searched in one call, exactly as :func:`knn_search` would.
    Neighbours at exactly the same distance (duplicate vectors) may come in another order
    than from one call.
    """
    import faiss

    rows = np.asarray(rows, dtype=np.int64)
    chunk = chunk or _SEARCH_ROWS
    if len(rows) == 0:  # nothing to find: one "no neighbour" column, as an empty pool gives
        return np.full((len(queries), 1), np.inf), np.full((len(queries), 1), -1, dtype=np.int64)
    if len(rows) <= chunk:
        dist, found = knn_search(pool[rows], queries, K)
        return np.where(found < 0, np.inf, dist), np.where(found < 0, -1, rows[found])
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    K = max(1, min(K, len(rows)))
    heap = faiss.ResultHeap(len(queries), K, keep_max=True)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        sims, found = faiss.knn(queries, np.ascontiguousarray(pool[part], dtype=np.float32),
                                min(K, len(part)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(sims, np.where(found < 0, -1, part[found]))
    heap.finalize()
    missing = heap.I < 0
    return np.where(missing, np.inf, 1.0 - heap.D.astype(np.float64)), heap.I


def fold_ids(n: int, groups: Sequence[Any] | np.ndarray | None = None, folds: int = 5,
             seed: int = 0) -> tuple[np.ndarray, str]:
    """Fold number of each row, and how the folds were made.

    Grouped (whole tasks held out, sklearn's GroupKFold) when ``groups`` has at least two
    distinct values, so that tuning sees the situation a new task is in; otherwise seeded random
    folds over rows.
    """
    if folds < 2:
        raise BenchrouteError(f"folds == {folds}, must be >= 2")
    if n < 2:
        raise BenchrouteError(f"cross-validation needs at least 2 inputs, got {n}")
    g = None if groups is None else np.asarray(groups)
    if g is not None and len(g) != n:
        raise BenchrouteError(f"groups has {len(g)} entries for {n} inputs")
    if g is not None and len(np.unique(g)) >= 2:
        from sklearn.model_selection import GroupKFold

        n_splits = min(folds, len(np.unique(g)))
        out = np.empty(n, dtype=int)
        for f, (_, test) in enumerate(GroupKFold(n_splits).split(np.zeros(n), groups=g)):
            out[test] = f
        return out, f"GroupKFold({n_splits}) over tasks"
    n_splits = min(folds, n)
    return np.random.default_rng(seed).permutation(n) % n_splits, f"{n_splits} random folds"


def knn_posterior(distances: np.ndarray, labels: np.ndarray, k: int, weights: str,
                  prior: float, means: np.ndarray) -> np.ndarray:
    """P (n, M) from the first k neighbours: the shrunken, optionally distance-weighted mean of
    :func:`benchroute.predictors.knn_mean` (the router's g is the same with ``prior`` 0)."""
    return knn_mean(distances, labels, k, weights, means, prior)[0]


def route_value(P: np.ndarray, Y: np.ndarray, prefer: int | None = None) -> float:
    """Mean true quality of argmax_m P over inputs (models without a result are never chosen;
    ties to ``prefer``, the best model on average, as routing breaks them)."""
    return float(np.nanmean(per_input_value(P, Y, "route", prefer)))


def brier(P: np.ndarray, Y: np.ndarray) -> float:
    """Mean squared error of P against the labels over the cells that have one; NaN, without
    NumPy's warning, where none has (a capped sample of scored inputs without a label)."""
    mask = ~np.isnan(Y)
    return float(np.mean((P[mask] - Y[mask]) ** 2)) if mask.any() else math.nan


def reliability_table(P: np.ndarray, Y: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Mean predicted P and mean label in equal-width bins of P (a reliability diagram's data)."""
    mask = ~np.isnan(Y)
    p, y = P[mask], Y[mask]
    b = np.clip((p * bins).astype(int), 0, bins - 1)
    rows = [{"bin": f"[{i / bins:.1f}, {(i + 1) / bins:.1f})", "n": int((b == i).sum()),
             "mean_p": float(p[b == i].mean()) if (b == i).any() else np.nan,
             "mean_y": float(y[b == i].mean()) if (b == i).any() else np.nan}
            for i in range(bins)]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Calibration:
    """A monotone map raw P → calibrated P (isotonic, pooled over models), as breakpoints."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, P: np.ndarray) -> np.ndarray:
        if len(self.x) == 0:
            return P
        # a convex mix with P itself stays in [0, 1] and is strictly increasing
        return (1.0 - _TILT) * np.interp(P, self.x, self.y) + _TILT * np.clip(P, 0.0, 1.0)

    @classmethod
    def fit(cls, P: np.ndarray, Y: np.ndarray) -> Calibration:
        from sklearn.isotonic import IsotonicRegression

        mask = ~np.isnan(Y)
        if not mask.any():  # a tuning fold whose other folds hold no label: nothing to map by
            return cls.identity()
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(P[mask].ravel(), Y[mask].ravel())
        return cls(np.asarray(iso.X_thresholds_, dtype=float), np.asarray(iso.y_thresholds_, dtype=float))

    @classmethod
    def identity(cls) -> Calibration:
        return cls(np.array([]), np.array([]))

    def to_dict(self) -> dict[str, list[float]]:
        return {"x": self.x.tolist(), "y": self.y.tolist()}


def choose_calibration(P: np.ndarray, Y: np.ndarray, fold: np.ndarray, how: str,
                       Y_fit: np.ndarray | None = None
                       ) -> tuple[Calibration, np.ndarray, np.ndarray]:
    """The calibration ``how`` asks for, and the evidence: (the map fitted on every labelled
    row, the cross-fitted calibrated P, the out-of-fold P the predictor gives: calibrated or not).

    Each fold is calibrated by a map fitted on the other folds' ``Y_fit`` (default ``Y``).
    "auto" keeps the map only where its cross-fitted Brier score beats the raw P's by more than
    one standard error (:func:`benchroute.stacking.simplest_within_one_se`, the rule that chooses
    the map): with whole tasks held out, a map learnt on other tasks made the default's Brier
    score worse on every pool of docs/routing.md (RouterDC, five routers: 0.2454 against 0.2520
    on average). The Brier
    score judges it whatever the tuning's objective, since a strictly increasing map never
    changes an argmax."""
    if how == "none":
        return Calibration.identity(), P, P
    fit_on = Y if Y_fit is None else Y_fit
    Pc = np.empty_like(P)
    for f in range(int(fold.max()) + 1):
        te = fold == f
        Pc[te] = Calibration.fit(P[~te], fit_on[~te])(P[te])
    if how == "auto":
        at, _, _ = simplest_within_one_se([per_input_value(P, Y, "brier"),
                                           per_input_value(Pc, Y, "brier")])
        if at == 0:
            return Calibration.identity(), Pc, P
    return Calibration.fit(P, Y), Pc, Pc


# ---------------------------------------------------------------------- the predictor
@dataclass(frozen=True)
class Tuning:
    """What cross-validation chose, and the evidence.

    ``grid`` has one row per (k, weights, prior) with the out-of-fold ``route`` value (mean
    quality of argmax P) and ``brier``; ``brier_raw`` / ``brier_calibrated`` are out-of-fold
    Brier scores of the chosen configuration before and after calibration (the calibration map
    itself cross-fitted over the same folds), and ``calibrated`` says whether the predictor
    applies the map (``calibration="auto"`` keeps it only where it helps);
    ``reliability`` bins the out-of-fold P the predictor gives.
    ``method`` is what the second CV chose on the chosen kNN's out-of-fold P (one of
    :data:`benchroute.stacking.METHOD_NAMES`, :func:`benchroute.stacking.choose_stack`),
    ``knn_weight`` the blend's weight on
    the kNN, and ``methods`` its evidence (one row per candidate: CV value and standard error).
    """

    k: int
    weights: str
    prior: float
    objective: str
    cv: str
    score: float
    brier_raw: float
    brier_calibrated: float
    grid: pd.DataFrame = field(repr=False)
    reliability: pd.DataFrame = field(repr=False)
    method: str = "knn"
    knn_weight: float = 1.0
    methods: pd.DataFrame | None = field(default=None, repr=False)
    calibrated: bool = True

    def summary(self) -> str:
        text = (f"k = {self.k}, weights = {self.weights}, shrinkage prior = {self.prior:g} "
                f"pseudo-neighbours (chosen by {self.cv}, objective {self.objective} = "
                f"{self.score:.4f}); Brier {self.brier_raw:.4f} raw, "
                f"{self.brier_calibrated:.4f} calibrated"
                f"{'' if self.calibrated else ' (calibration not kept)'}")
        if self.methods is not None:
            cv = ", ".join(f"{r.method} w={r.knn_weight:g}: {r.value:.4f}"
                           for r in self.methods.itertuples())
            text += f"; kNN, stack or logistic: {self.method} chosen ({cv})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON values; a score that no scored input could give (NaN: a capped
        sample of pool inputs without one label) is null, since JSON has no NaN and a router
        that saved it failed with a raw ValueError."""
        out = {"k": self.k, "weights": self.weights, "prior": self.prior,
               "objective": self.objective, "cv": self.cv, "score": self.score,
               "brier_raw": self.brier_raw, "brier_calibrated": self.brier_calibrated,
               "calibrated": self.calibrated, "method": self.method, "knn_weight": self.knn_weight}
        if self.methods is not None:
            out["cv_methods"] = self.methods.to_dict(orient="records")
        return finite_or_null(out)


class PerInputPredictor(Estimator):
    """P(m, x): a shrunken kNN average whose k, weighting and prior are tuned by CV, then
    calibrated where the same CV says the map helps.

    Parameters
    ----------
    k, weights, prior : int / str / float or "auto"
        Fixed values, or "auto" to choose among ``ks``, ``weight_options``, ``priors`` by
        ``folds``-fold cross-validation (grouped by task when ``groups`` are given to ``fit``
        and ``folds_by`` is "task").
    objective : {"brier", "route"}
        What CV maximises: minus the Brier score (the default: a proper scoring rule, so the
        choice rewards accurate P everywhere, which every policy reads), or the mean true
        quality of argmax_m P (what "best" routing earns, but a step function of P whose
        maximum over many candidates is itself noisy; measured in docs/routing.md, 1.3).
    calibration : {"auto", "isotonic", "none"}
        Isotonic regression of P on the labels, pooled over models: "auto" (the default)
        applies it where the tuning's cross-validation says it lowers the Brier score by more
        than one standard error, "isotonic" always, "none" never (:func:`choose_calibration`).
    method : {"auto", "knn", "stack", "logistic", "task"}
        "knn": the tuned kNN P; "stack": the cross-model stack on it; "logistic": logistic
        regression on the vectors; "task": the stack with a classifier of the pool task beside
        it (:mod:`benchroute.stacking`; needs ``groups``); "auto": the kNN, the stack, the
        logistic regression, the task stack or a blend, whichever CV prefers (the kNN unless
        another is better by more than a standard error; the kNN when nothing else is
        cross-validated: fixed values and no calibration, or with more than
        ``stacking.AUTO_MAX_MODELS`` pool models; the logistic regression only up to
        ``stacking.AUTO_MAX_CELLS`` labels; the task stack only with random folds, at most
        ``stacking.AUTO_MAX_TASKS`` tasks).
    folds_by : {"task", "random"}
        "task" (the default) holds whole tasks out of each tuning fold, so the choices fit
        inputs of a task the pool lacks; "random" deals inputs to folds at random, which fits
        inputs of the pool's own tasks (and lets "auto" try the task stack). Without
        ``groups`` the folds are random either way.
    folds, seed : int
    max_task_queries : int, optional
        At most this many inputs of each task (``groups``) are scored in the cross-validation,
        the choice of method and the calibration, a sample drawn by ``seed``
        (:func:`benchroute.sampling.query_mask`); their neighbours still come from the whole
        pool outside their fold. None: every input.
    """

    _fitted_attribute = "means_"

    def __init__(self, k: int | str = "auto", weights: str = "auto", prior: float | str = "auto",
                 objective: str = "brier", calibration: str = "auto", method: str = "auto",
                 folds: int = 5, seed: int = 0, ks: Sequence[int] = DEFAULT_KS,
                 weight_options: Sequence[str] = DEFAULT_WEIGHTS,
                 priors: Sequence[float] = DEFAULT_PRIORS,
                 max_task_queries: int | None = None, folds_by: str = "task") -> None:
        self.k = k
        self.weights = weights
        self.prior = prior
        self.objective = objective
        self.calibration = calibration
        self.method = method
        self.folds = folds
        self.seed = seed
        self.ks = ks
        self.weight_options = weight_options
        self.priors = priors
        self.max_task_queries = max_task_queries
        self.folds_by = folds_by

    def _grid(self) -> list[tuple[int, str, float]]:
        ks = list(self.ks) if self.k == "auto" else [self.k]
        ws = list(self.weight_options) if self.weights == "auto" else [self.weights]
        ps = list(self.priors) if self.prior == "auto" else [self.prior]
        bad = [k for k in ks if not isinstance(k, (int, np.integer)) or k < 1]
        if bad or not ks:
            raise BenchrouteError(f"k values {bad or ks} invalid: each must be an int >= 1")
        if any(w not in DEFAULT_WEIGHTS for w in ws) or not ws:
            raise BenchrouteError(f"weights {ws} invalid: each must be 'uniform' or 'distance'")
        if any(not isinstance(p, (int, float)) or p < 0 for p in ps) or not ps:
            raise BenchrouteError(f"prior values {ps} invalid: each must be a number >= 0")
        if self.objective not in OBJECTIVES:
            raise BenchrouteError(f"objective == {self.objective!r}; choose one of {list(OBJECTIVES)}")
        if self.calibration not in CALIBRATIONS:
            raise BenchrouteError(f"calibration == {self.calibration!r}; choose one of {list(CALIBRATIONS)}")
        if self.method not in METHODS:
            raise BenchrouteError(f"method == {self.method!r}; choose one of {list(METHODS)}")
        if self.folds_by not in FOLDS_BY:
            raise BenchrouteError(f"folds_by == {self.folds_by!r}; choose one of {list(FOLDS_BY)}")
        if not is_cap(self.max_task_queries):
            raise BenchrouteError(f"max_task_queries == {self.max_task_queries!r}; expected None "
                                  "or an integer >= 2")
        return [(int(k), w, float(p)) for k in ks for w in ws for p in ps]

    def fit(self, X: np.ndarray, Y: np.ndarray,
            groups: Sequence[Any] | np.ndarray | None = None) -> PerInputPredictor:
        """Tune on out-of-fold predictions, choose the calibration, and keep (X, Y) as the pool.

        Parameters
        ----------
        X : ndarray (N, d)
            Unit-norm input embeddings.
        Y : ndarray (N, M)
            Quality labels in [0, 1]; NaN = no result.
        groups : array (N,), optional
            Task of each input; CV holds whole tasks out when there are at least two and
            ``folds_by`` is "task"; the task stack learns them.
        """
        grid = self._grid()
        X = np.ascontiguousarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float64)
        if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
            raise BenchrouteError(f"X (N, d) and Y (N, M) must share N; got {X.shape}, {Y.shape}")
        if np.nanmin(Y) < 0 or np.nanmax(Y) > 1:
            raise BenchrouteError(f"Y must lie in [0, 1]; got [{np.nanmin(Y)}, {np.nanmax(Y)}]")
        self.X_: np.ndarray | None = X
        self.Y_: np.ndarray | None = Y
        self.means_ = column_means(Y)
        self.n_models_ = Y.shape[1]
        self.stack_: LinearStack | None = None
        self.method_: str = "knn"
        self.fallback_: str | None = None
        self.calibration_knn_ = Calibration.identity()
        needs_cv = len(grid) > 1 or self.calibration != "none" or self.method in FAMILIES
        if not needs_cv:
            k, w, p = grid[0]
            self.k_, self.weights_, self.prior_ = k, w, p
            self.calibration_ = Calibration.identity()
            self.tuning_ = None
            self.tuning_record_: dict[str, Any] | None = None
            return self
        g = None if groups is None else np.asarray(groups)
        fold, how = fold_ids(len(X), g if self.folds_by == "task" else None, self.folds,
                             self.seed)
        queried = query_mask(groups, len(X), self.max_task_queries, self.seed)
        grouped = how.startswith("GroupKFold")
        if not grouped and not queried.all():
            # random folds: deal the scored sample evenly over them, so none is empty
            fold[queried] = fold_ids(int(queried.sum()), None, self.folds, self.seed)[0]
        found = oof_search(X, fold, max(k for k, _, _ in grid), queried)
        searched, fold = found.searched, found.fold
        if found.moved:
            how = f"{how}, {found.moved} near-copies moved into their copies' fold"
        if found.split_copies.any():
            how = (f"{how}, {int(found.split_copies.sum())} inputs with a near-copy in another "
                   "fold left out of the map's and calibration's fits")
        # the routing objective breaks ties as Router.route does: to the best model on average
        bma = best_on_average(task_means(Y, np.zeros(len(Y)) if g is None else g))
        table = grid_scores(Y, searched, grid, prefer=bma)
        score = table["route"] if self.objective == "route" else -table["brier"]
        best = int(np.argmax(score.to_numpy()))  # first best in grid order: smaller k, less prior
        k, w, p = grid[best]
        self.k_, self.weights_, self.prior_ = k, w, p
        P = oof_proba(Y, searched, grid[best])
        if not queried.all():  # from here on, the scored sample only
            how = f"{how}, {int(queried.sum())} of {len(X)} inputs scored"
            X, Y, fold = X[queried], Y[queried], fold[queried]
            g = None if g is None else g[queried]
        # the labels the fits on the other folds learn from: none of an input with a copy in
        # another fold (it would hand its twin its own labels)
        Y_fit = np.where(found.split_copies[queried][:, None], np.nan, Y)
        choice = choose_map(self.method, P, Y, fold, X, self.objective, g,
                            random_folds=not grouped, prefer=bma, Y_fit=Y_fit)
        if choice is not None:
            self.method_, self.stack_ = choice.method, choice.stack
            if choice.stack is not None:  # what drop_stack falls back to, chosen the same way
                self.calibration_knn_ = choose_calibration(P, Y, fold, self.calibration,
                                                           Y_fit)[0]
            P = choice.oof
        self.calibration_, P_mapped, P_out = choose_calibration(P, Y, fold, self.calibration, Y_fit)
        # cross-fitted P of the pool itself as the predictor gives it (calibrated where the map
        # was kept), for validation choices: one row per
        # scored input, the rows in ``oof_rows_`` (every row without a cap), so that a capped
        # fit of a large pool does not hold a pool-sized array of NaN
        self.oof_, self.oof_rows_ = P_out, np.flatnonzero(queried)
        self.tuning_ = Tuning(k=k, weights=w, prior=p, objective=self.objective, cv=how,
                              score=float(score.iloc[best]) if self.objective == "route"
                              else float(table["brier"].iloc[best]),
                              brier_raw=brier(P, Y), brier_calibrated=brier(P_mapped, Y),
                              calibrated=len(self.calibration_.x) > 0,
                              grid=table, reliability=reliability_table(P_out, Y),
                              method=self.method_,
                              knn_weight=1.0 if self.stack_ is None else self.stack_.knn_weight,
                              methods=None if choice is None else choice.table)
        # what describe() saves of it: a loaded predictor has the record, not the grid
        self.tuning_record_ = None
        logger.info("per-input predictor: %s", self.tuning_.summary())
        return self

    def _check(self) -> None:
        if not hasattr(self, "means_"):
            raise NotFittedError("This PerInputPredictor instance is not fitted yet. Call 'fit' "
                                 "with appropriate arguments before using this estimator.")

    def predict_proba(self, Q: np.ndarray, calibrated: bool = True,
                      exclude_rows: np.ndarray | None = None) -> np.ndarray:
        """P (n, M) for query vectors; ``exclude_rows`` leaves those pool rows out of the
        neighbours and the fallback means. That is not a cross-fit: the chosen k, weights,
        prior, map and calibration were fitted on every pool row, and a map that reads the
        vectors has learnt the excluded rows' labels (a review measured a Brier score of 0.208
        on such rows against 0.259 on new inputs). For out-of-fold P, fit a predictor without
        the rows (``benchroute.experiments.crossfit``)."""
        self._check()
        if self.X_ is None or self.Y_ is None:
            raise BenchrouteError("this predictor has no pool of its own (its router searches its "
                                  "index and calls predict_from_neighbours)")
        Q = np.atleast_2d(np.asarray(Q, dtype=np.float32))
        if Q.ndim != 2 or Q.shape[1] != self.X_.shape[1]:
            raise BenchrouteError(f"queries of shape {Q.shape}; the pool's vectors are "
                                  f"{self.X_.shape[1]}-d")
        keep = np.ones(len(self.X_), dtype=bool)
        if exclude_rows is not None:
            keep[np.asarray(exclude_rows, dtype=int)] = False
        rows_kept = np.flatnonzero(keep)
        if len(rows_kept) == 0:
            raise BenchrouteError("every pool input is excluded; nothing to predict from")
        dist, rows = knn_search_among(self.X_, rows_kept, Q, self.k_)
        means = column_means(self.Y_, rows=rows_kept) if exclude_rows is not None else self.means_
        return self._posterior(dist, _gather(self.Y_, rows), means, calibrated, Q)

    def predict_from_neighbours(self, distances: np.ndarray, labels: np.ndarray,
                                calibrated: bool = True, queries: np.ndarray | None = None
                                ) -> np.ndarray:
        """P (n, M) from neighbours someone else searched: cosine ``distances`` (n, K) ascending
        (inf past the pool's end) and their ``labels`` (n, K, M), K ≥ ``k_``. A router passes
        those of its own index, so routing needs no second copy of the pool vectors. A predictor
        whose method reads the vectors ("logistic", "task" and their blends) needs the
        ``queries`` (n, d) too."""
        self._check()
        return self._posterior(distances, labels, self.means_, calibrated, queries)

    def _posterior(self, dist: np.ndarray, labels: np.ndarray, means: np.ndarray,
                   calibrated: bool, queries: np.ndarray | None) -> np.ndarray:
        P = knn_posterior(np.asarray(dist, dtype=np.float64), np.asarray(labels, dtype=np.float64),
                          self.k_, self.weights_, self.prior_, means)
        if self.stack_ is not None:
            P = self.stack_(P, queries)
        return self.calibration_(P) if calibrated else P

    def drop_stack(self, reason: str) -> PerInputPredictor:
        """Fall back to the tuned kNN P with its own calibration (the stack's coefficients are
        per pool model, so a pool whose models change cannot use them); ``reason`` is kept in
        :meth:`describe` as ``fallback``."""
        self._check()
        if self.stack_ is not None:
            self.stack_, self.method_, self.fallback_ = None, "knn", reason
            self.calibration_ = self.calibration_knn_
            logger.warning("per-input predictor: %s", reason)
        return self

    def without_vectors(self) -> PerInputPredictor:
        """This predictor, or a copy of it without a map that reads the vectors (a logistic
        regression or a task classifier; its kNN P with the kNN's calibration instead): for
        features of pool inputs, which those maps have seen with their labels."""
        if self.stack_ is None or not self.stack_.reads_vectors:
            return self
        out = copy.copy(self)
        out.stack_, out.method_, out.calibration_ = None, "knn", self.calibration_knn_
        return out

    def without_pool(self) -> PerInputPredictor:
        """Drop the pool vectors and labels (kept: the chosen values, the pool's means and the
        calibration); :meth:`predict_from_neighbours` still works, :meth:`predict_proba` does
        not. For owners, such as a router, that search their own index."""
        self._check()
        self.X_ = self.Y_ = None
        return self

    def describe(self) -> dict[str, Any]:
        """The chosen values (and CV evidence), for display and for saving with a router."""
        self._check()
        out: dict[str, Any] = {"k": self.k_, "weights": self.weights_, "prior": self.prior_,
                               "calibration": self.calibration_.to_dict(),
                               "method": self.method_, "folds_by": self.folds_by,
                               "calibration_rule": self.calibration}
        if self.stack_ is not None:
            out["stack"] = self.stack_.to_dict()
            out["calibration_knn"] = self.calibration_knn_.to_dict()
        if self.fallback_ is not None:
            out["fallback"] = self.fallback_
        record = self.tuning_.to_dict() if self.tuning_ is not None else self.tuning_record_
        if record is not None:
            out["tuning"] = record
        return out

    @classmethod
    def from_description(cls, desc: dict[str, Any], X: np.ndarray | None, Y: np.ndarray
                         ) -> PerInputPredictor:
        """Rebuild a fitted predictor from :meth:`describe` and the pool's labels ``Y`` (and
        vectors ``X``; None gives a predictor without a pool, see :meth:`without_pool`), without
        re-tuning. A description without ``method`` (saved before the cross-model stack) is the
        kNN's; one without ``folds_by`` (saved before it was kept) was tuned on task folds, and
        one without ``calibration_rule`` reports "auto" (the map it holds is used either way)."""
        try:
            pred = cls(k=int(desc["k"]), weights=str(desc["weights"]), prior=float(desc["prior"]),
                       folds_by=str(desc.get("folds_by", "task")),
                       calibration=str(desc.get("calibration_rule", "auto")))
            pred.Y_ = np.asarray(Y, dtype=np.float64)
            pred.X_ = None if X is None else np.ascontiguousarray(X, dtype=np.float32)
            pred.means_ = column_means(pred.Y_)
            pred.n_models_ = pred.Y_.shape[1]
            pred.k_, pred.weights_, pred.prior_ = int(desc["k"]), str(desc["weights"]), float(desc["prior"])
            pred.calibration_ = _calibration(desc.get("calibration"))
            pred.calibration_knn_ = _calibration(desc.get("calibration_knn"))
            stack = desc.get("stack")
            pred.stack_ = None if stack is None else LinearStack.from_dict(stack)
            pred.method_ = str(desc.get("method", "knn"))
            pred.fallback_ = desc.get("fallback")
            if pred.calibration not in CALIBRATIONS:
                raise ValueError(f"calibration_rule {pred.calibration!r} is not one of "
                                 f"{list(CALIBRATIONS)}")
            pred.tuning_ = None
            record = desc.get("tuning")
            if record is not None and not isinstance(record, dict):
                raise ValueError(f"tuning record {record!r} is not an object")
            pred.tuning_record_ = record
            if pred.stack_ is not None and pred.stack_.coef.shape != (pred.n_models_,) * 2:
                raise ValueError(f"stack of shape {pred.stack_.coef.shape} for "
                                 f"{pred.n_models_} pool models")
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchrouteError(f"malformed per-input predictor description ({exc!r})") from exc
        return pred if X is not None else pred.without_pool()


def _calibration(d: dict[str, Any] | None) -> Calibration:
    d = d or {"x": [], "y": []}
    return Calibration(np.asarray(d["x"], float), np.asarray(d["y"], float))


def copies_together(fold: np.ndarray, a: np.ndarray, b: np.ndarray,
                    queried: np.ndarray | None = None) -> np.ndarray:
    """``fold`` with each group of near-copies (the pairs ``a[i]``, ``b[i]`` linked into
    groups) in the fold of its first member; the folds as they were when moving would leave
    fewer than two folds of ``queried`` inputs (the scored ones)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(fold)
    _, comp = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)),
                                   directed=False)
    first = np.full(comp.max() + 1, n)
    np.minimum.at(first, comp, np.arange(n))
    out = fold[first[comp]]
    scored = out if queried is None else out[queried]
    return out if len(np.unique(scored)) >= 2 else fold


Searched = list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class OOFSearch:
    """What :func:`oof_search` found: per fold (its scored rows, the other folds' rows, their
    K nearest at distance ``NEAR_DUPLICATE`` or more), the folds it used, how many inputs it
    moved between them, and the inputs that still have a near-copy in another fold."""

    searched: Searched
    fold: np.ndarray
    moved: int
    split_copies: np.ndarray


def oof_search(X: np.ndarray, fold: np.ndarray, K: int, queried: np.ndarray | None = None
               ) -> OOFSearch:
    """Per fold: its rows (those ``queried``, default all), the other folds' rows, and each of
    its inputs' K nearest inputs of the other folds (distances, inf where none; pool rows, -1
    where none). Only these are kept: the labels are gathered one fold at a time, so memory
    does not grow with K × the number of models over the whole pool, and neither the vectors
    nor the labels of the other folds are ever copied whole.

    Near-copies of an input (closer than :data:`~benchroute.predictors.NEAR_DUPLICATE`) are
    never its out-of-fold evidence. A copy in another fold hands an input its own labels, in
    the kNN's P and in every fit on the other folds (a logistic regression on the vectors
    learns the copy's labels and predicts them back), so k, weights, prior, map and
    calibration were chosen on a P that routing never gives (found by a review: a pool of
    each question twice with coin-flip labels was tuned to a cross-validated Brier score of
    0.045, its P reaching 1 on new inputs). So:

    * the search finds the copies it meets; each group of them is moved into one fold (with
      task folds, a copy is then held out with its twin's task), unless that would leave
      fewer than two folds of scored inputs, and only what the move changed is searched
      again (the moved inputs; for the others, the nearest of the inputs that left their
      fold);
    * neighbours that close are left out of every list, as routing leaves them out;
    * the inputs that still have a copy in another fold (a move refused, or a chain of
      copies that one move split) are returned in ``split_copies``, for the fits on the
      other folds to leave out."""
    width = K + EXTRA_NEIGHBOURS
    raw: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    a, b = [], []
    for f in range(fold.max() + 1):
        test = np.flatnonzero((fold == f) if queried is None else (fold == f) & queried)
        train = np.flatnonzero(fold != f)
        dist, rows = knn_search_among(X, train, X[test], min(width, max(len(train), 1)))
        near = (dist < NEAR_DUPLICATE) & (rows >= 0)
        a.append(np.repeat(test, near.sum(axis=1)))
        b.append(rows[near])
        raw[f] = (test, dist, rows)
    a_all, b_all = np.concatenate(a), np.concatenate(b)
    new = copies_together(fold, a_all, b_all, queried) if len(a_all) else fold
    moved = new != fold
    out: Searched = []
    split = np.zeros(len(fold), dtype=bool)
    for f in np.unique(new):
        test = np.flatnonzero((new == f) if queried is None else (new == f) & queried)
        train = np.flatnonzero(new != f)
        dist = np.full((len(test), K), np.inf)
        rows = np.full((len(test), K), -1, dtype=np.int64)
        redo = moved[test].copy()
        stay = np.flatnonzero(~redo)
        old_test, d0, r0 = raw.pop(f)  # each fold's first lists are read once
        if len(stay):
            # the first search's lists less the inputs moved into f, plus the nearest of
            # those moved out of f; each list holds what its search saw up to its last entry
            at = np.searchsorted(old_test, test[stay])
            d0, r0 = d0[at], r0[at]
            reach = np.where(np.isfinite(d0[:, -1]), d0[:, -1], np.inf)
            left = np.flatnonzero((fold == f) & moved)
            if len(left):
                d1, r1 = knn_search_among(X, left, X[test[stay]], min(width, len(left)))
                if d1.shape[1] < len(left):
                    reach = np.minimum(reach, np.where(np.isfinite(d1[:, -1]), d1[:, -1], np.inf))
                d0, r0 = np.hstack([d0, d1]), np.hstack([r0, r1])
                order = np.argsort(d0, axis=1, kind="stable")
                d0, r0 = (np.take_along_axis(d0, order, axis=1),
                          np.take_along_axis(r0, order, axis=1))
            across = (r0 >= 0) & (d0 <= reach[:, None]) & (new[np.maximum(r0, 0)] != f)
            copy = across & (d0 < NEAR_DUPLICATE)
            split[test[stay][copy.any(axis=1)]] = True
            split[r0[copy]] = True
            ok = across & ~copy
            dist[stay], rows[stay] = first_kept(d0, r0, ok, K)
            # a list cut short by what it lost: searched again
            redo[stay[ok.sum(axis=1) < min(K, len(train))]] = True
        if redo.any():
            dist[redo], rows[redo], qi, copies = _search_past_copies(X, train, X[test[redo]], K)
            split[test[redo][qi]] = True
            split[copies] = True
        out.append((test, train, dist, rows))
    renumbered = np.unique(new, return_inverse=True)[1].astype(fold.dtype)
    return OOFSearch(out, renumbered, int(moved.sum()), split)


def _search_past_copies(X: np.ndarray, train: np.ndarray, Q: np.ndarray, K: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`knn_search_among` for the K nearest at distance ``NEAR_DUPLICATE`` or more, the
    rule of ``KNNCorrectnessPredictor.neighbours_past``: searched :data:`EXTRA_NEIGHBOURS`
    wider, and a query with more near-copies than that searched again alone
    (:func:`~benchroute.predictors.past_copies`). Also the near-copies met: query indices and
    pool rows."""
    width = min(K + EXTRA_NEIGHBOURS, max(len(train), 1))
    dist, rows = knn_search_among(X, train, Q, width)
    ok = kept_mask(dist, rows, NEAR_DUPLICATE)
    near = ~ok & (rows >= 0)
    qi, copies = np.nonzero(near)[0], rows[near]
    out_d, out_r = first_kept(dist, rows, ok, K)
    short, d2, r2 = past_copies(lambda q, w: knn_search_among(X, train, q, w), Q, dist, rows,
                                K, NEAR_DUPLICATE, len(train))
    if len(short):
        ok2 = kept_mask(d2, r2, NEAR_DUPLICATE)
        out_d[short], out_r[short] = first_kept(d2, r2, ok2, K)
        near2 = ~ok2 & (r2 >= 0)
        qi, copies = np.r_[qi, short[np.nonzero(near2)[0]]], np.r_[copies, r2[near2]]
    return out_d, out_r, qi, copies


def grid_scores(Y: np.ndarray, searched: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                grid: Sequence[tuple[int, str, float]], prefer: int | None = None
                ) -> pd.DataFrame:
    """The out-of-fold routing value (:func:`route_value`, ties to ``prefer``) and Brier score
    (:func:`brier`) of each (k, weights, prior), one row each, without keeping any
    configuration's P."""
    route, routed = dict.fromkeys(grid, 0.0), dict.fromkeys(grid, 0)
    squares, cells = dict.fromkeys(grid, 0.0), 0
    for test, train, dist, rows in searched:
        means = column_means(Y, rows=train)
        for part in _query_chunks(rows.shape, Y.shape[1]):
            labels, Yt = _gather(Y, rows[part]), Y[test[part]]
            known = ~np.isnan(Yt)
            cells += int(known.sum())
            sums = {w: KNNSums(dist[part], labels, [k for k, w_, _ in grid if w_ == w], w)
                    for w in dict.fromkeys(w for _, w, _ in grid)}
            for cfg in grid:
                P = sums[cfg[1]].mean(cfg[0], means, cfg[2])[0]
                value = per_input_value(P, Yt, "route", prefer)
                route[cfg] += float(np.nansum(value))
                routed[cfg] += int(np.sum(~np.isnan(value)))
                squares[cfg] += float(np.sum((P[known] - Yt[known]) ** 2))
    return pd.DataFrame([{"k": cfg[0], "weights": cfg[1], "prior": cfg[2],
                          "route": route[cfg] / routed[cfg] if routed[cfg] else np.nan,
                          "brier": squares[cfg] / max(cells, 1)} for cfg in grid])


def oof_proba(Y: np.ndarray, searched: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
              cfg: tuple[int, str, float]) -> np.ndarray:
    """The out-of-fold P of one configuration, one row per scored input in pool order (every
    input when no cap was set): the (N, M) array of the whole pool is never made."""
    scored = np.sort(np.concatenate([test for test, _, _, _ in searched]))
    P = np.empty((len(scored), Y.shape[1]))
    for test, train, dist, rows in searched:
        means = column_means(Y, rows=train)
        for part in _query_chunks(rows.shape, Y.shape[1]):
            P[np.searchsorted(scored, test[part])] = knn_posterior(
                dist[part], _gather(Y, rows[part]), cfg[0], cfg[1], cfg[2], means)
    return P


#: Label cells (inputs × neighbours × models) gathered at a time when scoring a fold: the
#: kNN mean holds a few float64 arrays of this size (16 MiB each).
_GATHER_CELLS = 2_097_152


def _query_chunks(shape: tuple[int, ...], n_models: int) -> list[slice]:
    """Slices of a fold's scored inputs whose neighbours' labels hold at most
    :data:`_GATHER_CELLS` cells, so that scoring a fold of a large pool with many models does
    not hold all its neighbours' labels at once (one slice for a small pool)."""
    n, K = shape
    step = max(1, _GATHER_CELLS // max(K * n_models, 1))
    return [slice(start, start + step) for start in range(0, n, step)] or [slice(0, 0)]


def _gather(Y: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Labels (n, K, M) of pool rows; row -1 (no neighbour) gathers NaN (without copying Y)."""
    labels = Y[np.maximum(rows, 0)].astype(np.float64, copy=False)
    labels[rows < 0] = np.nan
    return labels
