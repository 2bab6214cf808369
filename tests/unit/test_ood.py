"""Per-input OOD p-values (benchroute.ood): the formula, its coverage on tasks the pool never
saw, and the fallback in Router.route."""

from __future__ import annotations

import numpy as np
import pytest

from benchroute.exceptions import BenchrouteError
from benchroute.ood import fall_back, neighbour_score, p_values, pool_scores, reference_of
from benchroute.router import Router
from tests.saved_router import rewrite_pool
from tests.unit.test_router import MODELS, synthetic


def test_p_value_counts_reference_scores_at_least_as_far():
    ref = np.array([0.4, 0.1, 0.3, 0.2, np.nan])  # NaN (no neighbour) is left out
    p = p_values(np.array([0.35, 0.5, 0.0, 0.3, np.nan]), ref)
    np.testing.assert_allclose(p[:4], [2 / 5, 1 / 5, 5 / 5, 3 / 5])
    assert np.isnan(p[4])
    assert np.isnan(p_values(np.array([0.2]), np.array([np.nan]))).all()


def test_neighbour_score_is_the_mean_of_the_found_neighbours():
    d = np.array([[0.1, 0.3, 0.5], [0.2, np.inf, np.inf], [np.inf, np.inf, np.inf]])
    s = neighbour_score(d, 2)
    np.testing.assert_allclose(s[:2], [0.2, 0.2])
    assert np.isnan(s[2])


def clusters(seed: int, n_tasks: int, per_task: int = 40, d: int = 16, spread: float = 0.8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_tasks, d))
    centres[:, 0] += 3.0  # the tasks lie around one pole of the sphere
    X = np.vstack([c + spread * rng.normal(size=(per_task, d)) for c in centres])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    tasks = np.repeat([f"t{i}" for i in range(n_tasks)], per_task)
    Y = (rng.random((len(X), 3)) < 0.6).astype(np.float32)
    return X.astype(np.float32), Y, tasks


def test_new_tasks_from_the_pool_distribution_are_rarely_flagged_far_inputs_always():
    """Conformal validity: a task drawn like the pool's tasks gets p < a for about a share a of
    its inputs (averaged over many new tasks), while inputs far from every task are flagged."""
    X, Y, tasks = clusters(0, 31)
    pool = tasks != "t30"
    router = Router(alphas=(0.0,), tune=False).fit_arrays(X[pool], Y[pool], tasks[pool], MODELS)
    ref = reference_of(router)
    shares = []
    for seed in range(1, 9):  # new tasks drawn like the pool's
        Xn, _, _ = clusters(seed, 4)
        shares.append((ref.p_values(Xn) < 0.1).mean())
    assert np.mean(shares) <= 0.1 + 0.05
    far = -X[pool][:20]  # the other pole: farther than any task is from another
    far_p = ref.p_values(far)
    assert (far_p < 0.05).mean() >= 0.9


def test_reference_leaves_each_rows_task_out():
    X, Y, tasks = clusters(1, 4, per_task=10)
    router = Router(alphas=(0.0,), tune=False).fit_arrays(X, Y, tasks, MODELS)
    s = pool_scores(router.predictor_)
    d = 1.0 - X @ X.T
    for i in (0, 15, 39):
        other = d[i][tasks != tasks[i]]
        assert s[i] == pytest.approx(np.sort(other)[:router.k].mean(), abs=1e-5)


def test_one_task_pool_has_no_reference_and_moves_nothing():
    X, Y, tasks = clusters(2, 1)
    router = Router(alphas=(0.0,), tune=False).fit_arrays(X, Y, tasks, MODELS)
    p = reference_of(router).p_values(-X[:3])
    assert np.isnan(p).all()
    with pytest.warns(UserWarning, match="no out-of-distribution reference"):  # said, not hidden
        pick, flag = fall_back(np.array([0, 1, 2]), p, 0.5, 1)
    assert pick.tolist() == [0, 1, 2] and not flag.any()


def test_route_falls_back_for_flagged_inputs_only(tmp_path):
    from benchroute.embedding import HashingEncoder

    data, _ = synthetic(4)
    router = Router(alphas=(0.0,), encoder=HashingEncoder(64), cache_dir=str(tmp_path)).fit(data)
    texts = ["task 1 input 3", "task 2 input 7", "zebra quartz fjord nymph vexed"]
    p = router.ood_p(texts)
    assert p[2] < 0.05 and p[0] > 0.05 and p[1] > 0.05
    bma = router.bma_
    plain = router.route_table(texts, policy="best")
    moved = router.route_table(texts, policy="best", ood_alpha=0.05)
    np.testing.assert_allclose(plain["ood_p"], p)
    assert moved["ood_fallback"].tolist() == [False, False, True]
    assert moved["model"].tolist()[:2] == plain["model"].tolist()[:2]
    assert moved["model"].iat[2] == bma
    P = router.predict_proba(texts)
    assert moved["p"].iat[2] == pytest.approx(P[bma].iat[2])
    names = router.route(texts, ood_alpha=0.05)
    assert names[:2] == router.route(texts)[:2] and names[2] == bma
    with pytest.raises(BenchrouteError, match=r"ood_alpha == 1.5, expected a number in \(0, 1\)"):
        router.route(texts, ood_alpha=1.5)


def test_reference_follows_the_pool():
    X, Y, tasks = clusters(3, 4, per_task=10)
    router = Router(alphas=(0.0,), tune=False).fit_arrays(X, Y, tasks, MODELS)
    first = reference_of(router)
    assert reference_of(router) is first  # computed once
    router.fit_arrays(X[:30], Y[:30], tasks[:30], MODELS)
    again = reference_of(router)
    assert again is not first and len(again.scores) == 30


def test_held_out_experiment_matches_brute_force():
    """experiments.ood: each fold's reference (pool rows scored with their own task and the held-out
    task left out) and routing, against a direct computation; extra=0 forces the exact re-search."""
    from benchroute.experiments.ood import decile_table, fallback_table, held_out_ood

    X, Y, tasks = clusters(4, 5, per_task=12)
    per_input, info = held_out_ood(X, Y, tasks, k=3, extra=0)
    assert info["short_rows"] > 0
    d = 1.0 - X.astype(np.float64) @ X.T.astype(np.float64)
    for t in ("t0", "t3"):
        rest = np.flatnonzero(tasks != t)
        ref = [np.sort(d[i][(tasks != tasks[i]) & (tasks != t)])[:3].mean() for i in rest]
        test = np.flatnonzero(tasks == t)
        s = [np.sort(d[i][tasks != t])[:3].mean() for i in test]
        np.testing.assert_allclose(per_input.loc[per_input["task"] == t, "ood_p"],
                                   p_values(np.array(s), np.array(ref)), atol=1e-6)
    fb = fallback_table(per_input, alphas=(0.5,), n_boot=50)
    flag = per_input["ood_p"] < 0.5
    moved = np.where(flag, per_input["bma"], per_input["routed"]).mean()
    assert fb["quality"].iat[1] == pytest.approx(moved)
    assert fb["flagged"].iat[1] == pytest.approx(flag.mean())
    dec = decile_table(per_input, bins=5)
    assert dec["n"].sum() == len(per_input) and dec["p_max"].is_monotonic_increasing


# ---------------------------------------------------------------------- near-duplicates
def _g_without_near(Q, X, Y, k, within):
    """g by brute force: the mean label of the k nearest pool rows at distance >= within."""
    out = []
    for q in Q:
        d = 1.0 - X.astype(np.float64) @ q.astype(np.float64)
        order = [i for i in np.argsort(d, kind="stable") if d[i] >= within][:k]
        out.append(np.nanmean(Y[order], axis=0))
    return np.array(out)


def test_selection_and_routing_leave_pool_near_duplicates_out():
    from benchroute.embedding import HashingEncoder
    from benchroute.predictors import NEAR_DUPLICATE

    data, X = synthetic(6, n_tasks=3)
    router = Router(alphas=(0.0,), tune=False, encoder=HashingEncoder(8)).fit(data, embeddings=X)
    Xp, Yp = router.predictor_.index_.vectors(), router.Y_
    Q = Xp[:6]                                          # six pool inputs as a "new" task
    sel = router.select_embedded(Q, method="S1")
    assert sel.n_in_pool == 6 and not sel.duplicates_kept
    assert "6 of them near-duplicates of pool inputs (left out" in sel.summary()
    np.testing.assert_allclose(sel.proba, _g_without_near(Q, Xp, Yp, router.k, NEAR_DUPLICATE),
                               atol=1e-6)
    kept = router.select_embedded(Q, method="S1", keep_duplicates=True)
    assert kept.n_in_pool == 6 and kept.duplicates_kept
    np.testing.assert_allclose(kept.proba, router.predictor_.predict_proba(Q), atol=1e-6)
    new = router.select_embedded(-Q, method="S1")       # far from every pool input
    assert new.n_in_pool == 0 and "near-duplicates" not in new.summary()
    assert new.to_dict()["n_in_pool"] == 0

    P = router.predict_proba_embedded(Q)
    np.testing.assert_allclose(P, _g_without_near(Q, Xp, Yp, router.k, NEAR_DUPLICATE), atol=1e-6)
    from benchroute.routing import route_with_policy
    frame = route_with_policy(router, np.vstack([Q[:2], -Q[:1]]), "best", np.arange(3))
    assert frame["in_pool"].tolist() == [True, True, False]
    kept_frame = route_with_policy(router, Q[:2], "best", np.arange(3), keep_duplicates=True)
    g = router.predictor_.predict_proba(Q[:2])
    np.testing.assert_allclose(kept_frame["p"], g[np.arange(2), [MODELS.index(m) for m in
                                                                    kept_frame["model"]]])


@pytest.mark.parametrize("cap", [None, 4])
def test_fit_gives_the_reference_its_own_search_would(cap):
    """The fit's reference pass hands each row's OOD score to the OOD reference: the same
    values as the reference's own searches, a task of one input (the pass skips it) included."""
    X, Y, tasks = clusters(5, 4, per_task=10)
    tasks = tasks.copy()
    tasks[-1] = "lonely"  # a task of one input
    router = Router(alphas=(0.0, 0.2), tune=False, max_task_queries=cap, seed=3).fit_arrays(
        X, Y, tasks, MODELS)
    got = router.ood_reference_
    assert reference_of(router) is got  # nothing recomputed on first use
    want = pool_scores(router.predictor_, cap, 3)
    np.testing.assert_array_equal(np.isnan(got.scores), np.isnan(want))
    np.testing.assert_allclose(got.scores, want, rtol=0, atol=1e-12)
    assert np.isfinite(got.scores[-1])  # the lonely task was searched for the reference


@pytest.fixture()
def saved(tmp_path):
    from benchroute.embedding import HashingEncoder

    X, Y, tasks = clusters(6, 4, per_task=10)
    router = Router(alphas=(0.0,), tune=False, max_task_queries=6, seed=2,
                    encoder=HashingEncoder(16)).fit_arrays(X, Y, tasks, MODELS)
    router.save(tmp_path / "r")
    return router, tmp_path / "r"


def test_saved_router_loads_its_ood_reference_without_searching(saved, monkeypatch):
    from benchroute.index import VectorIndex

    router, folder = saved
    calls = []
    search = VectorIndex.search
    monkeypatch.setattr(VectorIndex, "search", lambda self, *a, **k: calls.append(1) or
                        search(self, *a, **k))
    loaded = Router.load(folder)
    assert len(calls) == 1  # the spot check's one task, which also checks the saved scores
    assert reference_of(loaded) is loaded.ood_reference_
    np.testing.assert_array_equal(loaded.ood_reference_.scores, router.ood_reference_.scores)
    assert len(calls) == 1


def test_router_saved_without_ood_scores_computes_them_on_first_use(saved):
    router, folder = saved
    rewrite_pool(folder, lambda a: [a.pop("ood_rows"), a.pop("ood_scores")])
    loaded = Router.load(folder)
    assert getattr(loaded, "ood_reference_", None) is None
    np.testing.assert_array_equal(reference_of(loaded).scores, router.ood_reference_.scores)


@pytest.mark.parametrize("change, field", [
    (lambda a: a.update(ood_rows=a["ood_rows"][::-1].copy()), "ood_rows"),
    (lambda a: a.update(ood_rows=a["ood_rows"][1:], ood_scores=a["ood_scores"][1:]), "ood_rows"),
    (lambda a: a.update(ood_scores=a["ood_scores"] + 5.0), "ood_scores"),
    (lambda a: a.update(ood_scores=a["ood_scores"] * 0.5), "ood_scores"),  # the spot check
    (lambda a: a.pop("ood_scores"), "ood_rows"),
    (lambda a: a.update(ood_rows=a["ood_rows"].astype(str)), "ood_rows"),
])
def test_bad_ood_scores_are_refused_naming_the_field(saved, change, field):
    _, folder = saved
    rewrite_pool(folder, change)
    with pytest.raises(BenchrouteError, match=rf"pool\.npz.*'{field}'"):
        Router.load(folder)
