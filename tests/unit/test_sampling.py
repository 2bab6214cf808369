"""max_task_queries: the fit's leave-task-out passes score a seeded sample of each task's
inputs, search the whole pool, and equal the full passes when the cap covers every task."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchroute.exceptions import BenchrouteError
from benchroute.ood import pool_scores, reference_of
from benchroute.reference import task_pairs
from benchroute.router import Router
from benchroute.routing import router_proba
from benchroute.sampling import query_mask, task_queries
from benchroute.scoring import predictor_accuracy
from benchroute.tuning import PerInputPredictor
from tests.saved_router import rewrite_meta

ALPHAS = (0.0, 0.1)


def pool(seed: int = 0, sizes: tuple[int, ...] = (60, 45, 30, 12), d: int = 8, M: int = 3):
    """Tasks as noisy clusters, labels from a per-task skill; 10 % missing."""
    rng = np.random.default_rng(seed)
    X, Y, ds = [], [], []
    for t, n in enumerate(sizes):
        c = rng.normal(size=d)
        v = c + 0.7 * rng.normal(size=(n, d))
        X.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        y = (rng.random((n, M)) < rng.uniform(0.2, 0.9, size=M)).astype(float)
        y[rng.random((n, M)) < 0.1] = np.nan
        Y.append(y)
        ds += [f"t{t}"] * n
    return np.vstack(X).astype(np.float32), np.vstack(Y), np.array(ds, dtype=object)


def fit(cap, seed: int = 0, **kw) -> Router:
    X, Y, ds = pool(seed)
    return Router(alphas=ALPHAS, repeats=2, encoder="hashing-8-12", max_task_queries=cap,
                  seed=seed, **kw).fit_arrays(X, Y, ds, ["a", "b", "c"])


def test_task_queries_are_seeded_per_task_and_capped():
    rows = np.arange(100, 160)
    a = task_queries(rows, "t0", 20, seed=3)
    assert len(a) == 20 and len(set(a.tolist())) == 20 and set(a) <= set(rows)
    assert np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, task_queries(rows, "t0", 20, seed=3))
    assert not np.array_equal(a, task_queries(rows, "t1", 20, seed=3))  # the name seeds it
    assert not np.array_equal(a, task_queries(rows, "t0", 20, seed=4))
    np.testing.assert_array_equal(task_queries(rows, "t0", None, 0), rows)
    np.testing.assert_array_equal(task_queries(rows, "t0", 60, 0), rows)
    # a task's sample does not depend on the other tasks of the pool
    ds = np.array(["x"] * 30 + ["t0"] * 60 + ["y"] * 5, dtype=object)
    mask = query_mask(ds, len(ds), 20, seed=3)
    np.testing.assert_array_equal(np.flatnonzero(mask[30:90]) + 30, task_queries(np.arange(30, 90), "t0", 20, 3))
    assert mask.sum() == 20 + 20 + 5


def test_a_cap_over_every_task_changes_nothing():
    full, capped = fit(None), fit(60)
    np.testing.assert_array_equal(full.reference_.u, capped.reference_.u)
    np.testing.assert_array_equal(full.reference_.p, capped.reference_.p)
    Q = pool(9)[0][:20]
    np.testing.assert_array_equal(router_proba(full, Q), router_proba(capped, Q))
    assert full.per_input_.describe() == capped.per_input_.describe()


def test_the_reference_pass_scores_the_sample_against_the_whole_pool():
    r = fit(10)
    pred = r.predictor_
    for task in ("t0", "t3"):
        part = r.reference_.part(task)
        rows = task_queries(np.flatnonzero(pred.datasets_ == task), task, 10, r.seed)
        assert len(rows) == min(10, int((pred.datasets_ == task).sum()))
        g, _ = pred.aggregate(pred.neighbours(pred.index_.vectors(rows), r.n_neighbours,
                                              exclude_datasets=[task]),
                              pred.fallback_means([task]))
        expected = predictor_accuracy(g[None], pred.labels_[rows][None], r.threshold)[0]
        np.testing.assert_allclose(part.p[part.alpha == 0][0], expected, equal_nan=True)
    # the few-shot draws come from the sample too: at alpha 0.1 one input of 10 is labelled
    again = task_pairs(pred, "t0", ALPHAS, 2, r.seed, r.n_neighbours, r.threshold, max_queries=10)
    np.testing.assert_allclose(again.p, r.reference_.part("t0").p, equal_nan=True)


def test_the_tuned_predictor_scores_only_the_sample():
    X, Y, ds = pool(1)
    pred = PerInputPredictor(seed=0, max_task_queries=15).fit(X, Y, ds)
    scored = query_mask(ds, len(X), 15, 0)
    assert scored.sum() == 15 * 3 + 12
    np.testing.assert_array_equal(pred.oof_rows_, np.flatnonzero(scored))
    assert pred.oof_.shape == (scored.sum(), Y.shape[1]) and np.isfinite(pred.oof_).all()
    assert f"{scored.sum()} of {len(X)} inputs scored" in pred.tuning_.cv
    assert pred.get_params()["max_task_queries"] == 15
    with pytest.raises(BenchrouteError, match="max_task_queries"):
        PerInputPredictor(max_task_queries=1).fit(X, Y, ds)


def test_ood_reference_scores_the_sample():
    r = fit(10)
    scores = pool_scores(r.predictor_, 10, r.seed)
    assert np.isfinite(scores).sum() == 10 * 3 + 10
    full = pool_scores(r.predictor_)
    both = np.isfinite(scores)
    np.testing.assert_array_equal(scores[both], full[both])
    ref = reference_of(r)
    np.testing.assert_array_equal(ref.scores, scores, strict=True)
    p = ref.p_values(pool(9)[0][:5])
    assert np.all((p > 0) & (p <= 1))
    r.set_params(max_task_queries=None)  # a changed cap gets a fresh reference
    np.testing.assert_array_equal(reference_of(r).scores, full)


@pytest.mark.parametrize("bad", [1, 0, -3, 2.5, True, "10"])
def test_bad_caps_name_the_parameter(bad):
    with pytest.raises(BenchrouteError, match="max_task_queries"):
        fit(bad)


def test_save_load_keeps_the_cap_and_reads_routers_saved_without_it(tmp_path):
    r = fit(10)
    r.save(tmp_path / "r")
    back = Router.load(tmp_path / "r")
    assert back.max_task_queries == 10
    Q = pool(9)[0][:10]
    np.testing.assert_allclose(router_proba(back, Q), router_proba(r, Q))
    # a router saved before the parameter existed: no cap
    plain = fit(None)
    plain.save(tmp_path / "p")
    rewrite_meta(tmp_path / "p", lambda meta: meta["params"].pop("max_task_queries"))
    assert Router.load(tmp_path / "p").max_task_queries is None


def test_a_memory_mapped_router_routes_as_loaded_and_refuses_new_inputs(tmp_path):
    from benchroute import BenchmarkData

    r = fit(10)
    r.save(tmp_path / "r")
    mapped = Router.load(tmp_path / "r", mmap=True)
    Q = pool(9)[0][:10]
    np.testing.assert_array_equal(router_proba(mapped, Q), router_proba(r, Q))
    assert mapped.route_embedded(Q) == r.route_embedded(Q)
    frame = BenchmarkData(pd.DataFrame({"dataset": ["new"] * 2, "instance_id": ["0", "1"],
                                        "text": ["x y", "y z"], "model": ["a"] * 2,
                                        "correct": [1.0, 0.0], "score": [1.0, 0.0]}))
    before = mapped.Y_.copy()
    with pytest.raises(BenchrouteError, match="memory-mapped.*mmap=False"):
        mapped.add_results(frame, embeddings=Q[:2])
    np.testing.assert_array_equal(mapped.Y_, before)
    # saving another router over the folder leaves the mapped file readable to this process
    fit(None, seed=5).save(tmp_path / "r")
    np.testing.assert_array_equal(router_proba(mapped, Q), router_proba(r, Q))


def test_the_form_shift_reference_averages_over_the_sample():
    from benchroute import BenchmarkData
    from benchroute.shift import ShiftReference, _neighbour_means, _search, fingerprints
    from benchroute.shift import reference_of as shift_reference_of

    rng = np.random.default_rng(0)
    texts = {(t, i): f"task{t} " + " ".join(f"w{rng.integers(30)}" for _ in range(6))
             + ("?" if t == 1 else ".") for t in range(3) for i in range(40)}
    rows = [(f"t{t}", f"{i:03d}", text, m, float(rng.random() < 0.6))
            for (t, i), text in texts.items() for m in ("a", "b")]
    frame = pd.DataFrame(rows, columns=["dataset", "instance_id", "text", "model", "correct"])
    frame["score"] = frame["correct"]
    r = Router(alphas=(0.0,), repeats=1, encoder="hashing-64-12", max_task_queries=12).fit(
        BenchmarkData(frame))
    ref = shift_reference_of(r)
    assert ref is not None and ref.sample == (12, r.seed) and ref.queries == (12, r.seed)
    full = ShiftReference(r.predictor_, r.texts_, r.n_neighbours)
    assert set(ref.raw) == set(full.raw) == {"t0", "t1", "t2"}
    F = fingerprints(r.texts_)
    for task in ref.raw:
        rows_t = np.flatnonzero(r.datasets_ == task)
        dist, nb = _search(r.predictor_, r.predictor_.index_.vectors(rows_t), r.n_neighbours, [task])
        diffs = F[rows_t] - _neighbour_means(F, dist, nb, r.n_neighbours)[0]
        np.testing.assert_allclose(full.raw[task], diffs.mean(axis=0))
        sample = np.isin(rows_t, task_queries(rows_t, task, 12, r.seed))
        assert sample.sum() == 12
        np.testing.assert_allclose(ref.raw[task], diffs[sample].mean(axis=0))


@pytest.mark.parametrize("seed", range(5))
def test_a_small_cap_on_one_task_spreads_the_sample_over_the_folds(seed):
    """Random folds (one task): the scored sample is dealt over the folds, so calibration never
    meets a fold with nothing to fit on."""
    X, Y, _ = pool(seed, sizes=(60,))
    for cap in (2, 3):
        pred = PerInputPredictor(max_task_queries=cap, seed=seed).fit(X, Y, None)
        assert len(pred.oof_rows_) == cap and np.isfinite(pred.oof_).all()
        Router(max_task_queries=cap, seed=seed, encoder="hashing-8-12", alphas=(0.0,)
               ).fit_arrays(X, Y, np.array(["t"] * 60, dtype=object), ["a", "b", "c"])


def test_changed_seed_or_cap_after_fit_saves_loads_and_recomputes_excluded_pairs(tmp_path):
    r = fit(10)
    assert r.reference_.sample == (10, 0)
    r.set_params(seed=1)
    r.save(tmp_path / "a")  # the spot check reads the sample the pairs were made with
    back = Router.load(tmp_path / "a")
    assert back.reference_.sample == (10, 0)
    np.testing.assert_array_equal(back.reference_.p, r.reference_.p)
    # pairs without a task, after the cap changed: those of a fresh fit with the new cap
    r.set_params(seed=0, max_task_queries=None)
    X, Y, ds = pool(0)
    fresh = Router(alphas=ALPHAS, repeats=2, encoder="hashing-8-12").fit_arrays(
        X[ds != "t0"], Y[ds != "t0"], ds[ds != "t0"], ["a", "b", "c"])
    without = r.reference_without(["t0"])
    assert without.sample is None
    np.testing.assert_allclose(without.u, fresh.reference_.u)
    np.testing.assert_allclose(without.p, fresh.reference_.p, equal_nan=True)


def test_numpy_integer_parameters_save_as_json_numbers(tmp_path):
    r = fit(np.int64(10))
    r.save(tmp_path / "r")
    assert Router.load(tmp_path / "r").max_task_queries == 10
