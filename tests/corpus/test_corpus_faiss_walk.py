"""IVF indexes as benchroute writes them (with a direct map), untrained flags and the stored
vectors themselves (issue 18, class 5). The pre-check walks every IVF layout the package writes,
so list sizes, row ids and direct-map entries are checked before FAISS allocates or searches;
vectors read back must be finite unit vectors, as ``fit`` requires."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from benchroute.index import VectorIndex
from tests.corpus.test_corpus_faiss import HEADER, Cursor, _load_damaged, _mutate

AREA = "faiss"
N, D = 300, 8
TRAINED = 32  # byte of is_trained in an index header


def _x() -> np.ndarray:
    x = np.random.default_rng(1).standard_normal((N, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Indexes with the byte offsets the cases alter: IVF with an array direct map (what a
    router's ``X_`` leaves) and with a hash-table one, flat and HNSW."""
    import faiss

    out = {}
    for name in ("IVF-array", "IVF-hash", "Flat", "HNSW16"):
        folder = tmp_path_factory.mktemp(name)
        ix = VectorIndex("IVF4,Flat" if name.startswith("IVF") else name).add(_x(), ["d"] * N)
        if name == "IVF-array":
            ix.vectors()  # makes the direct map, as Router.pool_vectors does
        elif name == "IVF-hash":
            faiss.extract_index_ivf(ix.index_).set_direct_map_type(faiss.DirectMap.Hashtable)
        ix.save(folder)
        raw = (folder / "index.faiss").read_bytes()
        out[name] = (folder, raw, _offsets(name, raw))
    return out


def _offsets(name: str, raw: bytes) -> dict[str, int]:
    off = {"trained": TRAINED}
    cur = Cursor(raw, off)
    vec = cur.vec

    if name == "Flat":
        off["first_float"] = cur.pos + 8
    elif name == "HNSW16":
        for key, elem in (("probas", 8), ("per_level", 4), ("levels", 4), ("offsets", 8),
                          ("neighbours", 4)):
            vec(key, elem)
        off["entry"], off["max_level"] = cur.pos, cur.pos + 4
        off["storage_trained"] = cur.pos + 20 + TRAINED
        off["first_float"] = cur.pos + 20 + HEADER + 8
    else:
        cur.pos += 16
        off["quantizer_trained"] = cur.pos + TRAINED
        cur.pos += HEADER
        vec("centroids", 4)
        off["map_type"] = cur.pos
        cur.pos += 1
        vec("direct_map", 8)
        off["first_map_entry"] = off["direct_map"] + 8
        if name == "IVF-hash":
            vec("hash_table", 16)
        sizes = cur.pos + 24
        off["list_sizes"] = sizes
        nlist = struct.unpack_from("<Q", raw, sizes)[0]
        first = struct.unpack_from("<Q", raw, sizes + 8)[0]
        off["first_size"] = sizes + 8
        off["first_float"] = sizes + 8 + 8 * nlist
        off["first_id"] = off["first_float"] + first * 4 * D
    return off


CORRUPT = r"index\.faiss: corrupt FAISS index"
CASES = [  # (index, field, struct format, value, pattern)
    # the 64 KiB file that reached 1.1 GiB: a list size far above ntotal
    ("IVF-array", "first_size", "Q", 1 << 27, CORRUPT + r".*(IVF lists hold|claims)"),
    ("IVF-array", "first_size", "Q", 0, CORRUPT + r".*IVF lists hold \d+ vectors"),
    ("IVF-array", "first_id", "q", 1 << 53, CORRUPT + r".*row ids outside 0\.\.299"),
    ("IVF-array", "first_id", "q", -1, CORRUPT + r".*row ids outside"),
    ("IVF-array", "first_id", "q", -300, CORRUPT + r".*row ids outside"),
    ("IVF-array", "first_id", "q", N, CORRUPT + r".*row ids outside"),
    ("IVF-array", "map_type", "B", 3, CORRUPT + r".*IVF direct map type 3"),
    ("IVF-array", "map_type", "B", 0, CORRUPT + r".*direct map of type 0 holds 300 entries"),
    ("IVF-array", "direct_map", "Q", 5, CORRUPT),
    ("IVF-array", "first_map_entry", "q", 9 << 32, CORRUPT + r".*direct map points outside"),
    ("IVF-array", "first_map_entry", "q", -1, CORRUPT + r".*direct map points outside"),
    ("IVF-array", "first_map_entry", "q", 1 << 31, CORRUPT + r".*direct map points outside"),
    ("IVF-hash", "hash_table", "Q", 1 << 40, CORRUPT + r".*hash table .*claims"),
    ("IVF-hash", "first_id", "q", 1 << 53, CORRUPT + r".*row ids outside"),
    ("IVF-hash", "map_type", "B", 1, CORRUPT),
    ("IVF-array", "trained", "B", 0, CORRUPT + r".*IwFl index is marked untrained"),
    ("IVF-array", "quantizer_trained", "B", 0, CORRUPT + r".*marked untrained"),
    ("IVF-hash", "trained", "B", 0, CORRUPT + r".*marked untrained"),
    ("Flat", "trained", "B", 0, CORRUPT + r".*IxFI index is marked untrained"),
    ("HNSW16", "trained", "B", 0, CORRUPT + r".*marked untrained"),
    ("HNSW16", "storage_trained", "B", 0, CORRUPT + r".*marked untrained"),
]


@pytest.mark.parametrize("index, field, fmt, value, pattern", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[3]!r}" for c in CASES])
def test_mutated_ivf_walk(corpus, saved, index, field, fmt, value, pattern):
    folder, raw, off = saved[index]
    assert _load_damaged(corpus, folder, raw, _mutate(raw, off[field], fmt, value), pattern)


@pytest.mark.parametrize("index", ["IVF-array", "IVF-hash"])
def test_ivf_with_direct_map_loads_and_searches(corpus, saved, index):
    folder, _, _ = saved[index]

    def run():
        ix = VectorIndex.load(folder)
        return ix, ix.search(_x()[:3], 1)

    assert corpus(AREA, "right", run, check=lambda r: len(r[0]) == N
                  and r[1][1][:, 0].tolist() == [0, 1, 2])


VECTOR_CASES = [(index, value) for index in ("Flat", "HNSW16", "IVF-array", "IVF-hash")
                for value in ("nan", "inf", "zero", "scaled")]


@pytest.mark.parametrize("index, value", VECTOR_CASES, ids=[f"{i}-{v}" for i, v in VECTOR_CASES])
def test_stored_vector_not_unit(corpus, saved, index, value):
    folder, raw, off = saved[index]
    damaged = bytearray(raw)
    row = np.frombuffer(raw, dtype="<f4", count=D, offset=off["first_float"]).copy()
    row = {"nan": np.where(np.arange(D) == 0, np.nan, row), "inf": np.full(D, np.inf),
           "zero": np.zeros(D), "scaled": row * 3}[value].astype("<f4")
    damaged[off["first_float"]:off["first_float"] + 4 * D] = row.tobytes()
    pattern = (r"index\.faiss: 1 stored vector\(s\) are not finite unit vectors \(row \d+: "
               + {"nan": "NaN or infinite", "inf": "NaN or infinite", "zero": "all zeros",
                  "scaled": r"norm 3"}[value] + r".*fit refuses such vectors")
    assert _load_damaged(corpus, folder, raw, bytes(damaged), pattern)


def test_an_hnsw_graph_out_of_shape_is_refused_before_faiss_searches_it(corpus, saved):
    """FAISS checks only that the entry point is a node id: an entry point on a lower level
    than the graph's top made a search read past the node's neighbour slots, and the process
    died of a segmentation fault (found by fuzzing). The walk checks the graph's shape."""
    folder, raw, off = saved["HNSW16"]
    levels = np.frombuffer(raw, dtype="<i4", count=N, offset=off["levels"] + 8)
    top = int(levels.max())
    entry = struct.unpack_from("<i", raw, off["entry"])[0]
    assert top >= 2 and levels[entry] == top  # the file as FAISS wrote it
    low = int(np.flatnonzero(levels < top)[0])
    for at, fmt, value, pattern in [
            (off["entry"], "i", low, rf"HNSW entry point {low} is not a node of the top level"),
            (off["max_level"], "i", top - 2, r"HNSW entry point \d+ is not a node of the top"),
            (off["levels"] + 8, "i", 99, r"HNSW node levels .* outside the"),
            (off["levels"] + 8 + 4 * low, "i", top, r"HNSW neighbour offsets disagree"),
            (off["offsets"] + 16, "Q", 1, r"HNSW neighbour offsets disagree")]:
        assert _load_damaged(corpus, folder, raw, _mutate(raw, at, fmt, value),
                             CORRUPT + ".*" + pattern), pattern
