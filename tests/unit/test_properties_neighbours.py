"""Properties of the neighbour machinery on random inputs (hypothesis): the kNN correctness
predictors and their FAISS index, the OOD p-values, the per-task query samples, the text
normalisation and the checks at the router's boundary. What docs/method.md, docs/routing.md and
the docstrings say of them, checked without re-deriving them line by line."""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from benchroute.data.text import (
    common_prefix,
    is_blank,
    normalize_text,
    strip_common_prefix,
    text_key,
)
from benchroute.exceptions import BenchrouteError
from benchroute.index import VectorIndex
from benchroute.inputs import (
    check_labels,
    check_vectors,
    is_items,
    is_real,
    parse_labeled,
    parse_texts,
)
from benchroute.new_models import drop_self
from benchroute.ood import check_alpha, fall_back, neighbour_score, p_values, pool_scores
from benchroute.predictors import (
    EXTRA_NEIGHBOURS,
    NEAR_DUPLICATE,
    SELF_DISTANCE,
    KNNCorrectnessPredictor,
    knn_mean,
)
from benchroute.sampling import is_cap, query_mask, task_queries
from tests.unit.strategies import unit

FAST = settings(max_examples=100)
SLOW = settings(max_examples=40)

label = st.one_of(unit, st.just(math.nan))  # NaN = no result
weights = st.sampled_from(["uniform", "distance"])
prior = st.one_of(st.just(0.0), st.floats(0.0, 50.0, allow_subnormal=False))
seeds = st.integers(0, 2**32 - 1)


def arr(shape, elements=unit, dtype=np.float64, **kw) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(dtype, shape, elements=elements, **kw)


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_distances(Q: np.ndarray, X: np.ndarray) -> np.ndarray:
    return 1.0 - Q.astype(np.float64) @ X.T.astype(np.float64)


@st.composite
def pools(draw, n_min: int = 5, n_max: int = 60, m_max: int = 4, n_tasks: int = 3, m_min: int = 1):
    """Random unit vectors X (N, d) in 8-32 dimensions, labels Y (N, M) in [0, 1] or NaN
    (float32, as the predictor stores them), a task per row, and queries Q."""
    n = draw(st.integers(n_min, n_max))
    d = draw(st.integers(8, 32))
    m = draw(st.integers(m_min, m_max))
    rng = np.random.default_rng(draw(seeds))
    X = unit_rows(rng, n, d)
    Y = draw(arr((n, m), label)).astype(np.float32)
    tasks = np.array([f"t{i}" for i in draw(arr((n,), st.integers(0, n_tasks - 1), np.int64))],
                     dtype=object)
    Q = unit_rows(rng, draw(st.integers(1, 6)), d)
    return X, Y, tasks, Q


@st.composite
def neighbour_lists(draw, n_max: int = 6, K_max: int = 12, m_max: int = 4):
    """(n, K) ascending cosine distances with an ``inf`` tail (pool ran out) and (n, K, M)
    labels, NaN where missing."""
    n, K, m = draw(st.integers(1, n_max)), draw(st.integers(1, K_max)), draw(st.integers(1, m_max))
    d = np.sort(draw(arr((n, K), st.floats(0.0, 2.0, allow_subnormal=False))), axis=1)
    found = draw(st.integers(0, K))
    d[:, found:] = np.inf
    lab = draw(arr((n, K, m), label))
    lab[:, found:] = np.nan  # FAISS's row -1 gathers the all-NaN padding row
    return d, lab


def k_gap_ok(D: np.ndarray, k: int, gap: float = 1e-4) -> bool:
    """No tie between the k-th and (k+1)-th nearest distance of any query (brute force)."""
    if D.shape[1] <= k:
        return True
    s = np.sort(D, axis=1)
    return bool((s[:, k] - s[:, k - 1] > gap).all())


# ------------------------------------------------------------------------------- knn_mean
@given(nb=neighbour_lists(), k=st.integers(1, 14), w=weights, a=prior, data=st.data())
@FAST
def test_knn_mean_is_a_probability_and_falls_back_only_without_a_labelled_neighbour(nb, k, w, a, data):
    """P is a weighted mean of labels in [0, 1] (and of the means): finite and in [0, 1]; a cell
    falls back to the model's mean exactly when none of its first k found neighbours has a
    label for that model."""
    d, lab = nb
    means = data.draw(arr((lab.shape[2],)))
    P, fb = knn_mean(d, lab, k, w, means, a)
    assert P.shape == fb.shape == (len(d), lab.shape[2])
    assert np.isfinite(P).all() and (P >= 0).all() and (P <= 1).all()
    labelled = (np.isfinite(d[:, :k, None]) & ~np.isnan(lab[:, :k])).any(axis=1)
    np.testing.assert_array_equal(fb, ~labelled)
    np.testing.assert_allclose(P[fb], np.broadcast_to(means, P.shape)[fb], atol=1e-12)


@given(nb=neighbour_lists(), k=st.integers(1, 14), w=weights, a=prior, c=unit, data=st.data())
@FAST
def test_knn_mean_commutes_with_flipping_and_scaling_the_labels(nb, k, w, a, c, data):
    """P is linear in the labels and the shrinkage target: y -> 1 - y (with means -> 1 - means)
    gives 1 - P, y -> c*y (means -> c*means) gives c*P; the clip at [0, 1] must not bite."""
    d, lab = nb
    means = data.draw(arr((lab.shape[2],)))
    P, _ = knn_mean(d, lab, k, w, means, a)
    flipped, _ = knn_mean(d, 1.0 - lab, k, w, 1.0 - means, a)
    scaled, _ = knn_mean(d, c * lab, k, w, c * means, a)
    np.testing.assert_allclose(flipped, 1.0 - P, atol=1e-9)
    np.testing.assert_allclose(scaled, c * P, atol=1e-9)


@given(nb=neighbour_lists(), k=st.integers(1, 14), w=weights,
       a=st.tuples(prior, prior).map(sorted), data=st.data())
@FAST
def test_more_shrinkage_moves_p_toward_the_model_mean(nb, k, w, a, data):
    """P(a) lies between the plain kNN mean P(0) and the target, and a larger pseudo-count a
    never moves it farther from the target."""
    d, lab = nb
    means = np.broadcast_to(data.draw(arr((lab.shape[2],))), (len(d), lab.shape[2]))
    raw, _ = knn_mean(d, lab, k, w, means[0], 0.0)
    lo, _ = knn_mean(d, lab, k, w, means[0], a[0])
    hi, _ = knn_mean(d, lab, k, w, means[0], a[1])
    eps = 1e-9
    assert (np.minimum(raw, means) - eps <= lo).all() and (lo <= np.maximum(raw, means) + eps).all()
    assert (np.abs(hi - means) <= np.abs(lo - means) + eps).all()


# ------------------------------------------------------------------------- the predictor
@given(pool=pools(), k=st.integers(1, 8), w=weights)
@FAST
def test_predictor_p_is_finite_in_unit_interval_with_missing_labels(pool, k, w):
    """Whatever labels are missing, g_m(x) is finite and in [0, 1]; a model with no label at
    all gets the uninformative 0.5 everywhere."""
    X, Y, tasks, Q = pool
    P = KNNCorrectnessPredictor(k=k, weights=w).fit(X, Y, tasks).predict_proba(Q)
    assert P.shape == (len(Q), Y.shape[1])
    assert np.isfinite(P).all() and (P >= 0).all() and (P <= 1).all()
    empty = np.isnan(Y).all(axis=0)
    np.testing.assert_allclose(P[:, empty], 0.5)


@given(pool=pools(), extra=st.integers(0, 5), a=prior, data=st.data())
@FAST
def test_with_k_at_least_the_pool_uniform_p_is_the_shrunk_label_mean(pool, extra, a, data):
    """k >= N with uniform weights: every query reads the whole pool, so g_m is model m's mean
    label (0.5 without any), and the shrunk P is (sum y + a*mean) / (count + a)."""
    X, Y, tasks, Q = pool
    pred = KNNCorrectnessPredictor(k=len(X) + extra).fit(X, Y, tasks)
    Y64 = Y.astype(np.float64)
    count = (~np.isnan(Y64)).sum(axis=0)
    mean = np.where(count > 0, np.nansum(Y64, axis=0) / np.maximum(count, 1), 0.5)
    np.testing.assert_allclose(pred.predict_proba(Q), np.broadcast_to(mean, (len(Q), len(mean))),
                               atol=1e-5)
    target = data.draw(arr((Y.shape[1],)))
    nb = pred.neighbours(Q, pred.k)
    P, _ = knn_mean(nb.distances, nb.labels, pred.k, "uniform", target, a)
    expected = np.where(count + a > 0, (np.nansum(Y64, axis=0) + a * target)
                        / np.maximum(count + a, 1e-300), target)
    np.testing.assert_allclose(P, np.broadcast_to(expected, P.shape), atol=1e-5)


@given(pool=pools(), k=st.integers(1, 8), w=weights, seed=seeds, leave_out=st.booleans())
@FAST
def test_permuting_the_pool_rows_leaves_p_unchanged(pool, k, w, seed, leave_out):
    """The pool is a set: shuffling its rows (vectors, labels and tasks together) cannot change
    P, with or without a task left out (ties at the k-th distance aside)."""
    X, Y, tasks, Q = pool
    excl = ["t0"] if leave_out else None
    kept = ~np.isin(tasks, excl or [])
    assume(kept.any() and k_gap_ok(brute_distances(Q, X[kept]), k))
    perm = np.random.default_rng(seed).permutation(len(X))
    P = KNNCorrectnessPredictor(k=k, weights=w).fit(X, Y, tasks).predict_proba(Q, excl)
    Pp = KNNCorrectnessPredictor(k=k, weights=w).fit(X[perm], Y[perm], tasks[perm]).predict_proba(Q, excl)
    np.testing.assert_allclose(Pp, P, atol=1e-5)


@given(pool=pools(n_min=3, n_max=30), k=st.integers(1, 12), w=weights, a=prior, near=st.booleans(),
       data=st.data())
@FAST
def test_a_pool_input_queried_without_itself_never_reads_its_own_label(pool, k, w, a, near, data):
    """A pool input (or a near-duplicate of it) scored with the neighbours at distance 0 (or
    within NEAR_DUPLICATE) left out, as the new-model features and routing do, gets the same P
    whatever its own label is: its label would leak the answer."""
    X, Y, tasks, _ = pool
    i = data.draw(st.integers(0, len(X) - 1))
    q = X[i].astype(np.float64)
    if near:  # tilt the query by a cosine distance of about 0.002
        t = np.random.default_rng(i).normal(size=len(q))
        t -= (t @ q) * q
        q = q + 0.06 * t / np.linalg.norm(t)
        q /= np.linalg.norm(q)
    q = q.astype(np.float32)[None, :]
    others = np.delete(brute_distances(q, X)[0], i)
    within = NEAR_DUPLICATE if near else SELF_DISTANCE
    assume(others.min() > within + 1e-4)  # the query has no other duplicate in the pool
    Y2 = Y.copy()
    Y2[i] = data.draw(arr((Y.shape[1],), label))
    means = data.draw(arr((Y.shape[1],)))
    out = []
    for labels in (Y, Y2):
        pred = KNNCorrectnessPredictor(k=k, weights=w).fit(X, labels, tasks)
        nb = pred.neighbours(q, k + EXTRA_NEIGHBOURS)
        if near:
            kept, in_pool = nb.beyond(within, k)
            assert in_pool.all()
            d, lab = kept.distances, kept.labels
        else:
            d, lab = drop_self(nb.distances, nb.labels, k)
        assert (d[np.isfinite(d)] >= within).all()
        assert np.isfinite(d).sum() == min(k, len(X) - 1)
        out.append(knn_mean(d, lab, k, w, means, a)[0])
    np.testing.assert_array_equal(out[0], out[1])


@given(pool=pools(m_min=2), k=st.integers(1, 8), w=weights, a=prior, data=st.data())
@FAST
def test_one_models_labels_never_change_another_models_p(pool, k, w, a, data):
    """Each model's P reads only that model's labels: rescaling one model's labels, or
    replacing them with anything (missing ones included), leaves every other model's P as is,
    with and without shrinkage."""
    X, Y, tasks, Q = pool
    j = data.draw(st.integers(0, Y.shape[1] - 1))
    Y2 = Y.copy()
    if data.draw(st.booleans()):
        Y2[:, j] *= np.float32(data.draw(unit))
    else:
        Y2[:, j] = data.draw(arr((len(Y),), label))
    rest = np.arange(Y.shape[1]) != j
    res = []
    for labels in (Y, Y2):
        pred = KNNCorrectnessPredictor(k=k, weights=w).fit(X, labels, tasks)
        nb = pred.neighbours(Q, k)
        res.append((pred.predict_proba(Q), knn_mean(nb.distances, nb.labels, k, w,
                                                    pred.model_means_, a)[0]))
    for before, after in zip(*res):
        np.testing.assert_array_equal(after[:, rest], before[:, rest])


# ------------------------------------------------------------------------------- the index
@given(pool=pools(n_max=90, n_tasks=4), k=st.integers(1, 90), self_queries=st.booleans(),
       data=st.data())
@FAST
def test_flat_search_is_the_brute_force_cosine_top_k(pool, k, self_queries, data):
    """The flat index returns, ascending, the k kept rows of largest cosine similarity (ties
    aside): each distance is 1 - <q, x_row>, no row repeats or is excluded, no kept row left
    out is nearer than the last returned, and the list is padded with (inf, -1) only when
    fewer than k rows qualify. Covers both exclusion paths (few runs, scattered rows)."""
    X, _, tasks, Q = pool
    if self_queries:
        Q = np.vstack([Q, X[: data.draw(st.integers(1, 4))]])
    ex_tasks = data.draw(st.lists(st.sampled_from(["t0", "t1", "t2", "t3"]), max_size=2))
    if data.draw(st.booleans()):
        ex_rows = np.array(data.draw(st.lists(st.integers(0, len(X) - 1), max_size=40)), dtype=np.int64)
    else:  # every other row: over 32 kept runs from 66 rows on, the gathered-copy path
        ex_rows = np.arange(data.draw(st.integers(0, 1)), len(X), 2)
    index = VectorIndex().add(X, tasks)
    dist, rows = index.search(Q, k, exclude_datasets=ex_tasks or None,
                              exclude_rows=ex_rows if len(ex_rows) else None)
    keep = ~np.isin(tasks, ex_tasks)
    keep[ex_rows] = False
    D = brute_distances(Q, X)
    assert dist.shape == rows.shape == (len(Q), k)
    for qi in range(len(Q)):
        found = rows[qi] >= 0
        assert found.sum() == min(k, keep.sum())
        assert found[: found.sum()].all() and np.isinf(dist[qi, ~found]).all()
        r = rows[qi, found]
        assert len(set(r.tolist())) == len(r) and keep[r].all()
        np.testing.assert_allclose(dist[qi, found], D[qi, r], atol=1e-5)
        assert (np.diff(dist[qi, found]) >= -1e-6).all()
        rest = np.setdiff1d(np.flatnonzero(keep), r)
        if len(rest) and len(r):
            assert D[qi, rest].min() >= dist[qi, found].max() - 1e-5


# ---------------------------------------------------------------------------- OOD p-values
dist_or_nan = st.one_of(st.floats(0.0, 2.0, allow_subnormal=False), st.just(math.nan))


@given(scores=arr(st.integers(0, 12), dist_or_nan), ref=arr(st.integers(0, 30), dist_or_nan))
@FAST
def test_p_values_lie_in_the_conformal_range(scores, ref):
    """p = (1 + #{s_i >= s}) / (1 + n) lies in [1/(n+1), 1] for a finite score, NaN for a
    missing score; reference scores that are NaN (rows not in the sample) are not counted, and
    a reference with none left gives NaN."""
    n = int(np.isfinite(ref).sum())
    p = p_values(scores, ref)
    assert p.shape == scores.shape
    if n == 0:
        assert np.isnan(p).all()
        return
    np.testing.assert_array_equal(np.isnan(p), np.isnan(scores))
    ok = p[~np.isnan(p)]
    assert (ok >= 1.0 / (n + 1) - 1e-12).all() and (ok <= 1.0).all()
    np.testing.assert_array_equal(p, p_values(scores, ref[np.isfinite(ref)]))


@given(scores=arr(st.integers(1, 20), st.floats(-1.0, 3.0, allow_subnormal=False)),
       ref=arr(st.integers(1, 30), st.floats(0.0, 2.0, allow_subnormal=False)))
@FAST
def test_p_values_fall_with_the_distance_and_span_one_to_one_over_n_plus_one(scores, ref):
    """Farther from the pool is never less surprising: p is non-increasing in the score; a
    score at or below every reference score gets 1, one above all gets 1/(n+1)."""
    order = np.argsort(scores, kind="stable")
    p = p_values(scores[order], ref)
    assert (np.diff(p) <= 1e-12).all()
    n = len(ref)
    assert p_values(np.array([ref.min(), ref.min() - 0.5]), ref).tolist() == [1.0, 1.0]
    assert p_values(np.array([ref.max() + 1e-3]), ref)[0] == pytest.approx(1.0 / (n + 1))


@given(ref=arr(st.integers(1, 40), st.floats(0.0, 2.0, allow_subnormal=False)),
       alpha=st.floats(0.0, 1.0))
@FAST
def test_p_values_of_the_reference_itself_are_valid(ref, alpha):
    """Conformal validity (docs/routing.md): an input exchangeable with the reference gets
    p <= alpha with probability at most alpha; on the reference's own scores (ties included)
    at most a share alpha is flagged at level alpha."""
    p = p_values(ref, ref)
    assert np.mean(p <= alpha) <= alpha + 1e-12


@given(d=arr(st.tuples(st.integers(1, 5), st.integers(1, 10)),
             st.one_of(st.floats(0.0, 2.0, allow_subnormal=False), st.just(math.inf))),
       k=st.integers(1, 12))
@FAST
def test_neighbour_score_is_a_mean_of_the_first_k_found_distances(d, k):
    """s(x) lies between the nearest and farthest of the first k neighbours found, is NaN when
    none was found, and never reads past the k-th column."""
    s = neighbour_score(d, k)
    head = d[:, :k]
    found = np.isfinite(head)
    np.testing.assert_array_equal(np.isnan(s), ~found.any(axis=1))
    for i in np.flatnonzero(found.any(axis=1)):
        assert head[i, found[i]].min() - 1e-12 <= s[i] <= head[i, found[i]].max() + 1e-12
    tail = d.copy()
    tail[:, k:] = 0.0
    np.testing.assert_array_equal(neighbour_score(tail, k), s)


@given(pool=pools(n_min=6, n_max=40, n_tasks=3), k=st.integers(1, 6),
       cap=st.one_of(st.none(), st.integers(2, 10)), seed=st.integers(0, 100))
@FAST
def test_pool_scores_leave_each_rows_own_task_out(pool, k, cap, seed):
    """The reference score of a pool row is the mean distance of its k nearest rows of OTHER
    tasks (brute force), for at most ``cap`` rows per task (NaN for the rest); a pool of one
    task has no reference."""
    X, Y, tasks, _ = pool
    pred = KNNCorrectnessPredictor(k=k).fit(X, Y, tasks)
    s = pool_scores(pred, cap, seed)
    names = sorted(set(tasks))
    if len(names) < 2:
        assert np.isnan(s).all()
        return
    D = brute_distances(X, X)
    for t in names:
        rows = np.flatnonzero(tasks == t)
        scored = rows[np.isfinite(s[rows])]
        assert len(scored) == (len(rows) if cap is None else min(cap, len(rows)))
        for i in scored:
            other = np.sort(D[i, tasks != t])[:k]
            assert s[i] == pytest.approx(other.mean(), abs=1e-5)


non_alpha = st.one_of(st.none(), st.booleans(), st.text(max_size=5), st.binary(max_size=3),
                      st.complex_numbers(), st.lists(unit, max_size=2),
                      st.integers(-(2**1000), 2**1000), st.floats(),
                      st.just(np.float32(0.5)), st.just(np.int64(0)), st.just(np.array(0.5)))


@given(v=non_alpha)
@FAST
@example(v=True)
@example(v=math.nan)
@example(v="0.5")
def test_check_alpha_accepts_exactly_the_numbers_strictly_between_0_and_1(v):
    """A flagging level is a real number in (0, 1), not a bool, a string or NaN; anything else
    is refused with a BenchrouteError, never another exception."""
    ok = (isinstance(v, (int, float, np.integer, np.floating))
          and not isinstance(v, (bool, np.bool_)) and 0.0 < float(v) < 1.0)
    if ok:
        assert check_alpha(v) == float(v)
    else:
        with pytest.raises(BenchrouteError):
            check_alpha(v)


@given(v=st.one_of(st.integers(min_value=2**1024), st.integers(max_value=-(2**1024))))
@SLOW
@example(v=10**400)
def test_huge_integers_are_refused_as_numbers_not_crashes(v):
    """An int beyond a float's range (10**400, e.g. from JSON) is no finite number: is_real says
    False and check_alpha / parse_labeled refuse it with a BenchrouteError."""
    assert not is_real(v)
    with pytest.raises(BenchrouteError):
        check_alpha(v)
    with pytest.raises(BenchrouteError):
        parse_labeled([{"text": "q", "labels": {"m": v}}], ["m"])


@given(p=arr(st.integers(0, 20), st.one_of(unit, st.just(math.nan))),
       alphas=st.tuples(st.floats(0.001, 0.999), st.floats(0.001, 0.999)).map(sorted),
       default=st.integers(0, 3), data=st.data())
@FAST
def test_fall_back_moves_exactly_the_flagged_inputs(p, alphas, default, data):
    """Inputs with p < alpha (never a NaN p: no reference) move to the default, the others keep
    their pick; a larger alpha flags a superset; no alpha moves nothing."""
    pick = data.draw(arr((len(p),), st.integers(0, 3), np.int64))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        out, flag = fall_back(pick, p, alphas[0], default)
    # a fallback asked for that cannot act (no reference: every p NaN) is said, once
    assert len(said) == int(len(p) > 0 and np.isnan(p).all())
    np.testing.assert_array_equal(flag, np.nan_to_num(p, nan=2.0) < alphas[0])
    np.testing.assert_array_equal(out, np.where(flag, default, pick))
    assert not (np.isnan(p) & flag).any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, wider = fall_back(pick, p, alphas[1], default)
    assert (wider | ~flag).all()
    same, none = fall_back(pick, p, None, default)
    np.testing.assert_array_equal(same, pick)
    assert not none.any()


# -------------------------------------------------------------------------------- sampling
task_names = st.text(st.characters(exclude_categories=["Cs"]), max_size=6)


@given(rows=arr(st.integers(0, 40), st.integers(0, 10_000), np.int64, unique=True),
       task=task_names, cap=st.one_of(st.none(), st.integers(1, 50)), seed=st.integers(0, 2**31))
@FAST
def test_task_queries_is_a_seeded_capped_subset_of_the_rows(rows, task, cap, seed):
    """A task's queries are distinct rows of that task, ascending, min(cap, rows) of them (all
    without a cap), and the same draw every time (a function of seed, name and rows only)."""
    rows = np.sort(rows)  # a task's rows, as np.flatnonzero gives them
    q = task_queries(rows, task, cap, seed)
    assert len(q) == (len(rows) if cap is None else min(cap, len(rows)))
    assert np.isin(q, rows).all() and (np.diff(q) > 0).all()
    np.testing.assert_array_equal(task_queries(rows.copy(), task, cap, seed), q)


@given(groups=st.lists(st.sampled_from(["a", "b", "c"]), max_size=60),
       extra=st.lists(st.sampled_from(["d", "e"]), min_size=1, max_size=20),
       cap=st.one_of(st.none(), st.integers(2, 12)), seed=st.integers(0, 2**31))
@FAST
def test_query_mask_caps_each_task_and_ignores_other_tasks(groups, extra, cap, seed):
    """At most cap queries per task, all of a smaller task; appending the rows of new tasks
    (``add_results``) keeps every old task's sample."""
    g = np.array(groups, dtype=object)
    mask = query_mask(g, len(g), cap, seed)
    for t in set(groups):
        size = int((g == t).sum())
        assert mask[g == t].sum() == (size if cap is None else min(cap, size))
    grown = query_mask(np.array(groups + extra, dtype=object), len(groups) + len(extra), cap, seed)
    np.testing.assert_array_equal(grown[: len(groups)], mask)


@given(v=non_alpha)
@FAST
@example(v=np.int64(2))
@example(v=2.0)
def test_is_cap_is_none_or_an_integer_of_at_least_two(v):
    """A query cap is None or an int >= 2 (not a bool, not a float); it never raises."""
    expected = v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 2)
    assert is_cap(v) == expected


@given(task=st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3))
@SLOW
@example(task="\ud800")
def test_any_task_name_gets_a_sample(task):
    """A task name is any str (fit_arrays takes whatever the caller names its tasks; text_key
    escapes lone surrogates for the same reason): sampling must not raise on one."""
    assert len(task_queries(np.arange(10), task, 3, 0)) == 3


# ---------------------------------------------------------------------------- text identity
odd_char = st.one_of(st.characters(), st.characters(categories=["Cs", "Mn", "Zs", "Cc"]),
                     st.sampled_from(list("\r\n\t \x00\x0b\x0c\x1c\x85\u2028\u3000\u0301")))
any_text = st.text(odd_char, max_size=30)
outer_ws = st.text(st.sampled_from(list(" \t\n\r\x0b\x0c\x1c\x85\u2028\u3000\u00a0")), max_size=5)


@given(t=any_text)
@FAST
@example(t="\ud800\x00\u0301")
def test_normalize_text_is_idempotent_and_never_raises(t):
    """Any str, lone surrogates and NUL included, normalises; normalising twice changes
    nothing; the result has no CR and no surrounding whitespace; text_key is a stable sha256."""
    n = normalize_text(t)
    assert normalize_text(n) == n
    assert "\r" not in n and n == n.strip()
    key = text_key(t)
    assert len(key) == 64 and set(key) <= set("0123456789abcdef") and text_key(n) == key


@given(t=st.lists(st.text(odd_char.filter(lambda c: c not in "\r\n"), max_size=8), min_size=1,
                  max_size=4).map("\n".join), left=outer_ws, right=outer_ws,
       eol=st.sampled_from(["\r\n", "\r"]))
@FAST
def test_normalize_text_ignores_line_endings_and_outer_whitespace(t, left, right, eol):
    """A Windows or old-Mac export of a text, with any surrounding whitespace, is the same
    input (same normal form, same key); the inner text of a stripped LF text is kept as is."""
    variant = left + t.replace("\n", eol) + right
    assert normalize_text(variant) == normalize_text(t)
    assert text_key(variant) == text_key(t)
    if t == t.strip():
        assert normalize_text(t) == t


@given(a=any_text, other=any_text, data=st.data())
@FAST
def test_text_key_separates_texts_with_different_normal_forms(a, other, data):
    """Two texts share a cache key exactly when they normalise alike (surrogates escaped, not
    dropped, so malformed texts do not collide; case is kept, it can change the answer)."""
    b = data.draw(st.sampled_from([other, a, a.upper(), a.swapcase(), a + "x", a + "\ud800",
                                   "\t" + a.replace("\n", "\r\n") + " \r"]))
    assert (text_key(a) == text_key(b)) == (normalize_text(a) == normalize_text(b))


line = st.text(st.sampled_from(list("ab \t\r\u0301")), max_size=4)
prompt = st.lists(line, min_size=1, max_size=5).map("\n".join)


@given(head=st.lists(line, max_size=4).map(lambda ls: "".join(x + "\n" for x in ls)),
       texts=st.lists(prompt, min_size=1, max_size=4), seed=st.integers(0, 100))
@FAST
def test_common_prefix_is_the_longest_shared_line_prefix_leaving_content(head, texts, seed):
    """The prefix is shared by every normalised text, ends on a line boundary, leaves every
    text some non-blank content, and no longer line prefix does all that; it does not depend
    on the texts' order, and stripping it leaves each text's tail."""
    texts = [head + t for t in texts]
    p = common_prefix(texts)
    norm = [normalize_text(t) for t in texts]
    if len(texts) < 2:
        assert p == ""
        return
    assert all(n.startswith(p) for n in norm) and (p == "" or p.endswith("\n"))
    assert p == "" or all(n[len(p):].strip() for n in norm)
    for j in range(len(p) + 1, min(map(len, norm)) + 1):  # every longer line prefix fails
        cand = norm[0][:j]
        if cand.endswith("\n") and all(n.startswith(cand) for n in norm):
            assert any(not n[j:].strip() for n in norm)
    order = np.random.default_rng(seed).permutation(len(texts))
    assert common_prefix([texts[i] for i in order]) == p
    for n, rest in zip(norm, strip_common_prefix(texts)):
        assert n.endswith(rest) and (bool(rest) or not n)


# ------------------------------------------------------------------- checks at the boundary
scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                   st.text(max_size=4), st.binary(max_size=3), st.complex_numbers())
objects = st.recursive(
    scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=3), inner, max_size=3),
                            st.frozensets(st.one_of(st.text(max_size=3), st.integers()), max_size=3),
                            st.lists(inner, max_size=3).map(iter)),
    max_leaves=8)
arrays = st.one_of(
    hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=1, max_dims=2, max_side=4)),
    st.lists(st.text(max_size=4), max_size=4).map(lambda xs: np.array(xs, dtype=str)),
    st.lists(st.text(max_size=4), max_size=4).map(pd.Series))


@given(v=st.one_of(objects, arrays,
                   st.lists(st.text(st.sampled_from(" a\t\n\u3000\x85"), max_size=3), max_size=4)))
@FAST
@example(v=np.array(["a", " "]))
@example(v=iter(["x", 3]))
@example(v=bytearray(b"ab"))
def test_parse_texts_returns_non_blank_texts_or_a_benchrouteerror(v):
    """Whatever a caller passes as task examples, the result is a non-empty list of non-blank
    str, or a BenchrouteError that says what was wrong; never a TypeError from deep inside."""
    try:
        out = parse_texts(v)
    except BenchrouteError:
        return
    assert isinstance(out, list) and out
    assert all(isinstance(t, str) and t.strip() for t in out)


@given(texts=st.lists(st.text(min_size=1).filter(lambda t: not is_blank(t)), min_size=1,
                      max_size=5),
       kind=st.sampled_from([list, tuple, iter, "one"]))
@FAST
def test_parse_texts_round_trips_valid_texts(texts, kind):
    """A text, or a list, tuple or iterator of non-blank texts, comes back as the same texts in
    the same order, nothing normalised or dropped."""
    if kind == "one":
        assert parse_texts(texts[0]) == [texts[0]]
    else:
        assert parse_texts(kind(texts)) == texts


def test_a_dataframe_is_not_a_list_of_texts():
    """A DataFrame iterates over its column names: parse_texts returned ['text'] for
    ``DataFrame({"text": [...]})``, a silent wrong answer."""
    with pytest.raises(BenchrouteError, match="is a DataFrame; expected a text, a list of texts"):
        parse_texts(pd.DataFrame({"text": ["a question", "another"]}))
    assert parse_texts(pd.DataFrame({"text": ["a question", "another"]})["text"]) == \
        ["a question", "another"]


@given(t=st.text(min_size=1).filter(str.strip))
@SLOW
@example(t="hello")
def test_parse_texts_takes_or_refuses_a_numpy_scalar_text(t):
    """``np.array(text)`` (a 0-d array, e.g. from ``df["text"].to_numpy()[i, ...]``) is either
    read as the one text or refused with a BenchrouteError."""
    with contextlib.suppress(BenchrouteError):
        assert parse_texts(np.array(t)) == [t]  # type: ignore[arg-type]


@given(v=st.one_of(objects, arrays, st.just(np.array(1.0))))
@FAST
def test_is_items_never_raises_and_refuses_texts_bytes_and_mappings(v):
    """is_items answers for any object; a str, bytes or mapping never counts as a list of
    items (they iterate as characters, ints or keys), while lists, tuples and iterators do."""
    got = is_items(v)
    assert isinstance(got, bool)
    if isinstance(v, (str, bytes, dict)):
        assert not got
    if isinstance(v, (list, tuple, frozenset)) or hasattr(v, "__next__"):
        assert got


float_elems = st.one_of(st.floats(width=32), st.sampled_from([0.0, 1e-40, -1e-30, 3e38, 1e19]))


@given(X=st.one_of(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
               elements=float_elems),
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=6)),
    hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=6),
               elements=st.integers(-3, 3))))
@FAST
def test_check_vectors_returns_unit_rows_or_refuses_with_benchrouteerror(X):
    """Any numeric array (NaN, inf, zero, huge or subnormal rows, any rank) comes back as 2-D
    contiguous float32 rows of unit norm pointing the same way, or is refused with a
    BenchrouteError; rows already of unit norm are kept as they were, without a warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = check_vectors(X, "X")
        except BenchrouteError:
            return
    src = np.atleast_2d(np.asarray(X, dtype=np.float32)).astype(np.float64)
    assert out.dtype == np.float32 and out.ndim == 2 and out.flags.c_contiguous
    assert out.shape == src.shape
    norms = np.linalg.norm(out.astype(np.float64), axis=1)
    assert np.isfinite(out).all() and (np.abs(norms - 1) <= 1.001e-3).all()
    src_n = np.linalg.norm(src, axis=1)
    with np.errstate(over="ignore"):
        cos = np.einsum("ij,ij->i", out.astype(np.float64), src / src_n[:, None])
    np.testing.assert_allclose(cos, 1.0, atol=1e-5)
    if (np.abs(src_n - 1) <= 0.9e-3).all():  # clear of the tolerance's edge
        np.testing.assert_array_equal(out, src.astype(np.float32))
        assert not caught


@given(v=st.one_of(st.text(min_size=1, max_size=4), st.lists(st.text(min_size=1), min_size=1),
                   st.just([[1.0, 0.0], [1.0]])))
@SLOW
@example(v="abc")
@example(v=[[1.0, 0.0], [1.0]])
def test_check_vectors_refuses_non_numeric_input_with_benchrouteerror(v):
    """Texts where vectors belong, or rows of different lengths, are a caller's mistake at the
    router's boundary: a BenchrouteError naming the argument, not a NumPy ValueError."""
    with pytest.raises(BenchrouteError):
        check_vectors(v, "queries")


@given(Y=hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
                    elements=st.one_of(st.floats(-2.0, 3.0), st.just(math.nan),
                                       st.just(math.inf), st.just(-math.inf))),
       m=st.one_of(st.none(), st.integers(0, 5)))
@FAST
def test_check_labels_keeps_valid_labels_and_refuses_the_rest(Y, m):
    """Labels come back unchanged (as float32) exactly when they are a 2-D array with the asked
    number of models and every value is in [0, 1] or NaN; otherwise a BenchrouteError."""
    Y32 = Y.astype(np.float32)
    valid = (Y.ndim == 2 and (m is None or Y.shape[1] == m)
             and bool(np.all(np.isnan(Y32) | ((Y32 >= 0) & (Y32 <= 1)))))
    if valid:
        np.testing.assert_array_equal(check_labels(Y, "Y", m), Y32)
    else:
        with pytest.raises(BenchrouteError):
            check_labels(Y, "Y", m)


@given(v=st.one_of(st.integers(), st.floats(), st.none(), st.booleans()))
@SLOW
@example(v=5)
def test_parse_labeled_refuses_non_iterables_with_benchrouteerror(v):
    """Few-shot labels that are not records at all are refused with a BenchrouteError."""
    with pytest.raises(BenchrouteError):
        parse_labeled(v, ["m"])


@given(v=st.one_of(objects.filter(lambda o: not isinstance(o, (int, float, complex, type(None)))),
                   st.lists(st.fixed_dictionaries(
                       {"text": st.one_of(st.text(max_size=3), st.integers()),
                        "labels": st.one_of(st.dictionaries(st.sampled_from(["m", "n", "x"]),
                                                            st.one_of(label, st.none(), st.text(max_size=2),
                                                                      st.integers(-3, 3), st.floats()),
                                                            max_size=3), st.integers())}), max_size=4)))
@FAST
def test_parse_labeled_reads_records_or_refuses_them(v):
    """Iterables of anything give (texts, Y) with Y in [0, 1] or NaN, one row per record, or a
    BenchrouteError; never another exception."""
    try:
        texts, Y = parse_labeled(v, ["m", "n"])
    except BenchrouteError:
        return
    assert Y.shape == (len(texts), 2) and all(isinstance(t, str) for t in texts)
    assert np.all(np.isnan(Y) | ((Y >= 0) & (Y <= 1)))
