"""The leave-one-task-out protocol, its summary, per-instance routing and the reproduce CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchroute.cli import main
from benchroute.experiments import leave_one_task_out, per_instance_routing, summarize, to_markdown
from benchroute.router import Router
from tests.unit.test_router import synthetic

PARAMS = {"encoder": "hashing-8-12", "alphas": (0.0, 0.2), "repeats": 2}


@pytest.fixture(scope="module")
def run():
    data, X = synthetic(21, n_tasks=5, per_task=24)
    return data, X, leave_one_task_out(data, PARAMS, alphas=(0.0, 0.25), repeats=3, embeddings=X)


def test_protocol_rows(run):
    data, _, res = run
    assert set(res["method"]) == {"S1", "S2", "S3", "S3-true-p", "BMA", "BMA-incl", "Oracle"}
    a0 = res[res["alpha"] == 0.0]
    assert len(a0) == 5 * 7 and set(a0["repeat"]) == {0}
    a25 = res[res["alpha"] == 0.25]
    assert set(a25["repeat"]) == {0, 1, 2} and (a25["n_labeled"] == 6).all()
    assert (a25["n_test"] == 18).all()
    assert (res["accuracy"] <= res["oracle_accuracy"] + 1e-12).all()
    oracle = res[res["method"] == "Oracle"]
    np.testing.assert_allclose(oracle["accuracy"], oracle["oracle_accuracy"])
    s3 = res[res["method"] == "S3"]
    assert s3["p_hat"].map(len).eq(3).all() and s3["predictor_accuracy"].between(0, 1).all()


def test_protocol_equals_router_fitted_without_the_task(run):
    """The shared-index protocol gives exactly what a router fitted on the other tasks gives."""
    data, X, res = run
    inst = data.instances()
    for task in data.datasets:
        keep = (inst["dataset"] != task).to_numpy()
        router = Router(**PARAMS).fit(data.exclude([task]), embeddings=X[keep])
        for method in ("S1", "S2", "S3"):
            sel = router.select_embedded(X[~keep], method=method)
            row = res[(res["task"] == task) & (res["alpha"] == 0.0) & (res["method"] == method)].iloc[0]
            assert row["model"] == sel.model, (task, method)
            if method == "S3":
                for m, v in row["p_hat"].items():
                    assert v == pytest.approx(sel.scores.loc[m, "p_hat"], abs=1e-9)
                assert row["u"] == pytest.approx(sel.task_distance, abs=1e-9)


def test_summary_table(run):
    _, _, res = run
    table = summarize(res, sizes={"m0": 7.0, "m1": 70.0})
    row = table[(table["alpha"] == 0.0) & (table["method"] == "Oracle")].iloc[0]
    assert row["ratio"] == pytest.approx(1.0) and row["tasks"] == 5
    for _, r in table.iterrows():
        assert r["acc_lo"] <= r["accuracy"] <= r["acc_hi"]
        assert 0 <= r["size_known"] <= 1
    s3 = table[(table["alpha"] == 0.0) & (table["method"] == "S3")].iloc[0]
    assert s3["p_mae_lo"] <= s3["p_mae"] <= s3["p_mae_hi"]
    md = to_markdown(table, 0.0)
    assert md.count("\n") == 1 + 7 and "| S3 |" in md


def test_per_instance_routing_beats_random():
    rng = np.random.default_rng(0)
    # two clusters; model a is good on cluster 0, model b on cluster 1
    rows, X = [], []
    for i in range(200):
        c = i % 2
        v = np.zeros(8)
        v[c] = 1.0
        v += 0.1 * rng.normal(size=8)
        X.append(v / np.linalg.norm(v))
        rows += [("d", str(i), f"t{i}", "a", 0.9 if c == 0 else 0.2),
                 ("d", str(i), f"t{i}", "b", 0.1 if c == 0 else 0.8)]
    df = pd.DataFrame(rows, columns=["dataset", "instance_id", "text", "model", "score"])
    from benchroute import BenchmarkData

    data = BenchmarkData(df.assign(correct=df["score"]))
    order = data.instances()["instance_id"].astype(int).to_numpy()
    out = per_instance_routing(data, embeddings=np.asarray(X, dtype=np.float32)[order],
                               router_params={"encoder": "hashing-8-12"})
    r = out.set_index("dataset").loc["ALL"]
    assert r["routed"] == pytest.approx(0.85) and r["oracle"] == pytest.approx(0.85)
    assert r["random"] == pytest.approx(0.5) and r["best_single_hindsight"] == pytest.approx(0.55)
    assert r["calls_routed"] == 1 and r["calls_rank_all"] == 2


def test_reproduce_cli(tmp_path, capsys):
    rows = ["text,dataset,a,b"]
    for i in range(36):
        task = ["cats", "dogs", "fish"][i % 3]
        rows.append(f"question {i} about {task} and {task} food,{task},{int(i % 3 == 0 or i % 5 == 0)},{int(i % 3 != 0)}")
    f = tmp_path / "t.csv"
    f.write_text("\n".join(rows) + "\n")
    code = main(["-q", "reproduce", str(f), "--name", "toy", "--out", str(tmp_path / "res"),
                 "--encoder", "hashing-32-12", "--store", str(tmp_path / "c"), "--sweep", "0", "0.2",
                 "--repeats-alpha", "2", "--alphas", "0", "--repeats", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| S3 |" in out
    folder = tmp_path / "res" / "toy"
    for name in ("table.md", "table.csv", "results.csv.gz", "alpha_curve.png", "p_scatter.png"):
        assert (folder / name).stat().st_size > 0
    assert pd.read_csv(folder / "table.csv")["method"].nunique() == 7


@pytest.mark.parametrize("tune", [True, False])
def test_per_instance_routing_routes_as_the_router(tune):
    """The experiment and Router.route_embedded make the same per-input choices (one code path),
    with the tuned predictor (the default) and with the plain k = 5 one."""
    from benchroute import BenchmarkData, Router

    rng = np.random.default_rng(3)
    n, d = 240, 16
    X = rng.normal(size=(n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    # quality of each model depends smoothly on the input, plus noise: no exact ties in P
    q = np.clip(np.stack([0.5 + 0.4 * X[:, 0], 0.5 - 0.4 * X[:, 0], 0.5 + 0.3 * X[:, 1]], 1)
                + 0.1 * rng.normal(size=(n, 3)), 0, 1)
    rows = [(f"d{i % 3}", f"{i:04d}", f"t{i}", m, float(q[i, j]))
            for i in range(n) for j, m in enumerate(["a", "b", "c"])]
    df = pd.DataFrame(rows, columns=["dataset", "instance_id", "text", "model", "score"])
    data = BenchmarkData(df.assign(correct=df["score"]))
    inst = data.instances()
    Xs = X[inst["instance_id"].astype(int).to_numpy()]
    params = {"encoder": "hashing-8-12", "tune": tune}
    out = per_instance_routing(data, embeddings=Xs, router_params=params, folds=2, seed=1)
    # the same folds, routed by the public Router API
    fold = np.random.default_rng(1).permutation(n) % 2
    Q = data.correctness_matrix(column="score").to_numpy()
    # the labels the experiment fits on: the scores rescaled to [0, 1] over the pool (the kNN's
    # ranking ignores the rescaling, a cross-model stack's logistic fits do not)
    Y = (Q - np.nanmin(Q)) / (np.nanmax(Q) - np.nanmin(Q))
    picked = np.empty(n, dtype=int)
    for f in range(2):
        test, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        router = Router(alphas=(0.0,), repeats=1, **params).fit_arrays(
            Xs[train], Y[train], inst["dataset"].to_numpy()[train], ["a", "b", "c"])
        assert (router.per_input_ is not None) is tune
        picked[test] = [["a", "b", "c"].index(m) for m in router.route_embedded(Xs[test])]
    expected = float(Q[np.arange(n), picked].mean())
    assert out.set_index("dataset").loc["ALL", "routed"] == pytest.approx(expected, abs=1e-9)


def test_per_instance_hindsight_best_single_counts_each_task_once():
    """a wins by the mean over inputs (its large task), b by the mean over tasks: "best
    single" means the latter everywhere, the hindsight column included."""
    rng = np.random.default_rng(0)
    rows = []
    for task, n, qa, qb in (("big", 30, 0.9, 0.5), ("small", 10, 0.1, 0.8)):
        rows += [(task, str(i), f"{task} {i}", m, q) for i in range(n)
                 for m, q in (("a", qa), ("b", qb))]
    df = pd.DataFrame(rows, columns=["dataset", "instance_id", "text", "model", "score"])
    from benchroute import BenchmarkData

    data = BenchmarkData(df.assign(correct=df["score"]))
    X = rng.normal(size=(40, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    out = per_instance_routing(data, embeddings=X, router_params={"encoder": "hashing-8-12"})
    r = out.set_index("dataset").loc["ALL"]
    assert r["best_single_model"] == "b"
    assert r["best_single_hindsight"] == pytest.approx((30 * 0.5 + 10 * 0.8) / 40)
