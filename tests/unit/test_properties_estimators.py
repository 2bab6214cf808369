"""Properties of the estimators on random inputs (hypothesis): the borrowing estimator of a new
model and its parts, the probe set, the linear maps on the kNN P (stack, blends, their JSON
form) and the form-shift fingerprints and p-value. What docs/method.md ("Adding a model from a
few labelled inputs", "Form shift"), docs/routing.md (sections 1.1 to 1.5) and the docstrings
say of them, checked without re-deriving them line by line."""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import minimize
from scipy.special import expit, logit

from benchroute.data.text import is_blank
from benchroute.exceptions import BenchrouteError
from benchroute.new_models import (
    FINE,
    MIN_SLOPE,
    SLOPE,
    WEAK,
    BorrowingPredictor,
    deviation_penalty,
    disagreement,
    increasing_fit,
    monotone_logistic,
    parse_results,
    penalised_logistic,
    probe_rows,
    task_accuracy,
    task_quota,
)
from benchroute.predictors import KNNCorrectnessPredictor
from benchroute.shift import FEATURES, ShiftReference, fingerprint, fingerprints, task_shift
from benchroute.stacking import (
    EPS,
    FAMILIES,
    METHOD_NAMES,
    LinearStack,
    TaskClassifier,
    choose_map,
    choose_stack,
    logits,
    per_input_value,
)
from tests.unit.strategies import unit

FAST = settings(max_examples=60)
SLOW = settings(max_examples=25)
FITS = settings(max_examples=20)  # a BorrowingPredictor fit is 0.05-0.5 s

label = st.one_of(unit, st.just(math.nan))  # NaN = no result
binary = st.sampled_from([0.0, 1.0])
seeds = st.integers(0, 2**32 - 1)
coefs = st.floats(-5.0, 5.0, allow_nan=False, allow_subnormal=False)
COL = {f: i for i, f in enumerate(FEATURES)}


def arr(shape, elements=unit, dtype=np.float64, **kw) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(dtype, shape, elements=elements, **kw)


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def quiet(fn, *args, **kwargs):
    """Run ``fn`` with the estimator's UserWarnings (fallback, level only) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------- penalised fits
@st.composite
def logistic_problem(draw, n_max: int = 30, p_min: int = 1, p_max: int = 4):
    """X (n, p) with an intercept column, labels y in [0, 1] (0/1 or soft), a prior mean and
    positive precisions."""
    n = draw(st.integers(2, n_max))
    p = draw(st.integers(p_min, p_max))
    rng = np.random.default_rng(draw(seeds))
    X = np.c_[np.ones(n), 2.0 * rng.normal(size=(n, p - 1))]
    y = draw(arr((n,), st.one_of(binary, unit)))
    beta0 = draw(arr((p,), coefs))
    prec = draw(arr((p,), st.floats(0.05, 50.0)))
    return X, y, beta0, prec


def logistic_loss(X, y, beta, beta0, prec, offset=0.0) -> float:
    eta = X @ beta + offset
    return float(np.sum(np.logaddexp(0.0, eta) - y * eta) + 0.5 * np.sum(prec * (beta - beta0) ** 2))


@given(prob=logistic_problem())
@FAST
def test_penalised_logistic_is_the_finite_stationary_point(prob):
    """The objective is strictly convex (every precision > 0): the answer is finite, even for
    separable labels, and its gradient vanishes there (relative to the gradient's terms)."""
    X, y, beta0, prec = prob
    beta = penalised_logistic(X, y, beta0, prec)
    assert beta.shape == beta0.shape and np.isfinite(beta).all()
    p = expit(X @ beta)
    grad = X.T @ (p - y) + prec * (beta - beta0)
    scale = 1.0 + np.abs(X).T @ np.ones(len(y)) + prec * np.abs(beta - beta0)
    assert np.all(np.abs(grad) <= 1e-6 * scale)


@given(prob=logistic_problem(), factor=st.floats(1.5, 100.0))
@FAST
def test_a_larger_penalty_shrinks_toward_the_prior_mean(prob, factor):
    """Scaling every precision up never moves the answer further from the prior mean β0 (in the
    precision-weighted norm): the ridge path of a convex loss."""
    X, y, beta0, prec = prob
    near = penalised_logistic(X, y, beta0, factor * prec)
    far = penalised_logistic(X, y, beta0, prec)
    dist = [float(np.sum(prec * (b - beta0) ** 2)) for b in (near, far)]
    assert dist[0] <= dist[1] * (1 + 1e-6) + 1e-9


@given(prob=logistic_problem(p_min=2, p_max=2), flip=st.booleans())
@FAST
def test_increasing_fit_is_the_optimum_with_the_slope_kept_at_least_min_slope(prob, flip):
    """σ(a + b·z) with b ≥ MIN_SLOPE: the slope never falls below the bound, even for labels
    that run against z (``flip``), and no other (a, b ≥ MIN_SLOPE) has a lower objective (an
    independent bounded solver as the witness)."""
    X, y, beta0, prec = prob
    z = X[:, 1]
    if flip:
        y = (z < np.median(z)).astype(float)
    beta = increasing_fit(z, y, beta0, prec)
    assert beta.shape == (2,) and np.isfinite(beta).all() and beta[1] >= MIN_SLOPE
    ref = minimize(lambda b: logistic_loss(X, y, b, beta0, prec), np.r_[beta0[0], max(beta0[1], 1.0)],
                   method="L-BFGS-B", bounds=[(None, None), (MIN_SLOPE, None)],
                   options={"gtol": 1e-10, "ftol": 1e-14, "maxiter": 2000})
    got = logistic_loss(X, y, beta, beta0, prec)
    assert got <= ref.fun + 1e-6 * (1 + abs(ref.fun))
    # the fitted probability is non-decreasing in z
    order = np.argsort(z)
    assert np.all(np.diff(expit(beta[0] + beta[1] * z[order])) >= -1e-15)


@st.composite
def known_logits(draw, n_min: int = 3, n_max: int = 30, m_max: int = 5):
    """Z (n, M): the known models' logits (as from P clipped at EPS), and labels y."""
    n = draw(st.integers(n_min, n_max))
    M = draw(st.integers(1, m_max))
    F = draw(arr((n, M)))
    y = draw(arr((n,), st.one_of(binary, unit)))
    assume(0.0 < y.mean() < 1.0)
    return logits(F), y


@given(data=known_logits(), lam=st.sampled_from([0.3, 1.0, 3.0, 10.0, 100.0, 1000.0]),
       j=st.integers(0, 4), bump=st.floats(0.01, 5.0))
@FAST
def test_monotone_logistic_keeps_every_known_models_weight_positive(data, lam, j, bump):
    """Returned as [a, 0, c] for the columns [1, z̄, z_1..z_M], every c_m ≥ MIN_SLOPE / M: the
    score never falls where one known model's logit rises and the others stay."""
    Z, y = data
    n, M = Z.shape
    beta = monotone_logistic(Z, y, lam)
    assert beta.shape == (M + 2,) and np.isfinite(beta).all() and beta[1] == 0.0
    assert np.all(beta[2:] >= MIN_SLOPE / M - 1e-12)
    X = np.hstack([np.ones((n, 1)), Z.mean(axis=1, keepdims=True), Z])
    up = Z.copy()
    up[:, j % M] += bump
    X_up = np.hstack([np.ones((n, 1)), up.mean(axis=1, keepdims=True), up])
    assert np.all(X_up @ beta >= X @ beta)


@given(data=known_logits(n_min=10, n_max=40, m_max=4),
       lam=st.sampled_from([1.0, 3.0, 10.0, 100.0]))
@FAST
def test_monotone_logistic_is_the_logistic_part_where_the_bound_is_slack(data, lam):
    """b and δ are integrated out exactly: where the unbounded fit of σ(a + b·z̄ + Σ δ_m z_m)
    with penalty ½λ‖δ‖² + ½(b − 1)² + ½μ(a − a₀)² already keeps every b/M + δ_m above the bound,
    the bounded fit of c gives the same score."""
    Z, y = data
    n, M = Z.shape
    assume(0.02 < y.mean() < 0.98)  # a level far out makes both solvers' stopping points differ
    zbar = Z.mean(axis=1, keepdims=True)
    a0 = float(logits(np.mean(y), FINE) - np.mean(zbar))
    X = np.hstack([np.ones((n, 1)), zbar, Z])
    free = penalised_logistic(X, y, np.r_[a0, 1.0, np.zeros(M)],
                              np.r_[WEAK, SLOPE, np.full(M, lam)], iters=500, tol=1e-12)
    assume(np.all(free[1] / M + free[2:] > MIN_SLOPE / M + 0.05))
    got = monotone_logistic(Z, y, lam)  # L-BFGS-B stops at gtol: compare the probabilities
    np.testing.assert_allclose(expit(X @ got), expit(X @ free), atol=1e-4)


@st.composite
def penalty_pool(draw, m_min: int = 2, m_max: int = 4):
    """Known models' P (N, M) on a shared difficulty and their labels Y (some NaN)."""
    M = draw(st.integers(m_min, m_max))
    N = draw(st.integers(4 * M, 60))
    rng = np.random.default_rng(draw(seeds))
    diff = 2.0 * rng.normal(size=N)
    skill = rng.normal(size=M)
    F = expit(skill - diff[:, None] + rng.normal(size=(N, M)))
    Y = (rng.random((N, M)) < F).astype(float)
    Y[rng.random((N, M)) < draw(st.floats(0.0, 0.3))] = np.nan
    return F, Y


def inverse(lam: float | None) -> float | None:
    return None if lam is None else (0.0 if math.isinf(lam) else 1.0 / lam)


@given(pool=penalty_pool(), seed=seeds)
@SLOW
def test_deviation_penalty_is_positive_and_ignores_the_order_of_models_and_inputs(pool, seed):
    """λ₀ is None (nothing to learn from), a number > 0 or ∞ (the deviations are noise); it is a
    mean over known models and inputs, so listing them in another order cannot change it."""
    F, Y = pool
    lam = deviation_penalty(F, Y)
    assert lam is None or lam > 0
    rng = np.random.default_rng(seed)
    rows, cols = rng.permutation(len(F)), rng.permutation(F.shape[1])
    other = deviation_penalty(F[rows][:, cols], Y[rows][:, cols])
    if lam is None:
        assert other is None
    else:
        assert inverse(other) == pytest.approx(inverse(lam), rel=1e-5, abs=1e-9)


@given(F=arr((5, 1)), Y=arr((5, 1), label))
@SLOW
def test_one_known_model_gives_no_penalty(F, Y):
    """With fewer than two known models there is no other to regress on: None."""
    assert deviation_penalty(F, Y) is None


# ---------------------------------------------------------------------- the estimator
@st.composite
def labelled(draw, L_min: int = 8, L_max: int = 20, m_max: int = 4, vary: bool = True):
    """The known models' P at L labelled inputs F (L, M), their unit vectors V, labels y (0/1 or
    soft, not all equal when ``vary``; noise, or following one known model or the vectors, so
    that every part and mix gets chosen), the known models' own labels Yk (NaN where none), and
    queries (Fq, Vq)."""
    L = draw(st.integers(L_min, L_max))
    M = draw(st.integers(1, m_max))
    rng = np.random.default_rng(draw(seeds))
    F = draw(arr((L, M)))
    V = unit_rows(rng, L, 6)
    signal = draw(st.sampled_from(["noise", "model", "vectors"]))
    if signal == "noise":
        y = draw(arr((L,), st.one_of(binary, unit) if draw(st.booleans()) else binary))
    elif signal == "model":
        y = (rng.random(L) < F[:, draw(st.integers(0, M - 1))]).astype(float)
    else:
        y = (V[:, 0] > 0).astype(float)
    if vary:
        assume(y.min() < y.max())
    Yk = np.where(rng.random((L, M)) < 0.5, (rng.random((L, M)) < F).astype(float), np.nan)
    nq = draw(st.integers(1, 12))
    Fq = draw(arr((nq, M)))
    return F, V, y, Yk, Fq, unit_rows(rng, nq, 6)


#: grids that force each path of the choice (the default grid keeps the first candidate on
#: labels without structure): one part only, one mix only, the best candidate (se_rule 0), λ₀.
grids = st.fixed_dictionaries({}, optional={
    "mixes": st.sampled_from([(0.5,), (0.0,), (0.25, 0.75), (1.0,)]),
    "lambdas": st.sampled_from([(), (3.0,), (math.inf, 100.0, 1.0)]),
    "taus": st.sampled_from([(), (0.0, 20.0, 80.0)]),
    "se_rule": st.just(0.0), "residual": st.just(False), "prior_lambda": st.just(5.0),
}).filter(lambda g: g.get("lambdas", 1) != () or g.get("taus", 1) != ())


@given(data=labelled(), grid=grids)
@FITS
def test_borrowing_predictions_are_probabilities_and_deterministic(data, grid):
    """P(new, x) is a probability at every input; the fit says how many labels it read, their
    mean and an out-of-fold Brier score and hit count of possible size; refitting on the same
    labels (same seed) gives the same P bit for bit (a saved added model refits on load)."""
    F, V, y, Yk, Fq, Vq = data
    pred = BorrowingPredictor(**grid).fit(F, V, y, Yk)
    P = pred.predict_proba(Fq, Vq)
    assert P.shape == (len(Fq),) and np.isfinite(P).all() and (P >= 0).all() and (P <= 1).all()
    fit = pred.fit_
    assert fit.n_labels == len(y) and fit.label_mean == pytest.approx(y.mean())
    assert fit.fallback is None and not fit.level_only
    assert 0.0 <= fit.cv_brier <= 1.0 and 0 <= fit.cv_hits <= len(y)
    assert fit.part in ("logistic", "similar") and fit.mix in pred.mixes
    again = BorrowingPredictor(**grid).fit(F, V, y, Yk).predict_proba(Fq, Vq)
    np.testing.assert_array_equal(again, P)


@given(data=labelled(), grid=grids, delta=arr((12, 4), st.floats(0.0, 0.5)))
@FITS
def test_borrowing_never_lowers_p_where_every_known_model_rises(data, grid, delta):
    """Every part keeps a positive weight on the known models (slopes ≥ MIN_SLOPE, c_m ≥
    MIN_SLOPE/M, a Platt slope ≥ MIN_SLOPE; the own-label correction reads only the vectors):
    at the same input vector, known models' P that all rise never lower P(new, x)."""
    F, V, y, Yk, Fq, Vq = data
    pred = BorrowingPredictor(**grid).fit(F, V, y, Yk)
    higher = np.clip(Fq + delta[: len(Fq), : Fq.shape[1]], 0.0, 1.0)
    lo, hi = pred.predict_proba(Fq, Vq), pred.predict_proba(higher, Vq)
    assert np.all(hi >= lo - 1e-12)


@given(data=labelled(L_min=8, L_max=14, vary=True), seed=seeds)
@FITS
def test_with_leave_one_out_folds_the_order_of_the_labels_does_not_matter(data, seed):
    """The folds are seeded random positions, so the order of the labels picks them; with one
    fold per label (folds = L) they are leave-one-out and the fit reads the labels as a set:
    F, V, y and Yk permuted together give the same P (up to the bounded solver's tolerance)."""
    F, V, y, Yk, Fq, Vq = data
    grid = {"lambdas": (math.inf, 30.0, 3.0), "taus": (0.0, 10.0), "folds": len(y)}
    order = np.random.default_rng(seed).permutation(len(y))
    P = BorrowingPredictor(**grid).fit(F, V, y, Yk).predict_proba(Fq, Vq)
    Pp = BorrowingPredictor(**grid).fit(F[order], V[order], y[order], Yk[order]).predict_proba(Fq, Vq)
    np.testing.assert_allclose(Pp, P, atol=1e-6)


@given(data=labelled(L_min=1, L_max=7, vary=False))
@FAST
def test_fewer_than_min_labels_give_the_smoothed_label_mean_with_a_warning(data):
    """Below min_labels (8) P(new, x) is the smoothed label mean (Σy + 1)/(L + 2) everywhere,
    never 0 or 1 (one label of 1 gave P = 1), said by a warning and by ``fallback``."""
    F, V, y, Yk, Fq, Vq = data
    with pytest.warns(UserWarning, match="smoothed label mean"):
        pred = BorrowingPredictor().fit(F, V, y, Yk)
    assert pred.fit_.fallback is not None
    P = pred.predict_proba(Fq, Vq)
    np.testing.assert_allclose(P, (y.sum() + 1) / (len(y) + 2), rtol=0, atol=1e-15)
    assert ((P > 0) & (P < 1)).all()


@given(data=labelled(L_min=8, L_max=30, vary=False), value=st.one_of(binary, unit), seed=seeds)
@FAST
def test_labels_that_never_vary_set_the_level_and_keep_the_average_models_ranking(data, value, seed):
    """Equal labels take the level-only path (no cross-validation, a warning): P ranks inputs as
    the average known model z̄ does, its mean logit over the labelled inputs is that of the
    smoothed level (Σy + 1)/(L + 2) (never 0 or 1), and the order of the labels is irrelevant."""
    F, V, _, Yk, Fq, Vq = data
    y = np.full(len(F), value)
    with pytest.warns(UserWarning, match="every one of the"):
        pred = BorrowingPredictor().fit(F, V, y, Yk)
    assert pred.fit_.level_only and pred.fit_.fallback is None
    level = (y.sum() + 1.0) / (len(y) + 2.0)
    at_labels = pred.predict_proba(F, V)
    assert np.all((at_labels > 0) & (at_labels < 1))
    assert np.mean(logit(at_labels)) == pytest.approx(logit(level), abs=1e-9)
    P = pred.predict_proba(Fq, Vq)
    zbar = logits(Fq).mean(axis=1)
    order = np.argsort(zbar, kind="stable")
    assert np.all(np.diff(P[order]) >= -1e-15)
    perm = np.random.default_rng(seed).permutation(len(y))
    Pp = quiet(BorrowingPredictor().fit, F[perm], V[perm], y, Yk[perm]).predict_proba(Fq, Vq)
    np.testing.assert_allclose(Pp, P, rtol=1e-12, atol=1e-15)


@given(f=arr((3,)), L=st.integers(8, 25), value=st.one_of(binary, unit), seed=seeds)
@FAST
def test_equal_labels_at_inputs_the_known_models_cannot_tell_apart_give_the_level(f, L, value, seed):
    """Where the known models give one P vector at every input, the level-only fit is the
    constant smoothed level (Σy + 1)/(L + 2) there: near the label, never exactly 0 or 1."""
    F = np.tile(f, (L, 1))
    V = unit_rows(np.random.default_rng(seed), L, 6)
    y = np.full(L, value)
    pred = quiet(BorrowingPredictor().fit, F, V, y)
    P = pred.predict_proba(F[:4], V[:4])
    np.testing.assert_allclose(P, (L * value + 1.0) / (L + 2.0), rtol=1e-9)


# ---------------------------------------------------------------------- probe sets
@given(Y=arr(st.tuples(st.integers(1, 12), st.integers(1, 6)), label), seed=seeds)
@FAST
def test_disagreement_is_a_bernoulli_variance_of_the_known_labels(Y, seed):
    """ȳ(1 − ȳ) lies in [0, 1/4], is 0 where no model has a result or all agree on 0/1, and does
    not depend on the order of the models or on listing each model twice."""
    d = disagreement(Y)
    assert d.shape == (len(Y),) and np.isfinite(d).all() and (d >= 0).all() and (d <= 0.25 + 1e-15).all()
    agree = np.isnan(Y).all(axis=1) | np.array([np.isin(r[~np.isnan(r)], [0.0]).all()
                                                or np.isin(r[~np.isnan(r)], [1.0]).all() for r in Y])
    assert (d[agree] == 0).all()
    cols = np.random.default_rng(seed).permutation(Y.shape[1])
    np.testing.assert_allclose(disagreement(Y[:, cols]), d, atol=1e-15)
    np.testing.assert_allclose(disagreement(np.hstack([Y, Y])), d, atol=1e-15)


sizes_st = st.lists(st.integers(0, 60), min_size=1, max_size=10)


@given(sizes=sizes_st, n=st.integers(0, 300), seed=st.one_of(st.none(), seeds))
@FAST
def test_task_quota_sums_to_n_within_the_tasks_sizes(sizes, n, seed):
    """Quotas sum to n (all inputs when n exceeds them), lie in [0, size], give every non-empty
    task at least one while n allows, and repeat for the same rng (or without one)."""
    size = np.array(sizes)
    rng = None if seed is None else np.random.default_rng(seed)
    q = task_quota(sizes, n, rng)
    assert q.shape == size.shape and q.sum() == min(n, size.sum())
    assert (q >= 0).all() and (q <= size).all()
    if n >= (size > 0).sum():
        assert (q[size > 0] >= 1).all()
    again = task_quota(sizes, n, None if seed is None else np.random.default_rng(seed))
    np.testing.assert_array_equal(again, q)


@given(sizes=sizes_st, n=st.integers(1, 300), seed=st.one_of(st.none(), seeds))
@FAST
def test_task_quota_is_a_rounding_of_the_share(sizes, n, seed):
    """Whole parts first, the units left by the remainders: where every non-empty task's share
    n·size/total is at least one (so the one-per-task floor takes nothing), each quota is its
    share rounded down or up."""
    size = np.array(sizes)
    assume(size.sum() >= n)
    ideal = n * size / size.sum()
    assume((ideal[size > 0] >= 1).all())
    q = task_quota(sizes, n, None if seed is None else np.random.default_rng(seed))
    assert np.all(q > ideal - 1 - 1e-9) and np.all(q < ideal + 1 + 1e-9)


class FixedStart:
    """An rng whose ``random()`` is a chosen number: the start of the systematic sample."""

    def __init__(self, u: float) -> None:
        self.u = u

    def random(self) -> float:
        return self.u


@given(sizes=st.lists(st.integers(0, 40), min_size=2, max_size=12), n=st.integers(1, 11))
@SLOW
def test_randomised_task_quota_has_the_share_as_its_expected_value(sizes, n):
    """With fewer units than tasks, the units go by systematic sampling from one uniform start:
    averaged over the start, each task's quota is its share n·size/total (before, the same
    largest tasks took them in every draw)."""
    size = np.array(sizes)
    assume(n < (size > 0).sum())
    G = 800
    mean = np.mean([task_quota(sizes, n, FixedStart((j + 0.5) / G)) for j in range(G)], axis=0)
    np.testing.assert_allclose(mean, n * size / size.sum(), atol=3.0 / G)


@st.composite
def probe_pools(draw):
    """Pool vectors X (N, 4), known labels Y (N, M) with NaN, a task per row."""
    N = draw(st.integers(2, 40))
    rng = np.random.default_rng(draw(seeds))
    X = unit_rows(rng, N, 4)
    Y = draw(arr((N, draw(st.integers(1, 3))), label))
    tasks = np.array([f"t{i}" for i in draw(arr((N,), st.integers(0, 3), np.int64))], dtype=object)
    return X, Y, tasks


@given(pool=probe_pools(), n=st.integers(1, 45), seed=st.integers(0, 2**31),
       strategy=st.sampled_from(["spread", "disagree", "random"]))
@SLOW
def test_probe_rows_are_n_distinct_pool_rows_repeated_by_the_seed(pool, n, seed, strategy):
    """n distinct, sorted, valid pool rows (all of them when n ≥ the pool); the same seed gives
    the same rows; the task-aware strategies give each task its quota: at least one row while n
    allows, never more than it has, its share rounded where every share is ≥ 1; ``disagree``
    takes a task's row of most disagreement when the task gets one row."""
    X, Y, tasks = pool
    rows = probe_rows(X, Y, tasks, n, seed, strategy)
    N = len(X)
    assert rows.dtype.kind == "i" and len(rows) == min(n, N)
    assert np.all(np.diff(rows) > 0) and rows.min() >= 0 and rows.max() < N
    np.testing.assert_array_equal(probe_rows(X, Y, tasks, n, seed, strategy), rows)
    if strategy == "random" or n >= N:
        return
    names, size = np.unique(tasks, return_counts=True)
    got = np.array([(tasks[rows] == t).sum() for t in names])
    assert (got <= size).all()
    if n >= len(names):
        assert (got >= 1).all()
    ideal = n * size / N
    if (ideal >= 1).all():
        assert np.all(np.abs(got - ideal) < 1 + 1e-9)
    if strategy == "disagree":
        d = disagreement(Y)
        for t, g in zip(names, got):
            if g == 1:
                assert d[rows[tasks[rows] == t][0]] >= d[tasks == t].max() - 1e-8


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"n": -3}, {"n": 2.0}, {"n": "3"}, {"n": None},
                                    {"n": 2, "seed": -1}, {"n": 2, "seed": True},
                                    {"n": 2, "seed": 1.5}, {"n": 2, "strategy": "best"}])
def test_probe_rows_refuses_bad_arguments(kwargs):
    X = unit_rows(np.random.default_rng(0), 10, 4)
    with pytest.raises(BenchrouteError):
        probe_rows(X, np.zeros((10, 1)), np.array(["a"] * 10), **kwargs)


@given(n=st.booleans())
@settings(max_examples=5)
@example(n=True)
def test_probe_rows_refuses_a_bool_n(n):
    """n is a count, not a flag: True is refused as seed=True is, not read as 1."""
    X = unit_rows(np.random.default_rng(0), 10, 4)
    with pytest.raises(BenchrouteError):
        probe_rows(X, np.zeros((10, 1)), np.array(["a"] * 10), n)


@given(P=arr(st.integers(1, 30)), data=st.data(), mean=unit, L=st.integers(0, 60), seed=seeds)
@FAST
def test_task_accuracy_is_a_mean_per_task_with_a_standard_error_above_the_levels(P, data, mean, L, seed):
    """Per task: the accuracy lies between its inputs' smallest and largest P, the counts add up
    to the inputs, the standard error is finite and at least the level's sqrt(ȳ(1 − ȳ)/L), and
    the order of the inputs changes nothing."""
    tasks = np.array([f"t{i}" for i in data.draw(arr((len(P),), st.integers(0, 3), np.int64))])
    out = task_accuracy(P, tasks, mean, L)
    assert list(out.index) == sorted(set(tasks)) and out["n"].sum() == len(P)
    for t, row in out.iterrows():
        p = P[tasks == t]
        assert p.min() - 1e-12 <= row["accuracy"] <= p.max() + 1e-12
    se = out["se"].to_numpy()
    assert np.isfinite(se).all() and np.all(se >= np.sqrt(mean * (1 - mean) / max(L, 1)) - 1e-12)
    perm = np.random.default_rng(seed).permutation(len(P))
    pd.testing.assert_frame_equal(task_accuracy(P[perm], tasks[perm], mean, L), out,
                                  check_exact=False, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------- parse_results
@st.composite
def good_records(draw):
    """Records naming an input by text, by dataset + instance_id, or both, with ``correct`` or
    ``score`` a number in [0, 1] (float, 0/1 int or numpy float)."""
    n = draw(st.integers(1, 6))
    how = draw(st.sampled_from(["text", "id", "both"]))
    key = draw(st.sampled_from(["correct", "score"]))
    number = st.one_of(unit, st.sampled_from([0, 1]), unit.map(np.float32).map(float),
                       unit.map(np.float64))
    recs = []
    for i in range(n):
        r: dict[str, object] = {key: draw(number)}
        if how in ("text", "both"):
            # a blank text (whitespace and invisible characters) is refused
            r["text"] = draw(st.text(max_size=12).filter(lambda t: not is_blank(t)))
        if how in ("id", "both"):
            r["dataset"], r["instance_id"] = draw(st.sampled_from(["a", "b"])), f"{i:03d}"
        recs.append(r)
    return recs, key


@given(recs=good_records())
@FAST
def test_parse_results_keeps_the_documented_records(recs):
    """Records (or the same as a DataFrame) with text and/or dataset + instance_id and a label
    field in [0, 1] come back one row each, the label as a float, the naming fields as given."""
    records, key = recs
    out = parse_results(records)
    assert len(out) == len(records) and out["label"].dtype == np.float64
    np.testing.assert_array_equal(out["label"], [float(r[key]) for r in records])
    for c in ("text", "dataset", "instance_id"):
        if c in records[0]:
            assert out[c].tolist() == [r[c] for r in records]
    pd.testing.assert_frame_equal(parse_results(pd.DataFrame(records)), out)


bad_shape = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5),
                      st.binary(max_size=3), st.just({"text": "a", "correct": 1}),
                      st.just([]), st.just([1, 2]), st.just(["a"]), st.just([{"text": "a"}]),
                      st.just([{"correct": 1}]), st.just([{"dataset": "a", "correct": 1}]),
                      st.just(pd.DataFrame()), st.just(pd.DataFrame({"text": ["a"]})),
                      st.just(pd.DataFrame([["a", 1, 0]], columns=["text", "correct", "correct"])))
bad_label = st.one_of(st.floats(allow_nan=True).filter(lambda v: not 0 <= v <= 1),
                      st.integers().filter(lambda v: v not in (0, 1)), st.none(),
                      st.just(math.nan), st.just(-0.01), st.just(1.0 + 1e-9), st.just(1 + 1j),
                      st.lists(unit, max_size=2), st.just({"v": 1}))


@given(v=bad_shape)
@FAST
def test_parse_results_refuses_other_shapes(v):
    """Anything but a DataFrame or records with a naming field and a label field, or an empty
    one, is refused with a BenchrouteError."""
    with pytest.raises(BenchrouteError):
        parse_results(v)


@given(v=bad_label, key=st.sampled_from(["correct", "score"]), pos=st.integers(0, 2))
@FAST
@example(v=math.inf, key="correct", pos=0)
def test_parse_results_refuses_labels_outside_0_1(v, key, pos):
    """A label that is NaN, None, outside [0, 1], complex with an imaginary part, or not a scalar
    is refused with a BenchrouteError (in any position)."""
    recs = [{"text": f"q{i}", key: 0.5} for i in range(3)]
    recs[pos][key] = v
    with pytest.raises(BenchrouteError):
        parse_results(recs)


anything = st.deferred(lambda: st.one_of(
    st.none(), st.booleans(), st.integers(-(2**1100), 2**1100), st.floats(),
    st.complex_numbers(), st.text(max_size=4), st.binary(max_size=3),
    st.lists(st.one_of(st.integers(0, 1), st.text(max_size=2)), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(0, 1), max_size=2),
    st.just(np.array(["a", "b"])), st.just(pd.NA), st.just(np.float32(0.5))))
record = st.dictionaries(st.sampled_from(["text", "dataset", "instance_id", "correct", "score", "x"]),
                         anything, max_size=6)


@given(recs=st.lists(record, min_size=1, max_size=3))
@SLOW
@example(recs=[{"dataset": "d", "instance_id": "1", "text": ["a", "b"], "correct": 1}])
@example(recs=[{"text": "a", "correct": 10**400}])
def test_parse_results_never_raises_anything_but_a_benchroute_error(recs):
    """Whatever the records hold, the answer is a frame of labels in [0, 1] and string texts, or
    a BenchrouteError naming the field: never a TypeError, ValueError or OverflowError."""
    try:
        out = parse_results(recs)
    except BenchrouteError:
        return
    assert len(out) == len(recs) and ((out["label"] >= 0) & (out["label"] <= 1)).all()


@given(v=st.one_of(st.sampled_from(["0", "1", "0.5", " 1 ", "1e-1"]), st.just(b"1"),
                   st.just(pd.Timestamp(0))))
@settings(max_examples=10)
@example(v="0.5")
def test_parse_results_refuses_labels_that_are_not_numbers(v):
    """A label is "a number in [0, 1]" (the error message's words): a string, bytes or a time
    stamp is refused, as parse_labeled refuses it, not converted."""
    with pytest.raises(BenchrouteError):
        parse_results([{"text": "q", "correct": v}])


# ---------------------------------------------------------------------- linear maps (stacking)
@st.composite
def stacks(draw, vectors: bool | None = None, task: bool | None = None):
    """A LinearStack on M models (random coefficients, optionally with the vector and task
    parts), and P (n, M) in [0, 1] or NaN with query vectors Q (n, d)."""
    M = draw(st.integers(1, 4))
    n = draw(st.integers(1, 8))
    d = draw(st.integers(1, 5))
    coef = draw(arr((M, M), coefs))
    b = draw(arr((M,), coefs))
    vec = draw(arr((d, M), coefs)) if (draw(st.booleans()) if vectors is None else vectors) else None
    tc = clf = None
    if draw(st.booleans()) if task is None else task:
        T = draw(st.integers(1, 3))
        clf = TaskClassifier(draw(arr((d, T), coefs)), draw(arr((T,), coefs)),
                             tuple(f"t{i}" for i in range(T)))
        tc = draw(arr((T, M), coefs))
    P = draw(arr((n, M), label))
    Q = unit_rows(np.random.default_rng(draw(seeds)), n, d).astype(np.float64)
    return LinearStack(coef, b, 0.0, vec, clf, tc), P, Q


@given(s=stacks())
@FAST
def test_linear_stack_gives_probabilities(s):
    """σ of a finite linear map: every output in [0, 1], one per model and input."""
    stack, P, Q = s
    out = stack(P, Q)
    assert out.shape == P.shape and np.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()


@given(P=arr(st.tuples(st.integers(1, 8), st.integers(1, 4)), label))
@FAST
def test_the_identity_map_and_the_w_1_blend_give_back_the_clipped_knn_p(P):
    """coef = I, intercept 0 is the kNN itself: P comes back where it lies in [ε, 1 − ε] (the
    logits' clip elsewhere, 0.5 for NaN); so does any stack blended with w = 1."""
    M = P.shape[1]
    ident = LinearStack(np.eye(M), np.zeros(M))
    want = np.clip(np.nan_to_num(P, nan=0.5), EPS, 1 - EPS)
    np.testing.assert_allclose(ident(P), want, rtol=1e-12, atol=1e-15)
    other = LinearStack(np.full((M, M), 2.0), np.ones(M), 0.0, np.ones((3, M)))
    Q = unit_rows(np.random.default_rng(0), len(P), 3).astype(np.float64)
    np.testing.assert_allclose(other.blended(1.0)(P, Q), want, rtol=1e-12, atol=1e-15)


@given(s=stacks(), w=unit)
@FAST
def test_a_blend_lies_between_the_knn_and_the_stack(s, w):
    """The blend averages logits, so in every cell its P lies between the (clipped) kNN P and
    the stack's; w = 0 is the stack itself."""
    stack, P, Q = s
    knn = np.clip(np.nan_to_num(P, nan=0.5), EPS, 1 - EPS)
    full = stack(P, Q)
    out = stack.blended(w)(P, Q)
    lo, hi = np.minimum(knn, full), np.maximum(knn, full)
    assert np.all(out >= lo - 1e-12) and np.all(out <= hi + 1e-12)
    assert stack.blended(w).knn_weight == w
    np.testing.assert_array_equal(stack.blended(0.0)(P, Q), full)


@given(s=stacks(), w=st.one_of(st.just(0.0), unit))
@FAST
def test_a_stack_saved_as_json_and_loaded_predicts_the_same(s, w):
    """to_dict → JSON → from_dict keeps every coefficient (vector and task parts included), so a
    loaded router's P is the saved one's bit for bit."""
    stack = s[0].blended(w)
    P, Q = s[1], s[2]
    back = LinearStack.from_dict(json.loads(json.dumps(stack.to_dict())))
    assert back.knn_weight == stack.knn_weight and back.reads_vectors == stack.reads_vectors
    np.testing.assert_array_equal(back(P, Q), stack(P, Q))


@given(s=stacks(vectors=True))
@SLOW
def test_a_map_that_reads_the_vectors_refuses_to_run_without_them(s):
    """A map with a vector or task part needs the query vectors: without them, a
    BenchrouteError, not a wrong P."""
    with pytest.raises(BenchrouteError):
        s[0](s[1])


@given(Y=arr(st.tuples(st.integers(1, 10), st.integers(1, 4)), label), data=st.data(), seed=seeds)
@FAST
def test_per_input_value_of_routing_and_brier(Y, data, seed):
    """NaN exactly where an input has no label; ``route`` is the label of a model with a result
    (the best one, up to a tie within TIE_TOL, when P is the labels), ``brier`` lies in [−1, 0]
    (0 when P is the labels); the order of the models changes neither when P has no ties."""
    P = data.draw(arr(Y.shape, unit, unique=True))
    assume(Y.shape[1] == 1 or np.diff(np.sort(P, axis=1), axis=1).min() > 1e-8)
    none = np.isnan(Y).all(axis=1)
    for objective in ("route", "brier"):
        v = per_input_value(P, Y, objective)
        assert np.array_equal(np.isnan(v), none)
        cols = np.random.default_rng(seed).permutation(Y.shape[1])
        np.testing.assert_allclose(per_input_value(P[:, cols], Y[:, cols], objective), v,
                                   atol=1e-15)
    route = per_input_value(P, Y, "route")
    for i in np.flatnonzero(~none):
        assert route[i] in Y[i][~np.isnan(Y[i])]
    brier = per_input_value(P, Y, "brier")
    assert np.all((brier[~none] >= -1) & (brier[~none] <= 0))
    oracle = np.nan_to_num(Y, nan=0.0)  # labels within TIE_TOL of the best are a tie
    assert np.all(per_input_value(oracle, Y, "route")[~none] >= np.nanmax(Y[~none], axis=1) - 1e-9)
    np.testing.assert_array_equal(per_input_value(oracle, Y, "brier")[~none], 0.0)


@st.composite
def tuning_pools(draw):
    """Out-of-fold kNN P (N, M), labels Y (N, M) 0/1 with NaN drawn from P, from another model's
    P or from the vectors (so that each family can win), 3 folds, vectors X, 2-3 tasks."""
    N = draw(st.integers(9, 40))
    M = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(seeds))
    P = draw(arr((N, M)))
    X = unit_rows(rng, N, 5).astype(np.float64)
    truth = {"knn": P, "other": np.roll(P, 1, axis=1),  # the stack's case: another model's P
             "vectors": np.repeat(expit(6 * X[:, :1]), M, axis=1)}[draw(st.sampled_from(["knn", "other", "vectors"]))]
    Y = np.where(rng.random((N, M)) < 0.15, np.nan, (rng.random((N, M)) < truth).astype(float))
    fold = rng.permutation(N) % 3
    groups = np.array([f"t{i}" for i in rng.integers(0, draw(st.integers(2, 3)), N)])
    assume(len(np.unique(groups)) >= 2)
    return P, Y, fold, X, groups


@given(pool=tuning_pools(), method=st.sampled_from(["auto", "stack", "logistic", "task"]),
       objective=st.sampled_from(["brier", "route"]))
@settings(max_examples=15)
def test_choose_map_takes_the_simplest_candidate_within_one_standard_error(pool, method, objective):
    """One candidate is chosen: the first (the kNN, then w = 0.75 … 0 per family) whose CV value
    is within its standard error of the best; its out-of-fold P is in [0, 1], the kNN's being P
    itself (no map); a chosen map gives probabilities and keeps the candidate's w."""
    P, Y, fold, X, groups = pool
    choice = choose_map(method, P, Y, fold, X, objective, groups, random_folds=True)
    assert choice is not None and choice.method in METHOD_NAMES
    table = choice.table
    assert table["chosen"].sum() == 1
    value, se = table["value"].to_numpy(), table["se"].to_numpy()
    first = int(np.flatnonzero(table["chosen"])[0])
    behind = value.max() - value  # rounding decides a candidate exactly one se behind: slack
    assert behind[first] <= se[first] + 1e-12 and np.all(behind[:first] > se[:first] - 1e-12)
    assert table["method"].iloc[first] == choice.method
    assert np.isfinite(choice.oof).all() and (choice.oof >= 0).all() and (choice.oof <= 1).all()
    if choice.method == "knn":
        assert choice.stack is None
        np.testing.assert_array_equal(choice.oof, P)
    else:
        assert choice.stack.knn_weight == table["knn_weight"].iloc[first]
        out = choice.stack(P, X)
        assert out.shape == P.shape and (out >= 0).all() and (out <= 1).all()
    if method != "auto":
        assert choice.method == method


@given(pool=tuning_pools(), fams=st.lists(st.text(max_size=6), min_size=1, max_size=2))
@SLOW
def test_unknown_families_and_a_task_map_without_tasks_are_refused(pool, fams):
    """A family outside FAMILIES, or "task" with one task or task-held-out folds, is a
    BenchrouteError; "knn" is no map at all."""
    P, Y, fold, X, groups = pool
    assume(any(f not in FAMILIES for f in fams))
    with pytest.raises(BenchrouteError):
        choose_stack(P, Y, fold, families=fams, X=X, groups=groups)
    with pytest.raises(BenchrouteError):
        choose_map("task", P, Y, fold, X, groups=np.full(len(P), "one"), random_folds=True)
    with pytest.raises(BenchrouteError):
        choose_map("task", P, Y, fold, X, groups=groups, random_folds=False)
    assert choose_map("knn", P, Y, fold, X) is None


# ---------------------------------------------------------------------- form shift
odd_char = st.one_of(st.characters(), st.characters(categories=["Cs", "Mn", "Zs", "Cc", "Nd"]),
                     st.sampled_from(list("\r\n\t \x00\x0b\x0c\x1c\x85\u2028\u3000?:;{}$=ÀA.)(")))
any_text = st.one_of(st.text(odd_char, max_size=40), st.text(st.sampled_from("0123456789"), max_size=20),
                     st.text(st.sampled_from(" \t\n\r\x0b\x0c\u3000"), max_size=20))
outer_ws = st.text(st.sampled_from(list(" \t\n\r\x0b\x0c\x1c\x85\u2028\u3000")), max_size=4)
BINARY = ("lettered_options", "ends_question", "ends_colon", "code")
SHARES = ("digit_share", "non_ascii_share", "math_symbol_share")


@given(t=any_text)
@FAST
@example(t="\ud800\x00" + "9" * 30)
@example(t="x" * 200_000)
def test_fingerprints_are_finite_for_any_text(t):
    """Any str (lone surrogates, NUL, digits or whitespace only, very long) has a finite
    fingerprint: log features ≥ 0, markers 0 or 1, shares in [0, 1]."""
    f = np.asarray(fingerprint(t))
    assert f.shape == (len(FEATURES),) and np.isfinite(f).all()
    assert f[COL["log_chars"]] >= 0 and f[COL["log_lines"]] >= np.log(2) - 1e-12
    assert all(f[COL[c]] in (0.0, 1.0) for c in BINARY)
    assert all(0.0 <= f[COL[c]] <= 1.0 for c in SHARES)


@given(t=st.lists(st.text(odd_char.filter(lambda c: c not in "\r\n"), max_size=8), min_size=1,
                  max_size=4).map("\n".join), left=outer_ws, right=outer_ws,
       eol=st.sampled_from(["\r\n", "\r", "\n"]))
@FAST
def test_fingerprints_ignore_line_endings_and_outer_whitespace(t, left, right, eol):
    """The fingerprint is taken after the stores' normalisation, so a query and a pool input
    that differ in line endings or surrounding whitespace compare alike."""
    assert fingerprint(left + t.replace("\n", eol) + right) == fingerprint(t)


@given(texts=st.lists(any_text, max_size=6), seed=seeds)
@FAST
def test_fingerprints_are_per_text(texts, seed):
    """(n, features) with one row per text, whatever the others: reordering the texts reorders
    the rows; no text gives an empty (0, features) array."""
    F = fingerprints(texts)
    assert F.shape == (len(texts), len(FEATURES)) and F.dtype == np.float64
    perm = np.random.default_rng(seed).permutation(len(texts))
    np.testing.assert_array_equal(fingerprints([texts[i] for i in perm]), F[perm])


@given(t=any_text, a=st.sampled_from(["A.", "(A)", "a)", "A:"]), b=st.sampled_from(["B.", "(b)", "B)"]))
@FAST
def test_two_lettered_option_lines_mark_a_multiple_choice_text(t, a, b):
    """At least two lines starting with a lettered option (A., (B), c) …) set the marker,
    whatever comes before them; a question mark at the end sets ``ends_question``."""
    f = fingerprint(f"{t}\n{a} first\n  {b} second?")
    assert f[COL["lettered_options"]] == 1.0 and f[COL["ends_question"]] == 1.0


@given(lines=st.integers(15_000, 15_001))
@settings(max_examples=1)
@example(lines=15_000)
def test_fingerprint_time_is_linear_in_blank_lines(lines):
    """A long text is fingerprinted in about the time of reading it: 15,000 blank lines (15 kB)
    in well under a second, as 200,000 ordinary characters are."""
    start = time.perf_counter()
    fingerprint("q" + "\n" * lines + "b")
    assert time.perf_counter() - start < 0.5


class _Tasks:
    """The part of a predictor a saved ShiftReference reads: the task of each pool row."""

    def __init__(self, datasets: np.ndarray) -> None:
        self.datasets_ = datasets


@st.composite
def shift_references(draw):
    """A ShiftReference brought by saved arrays (no search): pool fingerprints, 2-25 pool
    tasks with their raw mean differences, none touching another."""
    T = draw(st.integers(2, 25))
    rng = np.random.default_rng(draw(seeds))
    per = draw(st.integers(1, 4))
    tasks = np.array([f"p{i:02d}" for i in range(T)])
    F = fingerprints([draw(any_text) for _ in range(T * per)])
    F = F + 0.1 * rng.normal(size=F.shape)
    # each task's inputs' differences to their neighbours, and their means (what is saved)
    diffs = rng.normal(scale=draw(st.floats(0.01, 3.0)), size=(T, per, len(FEATURES)))
    saved = {"shift_features": F, "shift_tasks": tasks, "shift_raw": diffs.mean(axis=1),
             "shift_touched": np.zeros((T, T), dtype=bool)}
    ref = ShiftReference(_Tasks(np.repeat(tasks, per)), [], 5, saved=saved)
    ref._inputs[()] = {str(t): d for t, d in zip(tasks, diffs)}  # as a fit leaves them
    return ref


@given(ref=shift_references(), F=arr(st.tuples(st.integers(1, 12), st.just(len(FEATURES))),
                                     st.floats(-3, 3)),
       gap=st.floats(0.0, 2.0), seed=seeds)
@FAST
def test_the_shift_p_value_is_conformal_and_ignores_the_order_of_the_tasks_inputs(ref, F, gap, seed):
    """p = (1 + Σ_j share of task j's draws with T_jr ≥ T) / (1 + tasks) lies in (0, 1] on
    that grid (one draw, T_j itself, for a task no larger than the scored one); inputs that
    match their neighbours' form (T = 0) give p = 1; permuting the task's inputs (fingerprints
    and their neighbours' means together) changes neither T nor p; a larger gap never raises
    p; the test fires exactly when p < α."""
    from benchroute.shift import DRAWS

    rng = np.random.default_rng(seed)
    means = F - gap * rng.normal(size=F.shape)
    s = task_shift(ref, F, means)
    n = s.n_reference
    assert n == len(ref.raw) and 0 < s.p_value <= 1 and s.statistic >= 0
    grid = s.p_value * (1 + n) * DRAWS
    assert abs(grid - round(grid)) < 1e-6
    assert list(s.difference) == list(FEATURES) and s.fired == (s.p_value < s.alpha)
    assert task_shift(ref, F, F).p_value == 1.0 and task_shift(ref, F, F).statistic == 0.0
    Tj = ref.statistics()
    assume(np.all(np.abs(Tj - s.statistic) > 1e-9))
    perm = rng.permutation(len(F))
    again = task_shift(ref, F[perm], means[perm])
    assert again.statistic == pytest.approx(s.statistic, rel=1e-12, abs=1e-12)
    assert again.p_value == s.p_value
    farther = task_shift(ref, F, F + 2.0 * (means - F))
    assert farther.statistic >= s.statistic and farther.p_value <= s.p_value


@given(ref=shift_references(), data=st.data())
@FAST
def test_leaving_pool_tasks_out_leaves_their_statistics_out(ref, data):
    """Excluding pool tasks whose neighbours no other task used drops exactly their T_j from the
    reference and keeps the others' (no second search)."""
    tasks = sorted(ref.raw)
    out = data.draw(st.lists(st.sampled_from(tasks), max_size=len(tasks) - 2, unique=True))
    Tj = ref.statistics(out)
    assert len(Tj) == len(tasks) - len(out)
    assert np.isfinite(Tj).all() and (Tj >= 0).all()


@given(n=st.integers(12, 40), K=st.integers(1, 5), n_tasks=st.integers(2, 4), seed=seeds,
       data=st.data())
@SLOW
def test_the_reference_ignores_the_order_of_the_pool_and_survives_saving(n, K, n_tasks, seed, data):
    """Each pool task's T_j is a mean over its inputs of their difference to their K nearest
    other-task neighbours: listing the pool in another order gives the same T_j (no tie at the
    K-th neighbour), and the saved arrays rebuild a reference with the same T_j."""
    rng = np.random.default_rng(seed)
    X = unit_rows(rng, n, 8)
    tasks = np.array([f"t{i}" for i in rng.integers(0, n_tasks, n)], dtype=object)
    assume(len(set(tasks)) >= 2)
    D = 1.0 - X.astype(np.float64) @ X.T.astype(np.float64)
    for i in range(n):
        d = np.sort(D[i, tasks != tasks[i]])
        assume(d.min() > 0.02)
        assume(len(d) <= K or d[K] - d[K - 1] > 1e-4)
    texts = [data.draw(any_text) for _ in range(n)]
    Y = np.zeros((n, 1), dtype=np.float32)

    def reference(order: np.ndarray) -> ShiftReference:
        pred = KNNCorrectnessPredictor(k=K).fit(X[order], Y[order], tasks[order])
        return ShiftReference(pred, [texts[i] for i in order], K)

    ref = reference(np.arange(n))
    Tj = ref.statistics()
    assert len(Tj) == len(set(tasks)) and np.isfinite(Tj).all() and (Tj >= 0).all()
    np.testing.assert_allclose(reference(rng.permutation(n)).statistics(), Tj, rtol=1e-9, atol=1e-12)
    loaded = ShiftReference(_Tasks(tasks), [], K, saved=ref.arrays())
    np.testing.assert_array_equal(loaded.statistics(), Tj)
