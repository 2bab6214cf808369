"""Each policy's choice on hand-made P and c (values worked out by hand in the comments)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from benchroute import policies as pol
from benchroute.exceptions import BenchrouteError

P = np.array([[0.9, 0.6, 0.3],
              [0.5, 0.55, 0.2]])
C = np.array([10.0, 2.0, 1.0])


def test_best_is_argmax_and_breaks_ties_by_cost():
    assert pol.best(P, C).tolist() == [0, 1]
    tied = np.array([[0.7, 0.7, 0.1]])
    assert pol.best(tied, C).tolist() == [1]  # same P, model 1 is cheaper


def test_threshold_calls_strong_when_predicted_win_reaches_t():
    # P(S) - P(W) with S = 0, W = 2: 0.6 and 0.3
    assert pol.threshold(P, C, strong=0, weak=2, t=0.5).tolist() == [0, 2]
    assert pol.threshold(P, C, strong=0, weak=2, t=0.3).tolist() == [0, 0]
    assert pol.threshold(P, C, strong=0, weak=2, t=0.61).tolist() == [2, 2]


@pytest.mark.parametrize("tau, expected", [(0.5, [1, 1]),    # models 0, 1 pass: 1 is cheaper
                                           (0.25, [2, 1]),   # row 0: all pass; row 1: 0.2 < τ
                                           (0.95, [0, 1])])  # none passes: the best P
def test_smallest_sufficient(tau, expected):
    assert pol.smallest_sufficient(P, C, tau=tau).tolist() == expected


@pytest.mark.parametrize("eps, expected", [(0.0, [0, 1]), (0.1, [0, 1]), (0.35, [1, 2])])
def test_cheapest_within(eps, expected):
    assert pol.cheapest_within(P, C, max_quality_drop=eps).tolist() == expected


def test_budget_maximises_predicted_quality_within_mean_cost():
    # mean cost 2 allows (1, 1): sum P 1.15, the best of the assignments costing <= 2
    assert pol.budget(P, C, budget=2.0).tolist() == [1, 1]
    assert pol.budget(P, C, budget=1.0).tolist() == [2, 2]    # only the cheapest fits
    assert pol.budget(P, C, budget=0.5).tolist() == [2, 2]    # below anything: cheapest
    assert pol.budget(P, C, budget=100.0).tolist() == [0, 1]  # free: argmax P


def test_lagrangian_price_trades_quality_for_cost():
    assert pol.lagrangian(P, C, lam=0.0).tolist() == [0, 1]
    assert pol.lagrangian(P, C, lam=0.1).tolist() == [1, 1]   # 0.9 - 1.0 < 0.6 - 0.2
    assert pol.lagrangian(P, C, lam=1.0).tolist() == [2, 2]


def test_per_input_costs_are_accepted():
    c = np.array([[10.0, 2.0, 1.0], [10.0, 0.5, 1.0]])
    assert pol.smallest_sufficient(P, c, tau=0.1).tolist() == [2, 1]


def test_hybrid_labels_rules():
    qs, ql = np.array([1.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0])
    assert pol.hybrid_labels(q_weak=qs, q_strong=ql, rule="det").tolist() == [1, 0, 1]
    # success rates 0.5 and 0.5 over trials: P[H >= 0] = 1 - 0.5 * 0.5
    assert pol.hybrid_labels(q_weak=np.array([0.5]), q_strong=np.array([0.5]), rule="prob")[0] == pytest.approx(0.75)
    assert pol.hybrid_labels(q_weak=np.array([0.5, 0.5]), q_strong=np.array([0.6, 0.8]), rule="trans", t=0.2).tolist() == [1, 0]
    with pytest.raises(BenchrouteError, match="unknown Hybrid LLM label rule 'x'"):
        pol.hybrid_labels(q_weak=qs, q_strong=ql, rule="x")


def test_label_spread_and_t_star():
    assert pol.label_spread(np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert pol.label_spread(np.array([0.0, 0.0, 1.0, 1.0])) == pytest.approx(2 / 3)
    # gaps -0.1, -0.4, -0.05, -0.45: t = 0.1 makes two of four labels 1, the widest spread
    t = pol.choose_t(np.full(4, 0.5), np.array([0.6, 0.9, 0.55, 0.95]))
    assert t == pytest.approx(0.1)


def test_hybrid_routes_to_small_when_score_reaches_threshold():
    assert pol.hybrid(np.array([0.9, 0.2]), weak=1, strong=0, threshold=0.5).tolist() == [1, 0]


def test_pick_threshold_largest_cost_advantage_within_drop():
    score = np.array([0.9, 0.8, 0.1, 0.2])
    qs, ql = np.array([1.0, 1.0, 0.0, 1.0]), np.ones(4)
    t, adv, drop = pol.pick_threshold(score, q_weak=qs, q_strong=ql, max_quality_drop=0.0)
    assert (t, adv, drop) == (pytest.approx(0.2), pytest.approx(0.75), pytest.approx(0.0))
    t, adv, _ = pol.pick_threshold(score, q_weak=qs, q_strong=ql, max_quality_drop=0.25)
    assert adv == pytest.approx(1.0)


def test_task_level_cheapest_within_quality_drop():
    scores = pd.DataFrame({"S3": [0.8, 0.78, 0.6]}, index=["a", "b", "c"])
    costs = {"a": 10.0, "b": 1.0, "c": 0.1}
    assert pol.cheapest_within_selection(scores, costs, 0.0) == "a"
    assert pol.cheapest_within_selection(scores, costs, 0.05) == "b"
    assert pol.cheapest_within_selection(scores, costs, 0.3) == "c"
    with pytest.raises(BenchrouteError, match=r"no cost given for model\(s\) \['c'\]"):
        pol.cheapest_within_selection(scores, {"a": 1.0, "b": 1.0}, 0.1)
    with pytest.raises(BenchrouteError, match="max_quality_drop == -1"):
        pol.cheapest_within_selection(scores, costs, -1)


def test_apply_policy_validates_names_and_parameters():
    assert pol.apply_policy("smallest_sufficient", P, C, tau=0.5).tolist() == [1, 1]
    with pytest.raises(BenchrouteError, match="unknown policy 'cheap'"):
        pol.apply_policy("cheap", P, C)
    with pytest.raises(BenchrouteError, match=r"policy 'smallest_sufficient' takes \['tau'\]"):
        pol.apply_policy("smallest_sufficient", P, C, eps=0.1)
    with pytest.raises(BenchrouteError, match=r"costs has 2 entries for 3 models"):
        pol.best(P, np.array([1.0, 2.0]))
    with pytest.raises(BenchrouteError, match="costs must be finite and >= 0"):
        pol.best(P, np.array([1.0, -2.0, 1.0]))



@pytest.mark.parametrize("bad_p, message", [
    (np.array([[0.9, np.nan, 0.3]]), r"P\[0, 1\] == nan: every value must be a finite number"),
    (np.array([[0.9, 0.2, 0.3], [0.1, np.inf, 0.2]]), r"P\[1, 1\] == inf"),
    ([["0.9", "0.2", "0.3"]], r"P must be an \(n, M\) array of numbers"),
    ([[0.9, 0.2], [0.1]], r"P must be an \(n, M\) array of numbers"),
    (np.zeros((2, 2, 3)), r"3-D"),
    (np.array([[True, False, True]]), r"dtype bool"),
])
def test_every_policy_called_directly_refuses_p_that_is_not_finite_numbers(bad_p, message):
    """Called directly, as the experiments and a user's code call them, not only by name: a NaN
    compares false with every number, so smallest_sufficient sent its row to whichever model
    the comparison left."""
    for fn, kw in [(pol.best, {}), (pol.smallest_sufficient, {"tau": 0.5}),
                   (pol.cheapest_within, {"max_quality_drop": 0.1}), (pol.lagrangian, {"lam": 0.1}),
                   (pol.budget, {"budget": 2.0}), (pol.threshold, {"strong": 0, "weak": 1, "t": 0.0})]:
        with pytest.raises(BenchrouteError, match=message):
            fn(bad_p, **kw)
    with pytest.raises(BenchrouteError, match=message):
        pol.apply_policy("smallest_sufficient", bad_p, tau=0.5)


def test_every_policy_called_directly_checks_its_parameter():
    """The ranges of :data:`PARAM_RANGES` hold called directly as by name, and a model's column
    is an index of P: a negative one counted from the end chose a model nobody named."""
    for fn, kw, message in [
            (pol.smallest_sufficient, {"tau": 70}, r"tau == 70, expected a finite number in \[0, 1\]"),
            (pol.cheapest_within, {"max_quality_drop": -0.1}, r"max_quality_drop == -0.1"),
            (pol.lagrangian, {"lam": float("nan")}, r"lam == nan"),
            (pol.budget, {"budget": "2"}, r"budget == '2'"),
            (pol.budget, {"budget": 2.0, "iters": 0}, r"iters == 0"),
            (pol.threshold, {"strong": 0, "weak": 1, "t": 2.0}, r"t == 2.0"),
            (pol.threshold, {"strong": -1, "weak": 1, "t": 0.0}, r"strong == -1, expected a column index in \[0, 3\)"),
            (pol.threshold, {"strong": 0, "weak": 3, "t": 0.0}, r"weak == 3"),
            (pol.threshold, {"strong": True, "weak": 0, "t": 0.0}, r"strong == True"),
            (pol.threshold, {"strong": 1, "weak": 1, "t": 0.0}, "the same model"),
            (pol.best, {"prefer": 5}, r"prefer == 5"),
            (pol.best, {"prefer": np.array([0, 1, 2])}, r"prefer must be a column index or one per row"),
            (pol.best, {"tol": -1.0}, r"tol == -1.0")]:
        with pytest.raises(BenchrouteError, match=message):
            fn(P, C, **kw)
    with pytest.raises(BenchrouteError, match=r"column == 3"):
        pol.smallest_sufficient_shares(P, C, 3)
    assert pol.best(P, C, prefer=np.array([2, 2]), tol=1.0).tolist() == [2, 2]


def test_hybrid_functions_check_their_arrays():
    """Hybrid LLM's labels, threshold choice and routing take 1-D finite arrays of one length:
    arrays of two lengths were compared elementwise by broadcasting, or failed in NumPy."""
    q3, q2 = np.array([1.0, 0.0, 0.5]), np.array([1.0, 0.0])
    with pytest.raises(BenchrouteError, match=r"q_weak must be a 1-D array of numbers of length 3"):
        pol.hybrid_labels(q_weak=q2, q_strong=q3)
    with pytest.raises(BenchrouteError, match=r"q_strong\[0, 2\] == nan"):
        pol.hybrid_labels(q_weak=q3, q_strong=np.array([1.0, 0.0, np.nan]))
    with pytest.raises(BenchrouteError, match=r"q_strong must be a 1-D array"):
        pol.pick_threshold(np.zeros(3), q_weak=q3, q_strong=q2)
    with pytest.raises(BenchrouteError, match=r"max_quality_drop == 2"):
        pol.pick_threshold(np.zeros(3), q_weak=q3, q_strong=q3, max_quality_drop=2)
    with pytest.raises(BenchrouteError, match=r"threshold == nan"):
        pol.hybrid(np.zeros(3), weak=0, strong=1, threshold=float("nan"))
    with pytest.raises(BenchrouteError, match=r"two different column indices"):
        pol.hybrid(np.zeros(3), weak=1, strong=1, threshold=0.5)
    with pytest.raises(BenchrouteError, match=r"score must be a 1-D array"):
        pol.hybrid(np.zeros((3, 2)), weak=0, strong=1, threshold=0.5)
    # none sent to the weak model: pick_threshold's inf threshold routes every input to strong
    thr, share, _ = pol.pick_threshold(np.array([0.2, 0.1]), q_weak=np.zeros(2),
                                       q_strong=np.ones(2), max_quality_drop=0.0)
    assert (thr, share) == (float("inf"), 0.0)
    assert pol.hybrid(np.array([0.2, 0.1]), weak=0, strong=1, threshold=thr).tolist() == [1, 1]


# ---------------------------------------------------------------------- through the router
def _router(tmp_path, tune: bool):
    from benchroute.embedding import HashingEncoder
    from benchroute.router import Router
    from tests.unit.test_router import synthetic

    data, _ = synthetic(4)
    router = Router(alphas=(0.0,), encoder=HashingEncoder(64), cache_dir=str(tmp_path), tune=tune)
    return router.fit(data), data


def test_router_route_with_policy_returns_model_p_and_cost(tmp_path):
    router, _ = _router(tmp_path, tune=True)
    texts = [f"task 1 input {i}" for i in range(6)]
    costs = {"m0": 3.0, "m1": 2.0, "m2": 1.0}
    out = router.route_table(texts, policy="smallest_sufficient", tau=0.0, costs=costs)
    assert list(out.columns) == ["model", "p", "cost", "ood_p", "ood_fallback", "in_pool"]
    assert out["model"].tolist() == ["m2"] * 6 and out["cost"].tolist() == [1.0] * 6  # τ = 0
    best = router.route_table(texts, policy="best")
    P = router.predict_proba(texts).to_numpy()
    assert best["p"].to_numpy() == pytest.approx(P.max(axis=1))
    thr = router.route_table(texts, policy="threshold", strong="m0", weak="m2", t=-1.0, costs=costs)
    assert set(thr["model"]) == {"m0"}
    assert router.per_input_.tuning_ is not None and router.per_input_.k_ >= 1
    with pytest.raises(BenchrouteError, match="policy 'budget' needs costs"):
        router.route_table(texts, policy="budget", budget=1.0)
    with pytest.raises(BenchrouteError, match="strong model 'zz' is not among"):
        router.route_table(texts, policy="threshold", strong="zz", weak="m2", t=0.0, costs=costs)


def test_costs_as_a_series_are_read_by_model_name(tmp_path):
    """A Series is no Mapping: it was read by position, each price given to another model
    (a review found it through route_table and select_model)."""
    router, _ = _router(tmp_path, tune=False)
    texts = [f"task 1 input {i}" for i in range(6)]
    prices = {"m2": 3.0, "m0": 1.0, "m1": 2.0}  # not in the router's order
    as_dict = router.route_table(texts, policy="smallest_sufficient", tau=0.0, costs=prices)
    as_series = router.route_table(texts, policy="smallest_sufficient", tau=0.0,
                                   costs=pd.Series(prices))
    pd.testing.assert_frame_equal(as_dict, as_series)
    assert set(as_series["model"]) == {"m0"} and set(as_series["cost"]) == {1.0}
    assert pol.cost_vector(["m0", "m1", "m2"], pd.Series(prices)).tolist() == [1.0, 2.0, 3.0]
    one = router.select_model(texts, max_quality_drop=1.0, costs=pd.Series(prices))
    assert one.model == "m0"
    with pytest.raises(BenchrouteError, match=r"no cost given for model\(s\) \['m2'\]"):
        router.route_table(texts, policy="smallest_sufficient", tau=0.0,
                           costs=pd.Series({"m0": 1.0, "m1": 2.0}))


def test_router_tuned_state_survives_save_and_load(tmp_path):
    from benchroute.router import Router

    router, _ = _router(tmp_path, tune=True)
    texts = [f"task 2 input {i}" for i in range(4)]
    router.save(tmp_path / "r")
    back = Router.load(tmp_path / "r")
    assert back.per_input_.k_ == router.per_input_.k_
    pd.testing.assert_frame_equal(back.predict_proba(texts), router.predict_proba(texts))


def test_select_model_max_quality_drop_picks_cheapest_within(tmp_path):
    router, _ = _router(tmp_path, tune=False)
    texts = [f"task 1 input {i}" for i in range(6)]
    top = router.select_model(texts, fallback=False)
    costs = {m: (0.0 if m != top.model else 5.0) for m in router.models_}
    same = router.select_model(texts, fallback=False, max_quality_drop=0.0, costs=costs)
    # ε = 0 keeps the top score: the same model, or a cheaper one tied with it
    assert same.scores.loc[same.model, "S3"] == pytest.approx(top.scores["S3"].max(), abs=1e-12)
    assert same.model == top.model or costs[same.model] < costs[top.model]
    cheap = router.select_model(texts, fallback=False, max_quality_drop=1.0, costs=costs)
    assert cheap.model != top.model and cheap.scores.loc[cheap.model, "chosen"]
    assert cheap.scores["cost"].to_dict() == costs


def test_cli_route_with_policy_and_prices(tmp_path, capsys):
    from benchroute.cli import main
    from benchroute.router import Router
    from tests.unit.test_router import synthetic

    data, _ = synthetic(11)
    Router(alphas=(0.0,), encoder="hashing-64-12", cache_dir=str(tmp_path / "c")).fit(data).save(tmp_path / "r")
    texts = tmp_path / "t.txt"
    texts.write_text("task 1 input 1\ntask 1 input 2\n")
    args = ["route", str(texts), "--router", str(tmp_path / "r"), "--json"]
    # USD per 1M tokens x 1000 tokens: m2 costs 0.001 per call, the cheapest
    assert main(args + ["--policy", "smallest_sufficient", "--param", "tau=0",
                        "--prices", "m0=30,m1=10,m2=1", "--tokens", "1000"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["model"] for r in rows] == ["m2", "m2"]
    assert rows[0]["cost"] == pytest.approx(0.001)
    assert main(args + ["--policy", "budget", "--param", "budget=1"]) == 2
    assert "needs costs" in capsys.readouterr().err


def test_pick_threshold_breaks_ties_to_use_the_budget():
    # one block of 4 tied scores: only a share of it fits a drop of 1/8
    score = np.ones(4)
    qs, ql = np.array([1.0, 0.0, 1.0, 1.0]), np.ones(4)
    _, adv, drop = pol.pick_threshold(score, q_weak=qs, q_strong=ql, max_quality_drop=0.125, seed=0)
    assert drop <= 0.125 and adv >= 0.5
    assert pol.top_share(np.array([0.1, 0.9, 0.5]), 2 / 3).tolist() == [False, True, True]



def test_route_returns_names_and_route_table_the_decisions(tmp_path):
    """route has one return type (a list of names); route_table gives a policy's table; the old
    spelling route(policy=...) still returns that table, with a FutureWarning."""
    router, _ = _router(tmp_path, tune=False)
    texts = [f"task 1 input {i}" for i in range(6)]
    names = router.route(texts)
    assert isinstance(names, list) and all(isinstance(m, str) for m in names)
    table = router.route_table(texts)  # policy "best" by default: the same choices
    assert table["model"].tolist() == names
    costs = {"m0": 3.0, "m1": 2.0, "m2": 1.0}
    new = router.route_table(texts, policy="cheapest_within", max_quality_drop=1.0, costs=costs)
    with pytest.warns(FutureWarning, match="route_table"):
        old = router.route(texts, policy="cheapest_within", max_quality_drop=1.0, costs=costs)
    pd.testing.assert_frame_equal(old, new)
    assert new["model"].tolist() == ["m2"] * 6


def test_old_parameter_names_still_work_and_warn():
    """One vocabulary: max_quality_drop (was eps, max_drop) and strong/weak (was large/small);
    the old spellings give the same answer, with a FutureWarning naming the new one, for one
    release. Old and new together are refused."""
    with pytest.warns(FutureWarning, match="'eps' is deprecated.*'max_quality_drop'"):
        assert pol.cheapest_within(P, C, eps=0.35).tolist() == [1, 2]
    with pytest.warns(FutureWarning, match="'eps' is deprecated"):
        assert pol.apply_policy("cheapest_within", P, C, eps=0.35).tolist() == [1, 2]
    with pytest.warns(FutureWarning) as caught:
        assert pol.hybrid(np.array([0.9, 0.2]), small=1, large=0, threshold=0.5).tolist() == [1, 0]
    assert sorted(str(w.message) for w in caught) == [
        "hybrid: 'large' is deprecated and will be removed; call it 'strong'",
        "hybrid: 'small' is deprecated and will be removed; call it 'weak'"]
    score, qw, qs = np.array([0.9, 0.8, 0.1, 0.2]), np.array([1.0, 1.0, 0.0, 1.0]), np.ones(4)
    with pytest.warns(FutureWarning) as caught:
        old = pol.pick_threshold(score, q_small=qw, q_large=qs, max_drop=0.0)
    assert len(caught) == 3 and all(w.filename == __file__ for w in caught)  # points at the caller
    assert old == pol.pick_threshold(score, q_weak=qw, q_strong=qs, max_quality_drop=0.0)
    with pytest.raises(BenchrouteError, match="'eps' is the old name of 'max_quality_drop'"):
        pol.cheapest_within(P, C, eps=0.1, max_quality_drop=0.1)


def test_an_old_parameter_name_is_renamed_once_where_it_enters(tmp_path):
    """route_table and the gateway's server policy rename ``eps`` where it enters: one warning,
    at the caller's line, and the renamed name is what the rest of the code sees."""
    from benchroute.serve.decide import ServerPolicy

    router, _ = _router(tmp_path, tune=False)
    texts = [f"task 1 input {i}" for i in range(6)]
    costs = {"m0": 3.0, "m1": 2.0, "m2": 1.0}
    with pytest.warns(FutureWarning) as caught:
        old = router.route_table(texts, policy="cheapest_within", eps=1.0, costs=costs)
    assert len(caught) == 1 and caught[0].filename == __file__
    new = router.route_table(texts, policy="cheapest_within", max_quality_drop=1.0, costs=costs)
    pd.testing.assert_frame_equal(old, new)
    with pytest.warns(FutureWarning, match="'eps' is deprecated"):
        served = ServerPolicy("cheapest_within", {"eps": 0.05})
    assert served.params == {"max_quality_drop": 0.05}
    assert ServerPolicy("share", {"s": 0.3}).params == {"s": 0.3}  # not a policy function: as is


def test_cost_free_policies_route_with_costs_for_some_candidates_only(tmp_path):
    """best and threshold decide without costs: prices given for some candidates were refused
    ("no cost given for model(s)") by the library, the CLI and calibrate, though the gateway
    and a store's partial costs routed (found by a review of the cost surfaces)."""
    router, _ = _router(tmp_path, tune=False)
    texts = [f"task 1 input {i}" for i in range(4)]
    partial = {"m0": 1.0, "m1": 2.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # names the router has: no misspelling to report
        best = router.route_table(texts, policy="best", costs=partial)
    assert best["model"].tolist() == router.route(texts) and best["cost"].isna().all()
    thr = router.route_table(texts, policy="threshold", strong="m0", weak="m1", t=0.0,
                             costs=pd.Series(partial))
    assert thr["cost"].isna().all()
    with pytest.raises(BenchrouteError, match=r"no cost given for model\(s\) \['m2'\]"):
        router.route_table(texts, policy="smallest_sufficient", tau=0.5, costs=partial)


@pytest.mark.parametrize("scale", [1e-15, 1e-12, 1.0, 1e12])
def test_a_budget_holds_at_any_scale_of_costs(scale):
    """A floor of 1e-12 on the smallest cost step made costs of about 1e-12 always take the
    cheapest assignment, far below a feasible budget (found by a review)."""
    rng = np.random.default_rng(0)
    P, c = rng.random((200, 3)), np.array([3.0, 2.0, 1.0]) * scale
    lam = pol.budget_price(P, c, budget=1.5 * scale)
    spent = c[pol.lagrangian(P, c, lam=lam)].mean() / scale
    assert 1.45 <= spent <= 1.5 + 1e-9


def test_costs_near_a_float_s_limit_decide_without_overflow():
    """Costs of 1e308 summed to inf: a budget curve's mean costs were inf and its budgets NaN
    (the gateway's status curve failed to start once budgets were checked), and the price
    search warned of overflow (found by fuzzing)."""
    huge = np.array([1e308, 1e308, 1e-308])
    assert pol.finite_mean(np.array([1e308, 1e308, 1.0])) == pytest.approx(1e308 / 3 * 2)
    assert pol.finite_mean(np.array([0.1, 0.2, 0.3])) == np.mean([0.1, 0.2, 0.3])  # bit for bit
    assert pol.finite_mean(np.array([])) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pol.lagrangian(P, huge, lam=10.0).tolist() == [2, 2]
        assert pol.budget(P, huge, budget=1e300).tolist() == [2, 2]
        assert pol.budget(P, huge, budget=1e308).tolist() == pol.best(P, huge).tolist()
