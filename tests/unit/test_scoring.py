"""Hand-computed golden values for the predictors and scores of SPEC.md §2."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from benchroute.predictors import KNNCorrectnessPredictor
from benchroute.scoring import (
    FAR,
    apply_p_map,
    beta_binomial_mean,
    fallback_probability,
    fit_p_map,
    kernel_smooth,
    leave_task_out_kernel,
    mean_distance,
    predictor_accuracy,
    s1,
    s2,
    s3,
    self_estimate,
)


def unit(deg: float) -> np.ndarray:
    return np.array([math.cos(math.radians(deg)), math.sin(math.radians(deg))], dtype=np.float32)


# pool at 0°, 10°, 80°, 90°; labels for (m0, m1); p1 has no label for m1
POOL = np.stack([unit(0), unit(10), unit(80), unit(90)])
Y = np.array([[1, 0], [1, np.nan], [0, 1], [0, 1]], dtype=np.float32)
QUERIES = np.stack([unit(5), unit(85), unit(30)])


@pytest.fixture
def fitted():
    return KNNCorrectnessPredictor(k=3).fit(POOL, Y, ["A", "A", "B", "B"])


def test_g_by_hand(fitted):
    g = fitted.predict_proba(QUERIES)
    # q5: p0, p1, p2 -> m0 (1+1+0)/3, m1 (0+1)/2 (p1 unlabelled for m1)
    # q85: p3, p2, p1 -> m0 (0+0+1)/3, m1 (1+1)/2
    # q30: p1, p0, p2 -> m0 2/3, m1 1/2
    np.testing.assert_allclose(g, [[2 / 3, 0.5], [1 / 3, 1.0], [2 / 3, 0.5]], atol=1e-6)
    np.testing.assert_allclose(s1(g), [5 / 9, 2 / 3], atol=1e-6)
    np.testing.assert_allclose(s2(g), [2 / 3, 1 / 3])  # 0.5 is not > 0.5
    np.testing.assert_allclose(s3(s2(g), np.array([0.8, 0.6])),
                               [0.8 * 2 / 3 + 0.2 / 3, 0.6 / 3 + 0.4 * 2 / 3], atol=1e-9)


def test_exclusion_and_fallback_flag(fitted):
    nb = fitted.neighbours(QUERIES[:1], 3, exclude_datasets=["A"])
    g, flag = fitted.aggregate(nb)
    # only p2, p3 remain: m0 0, m1 1; the third neighbour slot is empty
    np.testing.assert_allclose(g, [[0.0, 1.0]])
    assert not flag.any() and np.isinf(nb.distances[0, 2])
    lonely = KNNCorrectnessPredictor(k=1).fit(POOL, Y, ["A"] * 4)
    g, flag = lonely.aggregate(lonely.neighbours(unit(10)[None], 1))
    # nearest is p1, unlabelled for m1: m1 falls back to its mean label (0 + 1 + 1) / 3
    np.testing.assert_allclose(g, [[1.0, 2 / 3]], atol=1e-6)
    assert flag.tolist() == [[False, True]]


def test_distance_weighting(fitted):
    w = KNNCorrectnessPredictor(k=3, weights="distance").fit(POOL, Y)
    g = w.predict_proba(unit(30)[None])
    d = 1 - np.cos(np.radians([20, 30, 50]))
    wts = 1 / (d + 1e-6)
    assert g[0, 0] == pytest.approx((wts[0] + wts[1]) / wts.sum(), rel=1e-5)
    assert g[0, 1] == pytest.approx(wts[2] / (wts[1] + wts[2]), rel=1e-5)


def test_task_distance_by_hand(fitted):
    nb = fitted.neighbours(QUERIES, 3)
    expected = np.mean([
        np.mean(1 - np.cos(np.radians([5, 5, 75]))),
        np.mean(1 - np.cos(np.radians([5, 5, 75]))),
        np.mean(1 - np.cos(np.radians([20, 30, 50]))),
    ])
    assert mean_distance(nb.distances, 3) == pytest.approx(expected, abs=1e-6)


def test_no_neighbour_is_far_not_close():
    # an input with no neighbour at all (empty pool) counts as the largest cosine distance
    assert mean_distance(np.full((3, 5), np.inf), 5) == FAR == 2.0
    mixed = np.array([[0.1, 0.3, np.inf], [np.inf, np.inf, np.inf]])
    assert mean_distance(mixed, 3) == pytest.approx((0.2 + FAR) / 2)
    assert mean_distance(mixed, 3, inputs=np.array([False, False])) == FAR


def test_kernel_smoother_by_hand():
    ref_u = np.array([0.1, 0.3])
    ref_p = np.array([[0.9, 0.5], [0.5, np.nan]])
    # midway: equal weights; model 1 has only the first pair
    plain = {"prior_weight": 0.0}  # the plain Nadaraya-Watson estimate
    np.testing.assert_allclose(kernel_smooth(0.2, ref_u, ref_p, 0.09, **plain), [0.7, 0.5])
    w2 = math.exp(-(0.2**2) / (2 * 0.09**2))
    np.testing.assert_allclose(kernel_smooth(0.1, ref_u, ref_p, 0.09, **plain)[0],
                               (0.9 + w2 * 0.5) / (1 + w2))
    # with the default pseudo-reference (p = 0.5, weight of a pair 3 bandwidths away)
    w1, w0 = math.exp(-(0.1**2) / (2 * 0.09**2)), math.exp(-4.5)
    np.testing.assert_allclose(kernel_smooth(0.2, ref_u, ref_p, 0.09)[0],
                               (w1 * 0.9 + w1 * 0.5 + w0 * 0.5) / (2 * w1 + w0))
    # far from every reference: the prior, not the nearest pair
    np.testing.assert_allclose(kernel_smooth(50.0, ref_u, ref_p, 0.09), [0.5, 0.5])


def test_far_single_pair_does_not_take_full_weight():
    # issue 10: one reference pair at u = 0 with p = 0.22 gave p_hat = 0.22 at u = 1.03
    p_far = kernel_smooth(1.03, np.array([0.0]), np.array([[0.22]]), 0.09)
    assert p_far[0] == pytest.approx(0.5, abs=1e-6)
    p_near = kernel_smooth(0.01, np.array([0.0]), np.array([[0.22]]), 0.09)
    assert p_near[0] == pytest.approx(0.22, abs=0.01)
    # an empty reference set is the prior, defined (not NaN turned into 0.5 downstream)
    np.testing.assert_allclose(kernel_smooth(0.3, np.zeros(0), np.zeros((0, 2)), 0.09), [0.5, 0.5])


def test_beta_binomial_posterior():
    # Beta(10*0.6, 10*0.4) prior, 7 of 8 right: (6 + 7) / (10 + 8)
    np.testing.assert_allclose(beta_binomial_mean(np.array([0.6, 0.6]), 10.0, np.array([7, 0]),
                                                  np.array([8, 0])), [13 / 18, 0.6])
    assert beta_binomial_mean(np.array([0.3]), 0.0, np.array([0]), np.array([0]))[0] == 0.3


def test_predictor_accuracy_ignores_missing():
    g = np.array([[0.9, 0.2], [0.1, 0.8], [0.6, 0.4]])
    y = np.array([[1, 0], [1, np.nan], [1, 1]])
    np.testing.assert_allclose(predictor_accuracy(g, y), [2 / 3, 0.5])


def test_fallback_probability_matches_binomial_law():
    # count(m) = Bin(10, .9) for both: P(X > Y) = sum_i P(X = i) P(Y < i)
    exact = sum(binom.pmf(i, 10, 0.9) * binom.cdf(i - 1, 10, 0.9) for i in range(11))
    got = fallback_probability(0, 1, np.array([10, 10]), np.array([0, 0]), np.array([0.9, 0.9]),
                               draws=20_000, seed=0)
    assert got == pytest.approx(exact, abs=0.01)
    assert got < 0.6  # the eta rule falls back
    # deterministic for a fixed seed
    assert fallback_probability(0, 1, np.array([10, 10]), np.array([0, 0]),
                                np.array([0.9, 0.9]), 1000, 3) == \
        fallback_probability(0, 1, np.array([10, 10]), np.array([0, 0]), np.array([0.9, 0.9]), 1000, 3)
    # a clear winner: 18 of 20 predicted right at p=.95 against 5 of 20
    assert fallback_probability(0, 1, np.array([18, 5]), np.array([2, 15]),
                                np.array([0.95, 0.95]), 1000, 0) > 0.99


def test_self_estimate_by_hand():
    # ĝ = 1[g > 0.5]; e = mean of q where ĝ = 1 and 1 - q where ĝ = 0
    g = np.array([[0.8, 0.2], [0.6, 0.4], [0.4, 0.5]])
    q = np.array([[0.9, 0.3], [0.5, 0.1], [0.2, 0.6]])
    # m0: q 0.9, q 0.5, 1 - 0.2 -> (0.9 + 0.5 + 0.8) / 3; m1: 0.7, 0.9, 0.4 (0.5 is not > 0.5)
    np.testing.assert_allclose(self_estimate(g, q), [2.2 / 3, 2.0 / 3])
    # calibrated and certain neighbours: e = 1; a split neighbourhood: e = 1/2
    np.testing.assert_allclose(self_estimate(np.array([[1.0], [0.0]]), np.array([[1.0], [0.0]])),
                               [1.0])
    np.testing.assert_allclose(self_estimate(np.array([[0.8]]), np.array([[0.5]])), [0.5])
    # masked inputs do not count; a batch with none counting is NaN
    batch = self_estimate(np.stack([g, g]), np.stack([q, q]),
                          inputs=np.array([[True, False, False], [False, False, False]]))
    np.testing.assert_allclose(batch[0], [0.9, 0.7])
    assert np.isnan(batch[1]).all()


def test_leave_task_out_kernel_uses_other_tasks_only():
    u = np.array([0.2, 0.25, 0.5, 0.55, 0.9])
    p = np.array([[0.9, 0.4], [0.8, np.nan], [0.6, 0.7], [0.5, 0.6], [0.55, 0.5]])
    task = np.array(["a", "a", "b", "b", "c"])
    k = leave_task_out_kernel(u, p, task, 0.09)
    for r in range(len(u)):
        other = task != task[r]
        np.testing.assert_allclose(k[r], kernel_smooth(u[r], u[other], p[other], 0.09), atol=1e-12)
    # a task's own pairs never enter its estimate: changing them leaves its row alone
    p2 = p.copy()
    p2[0] = [0.0, 0.0]
    np.testing.assert_allclose(leave_task_out_kernel(u, p2, task, 0.09)[:2], k[:2])
    assert not np.allclose(leave_task_out_kernel(u, p2, task, 0.09)[2:], k[2:])


def test_fit_p_map_recovers_a_linear_law_and_needs_enough_tasks():
    rng = np.random.default_rng(0)
    kern = rng.uniform(0.5, 0.8, size=(40, 3))
    e = rng.uniform(0.5, 1.0, size=(40, 3))
    p = 0.05 + 0.2 * kern + 0.7 * e
    p[3, 1] = np.nan  # a model without labels on a task is left out
    task = np.repeat(np.arange(8), 5).astype(str)
    np.testing.assert_allclose(fit_p_map(kern, e, p, task), [0.05, 0.2, 0.7], atol=1e-9)
    # fewer than MIN_MAP_TASKS (5) tasks: no map
    assert fit_p_map(kern[:20], e[:20], p[:20], task[:20]) is None
    # a design with no spread in e cannot separate it from the intercept
    assert fit_p_map(kern, np.full_like(e, 0.7), p, task) is None


def test_apply_p_map_clips_and_keeps_the_kernel_where_e_is_unknown():
    coef = np.array([0.1, 0.5, 0.6])
    kern = np.array([0.6, 0.7, 0.6])
    e = np.array([0.5, 1.0, np.nan])
    np.testing.assert_allclose(apply_p_map(coef, kern, e), [0.1 + 0.3 + 0.3, 1.0, 0.6])
    np.testing.assert_allclose(apply_p_map(None, kern, e), kern)
    np.testing.assert_allclose(apply_p_map(coef, kern, None), kern)
