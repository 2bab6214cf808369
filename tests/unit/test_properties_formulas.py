"""Properties of the curve metrics (APGR, CPT, the upper hull, AIQ), the routing policies and the
scoring formulas on random arrays (hypothesis): what docs/routing.md "Definitions" and
docs/method.md say of them, checked without re-deriving them line by line."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from benchroute import curves as cv
from benchroute import policies as pol
from benchroute.exceptions import BenchrouteError
from benchroute.scoring import (
    TIE_TOL,
    argmax_ties,
    beta_binomial_mean,
    kernel_smooth,
    predictor_accuracy,
    s1,
    s2,
    s3,
    task_means,
)
from tests.unit.strategies import unit

FAST = settings(max_examples=100)
SLOW = settings(max_examples=40)

price = st.floats(0.0, 100.0, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def arr(shape, elements=unit, **kw) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float64, shape, elements=elements, **kw)


@st.composite
def pc(draw, n_max: int = 8, m_max: int = 5, m_min: int = 1, per_input: bool | None = None,
       distinct_costs: bool = False):
    """P (n, M) in [0, 1] and costs (M,) or (n, M) in [0, 100]."""
    n = draw(st.integers(1, n_max))
    m = draw(st.integers(m_min, m_max))
    P = draw(arr((n, m)))
    rows = draw(st.booleans()) if per_input is None else per_input
    if rows and distinct_costs:  # distinct within each row
        c = np.stack([draw(arr((m,), price, unique=True)) for _ in range(n)])
    elif rows:
        c = draw(arr((n, m), price))
    else:
        c = draw(arr((m,), price, unique=distinct_costs))
    return P, c


def full(c: np.ndarray, P: np.ndarray) -> np.ndarray:
    return np.broadcast_to(c, P.shape)


def mean_cost(c: np.ndarray, pick: np.ndarray) -> float:
    return float(c[np.arange(len(pick)), pick].mean())


# ------------------------------------------------------------------------------------ curves
@st.composite
def call_curve(draw, n_min: int = 2, n_max: int = 12):
    """Distinct call% values in [0, 1] (any order) and a quality per call."""
    n = draw(st.integers(n_min, n_max))
    call = draw(arr((n,), unit, unique=True))
    assume(np.diff(np.sort(call)).min() > 1e-6)  # distinct call% (a tie is a vertical step)
    quality = draw(arr((n,)))
    return call, quality


@given(q=st.tuples(unit, unit), n=st.integers(2, 12))
@FAST
def test_apgr_of_the_random_router_line_is_one_half(q, n):
    """PGR = call% (quality linear from weak to strong) is the random router: APGR 0.5."""
    q_weak, q_strong = q
    assume(abs(q_strong - q_weak) > 1e-6)
    call = np.linspace(0.0, 1.0, n)[::-1]  # unsorted on purpose
    quality = q_weak + call * (q_strong - q_weak)
    assert cv.apgr(call, quality, q_strong=q_strong, q_weak=q_weak) == pytest.approx(0.5, abs=1e-9)


@given(curve=call_curve(), q=st.tuples(unit, unit),
       a=st.floats(0.01, 100.0), b=st.floats(-10.0, 10.0), seed=st.integers(0, 2**16))
@FAST
def test_apgr_is_invariant_to_affine_rescaling_and_point_order(curve, q, a, b, seed):
    """APGR is a ratio of areas above the weak line: the unit of quality and the order in which
    the points are listed cannot change it."""
    call, quality = curve
    q_weak, q_strong = q
    assume(abs(q_strong - q_weak) > 1e-3)
    base = cv.apgr(call, quality, q_strong=q_strong, q_weak=q_weak)
    order = np.random.default_rng(seed).permutation(len(call))
    scaled = cv.apgr(call[order], a * quality[order] + b, q_strong=a * q_strong + b, q_weak=a * q_weak + b)
    assert scaled == pytest.approx(base, rel=1e-6, abs=1e-6)


@given(curve=call_curve(), q=st.tuples(unit, unit))
@FAST
def test_apgr_constant_weak_and_strong_curves_are_zero_and_one(curve, q):
    """A router always as good as the weak model has APGR 0, always as good as the strong 1."""
    call, _ = curve
    q_weak, q_strong = q
    assume(abs(q_strong - q_weak) > 1e-6)
    assert cv.apgr(call, np.full(len(call), q_weak), q_strong=q_strong, q_weak=q_weak) == pytest.approx(0, abs=1e-9)
    assert cv.apgr(call, np.full(len(call), q_strong), q_strong=q_strong, q_weak=q_weak) == pytest.approx(1)


@given(curve=call_curve(), q=st.tuples(unit, unit), t1=unit, t2=unit)
@FAST
def test_cpt_is_monotone_in_the_target(curve, q, t1, t2):
    """Reaching a higher PGR can never take fewer calls to the strong model."""
    call, quality = curve
    q_weak, q_strong = q
    assume(abs(q_strong - q_weak) > 1e-3)
    lo, hi = sorted((t1, t2))
    c_lo, c_hi = (cv.cpt(call, quality, q_strong=q_strong, q_weak=q_weak, pgr_target=t) for t in (lo, hi))
    if math.isnan(c_lo):  # the lower target is never reached: neither is the higher one
        assert math.isnan(c_hi)
    elif not math.isnan(c_hi):
        assert c_lo <= c_hi + 1e-9


@given(curve=call_curve(), q=st.tuples(unit, unit), target=unit)
@FAST
def test_cpt_is_where_pgr_first_reaches_the_target(curve, q, target):
    """CPT lies in the call range, PGR (linear between points) equals the target there unless
    the first point already reaches it, and stays below the target at every point before."""
    call, quality = curve
    q_weak, q_strong = q
    assume(abs(q_strong - q_weak) > 1e-3)
    pgr = (quality - q_weak) / (q_strong - q_weak)
    assume(not np.any((pgr < target) & (pgr >= target - 1e-9)))  # the tolerance band: below
    x = cv.cpt(call, quality, q_strong=q_strong, q_weak=q_weak, pgr_target=target)
    if math.isnan(x):
        assert (pgr < target).all()
        return
    assert call.min() - 1e-12 <= x <= call.max() + 1e-12
    assert (pgr[call < x - 1e-12] < target).all()
    if x > call.min():
        assert cv.interp_at(call, pgr, x) == pytest.approx(target, abs=1e-6)
    else:
        assert pgr[np.argmin(call)] >= target


@given(offsets=st.lists(st.integers(-40, 40), min_size=2, max_size=6), target=st.floats(0.1, 0.9))
@settings(max_examples=200)
@example(offsets=[-20, -5], target=0.5)
def test_cpt_stays_in_the_call_range_when_pgr_grazes_the_target(offsets, target):
    """Qualities within 1e-11 of the target's: CPT must still be a call% the curve visits."""
    call = np.linspace(0.0, 1.0, len(offsets))
    quality = target + np.asarray(offsets) * 1e-13  # q_weak 0, q_strong 1: PGR = quality
    x = cv.cpt(call, quality, q_strong=1.0, q_weak=0.0, pgr_target=target)
    assert math.isnan(x) or 0.0 <= x <= 1.0


@given(curve=call_curve(), at=st.floats(-0.5, 1.5))
@FAST
def test_interp_at_passes_through_the_points_and_stays_within_their_range(curve, at):
    """interp_at reproduces each point, and elsewhere stays between the smallest and largest y."""
    x, y = curve
    for xi, yi in zip(x, y):
        assert cv.interp_at(x, y, xi) == pytest.approx(yi, abs=1e-12)
    assert y.min() - 1e-12 <= cv.interp_at(x, y, at) <= y.max() + 1e-12


@st.composite
def cost_quality(draw, n_min: int = 1, n_max: int = 10):
    n = draw(st.integers(n_min, n_max))
    return draw(arr((n,), price)), draw(arr((n,)))


@given(pts=cost_quality())
@FAST
def test_upper_hull_is_a_nondecreasing_concave_majorant_made_of_input_points(pts):
    """RouterBench's R̃: non-decreasing, concave, on or above every point from the cheapest
    cost on, and every vertex is one of the models' points."""
    cost, quality = pts
    hx, hy = cv.upper_hull(cost, quality)
    assert (np.diff(hx) > 0).all() and (np.diff(hy) > 0).all()
    points = set(zip(cost.tolist(), quality.tolist()))
    assert all((x, y) in points for x, y in zip(hx.tolist(), hy.tolist()))
    assert hx[0] == cost.min()
    if len(hx) >= 3:
        slopes = np.diff(hy) / np.diff(hx)
        assert (np.diff(slopes) <= 1e-9 * (1 + np.abs(slopes[1:]))).all()
    r = np.interp(cost, hx, hy, right=hy[-1])
    assert (r >= quality - 1e-9).all()
    assert hy[-1] == quality.max()


@given(pts=cost_quality(), extra=cost_quality())
@FAST
def test_aiq_of_a_hull_is_its_mean_and_more_points_never_lower_it(pts, extra):
    """AIQ over [min cost, max cost] is the mean of R̃ there (checked on a fine grid), and
    since a larger pool can only raise R̃ (qualities >= 0), it can only raise AIQ."""
    cost, quality = pts
    c_min, c_max = float(cost.min()), float(cost.max())
    assume(c_max - c_min > 1e-3)
    hx, hy = cv.upper_hull(cost, quality)
    grid = np.linspace(c_min, c_max, 20001)
    riemann = float(np.interp(grid, hx, hy, right=hy[-1]).mean())
    got = cv.aiq(cost, quality, c_min, c_max)
    assert got == pytest.approx(riemann, abs=1e-3)
    assert quality[cost == c_min].max() - 1e-12 <= got <= quality.max() + 1e-12
    assert cv.aiq(hx, hy, c_min, c_max) == pytest.approx(got, abs=1e-12)  # the hull's own AIQ
    more = cv.aiq(np.r_[cost, extra[0]], np.r_[quality, extra[1]], c_min, c_max)
    assert more >= got - 1e-12


@given(pts=cost_quality(), picks=st.lists(st.tuples(st.integers(0, 9), unit, unit), max_size=5),
       lo=price, width=st.floats(0.01, 100.0))
@FAST
def test_aiq_ignores_dominated_points(pts, picks, lo, width):
    """A point at least as costly and no better than a model's point changes neither the hull
    nor AIQ."""
    cost, quality = pts
    more_c, more_q = list(cost), list(quality)
    for i, dc, fq in picks:
        j = i % len(cost)
        more_c.append(cost[j] + 50.0 * dc)
        more_q.append(quality[j] * fq)
    a = cv.aiq(cost, quality, lo, lo + width)
    b = cv.aiq(np.array(more_c), np.array(more_q), lo, lo + width)
    assert b == pytest.approx(a, abs=1e-12)


# ---------------------------------------------------------------------------------- policies
def _all_picks(P, c, t_or_tau, drop, lam, bud, strong, weak):
    return {
        "best": pol.best(P, c),
        "threshold": pol.threshold(P, c, strong=strong, weak=weak, t=t_or_tau),
        "smallest_sufficient": pol.smallest_sufficient(P, c, tau=t_or_tau),
        "cheapest_within": pol.cheapest_within(P, c, max_quality_drop=drop),
        "lagrangian": pol.lagrangian(P, c, lam=lam),
        "budget": pol.budget(P, c, budget=bud),
    }


@given(data=pc(), tau=st.floats(-1.0, 2.0), drop=st.floats(0.0, 2.0), lam=st.floats(0.0, 10.0),
       bud=st.floats(0.0, 120.0), sw=st.tuples(st.integers(0, 4), st.integers(0, 4)))
@FAST
def test_every_policy_returns_one_valid_column_per_input(data, tau, drop, lam, bud, sw):
    """Whatever the parameter, each policy names one existing model per input, and
    apply_policy by name makes the same choice; a value outside the parameter's range (the one
    table the gateway's entry points read too), or strong = weak, is refused the same way
    called directly and by name."""
    P, c = data
    m = P.shape[1]
    strong, weak = sw[0] % m, sw[1] % m
    calls = {"best": (pol.best, {}), "smallest_sufficient": (pol.smallest_sufficient, {"tau": tau}),
             "lagrangian": (pol.lagrangian, {"lam": lam}),
             "cheapest_within": (pol.cheapest_within, {"max_quality_drop": drop}),
             "budget": (pol.budget, {"budget": bud}),
             "threshold": (pol.threshold, {"t": tau, "strong": strong, "weak": weak})}
    for name, (fn, kw) in calls.items():
        bad = [k for k, v in kw.items() if k in pol.PARAM_RANGES and not
               pol.PARAM_RANGES[k][0] - pol.RANGE_SLACK <= v <= pol.PARAM_RANGES[k][1] + pol.RANGE_SLACK]
        if bad or (name == "threshold" and strong == weak):
            message = "|".join([rf"{k} == .*expected a finite number (in|>=)" for k in bad]
                               + ["the same model"] * (name == "threshold" and strong == weak))
            with pytest.raises(BenchrouteError, match=message):
                fn(P, c, **kw)
            with pytest.raises(BenchrouteError, match=message):
                pol.apply_policy(name, P, c, **kw)
            continue
        pick = fn(P, c, **kw)
        assert pick.shape == (len(P),), name
        assert np.issubdtype(pick.dtype, np.integer), name
        assert ((pick >= 0) & (pick < m)).all(), name
        np.testing.assert_array_equal(pol.apply_policy(name, P, c, **kw), pick, name)


@given(data=pc())
@FAST
def test_best_is_a_maximum_and_the_cheapest_of_the_tied(data):
    """best's P is the top (within the tie tolerance) and no tied model is cheaper;
    lagrangian at price 0 is best."""
    P, c = data
    C = full(c, P)
    pick = pol.best(P, c)
    rows = np.arange(len(P))
    top = P.max(axis=1)
    assert (P[rows, pick] >= top - TIE_TOL).all()
    tied = top[:, None] - TIE_TOL <= P
    assert (C[rows, pick] <= np.where(tied, C, np.inf).min(axis=1)).all()
    np.testing.assert_array_equal(pol.lagrangian(P, c, lam=0.0), pick)


@given(data=pc(), huge=st.floats(1.0, 1.0 + pol.RANGE_SLACK))
@FAST
def test_cheapest_within_spans_best_to_cheapest(data, huge):
    """Drop 0 keeps the top P; the largest drop allowed, 1, is at least any P gap, and picks a
    cheapest model."""
    P, c = data
    C = full(c, P)
    rows = np.arange(len(P))
    at0 = pol.cheapest_within(P, c, max_quality_drop=0.0)
    assert (P[rows, at0] >= P.max(axis=1) - TIE_TOL).all()
    wide = pol.cheapest_within(P, c, max_quality_drop=huge)
    np.testing.assert_array_equal(C[rows, wide], C.min(axis=1))


@given(data=pc(), d1=st.floats(0.0, 1.0), d2=st.floats(0.0, 1.0))
@FAST
def test_cheapest_within_cost_never_rises_with_the_drop(data, d1, d2):
    """Tolerating a larger drop widens the candidate set, so the cost cannot go up."""
    P, c = data
    C = full(c, P)
    rows = np.arange(len(P))
    lo, hi = sorted((d1, d2))
    a = pol.cheapest_within(P, c, max_quality_drop=lo)
    b = pol.cheapest_within(P, c, max_quality_drop=hi)
    assert (C[rows, b] <= C[rows, a]).all()
    assert (P[rows, b] >= P.max(axis=1) - hi - TIE_TOL).all()


@given(data=pc(m_min=2), drop=st.floats(0.0, 1.0), tau=unit)
@settings(max_examples=200)
def test_cost_led_policies_never_pick_a_dominated_model(data, drop, tau):
    """No pick of cheapest_within / smallest_sufficient has a rival as cheap with clearly
    higher P: such a rival is also within the drop / above τ and strictly better."""
    P, c = data
    C = full(c, P)
    rows = np.arange(len(P))
    for pick in (pol.cheapest_within(P, c, max_quality_drop=drop),
                 pol.smallest_sufficient(P, c, tau=tau)):
        better = (C[rows, pick][:, None] >= C) & (P[rows, pick][:, None] + 1e-6 < P)
        assert not better.any()


@given(data=pc(), tau=st.floats(0.0, 1.0 + pol.RANGE_SLACK))
@FAST
def test_smallest_sufficient_is_the_cheapest_that_reaches_tau(data, tau):
    """With a model at or above τ the pick is one of them and none is cheaper; with none it
    is best. A τ outside [0, 1] is refused (called directly as by name)."""
    P, c = data
    for out in (-0.5, 1.5, float("nan")):
        with pytest.raises(BenchrouteError, match=r"tau == .*expected a finite number"):
            pol.smallest_sufficient(P, c, tau=out)
    C = full(c, P)
    rows = np.arange(len(P))
    pick = pol.smallest_sufficient(P, c, tau=tau)
    ok = tau <= P
    has = ok.any(axis=1)
    assert (P[rows, pick][has] >= tau).all()
    assert (C[rows, pick][has] == np.where(ok, C, np.inf).min(axis=1)[has]).all()
    np.testing.assert_array_equal(pick[~has], pol.best(P, c)[~has])


@given(data=pc(m_min=2), sw=st.tuples(st.integers(0, 4), st.integers(1, 4)),
       t1=st.floats(-1.0, 1.0), t2=st.floats(-1.0, 1.0))
@FAST
def test_threshold_share_to_strong_never_rises_with_t(data, sw, t1, t2):
    """Raising t can only move inputs from the strong model to the weak one."""
    P, c = data
    m = P.shape[1]
    strong = sw[0] % m
    weak = (strong + sw[1]) % m
    assume(weak != strong)
    lo, hi = sorted((t1, t2))
    a = pol.threshold(P, c, strong=strong, weak=weak, t=lo)
    b = pol.threshold(P, c, strong=strong, weak=weak, t=hi)
    assert set(a.tolist()) | set(b.tolist()) <= {strong, weak}
    assert not ((b == strong) & (a == weak)).any()
    assert (pol.threshold(P, c, strong=strong, weak=weak, t=-1.0) == strong).all()
    assert (pol.threshold(P, c, strong=strong, weak=weak, t=1.0 + pol.RANGE_SLACK) == weak).all()


@given(data=pc(n_max=10), frac=st.floats(-0.2, 1.5))
@SLOW
def test_budget_keeps_its_mean_cost_when_the_cheapest_assignment_fits(data, frac):
    """Budgets from below the cheapest assignment to above the free choice: the picks' mean
    cost stays within any budget that the cheapest assignment meets, and below it they are
    the cheapest models; a budget the free choice meets gives best."""
    P, c = data
    C = full(c, P)
    cheapest = float(C.min(axis=1).mean())
    free = mean_cost(C, pol.best(P, c))
    B = max(0.0, cheapest + frac * (free - cheapest))
    pick = pol.budget(P, c, budget=B)
    if cheapest <= B:
        assert mean_cost(C, pick) <= B
    else:
        np.testing.assert_array_equal(C[np.arange(len(P)), pick], C.min(axis=1))
    if free <= B:
        np.testing.assert_array_equal(pick, pol.best(P, c))


@given(data=pc(n_max=10), f1=unit, f2=unit)
@SLOW
def test_budget_spends_and_gains_more_with_a_larger_budget(data, f1, f2):
    """A larger budget never lowers the picks' mean cost or their total predicted quality."""
    P, c = data
    C = full(c, P)
    cheapest = float(C.min(axis=1).mean())
    free = mean_cost(C, pol.best(P, c))
    lo, hi = (cheapest + f * (free - cheapest) for f in sorted((f1, f2)))
    a, b = pol.budget(P, c, budget=lo), pol.budget(P, c, budget=hi)
    rows = np.arange(len(P))
    assert mean_cost(C, b) >= mean_cost(C, a) - 1e-9
    assert P[rows, b].sum() >= P[rows, a].sum() - 1e-7


@given(data=pc(n_max=4, m_max=3), frac=unit)
@SLOW
def test_budget_beats_every_assignment_that_costs_no_more(data, frac):
    """The Lagrangian choice is optimal for its own spend: no assignment (brute force) with a
    mean cost at most the picks' has a higher total P (up to the tie tolerance)."""
    P, c = data
    C = full(c, P)
    n, m = P.shape
    cheapest = float(C.min(axis=1).mean())
    free = mean_cost(C, pol.best(P, c))
    pick = pol.budget(P, c, budget=cheapest + frac * (free - cheapest))
    rows = np.arange(n)
    spent, gained = C[rows, pick].sum(), P[rows, pick].sum()
    for other in itertools.product(range(m), repeat=n):
        o = np.array(other)
        if C[rows, o].sum() <= spent - 1e-9:
            assert P[rows, o].sum() <= gained + n * TIE_TOL + 1e-9


@given(data=pc(n_max=10), frac=unit)
@SLOW
def test_budget_price_is_the_smallest_price_that_fits(data, frac):
    """At the returned price the Lagrangian picks fit the budget; at half the price they no
    longer do (a smaller price would have been returned)."""
    P, c = data
    C = full(c, P)
    cheapest = float(C.min(axis=1).mean())
    free = mean_cost(C, pol.best(P, c))
    B = cheapest + frac * (free - cheapest)
    lam = pol.budget_price(P, c, budget=B)
    assert lam >= 0.0
    if math.isinf(lam):
        return
    assert mean_cost(C, pol.lagrangian(P, c, lam=lam)) <= B
    if lam > 1e-5:
        assert mean_cost(C, pol.lagrangian(P, c, lam=lam / 2)) > B


@given(data=pc(m_min=2, distinct_costs=True), seed=st.integers(0, 2**16), tau=unit,
       drop=st.floats(0.0, 1.0), lam=st.floats(0.0, 1.0), frac=unit,
       sw=st.tuples(st.integers(0, 4), st.integers(1, 4)), t=st.floats(-1.0, 1.0))
@SLOW
def test_policies_are_equivariant_under_permuting_the_models(data, seed, tau, drop, lam, frac,
                                                              sw, t):
    """Listing the models in another order picks the same models (distinct costs, so that no
    tie falls back on the column order)."""
    P, c = data
    m = P.shape[1]
    C = full(c, P)
    perm = np.random.default_rng(seed).permutation(m)
    Pp, cp = P[:, perm], c[..., perm]
    strong = sw[0] % m
    weak = (strong + sw[1]) % m
    assume(weak != strong)
    inv = np.argsort(perm)  # new column of each original model
    bud = float(C.min(axis=1).mean()) + frac * 10.0
    base = _all_picks(P, c, tau, drop, lam, bud, strong, weak)
    base["threshold"] = pol.threshold(P, c, strong=strong, weak=weak, t=t)
    moved = _all_picks(Pp, cp, tau, drop, lam, bud, int(inv[strong]), int(inv[weak]))
    moved["threshold"] = pol.threshold(Pp, cp, strong=int(inv[strong]), weak=int(inv[weak]), t=t)
    for name in base:
        np.testing.assert_array_equal(perm[moved[name]], base[name], err_msg=name)


@given(score=arr(st.integers(0, 20), st.sampled_from([0.0, 0.25, 0.5, 1.0]) | unit),
       s1_=unit, s2_=unit, seed=st.integers(0, 100))
@FAST
def test_top_share_takes_the_rounded_share_of_highest_scores(score, s1_, s2_, seed):
    """Exactly round(share·n) inputs (Python's round), none scoring below one left out, and a
    larger share keeps every input a smaller one took."""
    lo, hi = sorted((s1_, s2_))
    a = pol.top_share(score, lo, seed)
    b = pol.top_share(score, hi, seed)
    n = len(score)
    assert a.sum() == round(lo * n) and b.sum() == round(hi * n)
    if a.any() and (~a).any():
        assert score[a].min() >= score[~a].max()
    assert not (a & ~b).any()


@given(score=arr(st.integers(1, 10)),
       share=st.floats(max_value=-1e-3) | st.just(float("nan")) | st.floats(min_value=1.001))
@settings(max_examples=50)
@example(score=np.arange(4.0), share=-0.5)
def test_top_share_refuses_shares_outside_0_1(score, share):
    """A share is a fraction of the inputs; anything else is an error, not a silent mask."""
    with pytest.raises(BenchrouteError):
        pol.top_share(score, share)


@given(qw=arr(st.integers(1, 10), st.sampled_from([0.0, 1.0])), data=st.data())
@FAST
def test_hybrid_labels_agree_on_single_trials_and_relax_with_t(qw, data):
    """On 0/1 qualities r_prob and r_trans(0) are r_det; r_trans only gains positives as t
    grows and is all ones from t = 1; r_prob is a probability, at least q_w."""
    qs = data.draw(arr(qw.shape, st.sampled_from([0.0, 1.0])))
    det = pol.hybrid_labels(q_weak=qw, q_strong=qs, rule="det")
    np.testing.assert_array_equal(pol.hybrid_labels(q_weak=qw, q_strong=qs, rule="prob"), det)
    np.testing.assert_array_equal(pol.hybrid_labels(q_weak=qw, q_strong=qs, rule="trans", t=0.0), det)
    rw, rs = data.draw(arr(qw.shape)), data.draw(arr(qw.shape))
    t1, t2 = sorted(data.draw(st.tuples(unit, unit)))
    a = pol.hybrid_labels(q_weak=rw, q_strong=rs, rule="trans", t=t1)
    b = pol.hybrid_labels(q_weak=rw, q_strong=rs, rule="trans", t=t2)
    assert (b >= a).all()
    assert (pol.hybrid_labels(q_weak=rw, q_strong=rs, rule="trans", t=1.0) == 1).all()
    prob = pol.hybrid_labels(q_weak=rw, q_strong=rs, rule="prob")
    assert ((prob >= 0) & (prob <= 1)).all()
    assert (prob >= rw - 1e-12).all()  # the weak model's own success is enough


BAD_NUMBERS = (st.just(float("nan")) | st.just(float("inf")) | st.just(-float("inf"))
               | st.booleans() | st.just(np.bool_(True)) | st.none() | st.text(max_size=3)
               | st.just([0.5]) | st.just(np.float64("nan")) | st.just(complex(1, 0)))


@given(name_key=st.sampled_from([("smallest_sufficient", "tau"), ("lagrangian", "lam"),
                                 ("cheapest_within", "max_quality_drop"), ("budget", "budget")]),
       value=BAD_NUMBERS | st.floats(max_value=-1e-9, allow_infinity=False))
@FAST
def test_bad_policy_numbers_are_benchroute_errors(name_key, value):
    """NaN, infinities, bools, strings, None, lists and (where a bound exists) negatives are
    refused with BenchrouteError, never a TypeError/ValueError from numpy."""
    name, key = name_key
    if isinstance(value, float) and math.isfinite(value) and key in ("tau", "lam"):
        return  # negative tau / lam are allowed numbers
    P, C = np.array([[0.9, 0.4], [0.2, 0.3]]), np.array([2.0, 1.0])
    with pytest.raises(BenchrouteError):
        pol.apply_policy(name, P, C, **{key: value})
    with pytest.raises(BenchrouteError):
        pol.check_policy_params(name, {key: value}, 2)


@given(exp=st.integers(309, 2000), sign=st.sampled_from([1, -1]))
@settings(max_examples=20)
def test_huge_integer_parameters_are_benchroute_errors(exp, sign):
    """An int too large for a float is not a finite number the policy can use."""
    with pytest.raises(BenchrouteError):
        pol.check_policy_params("smallest_sufficient", {"tau": sign * 10**exp}, 2)


@given(value=st.integers(-5, 6) | st.floats(0, 2) | st.booleans() | st.none()
       | st.just(np.int64(7)) | st.just(np.bool_(False)), which=st.sampled_from(["strong", "weak"]))
@FAST
def test_bad_strong_weak_indices_are_benchroute_errors(value, which):
    """strong/weak must be two different int column indices; anything else is refused as a
    BenchrouteError (never an IndexError later)."""
    params = {"strong": 0, "weak": 1, "t": 0.0}
    params[which] = value
    good = (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
            and 0 <= value < 3 and params["strong"] != params["weak"])
    P = np.array([[0.9, 0.4, 0.1]])
    if good:
        assert pol.apply_policy("threshold", P, None, **params).shape == (1,)
    else:
        with pytest.raises(BenchrouteError):
            pol.apply_policy("threshold", P, None, **params)


@given(bad=st.sampled_from([[1.0, float("nan")], [1.0, -1.0], [1.0, float("inf")], ["a", "b"],
                            [[1.0, 2.0], [1.0]], [None, 1.0], [True, False]]))
@settings(max_examples=20)
def test_bad_costs_are_benchroute_errors(bad):
    """Costs with NaN, inf, negatives, strings, None or ragged rows are refused as such."""
    with pytest.raises(BenchrouteError):
        pol.apply_policy("best", np.array([[0.9, 0.4]]), bad)


# ----------------------------------------------------------------------------------- scoring
@given(score=arr(st.tuples(st.integers(1, 6), st.integers(1, 6)),
                 st.sampled_from([0.0, 0.5, 1.0]) | unit), data=st.data())
@FAST
def test_argmax_ties_picks_a_tied_maximum_among_the_candidates(score, data):
    """The pick is a candidate within the tolerance of the candidates' maximum; prefer wins
    when it is tied; with costs no tied candidate is cheaper."""
    n, m = score.shape
    cand = np.array(sorted(data.draw(st.sets(st.integers(0, m - 1), min_size=1))))
    cost = data.draw(arr((m,), price))
    prefer = data.draw(st.integers(0, m - 1))
    rows = np.arange(n)
    top = score[:, cand].max(axis=1)
    tied = np.zeros_like(score, dtype=bool)
    tied[:, cand] = score[:, cand] >= top[:, None] - TIE_TOL
    for kw in ({}, {"cost": cost}, {"prefer": prefer}):
        pick = argmax_ties(score, cand, **kw)
        assert np.isin(pick, cand).all()
        assert tied[rows, pick].all()
    with_cost = argmax_ties(score, cand, cost=cost)
    assert (cost[with_cost] <= np.where(tied, cost, np.inf).min(axis=1)).all()
    pref = argmax_ties(score, cand, prefer=prefer, cost=cost)
    np.testing.assert_array_equal(pref[tied[:, prefer]], prefer)
    plain = argmax_ties(score, cand)
    assert (plain == np.argmax(tied, axis=1)).all()  # else the first tied candidate


@given(Y=arr(st.tuples(st.integers(1, 12), st.integers(1, 4)),
             st.floats(0, 1) | st.just(float("nan"))), data=st.data())
@FAST
def test_task_means_are_the_per_task_nanmeans(Y, data):
    """Per task (sorted) and model, the mean of the results it has, NaN when it has none:
    what pandas' groupby mean gives."""
    tasks = np.array(data.draw(st.lists(st.sampled_from(["b", "a", "c"]), min_size=len(Y),
                                        max_size=len(Y))))
    got = task_means(Y, tasks)
    want = pd.DataFrame(Y).groupby(tasks).mean().to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    perm = np.random.default_rng(0).permutation(len(Y))
    np.testing.assert_allclose(task_means(Y[perm], tasks[perm]), got, rtol=1e-12, atol=1e-12)


@given(g=arr(st.tuples(st.integers(1, 12), st.integers(1, 5))), seed=st.integers(0, 1000),
       t1=unit, t2=unit)
@FAST
def test_s1_s2_are_means_over_inputs_equivariant_over_models(g, seed, t1, t2):
    """S1/S2 are per-model means: in [min, max] of the column, indifferent to the input order,
    moved with the models; S2 falls as the threshold rises and obeys Markov (t·S2 <= S1)."""
    rng = np.random.default_rng(seed)
    rows, cols = rng.permutation(g.shape[0]), rng.permutation(g.shape[1])
    a1 = s1(g)
    assert ((g.min(axis=0) - 1e-12 <= a1) & (a1 <= g.max(axis=0) + 1e-12)).all()
    np.testing.assert_allclose(s1(g[rows][:, cols]), a1[cols], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(s2(g[rows][:, cols]), s2(g)[cols])
    lo, hi = sorted((t1, t2))
    assert (s2(g, hi) <= s2(g, lo)).all()
    assert (hi * s2(g, hi) <= a1 + 1e-12).all()
    twice = np.vstack([g, g])
    np.testing.assert_allclose(s1(twice), a1, rtol=1e-12)


@given(s=arr(st.integers(1, 6)), p=arr(st.integers(1, 6)))
@FAST
def test_s3_lies_between_s2_and_its_complement(s, p):
    """S3 = expected accuracy of a predictor right with probability p: between S2 and 1 − S2,
    S2 itself at p = 1, ½ at p = ½, and symmetric under (S2, p) → (1 − S2, 1 − p)."""
    n = min(len(s), len(p))
    s, p = s[:n], p[:n]
    v = s3(s, p)
    assert (np.minimum(s, 1 - s) - 1e-12 <= v).all() and (v <= np.maximum(s, 1 - s) + 1e-12).all()
    np.testing.assert_allclose(s3(s, np.ones(n)), s, atol=1e-15)
    np.testing.assert_allclose(s3(s, np.full(n, 0.5)), 0.5, atol=1e-15)
    np.testing.assert_allclose(s3(1 - s, 1 - p), v, atol=1e-12)


@st.composite
def references(draw, r_min: int = 1):
    r = draw(st.integers(r_min, 8))
    m = draw(st.integers(1, 4))
    ref_u = draw(arr((r,), st.floats(0.0, 2.0)))
    ref_p = draw(arr((r, m)))
    return ref_u, ref_p


@given(ref=references(), u=st.floats(0.0, 2.0), prior=unit,
       w0=st.just(0.0) | st.floats(1e-6, 1.0), h=st.floats(0.1, 1.0))
@FAST
def test_kernel_smooth_is_a_weighted_mean_of_the_references_and_the_prior(ref, u, prior, w0, h):
    """p̂ lies within the range of the reference p (and the prior when it has weight); all
    references at u itself and no prior give their plain mean; a vector u gives the rows of
    the scalar calls."""
    ref_u, ref_p = ref
    got = kernel_smooth(u, ref_u, ref_p, bandwidth=h, prior=prior, prior_weight=w0)
    lo = ref_p.min(axis=0) if w0 == 0 else np.minimum(ref_p.min(axis=0), prior)
    hi = ref_p.max(axis=0) if w0 == 0 else np.maximum(ref_p.max(axis=0), prior)
    assert ((lo - 1e-12 <= got) & (got <= hi + 1e-12)).all()
    at_u = kernel_smooth(u, np.full(len(ref_u), u), ref_p, bandwidth=h, prior_weight=0.0)
    np.testing.assert_allclose(at_u, ref_p.mean(axis=0), rtol=1e-12, atol=1e-12)
    one = kernel_smooth(u, ref_u[:1], ref_p[:1], bandwidth=h, prior_weight=0.0)
    np.testing.assert_allclose(one, ref_p[0], rtol=1e-12, atol=1e-12)
    many = kernel_smooth(np.array([u, 0.0, 2.0]), ref_u, ref_p, bandwidth=h, prior=prior,
                         prior_weight=w0)
    np.testing.assert_allclose(many[0], got, rtol=1e-12, atol=1e-15)


@given(ref=references(r_min=2), u=st.floats(0.0, 2.0), data=st.data())
@FAST
def test_kernel_smooth_leaves_out_nan_references_per_model(ref, u, data):
    """A NaN p of one model at one pair is as if that pair were not there, for that model
    only."""
    ref_u, ref_p = ref
    i = data.draw(st.integers(0, len(ref_u) - 1))
    m = data.draw(st.integers(0, ref_p.shape[1] - 1))
    holed = ref_p.copy()
    holed[i, m] = np.nan
    got = kernel_smooth(u, ref_u, holed)
    keep = np.arange(len(ref_u)) != i
    np.testing.assert_allclose(got[m], kernel_smooth(u, ref_u[keep], ref_p[keep])[m],
                               rtol=1e-12, atol=1e-15)
    others = np.arange(ref_p.shape[1]) != m
    np.testing.assert_allclose(got[others], kernel_smooth(u, ref_u, ref_p)[others],
                               rtol=1e-12, atol=1e-15)


@given(prior=arr(st.integers(1, 5)), a=st.just(0.0) | st.floats(1e-6, 500.0), data=st.data())
@FAST
def test_beta_binomial_mean_lies_between_the_prior_and_the_hit_rate(prior, a, data):
    """The posterior mean is a weighted mean of p̂ (weight a) and hits/n (weight n): between
    them, p̂ with no observation, and it moves toward hits/n as n grows."""
    k = len(prior)
    n = data.draw(arr((k,), st.integers(0, 200).map(float)))
    hits = np.floor(data.draw(arr((k,))) * n)
    post = beta_binomial_mean(prior, a, hits, n)
    rate = np.where(n > 0, hits / np.maximum(n, 1), prior)
    if a == 0:
        np.testing.assert_allclose(post[n > 0], rate[n > 0], rtol=1e-12)
    lo, hi = np.minimum(prior, rate), np.maximum(prior, rate)
    assert ((lo - 1e-12 <= post) & (post <= hi + 1e-12)).all()
    np.testing.assert_allclose(post[n == 0], prior[n == 0], rtol=1e-12, atol=1e-15)
    more = beta_binomial_mean(prior, a, hits * 10, n * 10)
    assert (np.abs(more - rate) <= np.abs(post - rate) + 1e-12).all()


@given(y=arr(st.tuples(st.integers(1, 10), st.integers(1, 4)),
             st.sampled_from([0.0, 1.0, float("nan")])), data=st.data())
@FAST
def test_predictor_accuracy_of_the_labels_is_one_and_of_their_flip_is_zero(y, data):
    """p is a share of labelled inputs: 1 for a predictor that is the 0/1 label, 0 for its
    flip, NaN for a model with no label, in [0, 1] for any g; flipping a g off the threshold
    gives 1 − p."""
    has = (~np.isnan(y)).any(axis=0)
    exact = np.nan_to_num(y, nan=0.0)
    np.testing.assert_array_equal(predictor_accuracy(exact, y)[has], 1.0)
    np.testing.assert_array_equal(predictor_accuracy(1 - exact, y)[has], 0.0)
    assert np.isnan(predictor_accuracy(exact, y)[~has]).all()
    g = data.draw(arr(y.shape, st.floats(0, 1).filter(lambda v: abs(v - 0.5) > 1e-9)))
    p = predictor_accuracy(g, y)
    assert ((p[has] >= 0) & (p[has] <= 1)).all()
    np.testing.assert_allclose(predictor_accuracy(1 - g, y)[has], 1 - p[has], atol=1e-12)


@given(P=hnp.arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 4)),
                    elements=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5 + 1e-12, 0.7, 1.0])),
       c=st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=4, max_size=4), column=st.integers(0, 3))
@FAST
def test_smallest_sufficient_shares_are_the_policy_s_at_every_tau(P, c, column):
    """The exact search's share at each candidate τ, and on each side of it, is the share the
    policy itself gives there; and no τ reaches a share the candidates miss (P values that tie
    in plateaus, or lie closer than any grid's step, included)."""
    c = np.asarray(c[:P.shape[1]])
    column %= P.shape[1]
    taus, shares = pol.smallest_sufficient_shares(P, c, column)
    assert (np.diff(taus) > 0).all()

    def share(tau):
        return float((pol.smallest_sufficient(P, c, tau=tau) == column).mean())

    for tau, s in zip(taus, shares):
        assert s == pytest.approx(share(float(tau)), abs=1e-12)
    probes = np.r_[0.0, taus, np.nextafter(taus, -np.inf), (taus[1:] + taus[:-1]) / 2,
                   1.0 + pol.RANGE_SLACK]
    probes = probes[probes >= 0]
    reached = {round(float(s), 12) for s in shares}
    assert {round(share(float(t)), 12) for t in probes} <= reached
