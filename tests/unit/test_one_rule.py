"""Each rule has one implementation: the argmax and its tie order, the best model on average,
the weighted kNN mean with its "no neighbour" rule, and P(m, x) in the experiments."""

from __future__ import annotations

import numpy as np
import pytest

from benchroute import policies as pol
from benchroute.experiments import costs as cq
from benchroute.experiments.crossfit import crossfit_router_proba, routing_router
from benchroute.experiments.per_input import compare_predictors, knn_fitter
from benchroute.predictors import KNNCorrectnessPredictor, Neighbours, knn_mean
from benchroute.router import Router
from benchroute.routing import router_proba
from benchroute.scoring import TIE_TOL, argmax_ties, best_on_average, model_means, task_means
from benchroute.selection import best_with_ties, route_rows
from benchroute.tuning import PerInputPredictor, knn_posterior, route_value


def _unit(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


# ---------------------------------------------------------------------- argmax and ties
@pytest.mark.parametrize("gap, tied", [(TIE_TOL / 2, True), (TIE_TOL * 10, False)])
def test_tie_order_prefer_then_cost_then_index(gap, tied):
    score = np.array([[0.5, 0.5 + gap, 0.5 + gap, 0.1]])
    cost = np.array([3.0, 2.0, 1.0, 0.0])
    # no key: lowest column among the tied; else the exact maximum
    assert argmax_ties(score)[0] == (0 if tied else 1)
    # cost: the cheaper of the tied
    assert argmax_ties(score, cost=cost)[0] == 2
    # prefer beats cost when it is among the tied
    assert argmax_ties(score, prefer=0, cost=cost)[0] == (0 if tied else 2)
    # a preferred column that is not tied never wins
    assert argmax_ties(score, prefer=3, cost=cost)[0] == 2


def test_every_argmax_goes_through_the_one_rule():
    rng = np.random.default_rng(0)
    # scores on a coarse grid, so that exact and near ties are common
    P = np.round(rng.random((200, 5)), 1) + rng.choice([0.0, TIE_TOL / 3], (200, 5))
    c = rng.integers(1, 4, 5).astype(float)
    cand = np.array([0, 2, 3, 4])
    prefer = rng.integers(0, 5, 200)
    assert (pol.best(P, c) == argmax_ties(P, cost=c)).all()
    assert (best_with_ties(P, cand, prefer) == argmax_ties(P, cand, prefer)).all()
    assert (route_rows(P, cand, prefer) == argmax_ties(P, cand, prefer)).all()
    Y = rng.integers(0, 2, (200, 5)).astype(float)
    pick = argmax_ties(P)
    assert route_value(P, Y) == pytest.approx(Y[np.arange(200), pick].mean())


def test_policy_best_ties_moved_from_1e12_to_the_shared_tolerance():
    # before: 1e-12; a gap of 1e-10 was not a tie and the dearer model won
    P = np.array([[0.7, 0.7 + 1e-10]])
    assert pol.best(P, np.array([1.0, 5.0]))[0] == 0
    assert pol.cheapest_within(P, np.array([1.0, 5.0]), max_quality_drop=0.0)[0] == 0


# ---------------------------------------------------------------------- best on average
def test_best_on_average_counts_each_task_once():
    # task a (3 inputs): model 0 right everywhere, model 1 nowhere; task b (1 input): the reverse
    # and a third task where model 1 is right: per input 0 wins (3/5 vs 2/5), per task 1 (2/3)
    Y = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1]], dtype=float)
    ds = np.array(["a", "a", "a", "b", "c"])
    acc = task_means(Y, ds)
    assert model_means(acc) == pytest.approx([1 / 3, 2 / 3])
    assert best_on_average(acc) == 1 and best_on_average(acc, worst=True) == 0
    router = Router(k=1, alphas=(0.0,), repeats=1, tune=False, encoder="hashing-8-11")
    router.fit_arrays(_unit(np.random.default_rng(1), 5), Y, ds, ["m0", "m1"])
    assert router.bma_ == "m1" and router.bma_index(np.array([0, 1])) == 1
    A = cq.Arrays(np.zeros((5, 2)), Y, np.ones((5, 2)), ["m0", "m1"], ds, "test")
    assert cq.pair_indices(A, None, None, needed=True) == (1, 0)


def test_a_model_without_results_is_never_the_best():
    acc = np.array([[np.nan, 0.2], [np.nan, 0.1]])
    assert best_on_average(acc) == 1


# ---------------------------------------------------------------------- the kNN mean
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_router_g_and_tuned_posterior_share_the_knn_mean(weights):
    rng = np.random.default_rng(2)
    dist = np.sort(rng.random((30, 6)), axis=1)
    dist[:3, 2:] = np.inf  # past the pool's end
    labels = rng.integers(0, 2, (30, 6, 4)).astype(float)
    labels[rng.random(labels.shape) < 0.3] = np.nan
    labels[5, :, 1] = np.nan  # no labelled neighbour for model 1 of input 5
    means = np.array([0.1, 0.2, 0.3, 0.4])
    pred = KNNCorrectnessPredictor(k=4, weights=weights)
    pred.model_means_ = means
    g, fallback = pred.aggregate(Neighbours(dist, labels))
    assert np.allclose(g, knn_posterior(dist, labels, 4, weights, 0.0, means))
    assert fallback[5, 1] and g[5, 1] == pytest.approx(0.2)
    shrunk = knn_posterior(dist, labels, 4, weights, 5.0, means)
    assert shrunk[5, 1] == pytest.approx(0.2)  # only the prior: the model's mean
    assert np.allclose(knn_mean(dist, labels, 4, weights, means, 5.0)[0], shrunk)


@pytest.mark.parametrize("prior", [0.0, 5.0])
def test_the_knn_mean_stays_a_probability(prior):
    """Labels all 1 under distance weights: the weighted sums are added in different orders,
    and unclipped 377 of these 2,000 means came out at 1 + 2⁻⁵² (found by fuzzing)."""
    rng = np.random.default_rng(0)
    dist = np.sort(rng.random((2000, 40)), axis=1) * 0.7
    for value in (1.0, 0.0):
        P = knn_mean(dist, np.full((2000, 40, 1), value), 40, "distance", np.array([value]),
                     prior)[0]
        assert P.min() >= 0.0 and P.max() <= 1.0 and np.allclose(P, value, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- P in the experiments
def _pool(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = _unit(rng, 120)
    Y = (rng.random((120, 3)) < np.array([0.3, 0.5, 0.7])).astype(float)
    ds = np.repeat(["t0", "t1", "t2", "t3"], 30)
    return X, Y, ds


def test_cost_experiments_measure_the_routers_p():
    X, Y, ds = _pool()
    P, fold, fitted = cq.crossfit_proba(X, Y, folds=3, seed=0, groups=ds)
    te, tr = fold == 0, fold != 0
    router = Router(alphas=(0.0,), repeats=1).fit_arrays(X[tr], Y[tr], ds[tr], ["m0", "m1", "m2"])
    assert np.allclose(P[te], router_proba(router, X[te]))
    assert "over tasks" in fitted[0].tuning_.cv  # tuned with the router's task-grouped folds


def test_predictor_comparison_routes_with_the_routers_p():
    X, Y, ds = _pool(4)
    fixed = dict(k=5, weights="uniform", prior=0.0, calibration="none")
    table = compare_predictors(X, Y, {"knn": knn_fitter(**fixed)}, folds=3, n_boot=10, groups=ds)
    tr = np.arange(80)
    te = np.arange(80, 120)
    P, _ = crossfit_router_proba(X, Y, tr, te, ds, PerInputPredictor(**fixed))
    router = Router(k=5, tune=False, alphas=(0.0,), repeats=1).fit_arrays(
        X[tr], Y[tr], ds[tr], ["m0", "m1", "m2"])
    assert np.allclose(P, router.predict_proba_embedded(X[te]))
    assert 0.0 <= table.loc[0, "routed"] <= 1.0


def test_routing_router_without_tasks():
    X, Y, _ = _pool(5)
    router = routing_router(X, Y)
    assert router.tasks_ == ["pool"] and router.per_input_ is not None
    assert router_proba(router, X[:4]).shape == (4, 3)


# ---------------------------------------------------------------------- second audit (2026-12-05)
def _tiny_router(correct: dict[str, dict[str, list[float]]], **params):
    """A router on given per-task labels, random vectors, no encoder."""
    import pandas as pd

    from benchroute import BenchmarkData

    rows = [{"dataset": task, "instance_id": str(i), "text": f"{task} question number {i}",
             "model": model, "score": y, "correct": y}
            for model, tasks in correct.items() for task, labels in tasks.items()
            for i, y in enumerate(labels)]
    data = BenchmarkData(pd.DataFrame(rows))
    X = _unit(np.random.default_rng(0), data.n_instances, 16)
    router = Router(encoder="hashing-16-12", tune=False, alphas=(0.0,), repeats=1,
                    **params).fit(data, embeddings=X)
    return router, data, X


def _ones(k: int, n: int = 20) -> list[float]:
    return [1.0] * k + [0.0] * (n - k)


def test_bma_is_the_one_selection_and_routing_use():
    """(0.1 + 0.2) / 2 is 0.15000000000000002: an exact idxmax named the other model than
    ``bma_index`` (the CLI's ``fit`` printed one, select and route used the other)."""
    router, _, _ = _tiny_router({"B_model": {"t1": _ones(3), "t2": _ones(3)},
                                 "a_after_B": {"t1": _ones(2), "t2": _ones(4)}})
    assert router.bma_ == router.models_[router.bma_index(np.arange(2))] == "B_model"


def test_default_weak_model_is_the_worst_on_average_by_the_one_rule():
    from benchroute.experiments.costs import Arrays, pair_indices
    from benchroute.routing import default_pair

    router, data, X = _tiny_router({"A_split": {"t1": _ones(2), "t2": _ones(4)},
                                    "B_even": {"t1": _ones(3), "t2": _ones(3)},
                                    "C_strong": {"t1": _ones(18), "t2": _ones(18)}})
    Q = data.correctness_matrix().reindex(columns=router.models_).to_numpy(float)
    A = Arrays(X, Q, np.zeros(Q.shape), router.models_,
               data.instances()["dataset"].to_numpy(), "none")
    s, w = pair_indices(A, None, None, needed=True)
    assert default_pair(router, router.models_, None) == (router.models_[s], router.models_[w])


def test_tuning_route_objective_breaks_ties_as_routing_does():
    from benchroute.stacking import per_input_value

    P = np.full((3, 3), 0.6)
    Y = np.array([[0.0, 1.0, 0.0]] * 3)
    prefer = 1  # the best model on average
    assert route_value(P, Y, prefer) == 1.0
    assert np.array_equal(per_input_value(P, Y, "route", prefer),
                          Y[np.arange(3), route_rows(P, np.arange(3), prefer)])


def test_pgr_of_a_tied_pair_is_nan_everywhere():
    import pandas as pd

    from benchroute.curves import apgr, cpt, pgr

    x = np.array([0.0, 0.5, 1.0])
    y = np.array([0.6, 0.6, 0.5])
    assert np.isnan(pgr(0.55, q_strong=0.5, q_weak=0.5))
    assert np.isnan(apgr(x, y, q_strong=0.5, q_weak=0.5)) and np.isnan(cpt(x, y, q_strong=0.5, q_weak=0.5, pgr_target=0.5))
    curve = pd.DataFrame({"policy": ["threshold"] * 3, "param": x, "cost": x, "quality": y,
                          "share_strong": x})
    curve.attrs.update(q_strong=0.5, q_weak=0.5, c_min=0.0, c_max=1.0)
    # it raised ZeroDivisionError, then gave NaN without a word; now NaN with a warning that
    # says why, and the curve's AIQ stands
    with pytest.warns(UserWarning, match=r"q_strong == q_weak == 0.5: .* PGR, APGR and CPT"):
        row = cq.routing_metrics(curve).iloc[0]
    assert np.isnan(row["PGR@50"]) and np.isnan(row["APGR"]) and np.isfinite(row["AIQ"])
    # and apgr is the mean PGR over the call range where there is a gap
    assert apgr(x, y, q_strong=0.7, q_weak=0.5) == pytest.approx(np.trapezoid(pgr(y, q_strong=0.7, q_weak=0.5), x))


def test_one_label_rule_at_the_threshold():
    """A label exactly at the threshold is right for the pool's p̂, the loaders and an added
    model's p̂ alike (the added model's counted it wrong)."""
    import warnings

    from benchroute.data.store import binarize
    from benchroute.new_models import BorrowingPredictor
    from benchroute.scoring import labelled_right, predictor_hits

    y = np.array([0.5, 0.5, 1.0, 0.0])
    assert binarize(y, 0.5).tolist() == labelled_right(y).astype(float).tolist()
    g = np.array([0.9, 0.9, 0.9, 0.1])
    assert predictor_hits(g[:, None], y[:, None])[0][0] == 4
    rng = np.random.default_rng(0)
    F = rng.uniform(0.2, 0.8, size=(4, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit = BorrowingPredictor(min_labels=8).fit(F, _unit(rng, 4), np.array([1, .5, .5, 1]),
                                                   F).fit_
    # too few labels: each label against the leave-one-out level of the others (0.7 for a
    # 0.5, 0.6 for a 1), all predicted right; the two 0.5 labels are right too (they were not)
    assert fit.cv_hits == 4


def test_share_count_is_the_calibration_s_count():
    from benchroute.serve.calibrate import threshold_for_share

    for n in (5, 10, 45, 90, 1319):
        score = np.arange(n) / n
        for s in (0.05, 0.1, 0.125, 0.25, 0.3, 0.35, 0.5, 0.7):
            t = threshold_for_share(score, s)
            assert int((score >= t).sum()) == pol.share_count(s, n) == pol.top_share(score, s).sum()


def test_evaluated_best_policy_matches_route_table_on_ties():
    """The experiments' "best" row gave a tie to the cheaper, then the first column; routing
    gives it to the best model on average first."""
    P = np.full((3, 2), 0.5)
    C = np.tile([0.0, 1.0], (3, 1))
    prefer = np.ones(3, dtype=np.int64)
    rows, picks = cq.sweep("best", P, np.ones((3, 2)), C, ["a", "b"], prefer=prefer)
    assert picks[0].tolist() == [1, 1, 1]
    assert pol.best(P, C).tolist() == [0, 0, 0]  # no preference: the cheaper


def test_cheapest_within_selection_ties_by_the_package_argmax():
    import pandas as pd

    scores = pd.DataFrame({"S3": [0.7, 0.7 + TIE_TOL / 2]}, index=["x", "y"])
    assert pol.cheapest_within_selection(scores, {"x": 1.0, "y": 1.0}, 0.0) == "x"


def test_evaluation_costs_follow_the_policies_rule():
    from benchroute.exceptions import BenchrouteError

    router, data, X = _tiny_router({"a": {"t": _ones(3, 6)}, "b": {"t": _ones(4, 6)}})
    C = np.ones((6, 2))
    C[0, 1] = np.inf
    with pytest.raises(BenchrouteError, match="finite"):
        cq.arrays(data, X, costs=C)


def test_per_instance_folds_are_tunings_folds():
    from benchroute.exceptions import BenchrouteError
    from benchroute.experiments.protocol import per_instance_routing

    _, data, X = _tiny_router({"a": {"t": _ones(3, 6)}, "b": {"t": _ones(4, 6)}})
    with pytest.raises(BenchrouteError, match="folds == 1"):
        per_instance_routing(data, column="correct", embeddings=X, folds=1)


def test_options_by_position_still_work_with_a_warning():
    """Sibling functions took their options in other orders (route's second argument was
    candidates, route_table's the policy; apgr took q_strong then q_weak, hybrid_labels the
    reverse): the options are keyword-only now, and a positional call keeps its old meaning
    for one release, with a FutureWarning naming them."""
    from benchroute.curves import apgr

    x, y = np.array([0.0, 1.0]), np.array([0.5, 0.7])
    with pytest.warns(FutureWarning, match="pass q_strong, q_weak by name"):
        assert apgr(x, y, 0.7, 0.5) == apgr(x, y, q_strong=0.7, q_weak=0.5)
    qw, qs = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    with pytest.warns(FutureWarning, match="hybrid_labels: pass q_weak, q_strong"):
        assert pol.hybrid_labels(qw, qs).tolist() == \
            pol.hybrid_labels(q_weak=qw, q_strong=qs).tolist()
    with pytest.raises(TypeError, match="multiple values"):
        pol.hybrid_labels(qw, q_weak=qw, q_strong=qs)
    router, _, X = _tiny_router({"a": {"t": _ones(3, 6)}, "b": {"t": _ones(4, 6)}})
    with pytest.warns(FutureWarning, match="route_embedded: pass candidates by name"):
        assert router.route_embedded(X[:2], ["a"]) == ["a", "a"]
    # each warning names the caller's line, through stacked decorators too (they pointed into
    # deprecation.py, so a process saw one of them whatever the call sites)
    for call in (lambda: pol.pick_threshold(np.zeros(2), qw, qs),
                 lambda: apgr(x, y, 0.7, 0.5),
                 lambda: router.route(["task t question number 1"], policy="best")):
        with pytest.warns(FutureWarning) as seen:
            call()
        assert {w.filename for w in seen} == {__file__}


# ---------------------------------------------------------------------- bootstrap intervals
def test_interval_is_numpys_percentile_and_leaves_undefined_replicates_out():
    from benchroute.experiments.bootstrap import interval

    r = np.random.default_rng(0).normal(size=999)
    assert interval(r) == pytest.approx(tuple(np.percentile(r, [2.5, 97.5])))
    assert interval(r, 0.5) == pytest.approx(tuple(np.percentile(r, [25, 75])))
    # pandas' quantile (the cost tables' reading before) left NaN out; NumPy's returned NaN
    with_nan = np.append(r, [np.nan] * 5)
    assert interval(with_nan) == interval(r)
    assert np.isnan(interval([np.nan, np.nan])).all()
    # a zero denominator gives ±inf, undefined too (NumPy interpolated a NaN bound from it)
    assert interval(np.append(r, [-np.inf] * 300)) == interval(r)
    # a statistic undefined on the data keeps a NaN interval, whatever its resamples say
    assert np.isnan(interval(r, point=np.nan)).all() and interval(r, point=0.1) == interval(r)
    with pytest.raises(ValueError, match="level"):
        interval(r, 95)


def test_gap_share_interval_survives_a_resample_without_a_gap():
    """Two inputs of 40 have a gap between the best single model and the oracle; a resample
    that misses both has share 0/0. NumPy's quantile made the whole interval NaN."""
    X = _unit(np.random.default_rng(1), 40)
    Y = np.tile([1.0, 0.0], (40, 1))
    Y[:2] = [0.0, 1.0]
    always_first = lambda Xtr, Ytr, Xte, g: np.tile([0.9, 0.1], (len(Xte), 1))  # noqa: E731
    table = compare_predictors(X, Y, {"first": always_first}, folds=2, n_boot=200)
    row = table.iloc[0]
    assert row["gap_share"] == 0.0
    assert (row["gap_share_lo"], row["gap_share_hi"]) == (0.0, 0.0)


def test_a_task_without_a_bma_row_leaves_minus_bma_undefined():
    """A review's case: one task of 8 has no BMA row, so its paired difference is NaN and so is
    the mean; the interval was read off the resamples that missed that task."""
    import pandas as pd

    from benchroute.experiments.summary import summarize

    rng = np.random.default_rng(0)
    rows = [{"alpha": 0.0, "method": method, "task": f"t{t}", "model": "a", "bma": "a",
             "accuracy": rng.uniform(0.4, 0.8), "oracle_accuracy": 0.9}
            for t in range(8) for method in ("S1", "BMA") if not (method == "BMA" and t == 3)]
    table = summarize(pd.DataFrame(rows), n_boot=200).set_index("method")
    assert np.isnan(table.loc["S1", "minus_bma"])
    assert np.isnan(table.loc["S1", ["minus_bma_lo", "minus_bma_hi"]].astype(float)).all()
    assert np.isfinite(table.loc["S1", ["acc_lo", "acc_hi"]].astype(float)).all()
