"""Mutated ``index.faiss`` files: every count FAISS trusts is altered, and the loader must refuse
the file from its header and size before FAISS allocates anything."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from benchroute.index import VectorIndex

AREA = "faiss"
N, D = 300, 8
HEADER = 37  # fourcc, d, ntotal, two dummies, is_trained, metric_type


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved index per type, with the byte offsets of the fields the cases alter."""
    x = np.random.default_rng(0).standard_normal((N, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = {}
    for factory in ("Flat", "HNSW16", "IVF4,Flat"):
        folder = tmp_path_factory.mktemp(factory.replace(",", "_"))
        VectorIndex(factory).add(x, ["d"] * N).save(folder)
        raw = (folder / "index.faiss").read_bytes()
        out[factory] = (folder, raw, _offsets(factory, raw))
    return out


class Cursor:
    """Walks a FAISS file: ``vec`` records where a length-prefixed vector starts, skips it."""

    def __init__(self, raw: bytes, off: dict[str, int], pos: int = HEADER) -> None:
        self.raw, self.off, self.pos = raw, off, pos

    def vec(self, name: str, elem: int) -> None:
        self.off[name] = self.pos
        self.pos += 8 + struct.unpack_from("<Q", self.raw, self.pos)[0] * elem


def _offsets(factory: str, raw: bytes) -> dict[str, int]:
    off = {"fourcc": 0, "d": 4, "ntotal": 8}
    cur = Cursor(raw, off)
    vec = cur.vec
    if factory == "Flat":
        vec("vectors", 4)
    elif factory.startswith("HNSW"):
        for name, elem in (("probas", 8), ("per_level", 4), ("levels", 4), ("offsets", 8),
                           ("neighbours", 4)):
            vec(name, elem)
        off["first_neighbour"] = off["neighbours"] + 8
        off["storage_ntotal"] = cur.pos + 20 + 8
        off["storage_vectors"] = cur.pos + 20 + HEADER
    else:
        off["nlist"] = cur.pos
        cur.pos += 16
        off["quantizer_ntotal"] = cur.pos + 8
        cur.pos += HEADER
        vec("centroids", 4)
        cur.pos += 1
        vec("direct_map", 8)
        off["ilar_nlist"] = cur.pos + 4
        off["code_size"] = cur.pos + 12
        off["list_sizes"] = cur.pos + 24
        off["first_list"] = cur.pos + 32
        nlist = struct.unpack_from("<Q", raw, off["list_sizes"])[0]
        first = struct.unpack_from("<Q", raw, off["first_list"])[0]
        off["first_id"] = off["first_list"] + 8 * nlist + first * 4 * D  # after list 0's codes
    return off


def _mutate(raw: bytes, at: int, fmt: str, value) -> bytes:
    out = bytearray(raw)
    struct.pack_into("<" + fmt, out, at, value)
    return bytes(out)


def _load_damaged(corpus, folder, raw: bytes, damaged: bytes, pattern: str) -> bool:
    """Loading ``folder`` with ``damaged`` as its index.faiss is an error; then restore it."""
    (folder / "index.faiss").write_bytes(damaged)
    try:
        return corpus(AREA, "error", lambda: VectorIndex.load(folder), match=pattern)
    finally:
        (folder / "index.faiss").write_bytes(raw)


CASES = [  # (factory, field, struct format, value)
    *[(f, "d", "i", v) for f in ("Flat", "HNSW16", "IVF4,Flat") for v in (0, -1, 1 << 20, D + 1)],
    *[(f, "ntotal", "q", v) for f in ("Flat", "HNSW16", "IVF4,Flat")
      for v in (-1, 1 << 33, 1 << 62, N + 1)],
    *[(f, "fourcc", "4s", v) for f in ("Flat", "HNSW16") for v in (b"XX\x00X", b"\xff\xfe\x00\x01")],
    ("Flat", "vectors", "Q", 1 << 29), ("Flat", "vectors", "Q", 1 << 39),
    ("Flat", "vectors", "Q", (1 << 40) + 5), ("Flat", "vectors", "Q", N * D - 1),
    ("HNSW16", "probas", "Q", 1 << 37), ("HNSW16", "per_level", "Q", 1 << 36),
    ("HNSW16", "levels", "Q", 1 << 36), ("HNSW16", "offsets", "Q", 1 << 35),
    ("HNSW16", "neighbours", "Q", 1 << 38), ("HNSW16", "neighbours", "Q", 1 << 28),
    ("HNSW16", "storage_ntotal", "q", 1 << 34), ("HNSW16", "storage_vectors", "Q", 1 << 39),
    ("IVF4,Flat", "nlist", "Q", 1 << 40), ("IVF4,Flat", "nlist", "Q", 5),
    ("IVF4,Flat", "quantizer_ntotal", "q", 1 << 36), ("IVF4,Flat", "centroids", "Q", 1 << 38),
    ("IVF4,Flat", "ilar_nlist", "Q", 1 << 33), ("IVF4,Flat", "code_size", "Q", 1 << 20),
    ("IVF4,Flat", "list_sizes", "Q", 1 << 36), ("IVF4,Flat", "first_list", "Q", 1 << 35),
    ("IVF4,Flat", "first_list", "Q", 1 << 28),
    ("IVF4,Flat", "first_id", "q", N), ("IVF4,Flat", "first_id", "q", -5),
    ("IVF4,Flat", "first_id", "q", 1 << 40),
    ("HNSW16", "first_neighbour", "i", N), ("HNSW16", "first_neighbour", "i", -7),
]


@pytest.mark.parametrize("factory, field, fmt, value", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[3]!r}" for c in CASES])
def test_mutated_count(corpus, saved, factory, field, fmt, value):
    folder, raw, off = saved[factory]
    assert _load_damaged(corpus, folder, raw, _mutate(raw, off[field], fmt, value),
                  r"index\.faiss: (corrupt FAISS index|holds|vectors of dimension|unreadable "
                  r"FAISS index .*out of range)")


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF4,Flat"])
@pytest.mark.parametrize("cut", ["empty", "header", "half", "last_byte", "junk_after"])
def test_truncated_or_padded(corpus, saved, factory, cut):
    folder, raw, _ = saved[factory]
    damaged = {"empty": b"", "header": raw[:20], "half": raw[:len(raw) // 2],
               "last_byte": raw[:-1], "junk_after": raw + b"\x01" * 64}[cut]
    assert _load_damaged(corpus, folder, raw, damaged, r"index\.faiss: (corrupt FAISS index|unreadable)")


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF4,Flat"])
def test_intact_index_loads(corpus, saved, factory):
    folder, _, _ = saved[factory]
    assert corpus(AREA, "right", lambda: VectorIndex.load(folder), check=lambda ix: len(ix) == N)
