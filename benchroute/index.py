"""FAISS index over the benchmark inputs, with per-dataset exclusion for leave-one-task-out.

Exclusion uses FAISS's search-time ID selectors, so one index serves every held-out task: no
rebuild, no over-fetch-and-filter heuristics, and exact results for the flat index.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchroute._persist import read_versioned_json, write_file_atomic
from benchroute.exceptions import BenchrouteError
from benchroute.faiss_check import check_faiss_file

INDEX_FORMAT_VERSION = 1
#: rows checked at a time when an index is loaded (about 200 MB of float32 at 768-d)
_CHECK_CHUNK = 65_536


def _faiss() -> Any:
    import faiss

    return faiss


class VectorIndex:
    """Inner-product index of unit vectors; distances come back as cosine distances.

    Parameters
    ----------
    factory : str
        A FAISS index-factory string: ``"Flat"`` (exact, the default), ``"IVF1024,Flat"``,
        ``"HNSW32"``, ... The metric is always inner product.
    nprobe, ef_search : int, optional
        Search-time knobs for IVF and HNSW indexes.
    """

    def __init__(self, factory: str = "Flat", nprobe: int | None = None,
                 ef_search: int | None = None) -> None:
        self.factory = factory
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.index_: Any = None
        self.datasets_: np.ndarray = np.array([], dtype=object)
        self.instance_ids_: np.ndarray = np.array([], dtype=object)
        self.encoder_id: str | None = None
        #: the file the index is memory-mapped from (read-only), or None when it is in memory
        self.mapped_from: Path | None = None
        #: a flat index's results re-scored per query, ties by row (:func:`_exact_order`);
        #: off only to check a router saved before that, in FAISS's own order
        self.exact_order = True

    def __len__(self) -> int:
        return 0 if self.index_ is None else int(self.index_.ntotal)

    @property
    def dimension(self) -> int:
        return 0 if self.index_ is None else int(self.index_.d)

    # ------------------------------------------------------------------ building
    def add(self, vectors: np.ndarray, datasets: Sequence[str] | np.ndarray,
            instance_ids: Sequence[str] | None = None) -> VectorIndex:
        """Append rows; the first call creates (and for IVF trains) the index."""
        faiss = _faiss()
        if self.mapped_from is not None:  # FAISS aborts the process on a resize of mapped codes
            raise BenchrouteError(f"the index is memory-mapped from {self.mapped_from} and "
                                  "read-only; load it with mmap=False to add inputs")
        x = np.ascontiguousarray(vectors, dtype="float32")
        if x.ndim != 2:
            raise BenchrouteError(f"vectors must be 2-D (n, d), got shape {x.shape}")
        if len(datasets) != len(x):
            raise BenchrouteError(f"{len(x)} vectors but {len(datasets)} dataset labels")
        ids = list(instance_ids) if instance_ids is not None else [str(len(self) + i) for i in range(len(x))]
        if self.index_ is not None and x.shape[1] != self.dimension:
            raise BenchrouteError(f"vectors have dimension {x.shape[1]}, the index {self.dimension}")
        twice = repeated_row(np.r_[self.datasets_, np.asarray(datasets, dtype=object)],
                             np.r_[self.instance_ids_, np.asarray(ids, dtype=object)])
        if twice is not None:  # a router maps inputs to rows by the pair: one would be lost
            raise BenchrouteError(f"instance {twice[1]!r:.80} of dataset {twice[0]!r:.80} is "
                                  "given twice; each pool row is one input")
        start = len(self)
        lossy: tuple[int, tuple[int, str] | None] = (0, None)
        try:  # FAISS refuses a factory string, or training on too few vectors, as RuntimeError
            if self.index_ is None:
                self.index_ = faiss.index_factory(x.shape[1], self.factory,
                                                  faiss.METRIC_INNER_PRODUCT)
            if not self.index_.is_trained:
                self.index_.train(x)
            # a code that may not store the vectors as given is asked first: rows FAISS took
            # could not all be taken back (an HNSW graph keeps them)
            lossy = self._coded_off_unit(x, start)
            if lossy[1] is None:
                self.index_.add(x)
        except RuntimeError as exc:
            if not start:  # nothing was added yet: the next add starts afresh
                self.index_ = None
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise BenchrouteError(f"index_factory {self.factory!r}: FAISS cannot build or train "
                                  f"it on {len(x)} vectors of dimension {x.shape[1]} "
                                  f"({message:.200})") from None
        n_bad, first = lossy
        if first is not None:
            if not start:
                self.index_ = None
            raise BenchrouteError(
                f"index_factory {self.factory!r} stores {n_bad} of "
                f"{min(len(x), _CODE_SAMPLE)} vectors checked off the unit sphere (row "
                f"{first[0]}: {first[1]}): a lossy code, whose distances cannot recognise an "
                "input as itself; use Flat, HNSW<M>, IVF<n>,Flat or SQfp16 (saved, it "
                "would not load); nothing was added")
        self.datasets_ = np.concatenate([self.datasets_, np.asarray(datasets, dtype=object)])
        self.instance_ids_ = np.concatenate([self.instance_ids_, np.asarray(ids, dtype=object)])
        return self

    def _coded_off_unit(self, x: np.ndarray, start: int) -> tuple[int, tuple[int, str] | None]:
        """How many of vectors ``x`` (rows ``start`` on) are off the unit sphere as the trained
        index's code would store them, and the first (row, what is wrong), before they are
        added: a sample of them through its codec's round trip, which equals ``reconstruct``
        after an add. A flat index stores them as given."""
        faiss = _faiss()
        if isinstance(faiss.downcast_index(self.index_), faiss.IndexFlat):
            return 0, None
        pick = np.arange(len(x))
        if len(pick) > _CODE_SAMPLE:
            pick = np.linspace(0, len(x) - 1, _CODE_SAMPLE).astype(np.int64)
        n_bad, first = _off_unit_rows(_round_trip(faiss, self.index_, x[pick]))
        return n_bad, None if first is None else (start + int(pick[first[0]]), first[1])

    def can_take_back(self) -> bool:
        """Whether FAISS can remove this index's last rows (:meth:`truncate`): flat codes and
        IVF lists can, alone or under a transform (PCA, OPQ); an HNSW graph, a refined index
        cannot."""
        return self.index_ is None or _removable(_faiss(), self.index_)

    def truncate(self, n: int) -> None:
        """Take every row from ``n`` on back out, so that the index is as it was with ``n``
        rows (a pool change that failed after its rows were added). An IVF index's direct map
        is dropped for the removal (FAISS removes nothing through an array map) and rebuilt
        as it was."""
        faiss = _faiss()
        if self.index_ is not None and n < len(self):
            if not self.can_take_back():
                raise BenchrouteError(f"index_factory {self.factory!r}: FAISS cannot remove rows "
                                      "from this index")
            if n == 0:
                self.index_ = None
            else:
                ivf = faiss.try_extract_index_ivf(self.index_)
                kind = None if ivf is None else ivf.direct_map.type
                if kind == faiss.DirectMap.Array:
                    ivf.set_direct_map_type(faiss.DirectMap.NoMap)
                self.index_.remove_ids(faiss.IDSelectorRange(n, len(self)))
                if kind == faiss.DirectMap.Array:
                    ivf.set_direct_map_type(kind)
        self.datasets_, self.instance_ids_ = self.datasets_[:n], self.instance_ids_[:n]

    def copy(self) -> VectorIndex:
        """A copy of this index that shares no FAISS memory with it (``faiss.clone_index``: as
        much memory again as the index). An index FAISS cannot clone (an ``L2norm`` or ``ITQ``
        transform) is copied through its serialised bytes, as ``save`` writes them: an HNSW
        graph under one failed every ``add_results`` with FAISS's raw error (found by a review)."""
        out = VectorIndex(self.factory, self.nprobe, self.ef_search)
        out.index_ = None if self.index_ is None else _clone(_faiss(), self.index_)
        out.datasets_, out.instance_ids_ = self.datasets_, self.instance_ids_  # never changed in place
        out.encoder_id, out.exact_order = self.encoder_id, self.exact_order
        return out

    @contextlib.contextmanager
    def appending(self) -> Iterator[VectorIndex]:
        """The index to append rows to in a change that must be all or nothing (a router's
        pool change, whose later steps can fail after the rows went in).

        Where FAISS can take rows back out (:meth:`can_take_back`), this index itself, cut back
        to its present rows if the block raises: no copy of the pool. Where it cannot (an HNSW
        graph), a copy (:meth:`copy`, as much memory again while the block runs), which the
        caller keeps in place of this one when the block succeeds; this one is left untouched.
        A memory-mapped index is itself (its ``add`` refuses before anything changes)."""
        if self.mapped_from is None and not self.can_take_back():
            yield self.copy()
            return
        n = len(self)
        faiss = _faiss()
        ivf = None if self.index_ is None else faiss.try_extract_index_ivf(self.index_)
        kind = None if ivf is None else ivf.direct_map.type
        try:
            yield self
        except BaseException:
            self.truncate(n)
            if ivf is not None and ivf.direct_map.type != kind:  # as it was saved before
                ivf.set_direct_map_type(kind)
            raise

    def rows_of(self, datasets: Iterable[str]) -> np.ndarray:
        return np.flatnonzero(np.isin(self.datasets_, list(datasets)))

    # ------------------------------------------------------------------ searching
    def _params(self, exclude_rows: np.ndarray | None) -> tuple[Any, tuple[Any, ...]]:
        """FAISS search parameters, and the selector objects they point to: SWIG does not own
        them, so the caller holds the tuple until its search returns (no shared state)."""
        faiss = _faiss()
        sel = None
        held: tuple[Any, ...] = ()
        if exclude_rows is not None and len(exclude_rows):
            batch = faiss.IDSelectorBatch(np.ascontiguousarray(exclude_rows, dtype="int64"))
            sel = faiss.IDSelectorNot(batch)
            held = (batch, sel)
        inner = faiss.downcast_index(self.index_)
        if "IVF" in type(inner).__name__:
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self.nprobe or 1)
        elif "HNSW" in type(inner).__name__:
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=self.ef_search or 16)
        elif sel is not None:
            params = faiss.SearchParameters(sel=sel)
        else:
            params = None
        return params, held

    def search(self, queries: np.ndarray, k: int, exclude_datasets: Iterable[str] | None = None,
               exclude_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest pool rows of each query.

        Returns
        -------
        distances : ndarray (n, k)
            Cosine distances ``1 - <q, x>``, ascending; ``inf`` where fewer than k rows qualify.
        rows : ndarray (n, k), int64
            Pool row numbers, ``-1`` where fewer than k rows qualify.
        """
        if self.index_ is None:
            raise BenchrouteError("the index is empty; add vectors first")
        if isinstance(k, bool) or not float(k).is_integer() or k < 1:
            raise BenchrouteError(f"k == {k!r}, must be an integer >= 1")
        k = int(k)  # FAISS's wrapper takes a Python int only (np.int64(7) passes the checks)
        q = np.ascontiguousarray(queries, dtype="float32")
        if q.ndim == 1:
            q = q[None, :]
        if q.shape[1] != self.dimension:
            raise BenchrouteError(f"queries have dimension {q.shape[1]}, the index {self.dimension}")
        excl = exclude_rows
        if excl is not None:  # -1 excluded the last row, len(self) raised an IndexError
            excl = np.asarray(excl, dtype=np.int64).reshape(-1)
            if len(excl) and (excl.min() < 0 or excl.max() >= len(self)):
                raise BenchrouteError(f"exclude_rows must be pool rows 0 to {len(self) - 1}; "
                                      f"got {int(excl.min() if excl.min() < 0 else excl.max())}")
        if exclude_datasets is not None:
            rows = self.rows_of(exclude_datasets)
            excl = rows if excl is None else np.union1d(excl, rows)
        flat = self._flat_view()
        view = flat if self.exact_order else None
        kk = min(k + _MARGIN, len(self)) if view is not None else k
        if excl is not None and len(excl) and flat is not None:
            sims, rows_out = self._flat_search_excluding(q, kk, np.asarray(excl, dtype=np.int64))
        else:
            params, held = self._params(excl)
            try:
                sims, rows_out = self.index_.search(q, kk, params=params) if params is not None \
                    else self.index_.search(q, kk)
            except RuntimeError as exc:  # 'Flat,RFlat' takes no selector: an internal error
                message = str(exc).rsplit("Error:", 1)[-1].strip()  # FAISS's own words
                raise BenchrouteError(f"index_factory {self.factory!r}: FAISS cannot search it "
                                      f"leaving rows out ({message[:160]}); use Flat, HNSW<M> "
                                      "or IVF<n>,Flat") from None
            del held  # the selectors may go only after the search
        rows_out = rows_out.astype(np.int64)
        if view is not None:
            sims, rows_out = _exact_order(view, q, rows_out, k)
        dist = 1.0 - sims.astype(np.float64)
        dist[rows_out < 0] = np.inf
        return dist, rows_out

    def vectors(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The indexed vectors (n, d), or those of ``rows``: always a copy the caller owns (a
        view into FAISS's memory would not keep the index alive)."""
        if self.index_ is None:
            return np.zeros((0, 0), dtype=np.float32)
        view = self._flat_view()
        if view is not None:
            return view.copy() if rows is None else view[np.asarray(rows, dtype=np.int64)]
        faiss = _faiss()
        ivf = faiss.try_extract_index_ivf(self.index_)
        if ivf is not None and ivf.direct_map.no():
            ivf.make_direct_map()
        if rows is None:
            return np.asarray(self.index_.reconstruct_n(0, len(self)), dtype=np.float32)
        # only the rows asked for: a mapped pool may not fit in memory
        keys = np.ascontiguousarray(rows, dtype=np.int64).reshape(-1)
        if len(keys) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.asarray(self.index_.reconstruct_batch(keys), dtype=np.float32)

    def _flat_view(self) -> np.ndarray | None:
        """Zero-copy (n, d) view of a flat index's vectors, or None for other index types; for
        use inside this class only, while ``self`` is alive."""
        faiss = _faiss()
        inner = faiss.downcast_index(self.index_)
        if not isinstance(inner, faiss.IndexFlat) or len(self) == 0:
            return None
        n, d = len(self), self.dimension
        return faiss.rev_swig_ptr(inner.get_xb(), n * d).reshape(n, d)

    def _flat_search_excluding(self, q: np.ndarray, k: int, excl: np.ndarray
                               ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search of the rows not excluded, run by run.

        FAISS's flat search with an ID selector leaves BLAS for a per-row loop (about 7x slower
        here); datasets occupy contiguous rows, so the kept rows are a few contiguous runs that
        BLAS searches directly, and the per-run top k are merged.
        """
        faiss = _faiss()
        xb = self._flat_view()
        assert xb is not None
        keep = np.ones(len(xb), dtype=bool)
        keep[excl] = False
        edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
        runs = edges.reshape(-1, 2)
        if len(runs) > 32:  # scattered exclusions: one gathered copy instead of many runs
            kept = np.flatnonzero(keep)
            sims, idx = faiss.knn(q, np.ascontiguousarray(xb[kept]), int(min(k, len(kept))),
                                  metric=faiss.METRIC_INNER_PRODUCT)
            rows = np.where(idx >= 0, kept[np.maximum(idx, 0)], -1)
            return _pad(sims, rows, k)
        all_s, all_r = [], []
        for start, end in runs:
            sims, idx = faiss.knn(q, xb[start:end], int(min(k, end - start)),
                                  metric=faiss.METRIC_INNER_PRODUCT)
            all_s.append(sims)
            all_r.append(np.where(idx >= 0, idx + start, -1))
        if not all_s:
            return _pad(np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64), k)
        sims = np.concatenate(all_s, axis=1)
        rows = np.concatenate(all_r, axis=1)
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return _pad(np.take_along_axis(sims, order, axis=1), np.take_along_axis(rows, order, axis=1), k)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str], encoder_id: str | None = None) -> Path:
        """FAISS's own ``write_index`` plus a JSON sidecar with the row map; ``encoder_id``
        (default: this index's) is recorded without changing the index."""
        faiss = _faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        unmapped = _unmapped_copy(faiss, self.index_)  # a mapped IVF index's, see there
        _write_faiss(faiss, self.index_ if unmapped is None else unmapped,
                     folder / "index.faiss")
        sidecar = {
            "format_version": INDEX_FORMAT_VERSION,
            "encoder": self.encoder_id if encoder_id is None else encoder_id,
            "dimension": self.dimension, "factory": self.factory, "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "rows": [[str(d), str(i)] for d, i in zip(self.datasets_, self.instance_ids_)],
        }
        text = json.dumps(sidecar)
        write_file_atomic(folder / "index.json", lambda tmp: tmp.write_text(text), "index sidecar")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], mmap: bool = False) -> VectorIndex:
        """Read a saved index, checked against its sidecar. ``mmap``: map the vectors (or an IVF
        index's inverted lists) from the file instead of reading them into memory, for pools
        larger than memory or several processes sharing one pool through the page cache;
        the index is then read-only (``add`` refuses)."""
        faiss = _faiss()
        folder = Path(folder)
        path = folder / "index.json"
        meta = read_versioned_json(path, INDEX_FORMAT_VERSION, "index")
        _check_sidecar(path, meta)
        out = cls(meta.get("factory", "Flat"), meta.get("nprobe"), meta.get("ef_search"))
        check_faiss_file(folder / "index.faiss", dimension=meta.get("dimension"))  # before allocating
        try:
            flags = 0 if not mmap else \
                faiss.IO_FLAG_MMAP if "IVF" in out.factory else faiss.IO_FLAG_MMAP_IFC
            out.index_ = faiss.read_index(str(folder / "index.faiss"), flags)
        except RuntimeError as exc:
            raise BenchrouteError(f"{folder / 'index.faiss'}: unreadable FAISS index ({exc})") from exc
        rows = meta.get("rows", [])
        if len(rows) != out.index_.ntotal or out.index_.d != meta.get("dimension"):
            raise BenchrouteError(
                f"{folder}: index.json describes {len(rows)} rows of dimension "
                f"{meta.get('dimension')}, index.faiss holds {out.index_.ntotal} of {out.index_.d}"
            )
        out._check_unit_rows(folder / "index.faiss")
        out.datasets_ = np.array([r[0] for r in rows], dtype=object)
        out.instance_ids_ = np.array([r[1] for r in rows], dtype=object)
        out.encoder_id = meta.get("encoder")
        out.mapped_from = folder / "index.faiss" if mmap else None
        return out

    def make_exact(self) -> int:
        """Normalise a flat index's vectors in memory to float32's precision; the number of
        rows changed. Why: indexes saved before every vector was so normalised kept float16
        vectors' norms (up to 6e-5 off 1), at which an input was not recognised as itself
        (:data:`benchroute.predictors.SELF_DISTANCE`). A mapped or non-flat index is left as
        it is (0)."""
        from benchroute.embedding.base import unit_norm_rows

        view = self._flat_view() if self.mapped_from is None else None
        if view is None:
            return 0
        changed = 0
        for start in range(0, len(self), _CHECK_CHUNK):
            stop = min(start + _CHECK_CHUNK, len(self))
            X = view[start:stop]
            exact = unit_norm_rows(X, np.inf)[0]
            if exact is not X:
                changed += int((exact != X).any(axis=1).sum())
                view[start:stop] = exact  # FAISS's own memory: searches see it
        return changed

    def _check_unit_rows(self, path: Path) -> None:
        """The stored vectors are what ``fit`` accepts: finite, non-zero, of unit norm (cosine
        distances are 1 - inner products only for unit vectors), read back as searches see
        them."""
        view = self._flat_view()
        n_bad, first = 0, None
        for at in range(0, len(self), _CHECK_CHUNK):  # chunks: a mapped pool may exceed memory
            part = np.arange(at, min(at + _CHECK_CHUNK, len(self)))
            X = view[at:at + len(part)] if view is not None else self.vectors(part)
            bad, where = _off_unit_rows(X)
            if where is not None and first is None:
                first = (at + where[0], where[1])
            n_bad += bad
        if first is not None:
            raise BenchrouteError(f"{path}: {n_bad} stored vector(s) are not finite unit "
                                  f"vectors (row {first[0]}: {first[1]}); fit refuses such "
                                  "vectors, rebuild the index")


def _off_unit_rows(X: np.ndarray) -> tuple[int, tuple[int, str] | None]:
    """How many rows of X are not finite unit vectors, and the first (its position, what is
    wrong)."""
    from benchroute.embedding.base import NORM_TOL, unit_norm_rows

    _, broken, off = unit_norm_rows(X, NORM_TOL, normalise=False)
    bad = broken | off
    if not bad.any():
        return 0, None
    i = int(np.flatnonzero(bad)[0])
    what = "NaN or infinite values" if not np.isfinite(X[i]).all() else \
        "all zeros" if broken[i] else f"norm {float(np.linalg.norm(X[i])):.4g}"
    return int(bad.sum()), (i, what)


def _round_trip(faiss: Any, index: Any, x: np.ndarray) -> np.ndarray:
    """Vectors ``x`` as a trained ``index`` would store them and read them back, without
    adding them: its standalone codec (``sa_encode``/``sa_decode``), reached through a
    transform (PCA, OPQ) or a graph's storage (HNSW) where the index has none of its own. An
    index type with no codec reachable is asked through a trial copy (as much memory again)."""
    index = faiss.downcast_index(index)
    x = np.ascontiguousarray(x, dtype="float32")
    try:
        return np.asarray(index.sa_decode(index.sa_encode(x)), dtype=np.float32)
    except RuntimeError:  # "standalone codec not implemented for this type of index"
        pass
    if isinstance(index, faiss.IndexPreTransform):
        chain = [index.chain.at(i) for i in range(index.chain.size())]
        for vt in chain:
            x = vt.apply(x)
        y = _round_trip(faiss, index.index, x)
        for vt in reversed(chain):
            y = vt.reverse_transform(y)
        return np.asarray(y, dtype=np.float32)
    if getattr(index, "storage", None) is not None:  # IndexHNSW, IndexNSG
        return _round_trip(faiss, index.storage, x)
    if isinstance(index, faiss.IndexRefine):  # its searches' distances, and reconstruct, are
        return _round_trip(faiss, index.refine_index, x)  # the refine index's
    trial = _clone(faiss, index)
    trial.add(x)
    return np.asarray(trial.reconstruct_n(trial.ntotal - len(x), len(x)), dtype=np.float32)


def _clone(faiss: Any, index: Any) -> Any:
    """``faiss.clone_index``, or where FAISS has no clone for a part of the index, a read of
    its serialised bytes (twice its memory while they are held)."""
    unmapped = _unmapped_copy(faiss, index)
    if unmapped is not None:
        return unmapped
    try:
        return faiss.clone_index(index)
    except RuntimeError:  # "clone not supported for this type of VectorTransform"
        return faiss.deserialize_index(faiss.serialize_index(index))


def _unmapped_copy(faiss: Any, index: Any) -> Any:
    """A copy of an IVF index whose inverted lists are FAISS's on-disk lists (a load with
    ``mmap=True``), with them as in-memory lists; None for any other index. Why: FAISS writes
    on-disk lists as a reference into the file they were mapped from ('ilod'), which no load
    reads as an index of its own (saved over its own folder, the router was lost), and clones
    or deserialises none of them (found by fuzzing). The index itself is only read: its lists
    were once swapped for the copy during the write, and a search on another thread that
    still held the copy when it was freed crashed the process (found by a review). The
    copy's structure is the index's bytes read without their lists (the 'ilod' reference is
    then not opened)."""
    ivf = None if index is None else faiss.try_extract_index_ivf(index)
    if ivf is None or isinstance(faiss.downcast_InvertedLists(ivf.invlists),
                                 faiss.ArrayInvertedLists):
        return None
    held = ivf.invlists
    writer = faiss.VectorIOWriter()
    faiss.write_index(index, writer)
    reader = faiss.VectorIOReader()
    reader.data.swap(writer.data)
    out = faiss.read_index(reader, faiss.IO_FLAG_SKIP_IVF_DATA)
    lists = faiss.ArrayInvertedLists(held.nlist, held.code_size)
    for no in range(held.nlist):
        if held.list_size(no):
            lists.add_entries(no, held.list_size(no), held.get_ids(no), held.get_codes(no))
    lists.this.disown()  # ``out`` owns them now: Python must not free them too
    faiss.try_extract_index_ivf(out).replace_invlists(lists, True)
    return out


def _removable(faiss: Any, index: Any) -> bool:
    """Whether FAISS's ``remove_ids`` can take rows out of ``index`` and leave the others'
    row numbers as they were (flat codes compact in order; IVF lists keep their ids)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        return _removable(faiss, index.index)
    return isinstance(index, (faiss.IndexFlatCodes, faiss.IndexIVF))


def _write_faiss(faiss: Any, index: Any, path: Path) -> None:
    """``faiss.write_index`` through a Python file, temp name + rename.

    Writing by file name, FAISS only prints a warning when the disk fills up (the error comes
    at close) and leaves a truncated file; through a callback the ``OSError`` reaches us.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            writer = faiss.PyCallbackIOWriter(fh.write)
            faiss.write_index(index, writer)
            del writer
            fh.flush()
            os.fsync(fh.fileno())
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip()
        raise BenchrouteError(f"{path}: cannot write the FAISS index ({reason})") from exc
    os.replace(tmp, path)


def is_search_knob(v: object) -> bool:
    """``nprobe`` or ``ef_search``: None or an integer in [1, 2**31). FAISS holds them in a C
    int (2**40 raised its raw OverflowError)."""
    return v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                         and 1 <= int(v) < 2**31)


def _check_sidecar(path: Path, meta: dict[str, Any]) -> None:
    """Every field of index.json has the type the loader needs."""
    def bad(field: str, expected: str) -> BenchrouteError:
        return BenchrouteError(f"{path}: field {field!r} is invalid; expected {expected}")

    rows = meta.get("rows", [])
    if not isinstance(rows, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(v, str) for v in r) for r in rows):
        raise bad("rows", "a list of [dataset, instance_id] string pairs")
    twice = repeated_row(*zip(*rows)) if rows else None
    if twice is not None:  # a router maps inputs to rows by this pair: one would be lost
        raise bad("rows", f"distinct [dataset, instance_id] pairs ({list(twice)!r:.120} is "
                  "given twice)")
    if not isinstance(meta.get("factory", "Flat"), str):
        raise bad("factory", "a FAISS index-factory string")
    for name in ("nprobe", "ef_search"):
        if not is_search_knob(meta.get(name)):
            raise bad(name, "null or an integer in [1, 2**31)")
    if not isinstance(meta.get("dimension"), int) or isinstance(meta.get("dimension"), bool):
        raise bad("dimension", "an integer")
    if meta.get("encoder") is not None and not isinstance(meta.get("encoder"), str):
        raise bad("encoder", "null or a string")


def repeated_row(datasets: Sequence[str] | np.ndarray, instance_ids: Sequence[str] | np.ndarray
                 ) -> tuple[str, str] | None:
    """The first (dataset, instance_id) pair that occurs twice, or None."""
    import pandas as pd

    keys = pd.MultiIndex.from_arrays([np.asarray(datasets, dtype=object),
                                      np.asarray(instance_ids, dtype=object)])
    twice = np.flatnonzero(keys.duplicated())
    return None if not len(twice) else (str(datasets[twice[0]]), str(instance_ids[twice[0]]))


#: vectors of an add passed through the index's code before it, to tell a lossy code (SQ8 put a
#: third of them off the unit sphere; a sample, so that an add of millions is not coded twice)
_CODE_SAMPLE = 4096

#: candidates searched beyond k for :func:`_exact_order`, so that rows tied with the k-th
#: (duplicates of one text) are all seen before the tie is broken
_MARGIN = 8
#: queries re-scored at a time (their candidates' vectors: 64 x (k + 8) x d floats)
_RESCORE_CHUNK = 64


def _exact_order(view: np.ndarray, q: np.ndarray, rows: np.ndarray, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each query's candidates, re-scored one query at a time and ordered by
    similarity, then row. Why: FAISS scores a batch of queries in blocks whose rounding depends
    on the batch's size, and returns tied rows in no fixed order, so a prompt routed with 255
    others (a Ray task, a gateway micro-batch) could get other neighbours, and another P, than
    routed alone or with 2,999 others (found by a review). One (k + 8) x d product per query
    (0.3x the search's time at 20,000 x 768) makes every result independent of the batch,
    unless more than 8 rows tie with the k-th (which of them FAISS returns is its choice)."""
    sims = np.full(rows.shape, -np.inf, dtype=np.float32)
    for a in range(0, len(q), _RESCORE_CHUNK):
        r = rows[a:a + _RESCORE_CHUNK]
        ok = r >= 0
        # einsum: each score from its row alone (a BLAS product scored identical rows
        # differently by their place among the candidates, so ties went by FAISS's order)
        got = np.einsum("qkd,qd->qk", view[np.where(ok, r, 0)], q[a:a + _RESCORE_CHUNK])
        sims[a:a + _RESCORE_CHUNK] = np.where(ok, got, -np.inf)
    order = np.lexsort((np.where(rows >= 0, rows, np.iinfo(np.int64).max), -sims),
                       axis=-1)[:, :k]
    sims, rows = np.take_along_axis(sims, order, 1), np.take_along_axis(rows, order, 1)
    return _pad(sims, np.where(np.isfinite(sims), rows, -1), k)


def _pad(sims: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad to k columns with -inf similarity and row -1, as FAISS does when rows run out."""
    missing = k - sims.shape[1]
    if missing <= 0:
        return sims, rows.astype(np.int64)
    n = len(sims)
    return (np.concatenate([sims, np.full((n, missing), -np.inf, dtype=sims.dtype)], axis=1),
            np.concatenate([rows, np.full((n, missing), -1, dtype=np.int64)], axis=1).astype(np.int64))
