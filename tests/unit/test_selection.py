"""One selection path for the router and the experiments, and the correctness risks of issue 10
(each of these tests fails on 6bb6d91)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchroute import BenchmarkData
from benchroute.embedding import HashingEncoder
from benchroute.exceptions import BenchrouteError
from benchroute.experiments import leave_one_task_out
from benchroute.index import VectorIndex
from benchroute.reference import alpha_key, few_shot_count, task_seed
from benchroute.router import Router
from benchroute.selection import TIE_TOL, SelectionConfig, choose, route_rows
from tests.unit.test_router import MODELS, synthetic

PARAMS = {"encoder": "hashing-8-12", "alphas": (0.0, 0.1, 0.2), "repeats": 2}
ALPHAS = (0.0, 0.1, 0.2)


def _drop(data: BenchmarkData, task: str, model: str) -> BenchmarkData:
    f = data.frame
    return BenchmarkData(f[~((f["dataset"] == task) & (f["model"] == model))].reset_index(drop=True))


@pytest.fixture(scope="module")
def pool():
    data, X = synthetic(31, n_tasks=4, per_task=30)
    data = _drop(data, "t1", "m2")  # t1 has results for m0 and m1 only: candidates matter
    return data, X


@pytest.fixture(scope="module")
def protocol(pool):
    data, X = pool
    return leave_one_task_out(data, PARAMS, alphas=ALPHAS, repeats=2, embeddings=X)


def test_protocol_equals_router_at_several_alphas_with_candidates(pool, protocol):
    """Every S1/S2/S3 choice and p_hat of the protocol equals a router fitted without the task,
    given the same few-shot labels and the same candidates."""
    data, X = pool
    inst = data.instances()
    Y = data.correctness_matrix().reindex(columns=MODELS).to_numpy(dtype=np.float32)
    ds = inst["dataset"].to_numpy()
    checked = 0
    for task in data.datasets:
        keep = ds != task
        router = Router(**PARAMS).fit(data.exclude([task]), embeddings=X[keep])
        rd = np.flatnonzero(~keep)
        for alpha in ALPHAS:
            n_lab = few_shot_count(len(rd), alpha)
            rng = np.random.default_rng(task_seed(0, task, alpha_key(alpha)))
            for rep in range(1 if n_lab == 0 else 2):
                lab = rng.choice(len(rd), n_lab, replace=False) if n_lab else np.array([], int)
                test = np.setdiff1d(np.arange(len(rd)), lab)
                cand = [m for i, m in enumerate(MODELS) if (~np.isnan(Y[rd[test], i])).any()]
                if task == "t1":
                    assert cand == ["m0", "m1"]
                LX = X[rd[lab]] if n_lab else None
                LY = Y[rd[lab]] if n_lab else None
                for method in ("S1", "S2", "S3"):
                    sel = router.select_embedded(X[rd[test]], labeled_X=LX, labeled_Y=LY, candidates=cand, method=method)
                    row = protocol[(protocol["task"] == task) & (protocol["alpha"] == alpha)
                                   & (protocol["repeat"] == rep) & (protocol["method"] == method)]
                    assert len(row) == 1
                    row = row.iloc[0]
                    assert row["model"] == sel.model, (task, alpha, rep, method)
                    assert row["n_labeled"] == n_lab
                    if method == "S3":
                        assert row["fell_back"] == sel.fell_back
                        for m, v in row["p_hat"].items():
                            assert v == pytest.approx(sel.scores.loc[m, "p_hat"], abs=1e-9)
                    checked += 1
    assert checked == 4 * 3 * 5


def test_few_shot_draws_are_seeded_by_task_name(pool, protocol):
    """Running one task alone draws the same labelled inputs as the full run."""
    data, X = pool
    alone = leave_one_task_out(data, PARAMS, alphas=ALPHAS, repeats=2, embeddings=X, tasks=["t2"])
    full = protocol[protocol["task"] == "t2"].reset_index(drop=True)
    cols = ["alpha", "repeat", "method", "model", "accuracy", "u"]
    pd.testing.assert_frame_equal(alone[cols], full[cols])


@pytest.mark.parametrize("seed", range(6))
def test_exclude_datasets_is_exact(seed):
    """p_hat (to 1e-9) and the choice equal those of a router fitted without the task."""
    data, X = synthetic(seed, n_tasks=5, per_task=20)
    params = dict(alphas=(0.0, 0.1), repeats=2, encoder=HashingEncoder(8), seed=seed)
    full = Router(**params).fit(data, embeddings=X)
    ds = data.instances()["dataset"].to_numpy()
    for held in ("t0", "t3"):
        keep = ds != held
        alone = Router(**params).fit(data.exclude([held]), embeddings=X[keep])
        Q = X[~keep]
        a, b = full.select_embedded(Q, exclude_datasets=[held]), alone.select_embedded(Q)
        np.testing.assert_allclose(a.scores["p_hat"], b.scores["p_hat"], atol=1e-9)
        assert (a.model, a.bma, a.fell_back) == (b.model, b.bma, b.fell_back)


def test_one_task_is_a_clear_error_and_empty_reference_is_warned():
    data, X = synthetic(2, n_tasks=1, per_task=20)
    router = Router(alphas=(0.0,), encoder=HashingEncoder(8)).fit(data, embeddings=X)
    with pytest.raises(BenchrouteError, match="S3 needs a pool of at least two tasks"):
        router.select_embedded(X[:3])
    assert router.select_embedded(X[:3], method="S1").model in MODELS
    assert len(router.route_embedded(X[:3])) == 3
    with pytest.raises(BenchrouteError, match="needs at least two tasks; the data has 1"):
        leave_one_task_out(data, PARAMS, embeddings=X)
    # two tasks of one input each: no reference pair can be formed -> p_hat 0.5, with a warning
    tiny, Xt = synthetic(3, n_tasks=2, per_task=1)
    r = Router(alphas=(0.0,), encoder=HashingEncoder(8)).fit(tiny, embeddings=Xt)
    assert len(r.reference_.u) == 0
    with pytest.warns(UserWarning, match="no reference pairs"):
        sel = r.select_embedded(Xt[:1])
    np.testing.assert_allclose(sel.scores["p_hat"], 0.5)


def test_exclude_every_task_or_unknown_task_is_refused():
    data, X = synthetic(4, n_tasks=3, per_task=10)
    router = Router(alphas=(0.0,), encoder=HashingEncoder(8)).fit(data, embeddings=X)
    with pytest.raises(BenchrouteError, match="names every task"):
        router.select_embedded(X[:2], exclude_datasets=["t0", "t1", "t2"])
    with pytest.raises(BenchrouteError, match=r"unknown task\(s\) \['t9'\]"):
        router.select_embedded(X[:2], exclude_datasets=["t9"])


def _far_pool():
    """Two pool tasks on 4-D axes; m0 is always wrong in the pool."""
    rng = np.random.default_rng(0)
    rows, vecs = [], []
    for t, axis in (("A", 0), ("B", 1)):
        for i in range(6):
            v = np.eye(4)[axis] + 0.05 * rng.normal(size=4)
            vecs.append(v / np.linalg.norm(v))
            rows += [(t, str(i), f"{t}{i}", "m0", 0.0), (t, str(i), f"{t}{i}", "m1", 1.0)]
    frame = pd.DataFrame(rows, columns=["dataset", "instance_id", "text", "model", "correct"])
    return BenchmarkData(frame.assign(score=frame["correct"])), np.asarray(vecs, dtype=np.float32)


def test_fully_labelled_examples_are_not_scored_next_to_their_own_label():
    data, X = _far_pool()
    router = Router(k=1, n_neighbours=1, alphas=(0.0,), encoder=HashingEncoder(4)).fit(data, embeddings=X)
    # the task's inputs sit next to pool inputs (far from each other); their labels say m0 right
    Q = X[[0, 7]] + np.float32(0.01)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    labels = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    sel = router.select_embedded(Q, labeled_X=Q, labeled_Y=labels, method="S1",
                                 keep_duplicates=True)  # the pool inputs next to them count
    # each input's nearest other point is a pool input (m0 wrong), never its own label
    assert sel.scores.loc["m0", "S1"] == 0.0 and sel.scores.loc["m1", "S1"] == 1.0
    assert sel.n_labeled == 2


def test_router_vectors_are_owned_by_the_caller():
    data, X = synthetic(5, n_tasks=2, per_task=10)
    router = Router(alphas=(0.0,), encoder=HashingEncoder(8)).fit(data, embeddings=X)
    v = router.pool_vectors()
    v[:] = 0.0  # the caller's copy: the index is untouched
    assert np.abs(router.pool_vectors()).sum() > 0
    assert not np.shares_memory(router.pool_vectors(), router.pool_vectors())
    idx = VectorIndex("IVF2,Flat", nprobe=2).add(X, ["a"] * 10 + ["b"] * 10)
    idx.search(X[:2], 3, exclude_datasets=["a"])
    assert not any(name.startswith("_keep") for name in vars(idx))


def test_ties_use_an_explicit_tolerance():
    # 1e-7 apart: a real difference (np.isclose's defaults called it a tie)
    score = np.array([0.5, 0.5 + 1e-7])
    assert choose(score, np.array([0, 1]), bma=0)[0] == 1
    assert choose(np.array([0.5, 0.5 + TIE_TOL / 2]), np.array([0, 1]), bma=0)[0] == 0
    assert choose(score, np.array([0, 1]), bma=0, config=SelectionConfig(tie_tol=1e-6))[0] == 0
    P = np.array([[0.4, 0.4, 0.2], [0.1, 0.3, 0.6]])
    assert route_rows(P, np.arange(3), prefer=1).tolist() == [1, 2]
    avail = np.array([[True, False, True], [True, True, False]])
    assert route_rows(P, np.arange(3), prefer=1, available=avail).tolist() == [0, 1]


def test_save_leaves_the_fitted_router_unchanged(tmp_path):
    data, X = synthetic(6, n_tasks=2, per_task=10)
    router = Router(alphas=(0.0,), encoder=HashingEncoder(8)).fit(data, embeddings=X)
    before = router.predictor_.index_.encoder_id
    router.save(tmp_path / "r")
    assert router.predictor_.index_.encoder_id == before
    assert Router.load(tmp_path / "r").predictor_.index_.encoder_id == router.encoder_id_


def test_plots_leave_the_callers_backend_alone(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    from benchroute.experiments.plots import p_scatter

    previous = matplotlib.get_backend()
    matplotlib.use("template", force=True)
    try:
        res = pd.DataFrame([{"method": "S3", "alpha": 0.0, "p_hat": {"a": 0.6},
                             "p_true": {"a": 0.7}}])
        assert p_scatter(res, tmp_path / "p.png").is_file()
        assert matplotlib.get_backend() == "template"
    finally:
        matplotlib.use(previous, force=True)


def test_loading_the_encoder_leaves_transformers_bars_alone(monkeypatch):
    st = pytest.importorskip("sentence_transformers")
    from transformers.utils import logging as hf_logging

    from benchroute.embedding.sentence import SentenceTransformerEncoder

    class Fake:
        def __init__(self, *args, **kwargs):
            self.device = "cpu"

        def get_sentence_embedding_dimension(self):
            return 4

    monkeypatch.setattr(st, "SentenceTransformer", Fake)
    hf_logging.enable_progress_bar()
    SentenceTransformerEncoder("fake-model")._load()  # benchroute logs below INFO: bars off
    assert hf_logging.is_progress_bar_enabled()


def test_summary_says_what_the_numbers_are_and_eta():
    """Issue 18: the summary named u, p_hat and the win probability without saying what they
    are, and never said what eta was."""
    import pandas as pd

    from benchroute.selection import Selection

    table = pd.DataFrame({"S1": [0.8, 0.82], "S2": [0.8, 0.83], "S3": [0.7, 0.71],
                          "p_hat": [0.87, 0.81]}, index=["a", "b"])
    sel = Selection(model="a", method="S3", scores=table, fell_back=True, task_distance=0.3,
                    bma="a", n_examples=5, win_probability=0.41, eta=0.6)
    said = sel.summary()
    assert "0.41 < eta 0.6" in said and "mean distance of the inputs to the pool" in said
    assert "how often its correctness predictor is estimated to be right" in said
    assert sel.to_dict()["eta"] == 0.6


def test_repr_shows_small_costs():
    """Issue 18: costs under 0.001 printed as 0.000."""
    import pandas as pd

    from benchroute.selection import Selection

    table = pd.DataFrame({"S1": [0.8], "S2": [0.8], "S3": [0.7], "p_hat": [0.87],
                          "cost": [0.00024], "chosen": [True]}, index=["a"])
    sel = Selection(model="a", method="S3", scores=table, fell_back=False, task_distance=0.3,
                    bma="a", n_examples=5)
    assert "0.00024" in repr(sel)


def test_selections_compare_by_identity() -> None:
    """``a == b`` raised (the dataclass compared its DataFrame field) and ``hash`` failed."""
    import pandas as pd

    from benchroute.selection import Selection

    table = pd.DataFrame({"S1": [0.5]}, index=["m"])
    a = Selection(model="m", method="S1", scores=table, fell_back=False, task_distance=0.1,
                  bma="m", n_examples=1)
    b = Selection(model="m", method="S1", scores=table.copy(), fell_back=False,
                  task_distance=0.1, bma="m", n_examples=1)
    assert a == a and a != b and len({a, b}) == 2


def test_the_summary_names_the_model_it_fell_back_from() -> None:
    import pandas as pd

    from benchroute.selection import Selection

    table = pd.DataFrame({"S1": [0.6, 0.7], "S2": [0.6, 0.7], "S3": [0.55, 0.58],
                          "p_hat": [0.6, 0.6], "bma": [True, False], "chosen": [True, False]},
                         index=["a", "b"])
    one = Selection(model="a", method="S3", scores=table, fell_back=True, task_distance=0.2,
                    bma="a", n_examples=1, win_probability=0.4, eta=0.6)
    said = one.summary()
    assert "fell back from b, the top S3 score, to the best model on average" in said
    assert "over 1 input;" in said
