"""The FAISS wrapper: exact search equals brute force, exclusion, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchroute.exceptions import BenchrouteError, FormatVersionError
from benchroute.index import VectorIndex


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def pool():
    rng = np.random.default_rng(1)
    x = _unit(rng, 600, 24)
    ds = np.repeat(["a", "b", "c"], 200)
    return x, ds, _unit(rng, 40, 24)


def _brute(x, q, k, mask=None):
    sims = q.astype(np.float64) @ x.T.astype(np.float64)
    if mask is not None:
        sims[:, ~mask] = -np.inf
    rows = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return 1 - np.take_along_axis(sims, rows, axis=1), rows


@pytest.mark.parametrize("exclude", [None, ["a"], ["a", "c"]])
@pytest.mark.parametrize("k", [1, 5, 19])
def test_flat_equals_brute_force(pool, exclude, k):
    x, ds, q = pool
    idx = VectorIndex().add(x, ds)
    dist, rows = idx.search(q, k, exclude_datasets=exclude)
    mask = None if exclude is None else ~np.isin(ds, exclude)
    ref_d, ref_r = _brute(x, q, k, mask)
    np.testing.assert_array_equal(rows, ref_r)
    np.testing.assert_allclose(dist, ref_d, atol=1e-5)


def test_fewer_rows_than_k(pool):
    x, ds, q = pool
    idx = VectorIndex().add(x[:3], ds[:3])
    dist, rows = idx.search(q[:2], 5)
    assert (rows[:, 3:] == -1).all() and np.isinf(dist[:, 3:]).all()


@pytest.mark.parametrize(("factory", "kw"), [("HNSW32", {"ef_search": 128}),
                                             ("IVF8,Flat", {"nprobe": 8})])
def test_approximate_indexes_match_flat(pool, factory, kw):
    x, ds, q = pool
    flat = VectorIndex().add(x, ds).search(q, 10, exclude_datasets=["b"])[1]
    approx = VectorIndex(factory, **kw).add(x, ds).search(q, 10, exclude_datasets=["b"])[1]
    recall = np.mean([len(set(a) & set(f)) / 10 for a, f in zip(approx, flat)])
    assert recall >= 0.95
    assert not np.isin(approx, np.flatnonzero(ds == "b")).any()


def test_incremental_add_and_roundtrip(pool, tmp_path):
    x, ds, q = pool
    idx = VectorIndex().add(x[:300], ds[:300], [f"i{i}" for i in range(300)])
    idx.add(x[300:], ds[300:], [f"i{i}" for i in range(300, 600)])
    idx.encoder_id = "test-encoder"
    before = idx.search(q, 7, exclude_datasets=["b"])
    idx.save(tmp_path / "ix")
    back = VectorIndex.load(tmp_path / "ix")
    after = back.search(q, 7, exclude_datasets=["b"])
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    assert back.encoder_id == "test-encoder" and back.instance_ids_[599] == "i599"


def test_errors(pool, tmp_path):
    x, ds, q = pool
    with pytest.raises(BenchrouteError, match="index is empty"):
        VectorIndex().search(q, 3)
    idx = VectorIndex().add(x, ds)
    with pytest.raises(BenchrouteError, match="k == 0, must be an integer >= 1"):
        idx.search(q, 0)
    with pytest.raises(BenchrouteError, match="queries have dimension 5"):
        idx.search(q[:, :5], 3)
    with pytest.raises(BenchrouteError, match="600 vectors but 2 dataset labels"):
        VectorIndex().add(x, ds[:2])
    idx.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    meta["format_version"] = 9
    (tmp_path / "ix" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(FormatVersionError, match="index format 9"):
        VectorIndex.load(tmp_path / "ix")
    meta["format_version"] = -5  # loaded as if current before (found by fuzzing)
    (tmp_path / "ix" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(BenchrouteError, match=r"index.json: field 'format_version' is -5, "
                                              "expected an integer >= 0"):
        VectorIndex.load(tmp_path / "ix")
    with pytest.raises(BenchrouteError, match="not a saved benchroute index"):
        VectorIndex.load(tmp_path / "nothing")


def test_a_pool_row_is_one_input(pool, tmp_path):
    """A router maps an input to its row by (dataset, instance_id): a pair given twice (in one
    add, across adds or in a hand-edited index.json) lost one of the rows silently; a key
    given twice in index.json took its last value."""
    x, ds, _ = pool
    with pytest.raises(BenchrouteError, match=r"instance '1' of dataset 't0' is given twice"):
        VectorIndex().add(x[:3], ["t0"] * 3, ["1", "2", "1"])
    idx = VectorIndex().add(x[:2], ["t0", "t0"], ["1", "2"])
    with pytest.raises(BenchrouteError, match=r"instance '2' of dataset 't0' is given twice"):
        idx.add(x[2:4], ["t1", "t0"], ["2", "2"])
    assert len(idx) == 2 and idx.instance_ids_.tolist() == ["1", "2"]  # unchanged
    idx.add(x[2:4], ["t1", "t1"], ["1", "2"])  # the same ids in another dataset: fine
    idx.save(tmp_path / "ix")
    path = tmp_path / "ix" / "index.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "rows": [meta["rows"][0]] * 4}))
    with pytest.raises(BenchrouteError, match=r"index\.json: field 'rows' is invalid; expected "
                                              r"distinct \[dataset, instance_id\] pairs"):
        VectorIndex.load(tmp_path / "ix")
    path.write_text(json.dumps(meta).replace('"factory": ', '"factory": "HNSW32", "factory": '))
    with pytest.raises(BenchrouteError, match=r"key 'factory' appears twice"):
        VectorIndex.load(tmp_path / "ix")


@pytest.mark.parametrize("n_excluded", [1, 40, 300])
def test_scattered_row_exclusion_equals_brute_force(pool, n_excluded):
    x, ds, q = pool
    rows = np.random.default_rng(n_excluded).choice(len(x), n_excluded, replace=False)
    dist, got = VectorIndex().add(x, ds).search(q, 9, exclude_rows=rows)
    mask = np.ones(len(x), dtype=bool)
    mask[rows] = False
    ref_d, ref_r = _brute(x, q, 9, mask)
    np.testing.assert_array_equal(got, ref_r)
    np.testing.assert_allclose(dist, ref_d, atol=1e-5)


@pytest.mark.parametrize("factory", ["Flat", "SQfp16", "IVF16,Flat", "HNSW8"])
def test_memory_mapped_load_searches_as_the_loaded_index(pool, tmp_path, factory):
    x, ds, q = pool
    idx = VectorIndex(factory, nprobe=4, ef_search=32).add(x, ds)
    idx.save(tmp_path / "i", encoder_id="enc")
    plain = VectorIndex.load(tmp_path / "i")
    mapped = VectorIndex.load(tmp_path / "i", mmap=True)
    assert plain.mapped_from is None and mapped.mapped_from == tmp_path / "i" / "index.faiss"
    for excl in (None, ["b"]):
        d0, r0 = plain.search(q, 7, exclude_datasets=excl)
        d1, r1 = mapped.search(q, 7, exclude_datasets=excl)
        np.testing.assert_array_equal(r0, r1)
        np.testing.assert_array_equal(d0, d1)
    np.testing.assert_array_equal(plain.vectors([3, 500]), mapped.vectors([3, 500]))
    # FAISS would abort the process growing mapped codes: add refuses, the index unchanged
    with pytest.raises(BenchrouteError, match="memory-mapped from .*index.faiss.*mmap=False"):
        mapped.add(x[:2], ["d", "d"])
    assert len(mapped) == len(x) and len(mapped.datasets_) == len(x)


@pytest.mark.parametrize("factory", ["Flat", "SQfp16", "IVF16,Flat", "IVF16,SQfp16",
                                     "HNSW8"])
def test_a_mapped_index_saves_as_a_file_that_loads(pool, tmp_path, factory):
    """An IVF index loaded with ``mmap=True`` holds FAISS's on-disk inverted lists, which
    ``write_index`` wrote as a reference into the file it was mapped from ('ilod'): the saved
    index was refused as corrupt on load, and saved over its own folder the router was lost
    (found by fuzzing). Its lists are now written as an in-memory index writes them."""
    x, ds, q = pool
    VectorIndex(factory, nprobe=16).add(x, ds).save(tmp_path / "i", encoder_id="enc")
    mapped = VectorIndex.load(tmp_path / "i", mmap=True)
    d0, r0 = mapped.search(q, 7, exclude_datasets=["b"])
    for folder in (tmp_path / "elsewhere", tmp_path / "i"):  # another folder, then its own
        mapped.save(folder)
        for mmap in (False, True):
            back = VectorIndex.load(folder, mmap=mmap)
            d1, r1 = back.search(q, 7, exclude_datasets=["b"])
            np.testing.assert_array_equal(r0, r1)
            np.testing.assert_array_equal(d0, d1)
    d2, r2 = mapped.search(q, 7, exclude_datasets=["b"])  # the mapped index is as it was
    np.testing.assert_array_equal(r0, r2)
    np.testing.assert_array_equal(d0, d2)
    np.testing.assert_array_equal(mapped.copy().search(q, 7)[1], mapped.search(q, 7)[1])


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,SQfp16", "PCA24,IVF16,Flat"])
def test_saving_or_copying_a_mapped_index_leaves_its_lists_alone(pool, tmp_path, factory,
                                                                   monkeypatch):
    """A mapped IVF index's lists were swapped for an in-memory copy while it was written (or
    cloned), and the copy freed after: a search on another thread that still read the copy
    crashed the process (found by a review). The index is now only read: its lists stay the
    mapped ones throughout, owned by it, and a search meanwhile finds what it found before."""
    import faiss

    import benchroute.index as bindex

    x, ds, q = pool
    VectorIndex(factory, nprobe=16).add(x, ds).save(tmp_path / "i", encoder_id="enc")
    mapped = VectorIndex.load(tmp_path / "i", mmap=True)
    ivf = faiss.try_extract_index_ivf(mapped.index_)
    held = faiss.downcast_InvertedLists(ivf.invlists)
    assert isinstance(held, faiss.OnDiskInvertedLists)
    d0, r0 = mapped.search(q, 7)
    seen = []

    def watch(*args, **kwargs):
        now = faiss.try_extract_index_ivf(mapped.index_)
        seen.append((type(faiss.downcast_InvertedLists(now.invlists)), now.own_invlists))
        d, r = mapped.search(q, 7)  # as a search on another thread would, meanwhile
        np.testing.assert_array_equal(r, r0)
        return real(*args, **kwargs)

    real = bindex._write_faiss
    monkeypatch.setattr(bindex, "_write_faiss", watch)
    mapped.save(tmp_path / "o")
    real_clone = faiss.clone_index
    monkeypatch.setattr(faiss, "clone_index", lambda index: watch_clone(index))

    def watch_clone(index):
        now = faiss.try_extract_index_ivf(mapped.index_)
        seen.append((type(faiss.downcast_InvertedLists(now.invlists)), now.own_invlists))
        return real_clone(index)

    copy = mapped.copy()
    assert seen and all(s == (faiss.OnDiskInvertedLists, True) for s in seen)
    now = faiss.try_extract_index_ivf(mapped.index_)
    assert isinstance(faiss.downcast_InvertedLists(now.invlists), faiss.OnDiskInvertedLists)
    assert now.own_invlists
    for index in (VectorIndex.load(tmp_path / "o"), VectorIndex.load(tmp_path / "o", mmap=True),
                  copy, mapped):
        d, r = index.search(q, 7)
        np.testing.assert_array_equal(r, r0)
        np.testing.assert_array_equal(d, d0)
    del copy  # the copy owns its lists: freeing it leaves the mapped index searching
    np.testing.assert_array_equal(mapped.search(q, 7)[1], r0)


@pytest.mark.parametrize("factory", ["Flat", "SQfp16"])
def test_a_mapped_load_never_copies_the_pool(tmp_path, factory, monkeypatch):
    """The load-time check of the stored vectors goes a chunk of rows at a time, so checking a
    mapped pool allocates a few chunks' worth, not the pool (here chunks of a tenth)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    x = _unit(rng, 200_000, 16)
    VectorIndex(factory).add(x, np.repeat(["a", "b"], 100_000)).save(tmp_path / "i")
    mapped = VectorIndex.load(tmp_path / "i", mmap=True)
    monkeypatch.setattr("benchroute.index._CHECK_CHUNK", 20_000)
    tracemalloc.start()  # the check alone (the JSON row map costs what it costs)
    try:
        mapped._check_unit_rows(tmp_path / "i" / "index.faiss")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * x.nbytes, (peak, x.nbytes)  # before this check went by chunks: 2.1x
    np.testing.assert_allclose(mapped.vectors([5, 150_000]), x[[5, 150_000]], atol=1e-3)


@pytest.mark.parametrize("exclude", [False, True])
def test_results_do_not_depend_on_the_batch(exclude):
    """FAISS scores a batch in blocks whose rounding depends on its size, and returns tied rows
    in no fixed order: a prompt routed with 255 others got other neighbours than routed with
    2,999 others (found by a review). Each query's candidates are scored again on their own,
    ties going to the lower row."""
    rng = np.random.default_rng(3)
    x = _unit(rng, 3000, 32)
    x[1500:1600] = x[:100]  # duplicates: exact ties
    idx = VectorIndex().add(x, np.repeat(["a", "b", "c"], 1000))
    q = np.vstack([x[:150], _unit(rng, 350, 32)])
    kw = {"exclude_datasets": ["c"]} if exclude else {}
    d_all, r_all = idx.search(q, 19, **kw)
    for size in (1, 7, 256):
        parts = [idx.search(q[a:a + size], 19, **kw) for a in range(0, len(q), size)]
        np.testing.assert_array_equal(np.vstack([p[0] for p in parts]), d_all)
        np.testing.assert_array_equal(np.vstack([p[1] for p in parts]), r_all)
    # a duplicate pair, equally near, comes in row order; distances ascend
    assert (np.diff(d_all, axis=1) >= 0).all()
    same = d_all[:, :-1] == d_all[:, 1:]
    assert (r_all[:, :-1][same] < r_all[:, 1:][same]).all() and same.any()


def test_search_arguments_outside_their_range_are_refused():
    """exclude_rows=[-1] excluded the last row and [n] raised an IndexError; k=2.5 searched 2
    (found by fuzzing)."""
    rng = np.random.default_rng(0)
    idx = VectorIndex().add(_unit(rng, 10, 8), ["a"] * 10)
    q = _unit(rng, 2, 8)
    for rows in ([-1], [10]):
        with pytest.raises(BenchrouteError, match="exclude_rows must be pool rows 0 to 9"):
            idx.search(q, 3, exclude_rows=np.array(rows))
    with pytest.raises(BenchrouteError, match="must be an integer"):
        idx.search(q, 2.5)
    assert idx.search(q, 3, exclude_rows=np.array([0, 9]))[1].shape == (2, 3)


@pytest.mark.parametrize("factory", ["SQ8", "HNSW32,SQ8", "PQ4"])
def test_a_lossy_code_is_refused_when_built(factory):
    """From a fuzzing campaign: ``fit --index-factory SQ8`` saved a router that every later
    command refused (stored vectors off the unit sphere). The build says so, naming the factory,
    and leaves the index empty."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 32)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx = VectorIndex(factory)
    with pytest.raises(BenchrouteError, match=rf"index_factory '{factory}' stores \d+ of 300 "
                                              r"vectors checked off the unit sphere .* a lossy code"):
        idx.add(x, ["t"] * 300)
    assert len(idx) == 0 and idx.index_ is None and len(idx.datasets_) == 0
    assert len(VectorIndex("SQfp16").add(x, ["t"] * 300)) == 300  # within the tolerance


def test_a_factory_that_takes_no_selector_is_named():
    """'Flat,RFlat' raised FAISS's internal error on the first search that left rows out."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 16)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx = VectorIndex("Flat,RFlat").add(x, ["t"] * 20 + ["u"] * 20)
    assert idx.search(x[:2], 3)[1].shape == (2, 3)
    with pytest.raises(BenchrouteError, match=r"index_factory 'Flat,RFlat': FAISS cannot search "
                                              r"it leaving rows out"):
        idx.search(x[:2], 3, exclude_datasets=["u"])


def _saved(idx: VectorIndex, folder) -> tuple[bytes, bytes]:
    idx.save(folder)
    return (folder / "index.faiss").read_bytes(), (folder / "index.json").read_bytes()


@pytest.mark.parametrize("factory", ["PCA32,Flat", "PCA32,HNSW8", "PCA32,IVF4,Flat"])
def test_a_refused_later_add_takes_its_rows_back(factory, tmp_path):
    """From a review: a code that passed the first add (a PCA fitted on vectors of a subspace)
    and refused a later one left the refused rows in the index and its row map. A second
    review found an HNSW graph and an IVF index (whose direct map the check had made) kept
    them; the code is now asked before FAISS takes any row, so every index is as it was,
    down to its saved bytes."""
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(16, 64))
    x = (rng.normal(size=(500, 16)) @ basis).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.normal(size=(20, 64)).astype("float32")
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    idx = VectorIndex(factory, nprobe=4).add(x, ["t"] * 500)
    before, found = _saved(idx, tmp_path / "before"), idx.search(x[:5], 3)
    with pytest.raises(BenchrouteError, match=r"stores 20 of 20 vectors checked off the unit"
                                              r".* nothing was added"):
        idx.add(y, ["u"] * 20)
    assert len(idx) == 500 and len(idx.datasets_) == 500 and set(idx.datasets_) == {"t"}
    assert _saved(idx, tmp_path / "after") == before
    np.testing.assert_array_equal(idx.search(x[:5], 3)[1], found[1])


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat", "HNSW8", "HNSW8,SQfp16",
                                     "L2norm,HNSW8"])
def test_appending_puts_the_index_back_when_the_change_fails(factory, tmp_path):
    """``appending`` is what makes a router's pool change all or nothing: a failure after the
    rows went in leaves the index as it was saved before (an IVF index's direct map, made by
    reading vectors inside the block, dropped again); an HNSW graph, which cannot remove
    rows, is changed only through a copy. On success the rows are there."""
    rng = np.random.default_rng(1)
    x, y = _unit(rng, 300, 64), _unit(rng, 30, 64)
    idx = VectorIndex(factory, nprobe=4).add(x, ["t"] * 300)
    before = _saved(idx, tmp_path / "before")
    with pytest.raises(RuntimeError, match="a later step"), idx.appending() as target:
        target.add(y, ["u"] * 30)
        assert len(target.vectors(np.arange(290, 330))) == 40
        raise RuntimeError("a later step fails")
    assert len(idx) == 300 and _saved(idx, tmp_path / "after") == before
    assert (idx is target) == idx.can_take_back()
    with idx.appending() as target:
        target.add(y, ["u"] * 30)
    assert len(target) == 330 and target.rows_of(["u"]).tolist() == list(range(300, 330))
    np.testing.assert_allclose(target.vectors(np.arange(300, 330)), y, atol=1e-3)  # SQfp16


@pytest.mark.parametrize("factory", ["HNSW8", "L2norm,HNSW8", "L2norm,Flat"])
def test_a_copy_shares_nothing_even_where_faiss_cannot_clone(factory):
    """From a review: ``copy`` used ``faiss.clone_index`` alone, which FAISS refuses for an
    ``L2norm`` transform, so an HNSW graph under one (an index ``fit`` builds) failed every
    ``add_results`` with FAISS's raw RuntimeError, where it had added in place before."""
    rng = np.random.default_rng(2)
    x, y = _unit(rng, 200, 64), _unit(rng, 20, 64)
    idx = VectorIndex(factory).add(x, ["t"] * 200)
    twin = idx.copy()
    np.testing.assert_array_equal(twin.search(x[:5], 4)[1], idx.search(x[:5], 4)[1])
    twin.add(y, ["u"] * 20)
    assert (len(idx), len(twin)) == (200, 220) and list(twin.search(y[:3], 1)[1][:, 0]) == \
        [200, 201, 202]


@pytest.mark.parametrize("factory", ["HNSW8,Flat,RFlat", "HNSW8,Flat,Refine(SQfp16)"])
def test_a_refined_graph_is_checked_without_a_trial_copy(factory, monkeypatch):
    """From a review: a refined HNSW graph has no standalone codec of its own, so each add
    asked its code through a trial copy of the whole index (as much memory again, and an add
    of the whole pool, per add_results); the refine index, whose distances its searches give
    and whose vectors ``reconstruct`` returns, is asked instead."""
    import faiss

    rng = np.random.default_rng(3)
    x, y = _unit(rng, 300, 32), _unit(rng, 40, 32)
    idx = VectorIndex(factory).add(x, ["t"] * 300)
    monkeypatch.setattr(faiss, "clone_index", lambda *a: pytest.fail("a trial copy"))
    idx.add(y, ["u"] * 40)
    assert len(idx) == 340
    np.testing.assert_allclose(idx.vectors(np.arange(300, 340)), y, atol=1e-3)
