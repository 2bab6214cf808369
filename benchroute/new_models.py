"""Adding a model to a router from a few labelled inputs, and choosing which inputs to label.

Why: a new model rarely comes with results on a whole benchmark pool, and a plain kNN over a
few dozen of its own labels knows almost nothing about most inputs. The pool already says how
hard each input is for the known models, and a new model's successes follow the same difficulty
closely. So P(new, x) *borrows strength* from the known models' P(m, x). With
z_m(x) = logit(clip(P(m, x), ε, 1 − ε)) and z̄(x) = mean_m z_m(x), two borrowing parts compete:

    logistic:  A(x) = σ(a + b·z̄(x) + Σ_m δ_m z_m(x)),
               penalty ½·λ·‖δ‖² + ½·μ·(a² + (b − 1)²), μ weak (λ = ∞ drops the δ terms)
    similar:   A(x) = σ(a + b·logit(Σ_m w_m P(m, x))),  w_m ∝ exp(τ·agree_m),
               agree_m = mean over the labelled inputs of 1 − |y − y_m|

(with the same penalty on a and b; a₀ = logit ȳ − mean z̄ matches the label mean; y_m: the
known model's own label where the labelled input is a pool input, its P elsewhere;
the weighted average of conditional means is the conditional mean of the weighted labels, so
weights fitted on labels apply to P). Beside them, the new model's own labels:

    B(x) = (Σ_{j ∈ N_k(x)} y_j + c·ȳ) / (k + c)   (kNN over its labelled inputs, shrunk)
    P(new, x) = cal(A(x))  (w = 1),  cal(B(x))  (w = 0),
                cal(A(x) + (1 − w)·R(x))  (0 < w < 1, R: the shrunk mean residual y − A of
                                           the k nearest labelled inputs)

A single-slope fit (the similar part, the logistic part at λ = ∞, the Platt map) keeps its slope
≥ :data:`MIN_SLOPE`, and the logistic part at a finite λ each known model's weight b/M + δ_m ≥
MIN_SLOPE/M (:func:`monotone_logistic`), so a few labels never turn the known models' ranking
upside down.

How far a model's weights stray from the average known model is itself learnt from the known
models (empirical Bayes, :func:`deviation_penalty`): each known model's labels are regressed the
same way on the other known models' logits over a sample of the pool, and λ₀ = 1/σ², σ² the
mean squared δ less its estimation variance, is the penalty those deviations imply (∞ when they
are indistinguishable from noise). The logistic part at λ₀ is the first candidate the choice
tries, so a handful of labels no longer has to tell λ by cross-validation alone, which keeps the
average known model (the most borrowing candidate) unless another is clearly better
(docs/results.md, section 8).

The part with its λ or τ, k and the mix w are chosen by cross-validation on the labels given:
the out-of-fold Brier score after a two-parameter Platt map, so that the choice is about ranking
(a few labels set the level badly for every candidate alike), with the one-standard-error rule
toward the most borrowing candidate; ``cal`` is that Platt map of the chosen candidate, shrunk
toward the identity. With few labels the new model is "the average
known model, shifted and sharpened", and it leans on particular known models, then on its own
labels, as labels accumulate. Fewer than ``min_labels`` labels give the label mean ȳ, with a
warning and ``fallback`` set; labels that never vary give the average known model at the
smoothed level (Σy + 1)/(L + 2), with a warning (they tell the level, not the ranking).

Features at a pool input never use that input's own labels (neighbours at distance 0 are left
out), so an estimator trained on labelled pool inputs sees the features a new input would have.

:func:`probe_rows` chooses the pool inputs to run a new model on. Everything here works on
arrays or on a fitted router's public state; :class:`~benchroute.router.Router` delegates to it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.special import expit

from benchroute.data.text import is_blank
from benchroute.exceptions import BenchrouteError
from benchroute.inputs import is_int, is_items, label_value
from benchroute.predictors import SELF_DISTANCE, Estimator, Neighbours
from benchroute.scoring import labelled_right, predicted_right
from benchroute.stacking import EPS, logits
from benchroute.tuning import fold_ids, knn_posterior

if TYPE_CHECKING:
    from benchroute.router import Router

logger = logging.getLogger(__name__)

#: Penalty λ on the per-model weights δ (∞: only the average known model), most borrowing first.
DEFAULT_LAMBDAS: tuple[float, ...] = (math.inf, 1000.0, 300.0, 100.0, 30.0, 10.0, 3.0, 1.0)
#: Temperatures τ of the similarity weights over known models (0: their plain average).
DEFAULT_TAUS: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, 40.0, 80.0)
#: Neighbours of the own-label kNN.
DEFAULT_KS: tuple[int, ...] = (5, 10, 20)
#: Pool inputs over which :func:`deviation_penalty` regresses each known model on the others.
PENALTY_SAMPLE = 3000
#: :func:`deviation_penalty` regresses each known model on all the others, a cost of about
#: models³ × sample (0.6 s for 57 models, 7 s for 150 here): past this many known models it
#: gives none, and the choice searches the grid alone.
PENALTY_MAX_MODELS = 100
#: Penalty on the known models' weights while :func:`deviation_penalty` estimates them: next to
#: nothing (thousands of labels each), only so that collinear models stay finite.
FREE = 1e-3
#: Weight w of the borrowing part in the mix, most borrowing first.
DEFAULT_MIXES: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)
#: Weak penalty μ on the intercept: it only keeps separable data finite.
WEAK = 0.01
#: Smallest slope of a Platt map or of a borrowing part's single-feature fit.
MIN_SLOPE = 0.1
#: Penalty on the slope b − 1 of the borrowing parts: a few labels must not sharpen the
#: known models' ranking into confident mistakes.
SLOPE = 1.0
#: Pseudo-count c of the own-label kNN (in neighbours), toward the label mean.
KNN_PRIOR = 2.0
#: Clip of P(new, x) before the Platt map's logit. The known models' features are clipped at
#: :data:`~benchroute.stacking.EPS` = 0.01, but a new model far weaker or stronger than the
#: average one is shifted below 0.01 (or above 0.99) at every input, and a clip there would
#: flatten its ranking to a constant (measured: AlpacaEval's weak models, AUC exactly 0.5 in
#: 37% of the random-input draws with 10 labels; docs/results.md, section 8).
FINE = 1e-12


# ---------------------------------------------------------------------- features
def drop_self(distances: np.ndarray, labels: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """The first K neighbours after leaving out those at distance 0 (the query itself, or its
    duplicates), padded with ``inf`` / NaN: the neighbours a new input would have."""
    nb, _ = Neighbours(np.asarray(distances), np.asarray(labels)).beyond(SELF_DISTANCE, K)
    return nb.distances, nb.labels


def known_proba(router: Router, Q: np.ndarray, without_self: bool = False,
                within: float | None = None) -> np.ndarray:
    """P(m, x) (n, M0) of the router's pool models: the tuned predictor's when it has one, else
    g_m(x). ``without_self`` leaves out neighbours at distance 0 (features of pool inputs) and
    a logistic regression on the vectors (fitted on the pool inputs, it would predict their
    own labels in-sample), ``within`` leaves out neighbours closer than it (near-duplicates of
    the query)."""
    return known_proba_and_nearest(router, Q, SELF_DISTANCE if without_self else within,
                                   vectors=not without_self)[0]


def known_proba_and_nearest(router: Router, Q: np.ndarray, within: float | None,
                            nearest: int = 0, vectors: bool = True
                            ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`known_proba` leaving out neighbours closer than ``within`` (None: none), and the
    distances (n, ``nearest``) of each query's nearest pool inputs before any is left out, from
    the same search (what the OOD p-value reads). Without ``vectors`` the tuned predictor's
    logistic regression on the vectors, if it chose one, is left out (its kNN P instead)."""
    from benchroute.predictors import _CHUNK

    tuned = getattr(router, "per_input_", None)
    if tuned is not None and not vectors:
        tuned = tuned.without_vectors()
    k = tuned.k_ if tuned is not None else router.predictor_.k  # the fitted k, as aggregated
    parts, near = [], []
    for start in range(0, len(Q), _CHUNK):
        if within is None:
            nb = router.predictor_.neighbours(Q[start:start + _CHUNK], max(k, nearest))
            near.append(nb.distances[:, :nearest])
            nb = nb.head(k)
        else:  # the query itself and its near-copies left out, however many
            raw, nb, _ = router.predictor_.neighbours_past(Q[start:start + _CHUNK], k, within,
                                                           width=nearest)
            near.append(raw.distances[:, :nearest])
        parts.append(tuned.predict_from_neighbours(nb.distances, nb.labels,
                                                   queries=Q[start:start + _CHUNK])
                     if tuned is not None
                     else router.predictor_.aggregate(Neighbours(nb.distances, nb.labels))[0])
    if not parts:
        return np.zeros((0, router.predictor_.n_models_)), np.zeros((0, nearest))
    return np.vstack(parts), np.vstack(near)


# ---------------------------------------------------------------------- penalised logistic
def penalised_logistic(X: np.ndarray, y: np.ndarray, beta0: np.ndarray, precision: np.ndarray,
                       offset: np.ndarray | float = 0.0, iters: int = 100, tol: float = 1e-9
                       ) -> np.ndarray:
    """argmin_β Σ_i [log(1 + e^{η_i}) − y_i η_i] + ½ Σ_j precision_j (β_j − β0_j)²,
    η = Xβ + offset.

    Damped Newton steps (Armijo backtracking); ``y`` in [0, 1] (a fractional label is the
    Bernoulli likelihood of a soft label). Every precision must be > 0, so the problem is
    strictly convex and the answer unique and finite even for separable labels.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    beta0 = np.asarray(beta0, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)

    def loss(b: np.ndarray) -> float:
        eta = X @ b + offset
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta)
                     + 0.5 * np.sum(precision * (b - beta0) ** 2))

    beta = beta0.copy()
    f = loss(beta)
    for _ in range(iters):
        p = expit(X @ beta + offset)
        grad = X.T @ (p - y) + precision * (beta - beta0)
        H = (X * (p * (1.0 - p))[:, None]).T @ X + np.diag(precision)
        step = np.linalg.solve(H, grad)
        t, slope = 1.0, float(grad @ step)
        while True:
            new = beta - t * step
            f_new = loss(new)
            if f_new <= f - 1e-4 * t * slope or t < 1e-10:
                break
            t *= 0.5
        beta, f = new, f_new
        if np.max(np.abs(t * step)) < tol:
            break
    return beta


def _level(zbar: np.ndarray, y: np.ndarray) -> float:
    """Prior mean of the intercept: the shift that makes the average known model's mean logit
    that of the label mean (the new model may be much stronger or weaker than the average)."""
    return float(logits(np.mean(y), FINE) - np.mean(zbar))


def _design(Z: np.ndarray, lam: float, y: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns [1, z̄, z_1..z_M] (only [1, z̄] for λ = ∞), prior means and precisions (these
    two only when the labels ``y`` are given)."""
    zbar = Z.mean(axis=1, keepdims=True)
    ones = np.ones((len(Z), 1))
    a0 = 0.0 if y is None else _level(zbar, y)
    if math.isinf(lam):
        return np.hstack([ones, zbar]), np.array([a0, 1.0]), np.array([WEAK, SLOPE])
    M = Z.shape[1]
    return (np.hstack([ones, zbar, Z]), np.r_[a0, 1.0, np.zeros(M)],
            np.r_[WEAK, SLOPE, np.full(M, lam)])


def increasing_fit(z: np.ndarray, y: np.ndarray, beta0: np.ndarray, precision: np.ndarray
                   ) -> np.ndarray:
    """σ(a + b·z) fitted by :func:`penalised_logistic` with b ≥ :data:`MIN_SLOPE`: a few labels
    never turn the known models' ranking upside down, nor flatten it away. The problem is
    convex, so when the free optimum has a smaller b the constrained one has b = MIN_SLOPE."""
    beta = penalised_logistic(np.c_[np.ones(len(y)), z], y, beta0, precision)
    if beta[1] >= MIN_SLOPE:
        return beta
    a = penalised_logistic(np.ones((len(y), 1)), y, beta0[:1], precision[:1], MIN_SLOPE * z)
    return np.array([a[0], MIN_SLOPE])


def monotone_logistic(Z: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """The logistic part at a finite λ with every known model's weight kept ≥ MIN_SLOPE / M:
    σ(a + Σ_m c_m z_m), c_m = b/M + δ_m, minimising the Bernoulli deviance plus the part's
    penalty ½λ‖δ‖² + ½(b − 1)² + ½μ(a − a₀)², which for c is the Gaussian
    ½(c − 1/M)ᵀ Σ⁻¹ (c − 1/M), Σ = I/λ + 11ᵀ/M² (b and δ integrated out exactly: with the
    deviance a function of c alone, the joint minimum over b and δ is this one). The bound
    keeps the score a positive combination of the known models' logits, so a few labels can
    reweight them but never turn the ranking upside down: unbounded, λ₀ = 3 to 6 with 10 to
    50 labels put some RouterDC draws at an AUC of 0.33 to 0.48 (docs/method.md, "Adding a
    model"). Returns β for :func:`_design`'s columns [1, z̄, z_1..z_M]: [a, 0, c]."""
    from scipy.optimize import minimize

    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, M = Z.shape
    a0 = _level(Z.mean(axis=1), y)
    c0 = np.full(M, 1.0 / M)
    prec = lam * np.eye(M) - (lam**2 / M**2) / (1.0 + lam / M) * np.ones((M, M))
    X = np.hstack([np.ones((n, 1)), Z])

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        eta = X @ theta
        dc = theta[1:] - c0
        val = float(np.sum(np.logaddexp(0.0, eta) - y * eta) + 0.5 * WEAK * (theta[0] - a0) ** 2
                    + 0.5 * dc @ prec @ dc)
        grad = X.T @ (expit(eta) - y)
        grad[0] += WEAK * (theta[0] - a0)
        grad[1:] += prec @ dc
        return val, grad

    bounds = [(None, None)] + [(MIN_SLOPE / M, None)] * M
    res = minimize(f, np.r_[a0, c0], jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 500, "gtol": 1e-9})
    return np.r_[res.x[0], 0.0, res.x[1:]]


def _platt_fit(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A Platt map σ(c + d·logit P), d ≥ 0, fitted to labels, shrunk toward the identity (c = 0,
    d = 1) with unit precision, so that a few labels move it little."""
    return increasing_fit(logits(P, FINE), y, np.array([0.0, 1.0]), np.array([1.0, 1.0]))


def _platt_apply(platt: np.ndarray, P: np.ndarray) -> np.ndarray:
    return expit(platt[0] + platt[1] * logits(P, FINE))


def penalty_rows(n_rows: int, seed: int = 0, max_rows: int = PENALTY_SAMPLE) -> np.ndarray:
    """The pool rows :func:`deviation_penalty` reads: all, or a seeded sample of ``max_rows``."""
    if n_rows <= max_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng([seed, n_rows]).choice(n_rows, max_rows, replace=False))


def deviation_penalty(F: np.ndarray, Y: np.ndarray) -> float | None:
    """λ₀ of the logistic part, learnt from the known models themselves: each known model's
    labels (a column of ``Y`` (N, M), NaN = none) regressed on the other known models' logits
    (``F`` (N, M), their P at the same inputs without the inputs' own labels), nearly
    unpenalised. Its δ (the weights beyond the average model's 1/(M − 1) each) are draws
    of the deviations a new model may have, plus estimation noise; the method of moments gives
    σ² = mean(δ² − var δ) (var from the inverse Hessian), and λ₀ = 1/σ²: the ridge penalty of
    the posterior mode under δ ~ N(0, σ²). ∞ when σ² ≤ 0 (the deviations are noise: the
    average known model); None with fewer than two known models (no other to regress on) or
    more than :data:`PENALTY_MAX_MODELS`."""
    F = np.asarray(F, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    M = F.shape[1]
    if not 2 <= M <= PENALTY_MAX_MODELS:
        return None
    Z = logits(F)
    excess = []
    for i in range(M):
        ok = ~np.isnan(Y[:, i])
        y = Y[ok, i]
        if ok.sum() < 2 * M or y.min() == y.max():  # too few labels to say how model i strays
            continue
        # σ(a + Σ_m c_m z_m) with c_m = 1/(M − 1) + δ_m: the design without z̄, whose
        # direction the data cannot tell from the δ's (its variance would be the prior's)
        others = np.delete(Z[ok], i, axis=1)
        X = np.hstack([np.ones((len(y), 1)), others])
        b0 = np.r_[_level(others.mean(axis=1), y), np.full(M - 1, 1.0 / (M - 1))]
        prec = np.r_[WEAK, np.full(M - 1, FREE)]
        beta = penalised_logistic(X, y, b0, prec)
        p = expit(X @ beta)
        H = (X * (p * (1.0 - p))[:, None]).T @ X + np.diag(prec)
        excess.append((beta[1:] - b0[1:]) ** 2 - np.diag(np.linalg.inv(H))[1:])
    if not excess:
        return None
    s2 = float(np.mean(np.concatenate(excess)))
    return 1.0 / s2 if s2 > 0 else math.inf


# ---------------------------------------------------------------------- the estimator
@dataclass(frozen=True)
class BorrowingFit:
    """What cross-validation chose for one new model, and the evidence.

    ``part`` is the borrowing part ("logistic" with penalty ``value`` = λ on per-model weights,
    inf meaning the average known model only; "similar" with temperature ``value`` = τ), ``k``
    the own-label neighbours, ``mix`` the weight w of the borrowing part; ``cv_brier`` is the
    out-of-fold Brier score of the chosen mix, ``cv_hits`` how many out-of-fold binary
    predictions were right (for p̂ of S3). ``fallback`` says the label mean was used, and why.
    ``level_only``: the labels never varied, so nothing was chosen: the average known model at
    the smoothed level, with ``cv_brier`` and ``cv_hits`` leave-one-out. ``prior_lambda``: the
    known models' penalty λ₀ the choice tried first (None: none was given; in ``to_dict`` an
    infinite λ₀ is the string "inf", since None there already means none).
    """

    n_labels: int
    label_mean: float
    part: str
    value: float
    k: int
    mix: float
    cv: str
    cv_brier: float
    cv_hits: float
    fallback: str | None = None
    level_only: bool = False
    prior_lambda: float | None = None

    def summary(self) -> str:
        if self.fallback:
            level = smoothed_level(total=self.label_mean * self.n_labels, n=self.n_labels)
            return (f"smoothed label mean {level:.3f} (label mean {self.label_mean:.3f} of "
                    f"{self.n_labels} labels; {self.fallback})")
        if self.level_only:
            return (f"{self.n_labels} labels: the average known model, chosen by {self.cv}; "
                    f"leave-one-out Brier {self.cv_brier:.4f}")
        prior = "" if self.prior_lambda is None or self.value != self.prior_lambda else \
            " (the known models' own, empirical Bayes)"
        what = (f"logistic on the known models' logits, penalty {self.value:g}{prior}"
                if self.part == "logistic" else
                f"similarity-weighted known models, temperature {self.value:g}")
        return (f"{self.n_labels} labels: {what}, own kNN k = {self.k}, borrowing weight "
                f"{self.mix:g} (chosen by {self.cv}); out-of-fold Brier {self.cv_brier:.4f} "
                "after its Platt map")

    def to_dict(self) -> dict[str, Any]:
        return {"n_labels": self.n_labels, "label_mean": self.label_mean,
                "part": self.part, "value": None if not math.isfinite(self.value) else self.value,
                "k": self.k, "mix": self.mix,
                "cv": self.cv, "cv_brier": self.cv_brier, "cv_hits": self.cv_hits,
                "fallback": self.fallback, "level_only": self.level_only,
                "prior_lambda": "inf" if self.prior_lambda == math.inf else self.prior_lambda}


class BorrowingPredictor(Estimator):
    """P(new, x) from a few labels, borrowing strength from the known models' P(m, x).

    Parameters
    ----------
    lambdas, taus, ks, mixes : sequences
        The grid that cross-validation searches (see the module docstring): penalties λ of the
        logistic part, temperatures τ of the similarity-weighted part, neighbours k of the
        own-label part and weights w of the borrowing part. Ties go to the earlier value. A k
        as large as the smallest training fold is not searched (the own-label part would be
        the label mean everywhere); the smallest k stays when every k is.
    min_labels : int
        Below this many labels P is the label mean (with a warning).
    folds, seed : int
        Cross-validation over the labels (random folds).
    threshold : float
        Binarisation of labels and predictions for ``cv_hits``.
    se_rule : float
        The choice takes the first candidate within ``se_rule`` standard errors of the best
        cross-validated score (1: the one-standard-error rule; 0: the best).
    prior_lambda : float, optional
        The penalty λ₀ the known models imply (:func:`deviation_penalty`; a router computes it
        from its pool): the logistic part at λ₀ is tried first, before the grid. None: the
        grid alone.
    """

    _fitted_attribute = "fit_"

    def __init__(self, lambdas: Sequence[float] = DEFAULT_LAMBDAS,
                 taus: Sequence[float] = DEFAULT_TAUS, ks: Sequence[int] = DEFAULT_KS,
                 mixes: Sequence[float] = DEFAULT_MIXES, min_labels: int = 8, folds: int = 5,
                 seed: int = 0, threshold: float = 0.5, se_rule: float = 1.0,
                 residual: bool = True, prior_lambda: float | None = None) -> None:
        self.lambdas = lambdas
        self.taus = taus
        self.ks = ks
        self.mixes = mixes
        self.min_labels = min_labels
        self.folds = folds
        self.seed = seed
        self.threshold = threshold
        self.se_rule = se_rule
        self.residual = residual
        self.prior_lambda = prior_lambda

    def _check_params(self) -> list[tuple[str, float]]:
        if any(not (lam > 0) for lam in self.lambdas):
            raise BenchrouteError(f"lambdas {list(self.lambdas)} invalid: each must be > 0 (inf allowed)")
        if any(not (0 <= tau < math.inf) for tau in self.taus):
            raise BenchrouteError(f"taus {list(self.taus)} invalid: each must be a number >= 0")
        if not list(self.lambdas) and not list(self.taus):
            raise BenchrouteError("lambdas and taus are both empty: nothing to borrow with")
        if not self.ks or any(not isinstance(k, (int, np.integer)) or k < 1 for k in self.ks):
            raise BenchrouteError(f"ks {list(self.ks)} invalid: each must be an int >= 1")
        if not self.mixes or any(not 0.0 <= w <= 1.0 for w in self.mixes):
            raise BenchrouteError(f"mixes {list(self.mixes)} invalid: each must be in [0, 1]")
        if not isinstance(self.min_labels, (int, np.integer)) or self.min_labels < 2:
            raise BenchrouteError(f"min_labels == {self.min_labels}, must be an int >= 2")
        prior = self.prior_lambda
        if prior is not None and not (isinstance(prior, (int, float)) and prior > 0):
            raise BenchrouteError(f"prior_lambda == {prior!r}; expected None or a number > 0 "
                                  "(inf allowed)")
        grid = [("similar", float(t)) for t in self.taus] + \
            [("logistic", float(lam)) for lam in self.lambdas]
        if prior is None:
            return grid
        first = ("logistic", float(prior))
        return [first] + [c for c in grid if c != first]

    # ------------------------------------------------------------------ parts
    @staticmethod
    def _borrow(kind: str, value: float, F: np.ndarray, Yk: np.ndarray, y: np.ndarray
                ) -> dict[str, np.ndarray]:
        """Fit one borrowing part on labelled inputs: the logistic regression on the known
        models' logits (penalty λ = ``value``), or the similarity-weighted average of the known
        models (temperature τ = ``value``) with a Platt map. ``Yk`` holds the known models'
        labels at the labelled inputs (NaN where unknown: their P stands in)."""
        if kind == "logistic":
            if math.isinf(value):
                X, b0, prec = _design(logits(F), value, y)
                return {"beta": increasing_fit(X[:, 1], y, b0, prec)}
            return {"beta": monotone_logistic(logits(F), y, value)}
        Yhat = np.where(np.isnan(Yk), F, Yk)
        agree = 1.0 - np.abs(Yhat - y[:, None]).mean(axis=0)
        w = np.exp(value * (agree - agree.max()))
        w /= w.sum()
        z = logits(F @ w)
        beta = increasing_fit(z, y, np.array([_level(z, y), 1.0]), np.array([WEAK, SLOPE]))
        return {"w": w, "beta": beta}

    @staticmethod
    def _borrow_predict(kind: str, value: float, part: dict[str, np.ndarray], F: np.ndarray
                        ) -> np.ndarray:
        if kind == "logistic":
            return expit(_design(logits(F), value)[0] @ part["beta"])
        b = part["beta"]
        return expit(b[0] + b[1] * logits(F @ part["w"]))

    @staticmethod
    def _own_knn(V: np.ndarray, y: np.ndarray, Q: np.ndarray, ks: Sequence[int],
                 mean: float) -> dict[int, np.ndarray]:
        """B(x) for each k: the shrunk mean label of the k nearest labelled inputs (brute force;
        a labelled input is never its own neighbour)."""
        d = 1.0 - np.asarray(Q, dtype=np.float64) @ np.asarray(V, dtype=np.float64).T
        d[d < SELF_DISTANCE] = np.inf
        K = min(max(ks), d.shape[1])
        order = np.argsort(d, axis=1, kind="stable")[:, :K]
        dist = np.take_along_axis(d, order, axis=1)
        lab = np.where(np.isfinite(dist), y[order], np.nan)[:, :, None]
        return {k: knn_posterior(dist, lab, min(k, K), "uniform", KNN_PRIOR, np.array([mean]))[:, 0]
                for k in ks}

    # ------------------------------------------------------------------ fitting
    def fit(self, F: np.ndarray, V: np.ndarray, y: np.ndarray, Yk: np.ndarray | None = None
            ) -> BorrowingPredictor:
        """Choose the borrowing part, k and w by cross-validation, then refit on every label.

        Parameters
        ----------
        F : ndarray (L, M0)
            The known models' P(m, x) at the labelled inputs (without the inputs' own labels).
        V : ndarray (L, d)
            Unit vectors of the labelled inputs (for the own-label kNN).
        y : ndarray (L,)
            The new model's labels in [0, 1].
        Yk : ndarray (L, M0), optional
            The known models' own labels at the labelled inputs when they are pool inputs (NaN
            elsewhere): they tell which known models the new one resembles better than P does.
            Held-out folds are always scored from F, as a new input would be.
        """
        cands = self._check_params()
        F = np.atleast_2d(np.asarray(F, dtype=np.float64))
        V = np.atleast_2d(np.asarray(V, dtype=np.float32))
        y = np.asarray(y, dtype=np.float64).ravel()
        Yk = np.full(F.shape, np.nan) if Yk is None else np.asarray(Yk, dtype=np.float64)
        if len(F) != len(y) or len(V) != len(y) or Yk.shape != F.shape:
            raise BenchrouteError(f"F, V, y and Yk must have the same rows; got {len(F)}, "
                                  f"{len(V)}, {len(y)}, {len(Yk)}")
        if len(y) == 0:
            raise BenchrouteError("no labels: give the new model's result on at least one input")
        if np.isnan(y).any() or y.min() < 0 or y.max() > 1:
            raise BenchrouteError("labels must be numbers in [0, 1] (no NaN)")
        self.V_, self.y_ = V, y
        mean = float(y.mean())
        if len(y) < self.min_labels:
            reason = f"fewer than min_labels = {self.min_labels} labels"
            warnings.warn(f"P(new, x) is the smoothed label mean (Σy + 1)/(L + 2) = "
                          f"{smoothed_level(y):.3f} of {len(y)} labels: {reason}; label more "
                          "inputs to borrow from the known models", UserWarning, stacklevel=2)
            # leave-one-out, as every other fit's: each label against the smoothed level of
            # the others (a mean that held the label itself counted it as a hit for p̂)
            loo = (float(y.sum()) - y + 1.0) / (len(y) + 1.0)
            hits = float(np.sum(labelled_right(y, self.threshold)
                                == predicted_right(loo, self.threshold)))
            self.fit_ = BorrowingFit(len(y), mean, "none", math.nan, 0, 0.0, "none",
                                     float(np.mean((y - loo) ** 2)), hits, reason)
            return self
        if y.min() == y.max():
            return self._level_only(F, y)
        fold, how = fold_ids(len(y), None, self.folds, self.seed)
        mixes = list(self.mixes)
        # a k that reaches every label of a training fold is the label mean everywhere: a
        # constant candidate (AUC 0.5) that can only win by chance
        smallest_fold = len(y) - int(np.bincount(fold).max())
        ks = sorted({int(k) for k in self.ks})
        ks = [k for k in ks if k < smallest_fold] or ks[:1]
        A = np.empty((len(cands), len(y)))
        B = {k: np.empty(len(y)) for k in ks}
        R = {k: np.zeros((len(cands), len(y))) for k in ks}
        for f in range(fold.max() + 1):
            te, tr = fold == f, fold != f
            for i, (kind, value) in enumerate(cands):
                part = self._borrow(kind, value, F[tr], Yk[tr], y[tr])
                A[i, te] = self._borrow_predict(kind, value, part, F[te])
                if self.residual:
                    res = y[tr] - self._borrow_predict(kind, value, part, F[tr])
                    corr = self._own_knn(V[tr], res, V[te], ks, 0.0)
                    for k in ks:
                        R[k][i, te] = corr[k]
            own = self._own_knn(V[tr], y[tr], V[te], ks, float(y[tr].mean()))
            for k in ks:
                B[k][te] = own[k]
        # each candidate is scored after its own Platt map (two parameters, fitted on its
        # out-of-fold predictions): the choice is about ranking, not about the level, which
        # a handful of labels sets badly for every candidate alike. Then the one-standard-error
        # rule: the first candidate (most borrowing first) within one standard error of the
        # best, since with a few labels the scores differ mostly by chance
        scored = []
        for w in mixes:
            for i in range(len(cands) if w > 0 else 1):
                for k in ks if w < 1 else ks[:1]:  # k matters only with the own-label part
                    P = self._combine(A[i], B[k], R[k][i], w)
                    platt = _platt_fit(P, y)
                    scored.append(((_platt_apply(platt, P) - y) ** 2, (i, k, w), platt))
        means = np.array([float(err.mean()) for err, _, _ in scored])
        top = int(np.argmin(means))
        se = float(scored[top][0].std(ddof=1) / np.sqrt(len(y)))
        pick = int(np.flatnonzero(means <= means[top] + self.se_rule * se + 1e-12)[0])
        _, best_cfg, best_platt = scored[pick]
        best = float(means[pick])
        i, k, w = best_cfg
        P_oof = _platt_apply(best_platt, self._combine(A[i], B[k], R[k][i], w))
        self.kind_, self.value_ = cands[i]
        self.k_, self.mix_ = k, w
        self.part_ = self._borrow(self.kind_, self.value_, F, Yk, y)
        self.res_ = y - self._borrow_predict(self.kind_, self.value_, self.part_, F)
        self.platt_ = best_platt
        hits = float(np.sum(predicted_right(P_oof, self.threshold)
                            == labelled_right(y, self.threshold)))
        self.fit_ = BorrowingFit(len(y), mean, self.kind_, self.value_, k, w, how, best, hits,
                                 prior_lambda=self.prior_lambda)
        logger.info("borrowing predictor: %s", self.fit_.summary())
        return self

    def _level_only(self, F: np.ndarray, y: np.ndarray) -> BorrowingPredictor:
        """Labels that never vary say nothing about which inputs are harder, only about the
        level, so the known models still give the ranking: the average known model (λ = ∞,
        slope 1), shifted so that its mean logit over the labelled inputs is that of the
        smoothed label mean (Σy + 1) / (L + 2), which is never 0 or 1. No cross-validation
        (there is nothing to choose between) and no Platt map; ``cv_brier`` and ``cv_hits``
        are leave-one-out (each label predicted from the level and mean z̄ of the others), so
        that p̂'s update counts hits on labels the fit did not see, as for the other fits."""
        n = len(y)
        level = smoothed_level(y)
        zbar = logits(F).mean(axis=1)
        a = _level(zbar, np.array([level]))
        self.kind_, self.value_, self.k_, self.mix_ = "logistic", math.inf, 0, 1.0
        self.part_ = {"beta": np.array([a, 1.0])}
        self.platt_ = np.array([0.0, 1.0])
        # leave-one-out: the level of the other L − 1 labels, their mean z̄ for the shift
        level_loo = (float(y.sum()) - y + 1.0) / (n + 1.0)
        P = expit(logits(level_loo, FINE) - (zbar.sum() - zbar) / (n - 1) + zbar)
        how = f"none: every label is {y[0]:g}, so the level (Σy + 1)/(L + 2) = {level:.3f}"
        warnings.warn(f"every one of the {n} labels is {y[0]:g}: P(new, x) ranks inputs as the "
                      f"average known model does, at the level {level:.3f}; label inputs where "
                      "the new model may fail to learn more", UserWarning, stacklevel=3)
        self.fit_ = BorrowingFit(n, float(y.mean()), "logistic", math.inf, 0, 1.0, how,
                                 float(np.mean((P - y) ** 2)),
                                 float(np.sum(predicted_right(P, self.threshold)
                                            == labelled_right(y, self.threshold))),
                                 level_only=True)
        logger.info("borrowing predictor: %s", self.fit_.summary())
        return self

    @property
    def weights_(self) -> np.ndarray | None:
        """The similarity weights over the known models (None for the other parts)."""
        part = getattr(self, "part_", None)
        return None if part is None or "w" not in part else part["w"]

    def predict_proba(self, F: np.ndarray, V: np.ndarray) -> np.ndarray:
        """P(new, x) (n,) from the known models' P(m, x) (n, M0) and the unit vectors (n, d)."""
        if not hasattr(self, "fit_"):
            raise BenchrouteError("This BorrowingPredictor instance is not fitted yet. Call 'fit' "
                                  "with appropriate arguments before using this estimator.")
        F = np.atleast_2d(np.asarray(F, dtype=np.float64))
        if self.fit_.fallback is not None:
            return np.full(len(F), smoothed_level(self.y_))
        A = self._borrow_predict(self.kind_, self.value_, self.part_, F) if self.mix_ > 0 \
            else np.zeros(len(F))
        B = R = np.zeros(len(F))
        if 0 < self.mix_ < 1 and self.residual:
            R = self._own_knn(self.V_, self.res_, np.atleast_2d(V), [self.k_], 0.0)[self.k_]
        elif self.mix_ < 1:
            B = self._own_knn(self.V_, self.y_, np.atleast_2d(V), [self.k_], self.fit_.label_mean)[self.k_]
        return _platt_apply(self.platt_, self._combine(A, B, R, self.mix_))

    def _combine(self, A: np.ndarray, B: np.ndarray, R: np.ndarray, w: float) -> np.ndarray:
        """w·A + (1 − w)·B; with ``residual``, for 0 < w < 1, A corrected by (1 − w) times the
        shrunk mean residual R of its nearest labelled inputs instead (it keeps A's ranking).

        The correction stops at min(A/2, ε) from 0 (and the same from 1): the features' clip ε
        where A is not small, and A/2 where it is, so that a clipped input keeps A's order
        instead of tying with every other (a new model far weaker than the known ones has
        A < ε everywhere)."""
        if self.residual and 0 < w < 1:
            lo = np.maximum(np.minimum(A / 2, EPS), FINE)
            hi = 1 - np.maximum(np.minimum((1 - A) / 2, EPS), FINE)
            return np.clip(A + (1 - w) * R, lo, hi)
        return w * A + (1 - w) * B


# ---------------------------------------------------------------------- probe sets
PROBE_STRATEGIES = ("spread", "disagree", "random")


def disagreement(Y: np.ndarray) -> np.ndarray:
    """ȳ(1 − ȳ) of each input's known labels (mean over models with a result): largest where
    the known models split, 0 where they all agree (or none has a result)."""
    Y = np.asarray(Y, dtype=np.float64)
    has = (~np.isnan(Y)).sum(axis=1)
    ybar = np.where(has > 0, np.nansum(Y, axis=1) / np.maximum(has, 1), 0.0)
    return np.where(has > 0, ybar * (1.0 - ybar), 0.0)


def task_quota(sizes: Sequence[int], n: int, rng: np.random.Generator | None = None
               ) -> np.ndarray:
    """Inputs per task: proportional to size, the sum kept at n, at least one per task while n
    allows, never more than a task has.

    The whole parts come first; the units left go to tasks by their fractional remainders:
    with ``rng``, by systematic sampling with inclusion probabilities proportional to the
    remainders (randomised rounding: each task's expected quota is its share), else to the
    largest remainders. Rounded deterministically, fewer inputs than tasks went to the same
    largest (then alphabetically first) tasks in every draw: with 10 labels over HELM's 55
    subjects, the same 10 subjects."""
    size = np.asarray(sizes, dtype=int)
    n = int(min(n, size.sum()))
    ideal = n * size / max(int(size.sum()), 1)
    floor = 1 if n >= int((size > 0).sum()) else 0
    q = np.minimum(np.maximum(np.floor(ideal).astype(int), np.minimum(size, floor)), size)
    while q.sum() > n:  # the task furthest over its share gives one back
        over = np.where(q > np.minimum(size, floor), q - ideal, -np.inf)
        q[int(np.argmax(over))] -= 1
    left = n - int(q.sum())
    rest = np.where(q < size, np.clip(ideal - q, 0.0, 1.0), 0.0)
    if rng is not None and left > 0 and rest.sum() > 0:
        # remainders scaled to sum to the units left (each stays < 1 after the whole parts),
        # then one random start and unit steps along their cumulative sum
        incl = np.minimum(rest * left / rest.sum(), 1.0)
        edges = np.cumsum(incl)
        points = rng.random() + np.arange(left)
        q[np.unique(np.searchsorted(edges, points[points < edges[-1]], side="right"))] += 1
    while q.sum() < n:  # the task furthest under its share takes one more
        under = np.where(q < size, ideal - q, -np.inf)
        q[int(np.argmax(under))] += 1
    return q


def probe_rows(X: np.ndarray, Y: np.ndarray, datasets: np.ndarray, n: int, seed: int = 0,
               strategy: str = "spread", sample: int = 4000) -> np.ndarray:
    """n pool rows to label for a new model.

    ``"spread"``: the pool's tasks get quotas proportional to their size (at least one each); a
    task's quota q splits its inputs into q regions (k-means over the vectors, fitted on at most
    ``sample`` of them), and each region gives one of its inputs at random. ``"disagree"``: the
    same regions, each giving its input where the known models disagree most
    (:func:`disagreement`; ties at random). ``"random"``: n rows uniformly at random.
    """
    if strategy not in PROBE_STRATEGIES:
        raise BenchrouteError(f"strategy == {strategy!r}; choose one of {list(PROBE_STRATEGIES)}")
    N = len(X)
    if not is_int(n) or n < 1:
        raise BenchrouteError(f"n == {n!r}, must be an int >= 1")
    if seed is not None and (not is_int(seed) or seed < 0):
        raise BenchrouteError(f"seed == {seed!r:.60}, must be None or an int >= 0")
    seq = np.random.SeedSequence(seed)
    rng = np.random.default_rng(seq)  # the stream of default_rng(seed)
    if n >= N:
        return np.arange(N)
    if strategy == "random":
        return np.sort(rng.choice(N, n, replace=False))
    from sklearn.cluster import KMeans

    ds = np.asarray(datasets)
    tasks = sorted(set(ds.tolist()))
    rows_of = [np.flatnonzero(ds == t) for t in tasks]
    # the quotas' own stream, so the regions and picks are those of the seed as before
    quota = task_quota([len(r) for r in rows_of], n, np.random.default_rng(seq.spawn(1)[0]))
    jitter = rng.random(N)
    score = disagreement(Y) + 1e-9 * jitter if strategy == "disagree" else jitter
    out: list[int] = []
    for rows, q in zip(rows_of, quota):
        if q == 0:
            continue
        if q >= len(rows):
            out.extend(rows.tolist())
            continue
        Xt = np.asarray(X[rows], dtype=np.float32)
        fit_rows = rows if len(rows) <= sample else np.sort(rng.choice(rows, sample, replace=False))
        km = KMeans(n_clusters=int(q), n_init=1, random_state=int(rng.integers(2**31)))
        km.fit(np.asarray(X[fit_rows], dtype=np.float32))
        region = km.predict(Xt)
        picked = [rows[np.flatnonzero(region == c)[np.argmax(score[rows[region == c]])]]
                  for c in range(int(q)) if (region == c).any()]
        if len(picked) < q:  # empty regions: the best remaining inputs of the task
            left = np.setdiff1d(rows, picked)
            picked += left[np.argsort(-score[left], kind="stable")[:q - len(picked)]].tolist()
        out.extend(int(r) for r in picked)
    return np.sort(np.asarray(out, dtype=np.int64))


def smoothed_level(y: np.ndarray | None = None, total: float = 0.0, n: int = 0) -> float:
    """(Σy + 1)/(L + 2), of the labels ``y`` or of their ``total`` and count ``n``: the level a
    few labels give, never 0 or 1. Why: one label of 1 made P(new, x) exactly 1 at every input,
    and the new model took every decision."""
    if y is not None:
        total, n = float(np.sum(y)), len(y)
    return (total + 1.0) / (n + 2.0)


def task_accuracy(P: np.ndarray, datasets: np.ndarray, label_mean: float, n_labels: int
                  ) -> pd.DataFrame:
    """Per task: the estimated accuracy (mean P over its inputs) and an approximate standard
    error combining the Bernoulli spread of the inputs, sqrt(Σ P(1 − P)) / n_t, and the
    uncertainty of the level itself, sqrt(ȳ(1 − ȳ) / L), from the L labels."""
    frame = pd.DataFrame({"task": np.asarray(datasets), "p": P, "v": P * (1 - P)})
    g = frame.groupby("task")
    n = g.size()
    acc = g["p"].mean()
    level = label_mean * (1 - label_mean) / max(n_labels, 1)
    se = np.sqrt(g["v"].sum() / n ** 2 + level)
    return pd.DataFrame({"accuracy": acc, "se": se, "n": n})


# ---------------------------------------------------------------------- router glue
#: Pool inputs per task over which an added model's task accuracy is estimated.
ACCURACY_SAMPLE = 200


@dataclass(frozen=True)
class AddedModel:
    """A model added from some labelled inputs: its labels, its fitted estimator and its
    estimated task accuracies (``accuracy``: tasks × accuracy, se, n)."""

    name: str
    X: np.ndarray = dataclass_field(repr=False)   # (L, d) unit vectors of the labelled inputs
    y: np.ndarray = dataclass_field(repr=False)   # (L,) labels in [0, 1]
    predictor: BorrowingPredictor = dataclass_field(repr=False)
    accuracy: pd.DataFrame = dataclass_field(repr=False)

    @property
    def fit(self) -> BorrowingFit:
        return self.predictor.fit_

    def summary(self) -> str:
        return f"{self.name}: {self.fit.summary()}"


def pool_labels_at(router: Router, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each vector, the pool row it duplicates (distance 0; -1 if none) and that row's
    known-model labels (NaN where none)."""
    dist, rows = router.predictor_.index_.search(X, 1)
    same = (dist[:, 0] < SELF_DISTANCE) & (rows[:, 0] >= 0)
    row = np.where(same, rows[:, 0], -1)
    Y = np.full((len(X), router.predictor_.n_models_), np.nan)
    Y[same] = router.Y_[row[same]]
    return row, Y


def pool_penalty(router: Router) -> float | None:
    """λ₀ of the router's current pool (:func:`deviation_penalty` over a seeded sample of
    :func:`penalty_rows`, the known models' P without each input's own labels): one value per
    pool state, so callers that refit several added models compute it once."""
    sample = penalty_rows(len(router.Y_), router.seed)
    return deviation_penalty(
        known_proba(router, router.predictor_.index_.vectors(sample), without_self=True),
        router.Y_[sample])


def fit_added(router: Router, name: str, X: np.ndarray, y: np.ndarray, prior: float | None
              ) -> AddedModel:
    """Fit the borrowing estimator of one added model on the router's current pool, and
    estimate its accuracy on each pool task (a seeded sample of at most
    :data:`ACCURACY_SAMPLE` inputs per task; labelled pool inputs count with their label).
    ``prior``: the pool's λ₀ (:func:`pool_penalty` of the router as it is now)."""
    F = known_proba(router, X, without_self=True)
    rows, Yk = pool_labels_at(router, X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        pred = BorrowingPredictor(seed=router.seed, threshold=router.threshold,
                                  prior_lambda=prior).fit(F, X, y, Yk)
    for w in caught:
        warnings.warn(f"model {name!r}: {w.message}", UserWarning, stacklevel=3)
    ds = router.datasets_
    rng = np.random.default_rng([router.seed, len(y)])
    sample = np.concatenate([r if len(r) <= ACCURACY_SAMPLE else
                             np.sort(rng.choice(r, ACCURACY_SAMPLE, replace=False))
                             for t in router.tasks_ for r in [np.flatnonzero(ds == t)]])
    Xs = router.predictor_.index_.vectors(sample)
    P = pred.predict_proba(known_proba(router, Xs, without_self=True), Xs)
    known = dict(zip(rows[rows >= 0].tolist(), y[rows >= 0].tolist()))
    P = np.array([known.get(int(r), p) for r, p in zip(sample, P)])
    acc = task_accuracy(P, ds[sample], pred.fit_.label_mean, len(y))
    return AddedModel(name, X, y, pred, acc)


def added_columns(router: Router, Q: np.ndarray, F: np.ndarray | None = None) -> np.ndarray:
    """P(new, x) (n, A) of every added model; ``F`` = the known models' P without the inputs'
    own labels, computed when not given."""
    added = getattr(router, "added_", {})
    if not added:
        return np.zeros((len(Q), 0))
    if F is None:
        F = known_proba(router, Q, without_self=True)
    return np.column_stack([a.predictor.predict_proba(F, Q) for a in added.values()])


def router_proba_all(router: Router, Q: np.ndarray) -> np.ndarray:
    """P(m, x) (n, M) of every model of a router, pool models then added ones. The added
    models' features come from a second search (a few more neighbours, the inputs' own left
    out), so the pool models' P stay exactly those of a router without added models (a longer
    search may break ties between equidistant neighbours differently)."""
    return np.hstack([known_proba(router, Q), added_columns(router, Q)])


def extend_reference(reference: Any, added: Sequence[AddedModel], strength: float) -> Any:
    """Reference pairs with one column per added model: p of the average known model, updated
    by the added model's out-of-fold hits on its own labels (the Beta–binomial update of p̂;
    being affine in p, it commutes with the kernel average)."""
    from benchroute.reference import ReferencePairs
    from benchroute.scoring import beta_binomial_mean

    if not added:
        return reference
    base = np.nanmean(reference.p, axis=1) if reference.p.size else np.zeros(len(reference.u))
    base = np.nan_to_num(base, nan=0.5)
    cols = [beta_binomial_mean(base, strength, np.asarray(a.fit.cv_hits),
                               np.asarray(a.fit.n_labels)) for a in added]
    # no self-estimate for an added model (its P does not come from pool neighbours): NaN, so
    # its p̂ is the kernel estimate of these columns
    e = None if reference.e is None else \
        np.column_stack([reference.e, np.full((len(reference.u), len(added)), np.nan)])
    return ReferencePairs(reference.u, np.column_stack([reference.p, *cols]), reference.task,
                          reference.alpha, reference.touched, reference.fallback, e,
                          reference.sample, reference.params)


def parse_results(results: Any, what: str = "results") -> pd.DataFrame:
    """A new model's results as a frame with ``text`` and/or ``dataset`` + ``instance_id``, and
    ``label`` in [0, 1] (from ``correct``, else ``score``)."""
    try:
        return _parse_results(results, what)
    except UnicodeEncodeError as exc:  # pandas' string columns hold UTF-8 (found by fuzzing)
        raise BenchrouteError(f"{what}: a field holds {exc.object[exc.start:exc.end]!r}, a lone "
                              "surrogate, which is no Unicode text; replace it") from None


def _parse_results(results: Any, what: str) -> pd.DataFrame:
    if isinstance(results, pd.DataFrame):
        if isinstance(results.columns, pd.MultiIndex):  # frame['correct'] is then a frame
            raise BenchrouteError(f"{what}: the columns are a MultiIndex; give one level of "
                                  "names (text or dataset + instance_id, correct or score)")
        frame = results.copy()
        if frame.columns.duplicated().any():
            raise BenchrouteError(f"{what}: columns {sorted(set(frame.columns[frame.columns.duplicated()]))} "
                                  "appear more than once")
    elif not is_items(results):
        raise BenchrouteError(f"{what}: expected a DataFrame or a list of records {{text or "
                              f"dataset + instance_id, correct or score}}, got "
                              f"{type(results).__name__}")
    else:
        recs = list(results)
        bad = next((i for i, r in enumerate(recs) if not isinstance(r, dict)), None)
        if bad is not None:
            raise BenchrouteError(f"{what}[{bad}]: expected a record {{text or dataset + "
                                  f"instance_id, correct or score}}, got {type(recs[bad]).__name__}")
        frame = pd.DataFrame(recs)
    if len(frame) == 0:
        raise BenchrouteError(f"{what} is empty: give the new model's result on at least one input")
    given = [c for c in ("correct", "score") if c in frame.columns]
    if not given:
        raise BenchrouteError(f"{what}: needs a 'correct' or 'score' field (a number in [0, 1])")
    col = given[0]
    if len(given) == 2:  # per record: 'correct' where it has one, else 'score'
        col = "label given"
        frame[col] = frame["correct"].where(frame["correct"].notna(), frame["score"])
    has_id = {"dataset", "instance_id"} <= set(frame.columns)
    if "text" not in frame.columns and not has_id:
        raise BenchrouteError(f"{what}: needs a 'text' field, or 'dataset' and 'instance_id' "
                              "naming pool inputs")
    label = pd.Series([label_value(v) for v in frame[col].tolist()], index=frame.index,
                      dtype=float)
    bad_rows = np.flatnonzero(label.isna().to_numpy() | (label < 0).to_numpy() | (label > 1).to_numpy())
    if len(bad_rows):
        i = int(bad_rows[0])
        value = frame[col].tolist()[i]
        field = " or ".join(repr(c) for c in given)
        if value is None or (isinstance(value, float) and np.isnan(value)):
            raise BenchrouteError(f"{what}[{i}]: no result ({field} is empty); fill in the "
                                  "model's result on that input, a number in [0, 1], or leave "
                                  "the record out")
        raise BenchrouteError(f"{what}[{i}]: field {field} is {value!r}; expected a number in "
                              "[0, 1]")
    out = pd.DataFrame({"label": label.astype(float).to_numpy()})
    for c in ("text", "dataset", "instance_id"):
        if c in frame.columns:
            out[c] = frame[c].to_numpy()
    if "text" in out.columns:
        for i, t in enumerate(out["text"]):
            if not isinstance(t, str) and not (has_id and pd.api.types.is_scalar(t)
                                               and pd.isna(t)):
                raise BenchrouteError(f"{what}[{i}]: field 'text' is {t!r}; expected a string")
            if isinstance(t, str) and is_blank(t):  # route refuses it as an input too
                raise BenchrouteError(f"{what}[{i}]: field 'text' is empty or only whitespace "
                                      "and invisible characters")
    return out
