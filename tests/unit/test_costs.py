"""Cost–quality metrics against hand-computed values, and the cross-fitted evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchroute.data.store import BenchmarkData
from benchroute.exceptions import BenchrouteError
from benchroute.experiments import costs as cq
from benchroute.tuning import PerInputPredictor


def _pair_curve() -> pd.DataFrame:
    curve = pd.DataFrame({"policy": "threshold", "param": [0.0, 0.5, 1.0],
                          "share_strong": [0.0, 0.5, 1.0], "quality": [0.5, 0.8, 0.9],
                          "cost": [1.0, 5.5, 10.0]})
    curve.attrs.update(q_strong=0.9, q_weak=0.5, c_min=1.0, c_max=10.0)
    return curve


def test_apgr_cpt_pgr_by_hand():
    m = cq.routing_metrics(_pair_curve()).set_index("policy")
    row = m.loc["threshold"]
    # AUC = 0.5 (0.5 + 0.8) / 2 + 0.5 (0.8 + 0.9) / 2 = 0.75; (0.75 - 0.5) / (0.9 - 0.5)
    assert row["APGR"] == pytest.approx(0.625)
    # PGR at the points: 0, 0.75, 1; PGR 0.5 is reached 2/3 of the way to 0.5
    assert row["CPT50"] == pytest.approx(1 / 3)
    assert row["CPT80"] == pytest.approx(0.6)
    assert row["PGR@50"] == pytest.approx(0.75)
    assert row["PGR@20"] == pytest.approx(0.3)  # quality 0.62 interpolated at call% 0.2
    rand = m.loc["random-analytic"]
    assert (rand["APGR"], rand["CPT50"], rand["PGR@20"]) == (0.5, 0.5, 0.2)


def test_cpt_unreached_is_nan():
    assert np.isnan(cq.cpt(np.array([0.0, 1.0]), np.array([0.5, 0.6]), q_strong=0.9, q_weak=0.5, pgr_target=0.8))


def test_upper_hull_and_aiq_by_hand():
    cost = np.array([1.0, 2.0, 3.0, 4.0])
    quality = np.array([0.5, 0.6, 0.9, 0.85])
    hx, hy = cq.upper_hull(cost, quality)
    assert hx.tolist() == [1.0, 3.0] and hy.tolist() == [0.5, 0.9]  # (2, .6) under the chord
    # R̃ rises 0.5 -> 0.9 on [1, 3] (area 1.4), flat 0.9 on [3, 4] (0.9): 2.3 / 3
    assert cq.aiq(cost, quality, 1.0, 4.0) == pytest.approx(2.3 / 3)
    # the router's cheapest point is at cost 2: nothing attainable on [1, 2)
    assert cq.aiq(np.array([2.0]), np.array([0.6]), 1.0, 3.0) == pytest.approx(0.3)
    # same cost, two qualities: the higher one counts
    hx, hy = cq.upper_hull(np.array([1.0, 1.0, 2.0]), np.array([0.5, 0.7, 0.8]))
    assert hx.tolist() == [1.0, 2.0] and hy.tolist() == [0.7, 0.8]


def _store(n: int = 60, seed: int = 0) -> tuple[BenchmarkData, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 2, n)
    centre = rng.normal(size=(2, 8))
    X = centre[c] + 0.3 * rng.normal(size=(n, 8))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    prob = {"big": np.full(n, 0.9), "small": np.where(c == 0, 0.85, 0.2), "mid": np.full(n, 0.5)}
    rows = [{"dataset": f"d{i % 2}", "instance_id": str(i), "text": f"input {i}", "model": m,
             "score": float(rng.random() < p[i]), "correct": 0.0} for m, p in prob.items()
            for i in range(n)]
    frame = pd.DataFrame(rows)
    frame["correct"] = frame["score"]
    data = BenchmarkData(frame)
    order = data.instances()["instance_id"].astype(int).to_numpy()
    return data, X[order].astype(np.float32)


COSTS = {"big": 10.0, "mid": 3.0, "small": 1.0}


def test_cost_quality_threshold_curve_and_baselines():
    data, X = _store()
    curve = cq.cost_quality(data, strong="big", weak="small", policy="threshold", folds=3,
                            embeddings=X, costs=COSTS)
    thr = curve[curve["policy"] == "threshold"]
    assert thr["share_strong"].tolist() == pytest.approx(list(cq.CALL_LEVELS), abs=0.02)
    assert {"random", "oracle-pair", "oracle", "single:big", "threshold@val"} <= set(curve["policy"])
    assert curve.attrs["q_strong"] == pytest.approx(curve.loc[curve["policy"] == "single:big", "quality"].item())
    assert curve.attrs["cost_source"] == "caller (per-model cost per call)"
    m = cq.routing_metrics(curve).set_index("policy")
    # the small model is good on one cluster, which the neighbours see: better than random
    assert m.loc["threshold", "APGR"] > 0.6
    assert m.loc["oracle-pair", "APGR"] >= m.loc["threshold", "APGR"]


def test_pool_policies_and_bootstrap_intervals():
    data, X = _store()
    A = cq.arrays(data, X, costs=COSTS)
    run = cq.evaluate(A, ["best", "smallest_sufficient", "budget"], folds=3,
                      make=lambda: PerInputPredictor(ks=(5, 10), priors=(0.0, 5.0)))
    assert run.choices.shape == (len(run.curve), len(X))
    boot = cq.bootstrap_metrics(run, n_boot=20).set_index("policy")
    assert (boot["AIQ_lo"] <= boot["AIQ"] + 1e-9).all() and (boot["AIQ"] <= boot["AIQ_hi"] + 1e-9).all()
    assert boot.loc["oracle", "AIQ"] >= boot.loc["budget", "AIQ"]


def test_hybrid_reports_cost_advantage_at_validation_threshold():
    data, X = _store()
    A = cq.arrays(data, X, costs=COSTS)
    s, w = cq.pair_indices(A, "big", "small", needed=True)
    run = cq.evaluate(A, ["hybrid"], s, w, folds=3, hybrid_rules=("det",), max_quality_drop=0.05,
                      make=lambda: PerInputPredictor(ks=(5, 10), priors=(0.0,)))
    val = cq.hybrid_at_validation(cq.with_attrs(run))
    assert val["policy"].tolist() == ["hybrid-det@val"]
    assert 0.0 <= val["cost_advantage"].item() <= 1.0


def test_crossfit_never_scores_an_input_with_itself():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y = (rng.random((100, 2)) < 0.5).astype(float)
    P, _, _ = cq.crossfit_proba(X, Y, folds=5, make=lambda: PerInputPredictor(
        k=1, weights="uniform", prior=0.0, calibration="none"))
    # with itself in the pool, k = 1 would return its own label every time
    assert (P == Y).mean() < 0.75


def test_costs_are_required_and_checked():
    data, X = _store()
    with pytest.raises(BenchrouteError, match="the store has no complete 'cost' column"):
        cq.cost_quality(data, embeddings=X, policy="best")
    with pytest.raises(BenchrouteError, match=r"no cost given for model\(s\) \['mid'\]"):
        cq.cost_quality(data, embeddings=X, policy="best", costs={"big": 1.0, "small": 1.0})
    with pytest.raises(BenchrouteError, match="unknown model 'gpt'"):
        cq.cost_quality(data, strong="gpt", embeddings=X, costs=COSTS)
    with pytest.raises(BenchrouteError, match="needs the inputs' embeddings"):
        cq.cost_quality(data, costs=COSTS)


def test_store_cost_column_is_used_per_input():
    data, X = _store()
    frame = data.frame.copy()
    frame["cost"] = frame["model"].map(COSTS) * (1 + frame["instance_id"].astype(int) % 2)
    A = cq.arrays(BenchmarkData(frame), X)
    assert A.cost_source == "store (cost column)"
    ids = data.instances()["instance_id"].astype(int).to_numpy()
    np.testing.assert_array_equal(A.C[:, A.models.index("big")], 10.0 * (1 + ids % 2))


def test_fixed_uncalibrated_predictor_is_validated_by_its_own_crossfit():
    """Issue 18: a fixed predictor fits without cross-validation and keeps no out-of-fold P;
    the validated choices cross-fit it over the training folds instead of crashing."""
    from benchroute.tuning import PerInputPredictor

    data, X = _store()
    fixed = lambda: PerInputPredictor(ks=(5,), weight_options=("uniform",), priors=(0.0,),  # noqa: E731
                                      calibration="none")
    curve = cq.cost_quality(data, strong="big", weak="small", policy="threshold", folds=3,
                            embeddings=X, costs=COSTS, predictor=fixed)
    assert "threshold@val" in set(curve["policy"])
    run = cq.evaluate(cq.arrays(data, X, costs=COSTS), ["hybrid"], strong=0, weak=2, folds=3,
                      make=fixed, hybrid_rules=("det",))
    assert "hybrid-det@val" in set(run.curve["policy"])


def test_a_store_cost_whose_mean_overflows_is_named_not_dropped():
    """Costs near 1.5e306 per row: their mean past a float's range was dropped silently, the
    model left without a cost (found by a review of the cost surfaces)."""
    import pytest

    from benchroute import BenchmarkData
    from benchroute.exceptions import BenchrouteError
    from benchroute.routing import store_costs
    from tests.unit.test_router import synthetic

    data, _ = synthetic(3, per_task=200)
    with pytest.raises(BenchrouteError, match=r"mean cost per call of \['m0', 'm1', 'm2'\] is "
                                              r"not a finite number"):
        store_costs(BenchmarkData(data.frame.assign(cost=1.5e306)))
    some = data.frame.assign(cost=np.where(data.frame["model"] == "m0", np.nan, 0.5))
    assert store_costs(BenchmarkData(some)) == {"m1": 0.5, "m2": 0.5}


def test_what_fuzzing_found_in_the_cost_surfaces(tmp_path):
    """Found by fuzzing the cost surfaces: curves of two lengths cut to the shorter silently
    (APGR 0.375), a NaN cost ordered the hull by hash (AIQ 0.0 or NaN from run to run), empty
    or 2-D curves raised IndexError or TypeError; a Series of costs naming a model twice, and
    a price file naming a column twice, kept the last price silently; a cost of None or
    10**400 raised TypeError or OverflowError in routing with a policy that reads no cost."""
    from benchroute import load_prices
    from benchroute.curves import aiq, apgr, cpt, interp_at, upper_hull
    from benchroute.exceptions import DataError
    from benchroute.policies import cost_vector
    from benchroute.routing import known_costs

    for call, quality, match in [([0.0, 1.0], [0.5, 0.8, 0.9], "1-D arrays of one length"),
                                 ([], [], "at least one point"),
                                 ([[0.0, 1.0]], [[0.5, 0.9]], "1-D arrays"),
                                 ([0.0, np.nan, 1.0], [0.5, 0.8, 0.9], "finite"),
                                 (["a", "b"], [0.5, 0.9], "arrays of numbers")]:
        for f, kw in ((apgr, {"q_strong": 0.9, "q_weak": 0.5}),
                      (cpt, {"q_strong": 0.9, "q_weak": 0.5, "pgr_target": 0.5}),
                      (aiq, {"c_min": 0.0, "c_max": 1.0}), (upper_hull, {}),
                      (interp_at, {"at": 0.5})):
            with pytest.raises(BenchrouteError, match=match):
                f(call, quality, **kw)
    assert apgr([0.0, 1.0], [0.5, 0.9], q_strong=0.9, q_weak=0.5) == pytest.approx(0.5)
    with pytest.raises(BenchrouteError, match=r"the Series names \['m0'\] more than once"):
        cost_vector(["m0"], pd.Series([1.0, 4.0], index=["m0", "m0"]))
    for bad in (None, 10**400, "abc", 1 + 0j):
        with pytest.raises(BenchrouteError, match="cost of 'm0' =="):
            known_costs({"m0": bad, "m1": 2.0}, ["m0", "m1"])
    assert known_costs({"m0": 1, "m1": 2.0}, ["m0", "m1"]) == {"m0": 1.0, "m1": 2.0}
    for header, match in [("model,input,output,input", r"names \['input'\] more than once"),
                          ("model,input,output,input_usd_per_1m", r"the header gives one price twice")]:
        path = tmp_path / "p.csv"
        path.write_text(header + "\nm0,1,2,9\n")
        with pytest.raises(DataError, match=match):
            load_prices(path)
    path = tmp_path / "p.json"
    path.write_text('{"m0": {"input": 1, "input_usd_per_1m": 9, "output": 2}}')
    with pytest.raises(DataError, match=r"entry 'm0' gives one price twice"):
        load_prices(path)


def test_routing_metrics_of_a_pair_curve_beside_a_pool_curve():
    """A pool policy's rows have no share of strong calls: its pair metrics are NaN and its
    AIQ is computed, as before the curve functions refused non-finite points (a review found
    the whole table failing); a cost that is not finite gives a NaN AIQ."""
    curve = pd.DataFrame({
        "policy": ["threshold"] * 3 + ["budget"] * 3 + ["lagrangian"] * 2,
        "share_strong": [0.0, 0.5, 1.0, np.nan, np.nan, np.nan, 0.2, 0.4],
        "quality": [0.5, 0.7, 0.9, 0.5, 0.6, 0.7, 0.6, 0.65],
        "cost": [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, np.inf]})
    curve.attrs.update(q_strong=0.9, q_weak=0.5, c_min=1.0, c_max=3.0)
    table = cq.routing_metrics(curve).set_index("policy")
    assert table.loc["threshold", "APGR"] == pytest.approx(0.5)
    assert np.isnan(table.loc["budget", "APGR"]) and table.loc["budget", "AIQ"] > 0
    assert np.isnan(table.loc["lagrangian", "AIQ"]) and np.isfinite(table.loc["lagrangian", "APGR"])
