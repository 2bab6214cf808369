"""Checking an ``index.faiss`` file's counts against its size before FAISS reads it.

FAISS trusts the counts in the file: it allocates what a header or a vector's length field
claims (up to 2**40 elements) before reading, so a file with one mutated count (and recomputed
checksums) made the loader allocate 8-15 GB before it failed. This module walks the layout of
the index types :class:`benchroute.index.VectorIndex` writes (flat, HNSW over flat, IVF with
flat lists; faiss >= 1.7 layout) without allocating anything: every length field must fit in
the bytes that remain, the counts must agree with each other and with ``index.json``, every
index must be marked trained, IVF list sizes must add up to ``ntotal``, IVF row ids and direct-map
entries (none, array or hash table: an index whose vectors were read has one) must point into the
index (FAISS itself checks HNSW neighbour ids), and the walk must end exactly at the end of the
file. Other index types get the header checks only. No faiss import: the check runs on the raw
bytes (memory-mapped). The stored vectors themselves are checked after FAISS reads them
(:meth:`benchroute.index.VectorIndex.load`).
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

import numpy as np

from benchroute.exceptions import BenchrouteError

MAX_DIMENSION = 1 << 16
_FLAT = (b"IxFI", b"IxF2", b"IxFl")
_HEADER = struct.Struct("<4siqqqBi")  # fourcc, d, ntotal, 2 dummies, is_trained, metric_type


class _Walk:
    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.buf, self.path, self.pos, self.size = buf, path, 0, len(buf)

    def fail(self, what: str) -> BenchrouteError:
        return BenchrouteError(f"{self.path}: corrupt FAISS index: {what} (file of {self.size} "
                               "bytes); the file was damaged or altered, rebuild it")

    def take(self, fmt: str, what: str) -> tuple[int, ...]:
        s = struct.Struct("<" + fmt)
        if self.pos + s.size > self.size:
            raise self.fail(f"{what} at byte {self.pos} runs past the end")
        out = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return out

    def vector(self, elem: int, what: str) -> int:
        """Skip one length-prefixed vector; its length must fit in what is left."""
        (n,) = self.take("Q", f"length of {what}")
        if n * elem > self.size - self.pos:
            raise self.fail(f"{what} at byte {self.pos - 8} claims {n} elements ({n * elem} "
                            f"bytes), only {self.size - self.pos} bytes remain")
        self.pos += n * elem
        return int(n)

    def header(self) -> tuple[bytes, int, int]:
        if self.pos + _HEADER.size > self.size:
            raise self.fail(f"index header at byte {self.pos} runs past the end")
        fourcc, d, ntotal, _, _, trained, metric = _HEADER.unpack_from(self.buf, self.pos)
        self.pos += _HEADER.size
        if metric > 1:
            self.pos += 4  # metric_arg
        if not (fourcc.isascii() and fourcc.isalnum()):
            raise self.fail(f"index type {fourcc!r} at byte {self.pos - _HEADER.size} is not a "
                            "FAISS type code")
        if not 0 < d <= MAX_DIMENSION:
            raise self.fail(f"header dimension d = {d}, expected 1..{MAX_DIMENSION}")
        # every stored vector takes at least one byte, a flat one 4 d bytes
        per_row = 4 * d if fourcc in _FLAT else 1
        if not 0 <= ntotal <= self.size // per_row or trained > 1:
            raise self.fail(f"header of {fourcc.decode()} claims ntotal = {ntotal} vectors of "
                            f"dimension {d}, more than the file can hold")
        if trained != 1:  # an index benchroute writes is trained; FAISS aborts searching one that is not
            raise self.fail(f"{fourcc.decode()} index is marked untrained")
        return fourcc, d, ntotal

    def index(self) -> tuple[int, int, bool]:
        """(d, ntotal, whether the layout was walked to its end)."""
        fourcc, d, ntotal = self.header()
        if fourcc in _FLAT:
            n = self.vector(4, "flat vectors")
            if n != ntotal * d:
                raise self.fail(f"flat index holds {n} floats, its header says {ntotal} x {d}")
            return d, ntotal, True
        if fourcc == b"IHNf":
            self.vector(8, "HNSW level probabilities")
            cum = self.array("<i4", "HNSW neighbours per level")
            levels = self.array("<i4", "HNSW levels")
            if len(levels) != ntotal:
                raise self.fail(f"HNSW levels disagree with ntotal = {ntotal}")
            offsets = self.array("<u8", "HNSW offsets")
            if len(offsets) != ntotal + 1:
                raise self.fail(f"HNSW offsets disagree with ntotal = {ntotal}")
            n_neighbours = self.vector(4, "HNSW neighbours")
            entry, max_level, _, _, _ = self.take("5i", "HNSW parameters")
            self.hnsw_graph(cum, levels, offsets, n_neighbours, entry, max_level)
            sub_d, sub_n, walked = self.index()
            if (sub_d, sub_n) != (d, ntotal):
                raise self.fail(f"HNSW storage holds {sub_n} x {sub_d}, the header {ntotal} x {d}")
            return d, ntotal, walked
        if fourcc == b"IwFl":
            return self.ivf_flat(d, ntotal)
        return d, ntotal, False


    def array(self, dtype: str, what: str) -> np.ndarray:
        """One length-prefixed vector, read (a copy: a view would keep the file's map open)."""
        start = self.pos + 8
        n = self.vector(np.dtype(dtype).itemsize, what)
        return np.frombuffer(self.buf, dtype=dtype, count=n, offset=start).copy()

    def hnsw_graph(self, cum: np.ndarray, levels: np.ndarray, offsets: np.ndarray,
                   n_neighbours: int, entry: int, max_level: int) -> None:
        """The HNSW graph's shape as FAISS builds it: node i, present on levels 0..levels[i]-1,
        owns cum[levels[i]] neighbour slots from offsets[i]; the search starts at the entry
        point on the top level. FAISS checks only that the entry point is a node id: one on a
        lower level made its search read past the node's slots and killed the process with a
        segmentation fault (found by fuzzing)."""
        n = len(levels)
        if n == 0:
            if entry != -1 or max_level != -1:
                raise self.fail(f"empty HNSW graph with entry point {entry}, top level {max_level}")
            return
        lv = levels.astype(np.int64)
        if lv.min() < 1 or lv.max() >= len(cum):
            raise self.fail(f"HNSW node levels {lv.min()}..{lv.max()} outside the "
                            f"{len(cum)}-entry neighbours-per-level table")
        slots = np.diff(offsets.astype(np.int64))
        if offsets[0] != 0 or not np.array_equal(slots, cum.astype(np.int64)[lv]) \
                or int(offsets[-1]) != n_neighbours:
            raise self.fail("HNSW neighbour offsets disagree with the nodes' levels")
        if max_level != lv.max() - 1 or not 0 <= entry < n or lv[entry] - 1 != max_level:
            raise self.fail(f"HNSW entry point {entry} is not a node of the top level "
                            f"{max_level} (the nodes reach level {lv.max() - 1})")

    def ivf_flat(self, d: int, ntotal: int) -> tuple[int, int, bool]:
        """The rest of an IVF-flat index after its header: quantizer, direct map (none, array
        or hash table, as :meth:`VectorIndex.vectors` leaves it), then the inverted lists, whose
        sizes must add up to ``ntotal`` and whose row ids must be rows of the index."""
        nlist, _ = self.take("QQ", "IVF list count")
        q_d, q_n, walked = self.index()
        if (q_d, q_n) != (d, nlist):
            raise self.fail(f"IVF quantizer holds {q_n} x {q_d}, expected {nlist} x {d}")
        (kind,) = self.take("B", "IVF direct map type")
        if not walked or kind > 2:
            raise self.fail(f"IVF direct map type {kind} (expected 0, 1 or 2) or an IVF "
                            "quantizer other than flat; benchroute writes neither")
        map_at = self.pos + 8
        n_map = self.vector(8, "IVF direct map")
        if n_map not in (0, ntotal) if kind == 1 else n_map != 0:
            raise self.fail(f"IVF direct map of type {kind} holds {n_map} entries for "
                            f"{ntotal} vectors")
        if kind == 2:
            self.vector(16, "IVF direct map hash table")
        tag, n2, code_size = self.take("4sQQ", "IVF inverted lists header")
        if tag != b"ilar" or n2 != nlist or code_size != 4 * d:
            raise self.fail(f"IVF inverted lists header ({tag!r}, {n2}, {code_size}) "
                            f"disagrees with nlist = {nlist}, d = {d}")
        (layout,) = self.take("4s", "IVF list layout")
        if layout != b"full":
            raise self.fail(f"IVF list layout {layout!r}; benchroute writes 'full'")
        if self.vector(8, "IVF list sizes") != nlist:
            raise self.fail(f"IVF list sizes disagree with nlist = {nlist}")
        # copies: a view into the mapping would keep it from closing
        sizes = np.frombuffer(self.buf, dtype="<u8", count=nlist, offset=self.pos - 8 * nlist).copy()
        if int(sizes.max(initial=0)) > ntotal or int(sizes.sum()) != ntotal:
            raise self.fail(f"IVF lists hold {int(sizes.sum())} vectors, the header says {ntotal}")
        need = ntotal * (code_size + 8)
        if need > self.size - self.pos:
            raise self.fail(f"IVF lists need {need} bytes, only {self.size - self.pos} remain")
        for n in sizes.tolist():  # each list: codes, then the row ids search returns
            self.pos += n * code_size
            lo, hi = _id_range(self.buf, self.pos, n)
            if lo < 0 or hi >= ntotal:
                raise self.fail(f"IVF list at byte {self.pos} holds row ids outside "
                                f"0..{ntotal - 1}")
            self.pos += n * 8
        if kind == 1 and n_map:
            entries = np.frombuffer(self.buf, dtype="<i8", count=n_map, offset=map_at).copy()
            lists, offsets = entries >> 32, entries & 0xFFFFFFFF
            if (entries < 0).any() or (lists >= nlist).any() \
                    or (offsets >= sizes[np.minimum(lists, nlist - 1)]).any():
                raise self.fail("IVF direct map points outside the inverted lists")
        return d, ntotal, True


def _id_range(buf: mmap.mmap | bytes, pos: int, n: int) -> tuple[int, int]:
    """(min, max) of ``n`` int64 ids at ``pos``; the array view is gone when this returns, so
    the mapping can be closed."""
    if n == 0:
        return 0, 0
    ids = np.frombuffer(buf, dtype="<i8", count=n, offset=pos)
    return int(ids.min()), int(ids.max())


def check_faiss_file(path: Path, rows: int | None = None, dimension: object = None) -> None:
    """Raise a :class:`BenchrouteError` unless ``path`` is plausible as a FAISS index of ``rows``
    vectors of ``dimension`` (as ``index.json`` says), judged from its bytes and its size."""
    try:
        size = path.stat().st_size
        if size < _HEADER.size + 8:
            raise BenchrouteError(f"{path}: corrupt FAISS index: {size} bytes is too short")
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            walk = _Walk(buf, path)
            d, ntotal, walked = walk.index()
            end = walk.pos
    except OSError as exc:
        raise BenchrouteError(f"{path}: cannot read the FAISS index ({exc})") from exc
    if walked and end != size:
        raise BenchrouteError(f"{path}: corrupt FAISS index: the index ends at byte {end}, the "
                              f"file has {size} bytes")
    if rows is not None and ntotal != rows:
        raise BenchrouteError(f"{path}: holds {ntotal} vectors, index.json describes {rows} rows")
    if dimension is not None and d != dimension:
        raise BenchrouteError(f"{path}: vectors of dimension {d}, index.json says {dimension!r}")
