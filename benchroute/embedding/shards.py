"""The embedding cache's folder on disk: its ``meta.json``, its shards, its temporary files and
the writers' lock.

:class:`~benchroute.embedding.cache.EmbeddingCache` keeps the lookup index (key → shard, row)
in memory and decides what to write; this module reads and writes the files, so that every
file it touches is checked the same way and written atomically (temporary name, then rename).
Nothing read here is trusted: a bad field raises :class:`~benchroute.exceptions.CacheError`
naming the file and what to do about it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchroute._persist import HEX64, read_versioned_json
from benchroute.embedding.base import unit_norm_rows
from benchroute.exceptions import CacheError
from benchroute.npz import read_npz

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
# Temporary files this old were left by a killed or failed writer (a live one renames its file
# within seconds); they are removed when the cache is opened. Under the lock, all of them are.
STALE_TMP_SECONDS = 3600.0
UNIT_NORM_TOL = 1e-2  # float16 storage keeps norms within ~1e-3 of 1
# what read_npz raises (damaged deflate streams among its ValueErrors)
SHARD_ERRORS = (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError)


# ---------------------------------------------------------------------- meta.json
def read_meta(meta_path: Path, encoder_id: str, dimension: int | None) -> int | None:
    """The dimension stored in ``meta_path``, or ``dimension`` when there is no such file yet.

    The file must name ``encoder_id`` and, when ``dimension`` is known and positive, hold it.
    """
    if not meta_path.exists():
        return dimension
    if not meta_path.is_file():  # a folder, say: read as absent, its write then failed raw
        raise CacheError(f"{meta_path}: is not a file; remove it to rebuild the cache's meta")
    meta = read_versioned_json(meta_path, CACHE_FORMAT_VERSION, "cache", CacheError)
    if meta.get("encoder") != encoder_id:
        raise CacheError(f"{meta_path}: holds {meta.get('encoder')!r}, not {encoder_id!r}")
    stored = meta.get("dimension")
    if isinstance(stored, bool) or not isinstance(stored, int) or not 0 < stored <= 1 << 20:
        raise CacheError(f"{meta_path}: field 'dimension' is {stored!r}, expected a "
                         "positive integer; delete the file to rebuild it")
    if dimension is not None and dimension > 0 and stored != dimension:
        raise CacheError(
            f"{meta_path}: stored vectors have dimension {stored}, the encoder gives "
            f"{dimension}"
        )
    return stored


def write_meta(folder: Path, encoder_id: str, dimension: int | None) -> None:
    """Write ``<folder>/meta.json`` unless it exists; the first writer's file stands."""
    meta = folder / "meta.json"
    if meta.is_file():
        return
    tmp = folder / f".meta-{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_text(json.dumps({"format_version": CACHE_FORMAT_VERSION,
                                   "encoder": encoder_id, "dimension": dimension}))
        os.replace(tmp, meta)
    except OSError as exc:  # a full disk, or a folder in its place: nothing left behind
        tmp.unlink(missing_ok=True)
        raise CacheError(f"{meta}: cannot write ({exc.strerror or exc})") from exc


# ---------------------------------------------------------------------- shards
def shard_keys(shard: Path) -> np.ndarray:
    """A shard's keys, one per vector it holds (the vectors' shape is read from their header
    only, so opening a large cache does not load every vector)."""
    return read_npz(shard, {"sha256": ("n",), "embedding": ("n", None)},
                    kinds={"sha256": "US", "embedding": "f"}, load=["sha256"])["sha256"]


def read_shard_vectors(shard: Path, rows: int, dimension: int | None) -> np.ndarray:
    """A shard's (rows, d) vectors, of unit norm; ``dimension`` None or 0 accepts any d."""
    try:
        vectors = read_npz(shard, {"embedding": (rows, dimension or None)},
                           kinds={"embedding": "f"})["embedding"]
    except ValueError as exc:  # the headers' checks, naming the field
        raise CacheError(f"{shard}: {exc}; delete the shard") from exc
    except SHARD_ERRORS as exc:
        raise CacheError(f"{shard}: corrupt embedding shard ({exc}); delete it") from exc
    return unit_rows(vectors, f"{shard}: field 'embedding'", "delete the shard")


#: The shards' file names: ``shard-<random hex>.npz``; written by :func:`write_shard` only.
SHARD_GLOB = "shard-*.npz"


def shard_paths(folder: Path) -> list[Path]:
    """The shards of a cache folder, sorted (temporary files of writes in flight excluded)."""
    return sorted(folder.glob(SHARD_GLOB))


def write_shard(folder: Path, keys: list[str], rows: np.ndarray) -> Path:
    """Write one shard of ``keys`` (n,) and ``rows`` (n, d) under a fresh name; atomic, and a
    failed write (a full disk) leaves no file behind."""
    name = f"shard-{uuid.uuid4().hex}.npz"
    tmp = folder / f".{name}.tmp"
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, sha256=np.array(keys), embedding=rows)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:  # a full disk: leave no partial file behind
        tmp.unlink(missing_ok=True)
        raise CacheError(f"{tmp}: cannot write an embedding shard ({exc.strerror or exc})") from exc
    final = folder / name
    os.replace(tmp, final)
    return final


def read_embeddings_file(path: Path, dimension: int | None) -> tuple[list[str], np.ndarray]:
    """The hex keys (n) and vectors (n, d) of a precomputed ``sha256``/``embedding`` file.

    Keys must be 64 hex digits and vectors finite floats; vectors are returned of unit norm,
    except float16 ones already within :data:`UNIT_NORM_TOL` of it, returned as they are: a
    cache stores them so (half the size of float32) and makes them exact when it reads them.
    """
    try:
        z = read_npz(path, {"sha256": ("n",), "embedding": ("n", dimension or None)},
                     kinds={"sha256": "US", "embedding": "f"})
    except ValueError as exc:
        raise CacheError(f"{path}: {exc}") from exc
    except (*SHARD_ERRORS, TypeError) as exc:
        raise CacheError(f"{path}: not an embeddings file with 'sha256' and 'embedding' "
                         f"arrays ({exc})") from exc
    raw_keys, vectors = z["sha256"], z["embedding"]
    keys = [str(k) for k in raw_keys.tolist()]
    bad = next((k for k in keys if not HEX64.fullmatch(k)), None)
    if bad is not None:
        raise CacheError(f"{path}: field 'sha256' holds {bad[:80]!r}, expected 64 lower-case "
                         "hex digits")
    if vectors.ndim != 2 or len(vectors) != len(keys) or vectors.dtype.kind != "f":
        raise CacheError(f"{path}: field 'embedding' has shape {vectors.shape} and type "
                         f"{vectors.dtype}, expected ({len(keys)}, d) floats")
    first: dict[str, int] = {}
    for i, key in enumerate(keys):  # the last of a repeated key won, silently
        j = first.setdefault(key, i)
        if j != i and not np.array_equal(vectors[i], vectors[j]):
            raise CacheError(f"{path}: field 'sha256' holds {key[:12]}… at rows {j} and {i} "
                             "with different vectors: which is the text's is unknown")
    if vectors.dtype == np.float16:  # kept as given when nothing needs saying or refusing
        _, broken, off = unit_norm_rows(vectors, UNIT_NORM_TOL, normalise=False)
        if not (broken.any() or off.any()):
            return keys, vectors
    return keys, unit_rows(vectors, f"{path}: field 'embedding'", "the file is refused")


def unit_rows(vectors: np.ndarray, what: str, refusal: str) -> np.ndarray:
    """``vectors`` as float32 rows of unit norm (:func:`unit_norm_rows`).

    Rows that are not finite or are all zero cannot be repaired and raise a
    :class:`CacheError` (``refusal`` says what happens to them); rows whose norm is off by more
    than :data:`UNIT_NORM_TOL` are normalised with a warning, since cosine distances between
    them would otherwise be silently wrong.
    """
    vectors = np.asarray(vectors)
    out, broken, off = unit_norm_rows(vectors, UNIT_NORM_TOL)
    if broken.any():
        raise CacheError(f"{what}: {int(broken.sum())} of {len(out)} vectors are not finite or "
                         f"are zero (first at row {int(np.flatnonzero(broken)[0])}); {refusal}")
    if off.any():
        first = int(np.flatnonzero(off)[0])
        logger.warning("%s: %d of %d vectors were not of unit norm (first at row %d, norm %.4g) "
                       "and were normalised", what, int(off.sum()), len(out), first,
                       float(np.linalg.norm(vectors[first].astype(np.float64))))
    return np.ascontiguousarray(out)  # float32 rows of unit norm to its precision


# ---------------------------------------------------------------------- temporaries and lock
def remove_stale_temporaries(folder: Path, max_age: float | None = STALE_TMP_SECONDS
                             ) -> list[Path]:
    """Delete ``.*.tmp`` files in ``folder`` older than ``max_age`` seconds (None: all)."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        try:
            if max_age is None or now - tmp.stat().st_mtime > max_age:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # gone already, or a read-only cache: nothing to clean then
            continue
    if removed:
        logger.info("removed %d temporary file(s) left in %s", len(removed), folder)
    return removed


#: One re-entrant lock per cache folder for the threads of this process (the file lock is
#: the process's, so its threads need their own); kept here, not on the object, so that a
#: cache still pickles.
_THREAD_LOCKS: dict[str, threading.RLock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def thread_lock(folder: Path) -> threading.RLock:
    """The threads' lock of a cache folder (re-entrant), taken before its file lock."""
    key = os.path.abspath(folder)
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(key, threading.RLock())


def _fresh_thread_locks() -> None:
    """A forked child starts with locks of its own: one held by a thread of the parent, which
    the child does not have, was never released there (its embeds hung; found by a review)."""
    global _THREAD_LOCKS_GUARD
    _THREAD_LOCKS.clear()
    _THREAD_LOCKS_GUARD = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_thread_locks)


class FolderLock:
    """Exclusive advisory lock on ``<folder>/.lock``, re-entrant within this object and
    released by the kernel if the process dies; threads of one process take turns on a lock of
    their own first (the depth was shared, so a second thread "re-entered" without the file
    lock, and the stale-file sweep deleted the first thread's shard as it was written; found
    by fuzzing).

    Only the nesting depth is kept between uses, so the lock can be copied or pickled with the
    cache that owns it; the file is open only while the lock is held.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.depth = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[bool]:
        """Hold the lock for the ``with`` block; yields whether a lock is actually held."""
        with thread_lock(self.folder), self._hold() as held:
            yield held

    @contextlib.contextmanager
    def _hold(self) -> Iterator[bool]:
        if self.depth:
            self.depth += 1
            try:
                yield True
            finally:
                self.depth -= 1
            return
        try:
            import fcntl
        except ImportError:  # no fcntl (Windows): writers still re-read the shards per chunk
            yield False
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fh = open(self.folder / ".lock", "a+b")  # noqa: SIM115 (closed below)
        except OSError as exc:  # a read-only or foreign cache: an OSError naming a lock file
            raise CacheError(
                f"{self.folder}: cannot write to the embedding cache ({exc.strerror or exc}); the texts "
                "it holds are served, new ones cannot be stored: point --store or "
                "$BENCHROUTE_HOME at a writable folder") from exc
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            except OSError as exc:  # file systems without locks (some network mounts)
                logger.debug("no lock on %s (%s)", fh.name, exc)
                yield False
                return
            self.depth = 1
            try:
                yield True
            finally:
                self.depth = 0
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
