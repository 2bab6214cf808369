"""Content-addressed embedding cache: key = (encoder identifier, :func:`text_key` of the text).

The key is the SHA-256 of the *normalised* text (:func:`benchroute.data.text.normalize_text`),
so copies of one input that differ only in line endings or surrounding whitespace share a vector.

Layout: ``<root>/<encoder slug>/meta.json`` plus append-only shards ``shard-*.npz`` holding
``sha256`` (n,) and ``embedding`` (n, d). A shard is written to a temporary name and renamed, so
a reader lists only complete shards and a killed job loses at most the batch in flight. The
lookup index (key → shard, row) is rebuilt from the shards' keys when the cache is opened, which
keeps concurrent writers free of a shared manifest to corrupt. Writers take an advisory lock
(``.lock``, where the platform has ``fcntl``) around each chunk and re-read the shard list under
it, so processes embedding overlapping texts never write the same key twice.

Nothing in the folder is trusted: a shard whose keys and vectors disagree in number is ignored
and reported like a truncated one; vectors that are not finite are refused; vectors that are not
of unit norm are normalised with a warning. The files themselves (meta.json, shards, temporary
files, the lock) are read and written by :mod:`benchroute.embedding.shards`; this class keeps the
lookup index and decides what to write.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from benchroute.data.text import text_key
from benchroute.embedding import shards
from benchroute.embedding.base import Encoder, as_texts, check_size, encode_reporting
from benchroute.embedding.shards import SHARD_ERRORS, STALE_TMP_SECONDS, unit_rows
from benchroute.exceptions import CacheError, ModelNotInstalledError

logger = logging.getLogger(__name__)

#: Whether embeddings show a bar when the caller does not say (None: for long jobs); the
#: command line's -q sets it for everything a command embeds, deep inside ``fit`` too.
_PROGRESS: contextvars.ContextVar[bool | None] = contextvars.ContextVar("progress", default=None)


@contextlib.contextmanager
def progress_bars(show: bool | None) -> Iterator[None]:
    """Embedding progress bars on or off within the block, where a call does not say."""
    token = _PROGRESS.set(show)
    try:
        yield
    finally:
        _PROGRESS.reset(token)

#: Texts of an imported file embedded again to check that its vectors are this encoder's
IMPORT_CHECKS = 3
#: The cosine an imported vector must reach against its text embedded here. A float16 file of
#: the same encoder reaches 0.9999999 (docs/performance.md); the same model at a word-piece cap
#: of 128 gave 0.86 on texts longer than the cap.
IMPORT_MIN_COSINE = 0.999

__all__ = ["EmbeddingCache", "default_cache_dir", "text_key"]


def default_cache_dir() -> Path:
    from benchroute.embedding.install import benchroute_home

    return benchroute_home() / "embeddings"


class EmbeddingCache:
    """Embeddings of one encoder, stored on disk by text hash.

    Parameters
    ----------
    root : path-like, optional
        Cache folder (default ``$BENCHROUTE_HOME/embeddings``); each encoder gets a subfolder.
    encoder_id : str
        The encoder's ``identifier``.
    dimension : int, optional
        Checked against what is stored; learned from the first shard otherwise.
    """

    def __init__(self, root: str | os.PathLike[str] | None, encoder_id: str,
                 dimension: int | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.encoder_id = encoder_id
        self.folder = self.root / re.sub(r"[^A-Za-z0-9._-]+", "__", encoder_id)
        self.dimension = dimension
        self.hits = 0
        self.misses = 0
        self.corrupt_shards: list[Path] = []
        self._where: dict[str, tuple[int, int]] = {}
        self._shards: list[Path] = []
        self._sizes: list[int] = []  # keys per shard: the rows its vectors must have
        self._loaded: dict[int, np.ndarray] = {}
        self._lock = shards.FolderLock(self.folder)
        self._open()

    @classmethod
    def for_encoder(cls, encoder: Encoder, root: str | os.PathLike[str] | None = None
                    ) -> EmbeddingCache:
        """The cache of one encoder; its dimension is checked when the encoder knows it."""
        dim = encoder.dimension if encoder.dimension > 0 else None
        return cls(root, encoder.identifier, dim)

    # ------------------------------------------------------------------ opening
    def _open(self) -> None:
        self.dimension = shards.read_meta(self.folder / "meta.json", self.encoder_id,
                                          self.dimension)
        self.refresh()
        self.remove_stale_temporaries()

    def refresh(self) -> None:
        """Re-read the shard list (picks up shards written by other processes); under the
        threads' lock of the folder, as every change of the in-memory index is."""
        with shards.thread_lock(self.folder):
            self._refresh()

    def _refresh(self) -> None:
        if not self.folder.is_dir():
            return
        known = set(self._shards) | set(self.corrupt_shards)
        for shard in shards.shard_paths(self.folder):
            if shard in known:
                continue
            if not shard.is_file():  # a FIFO or a link to /dev/zero hung the zip reader
                self._report_corrupt(shard, CacheError("not a regular file"))
                continue
            try:
                keys = shards.shard_keys(shard)
            except SHARD_ERRORS as exc:
                self._report_corrupt(shard, exc)
                continue
            idx = len(self._shards)
            self._shards.append(shard)
            self._sizes.append(len(keys))
            for row, key in enumerate(keys.tolist()):
                self._where.setdefault(str(key), (idx, row))

    def remove_stale_temporaries(self, max_age: float | None = STALE_TMP_SECONDS) -> list[Path]:
        """Delete ``.*.tmp`` files left by killed or failed writers (a full disk leaves one).

        ``max_age`` None removes every temporary file: only safe while holding the write lock,
        when no other writer can be half way through one.
        """
        return shards.remove_stale_temporaries(self.folder, max_age)

    def _write_lock(self) -> contextlib.AbstractContextManager[bool]:
        """The writers' advisory lock on ``<folder>/.lock``, re-entrant within this cache and
        released by the kernel if the process dies. Yields whether a lock is actually held."""
        return self._lock.hold()

    def _report_corrupt(self, shard: Path, exc: Exception) -> None:
        self.corrupt_shards.append(shard)
        logger.warning("embedding cache shard %s is corrupt and was ignored (%s); its texts "
                       "will be embedded again. Delete the file to silence this.", shard, exc)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, text: str) -> bool:
        return text_key(text) in self._where

    def has_key(self, key: str) -> bool:
        """Whether the vector of the text whose :func:`text_key` is ``key`` is stored."""
        return key in self._where

    # ------------------------------------------------------------------ reading
    def _forget(self, idx: int) -> None:
        """Drop a shard deleted since it was listed (a cache folder cleared under a running
        router): its texts are embedded again, where every later call failed, advising to
        delete a file that was gone (found by fuzzing)."""
        logger.warning("embedding cache shard %s is gone; its texts will be embedded again",
                       self._shards[idx])
        self._where = {k: loc for k, loc in self._where.items() if loc[0] != idx}
        self._loaded.pop(idx, None)

    def _shard_vectors(self, idx: int) -> np.ndarray:
        if idx not in self._loaded:
            vectors = shards.read_shard_vectors(self._shards[idx], self._sizes[idx], self.dimension)
            self.dimension = self.dimension or int(vectors.shape[1])
            self._loaded[idx] = vectors
        return self._loaded[idx]

    def get_by_keys(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for the keys found, and a boolean mask of which were found."""
        found = np.array([k in self._where for k in keys], dtype=bool)
        by_shard: dict[int, tuple[list[int], list[int]]] = {}
        for i, k in enumerate(keys):
            loc = self._where.get(k)
            if loc is not None:
                pos, rows = by_shard.setdefault(loc[0], ([], []))
                pos.append(i)
                rows.append(loc[1])
        # load first: a cache opened before another process wrote its meta.json learns the
        # dimension from the first shard it reads
        loaded = {idx: self._shard_vectors(idx) for idx in by_shard}
        out = np.zeros((len(keys), self.dimension or 0), dtype=np.float32)
        for idx, (pos, rows) in by_shard.items():
            out[pos] = loaded[idx][rows]
        return out, found

    def get(self, texts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.get_by_keys([text_key(t) for t in as_texts(texts)])

    # ------------------------------------------------------------------ writing
    def put_keys(self, keys: Sequence[str], vectors: np.ndarray, keep: bool = True
                 ) -> Path | None:
        """Append one shard with the keys not stored yet; atomic (temp file + rename).

        Runs under the write lock after re-reading the shard list, so a key another process
        stored meanwhile is not written twice. A failed write (a full disk) leaves no file.
        ``keep=False`` does not hold the stored vectors in memory (a later read loads them from
        the shard): a writer of a large pool, such as a Ray job's driver, stays small.
        """
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) != len(keys) or vectors.dtype.kind != "f":
            raise CacheError(f"expected {len(keys)} float vectors, got an array of shape "
                             f"{vectors.shape} and type {vectors.dtype}")
        if self.dimension is None or self.dimension <= 0:
            self.dimension = int(vectors.shape[1])
        elif vectors.shape[1] != self.dimension:
            raise CacheError(f"vectors have dimension {vectors.shape[1]}, cache holds {self.dimension}")
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._write_lock() as locked:
            self.refresh()  # another process may have stored some of these keys meanwhile
            new = [i for i, k in enumerate(keys) if k not in self._where]
            new = list(dict((keys[i], i) for i in new).values())  # one row per key
            if not new:
                return None
            rows = unit_rows(vectors[new], "vectors to store", "they are refused")
            if locked:  # no other writer is half way through a file: clear what failed ones left
                self.remove_stale_temporaries(max_age=None)
            # float16 files (imports) stay float16 on disk, half the size; read back, they are
            # normalised to these very rows
            stored = vectors[new] if vectors.dtype == np.float16 else rows
            return self._write_shard(keys, new, rows, keep, stored)

    def _write_shard(self, keys: Sequence[str], new: list[int], rows: np.ndarray,
                     keep: bool = True, stored: np.ndarray | None = None) -> Path:
        shards.write_meta(self.folder, self.encoder_id, self.dimension)
        final = shards.write_shard(self.folder, [keys[i] for i in new],
                                   rows if stored is None else stored)
        idx = len(self._shards)
        self._shards.append(final)
        self._sizes.append(len(new))
        if keep:
            self._loaded[idx] = rows
        for row, i in enumerate(new):
            self._where[keys[i]] = (idx, row)
        return final

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> Path | None:
        return self.put_keys([text_key(t) for t in texts], vectors)

    def import_npz(self, path: str | os.PathLike[str], texts: Sequence[str] | None = None,
                   encoder: Encoder | None = None) -> int:
        """Import precomputed vectors made with this cache's encoder; returns how many keys were new.

        The file holds ``sha256`` (n,) hex keys and ``embedding`` (n, d) vectors, as in
        shared/embeddings. Those files key each vector by the SHA-256 of the *raw* text, while
        the cache keys by :func:`text_key` (the normalised text). Pass the raw ``texts`` to
        re-key: every file key that is the raw SHA-256 of one of them is stored under that text's
        normalised key. Without ``texts`` the keys are imported as they are, which is right for
        texts that were already normalised (no CR, no surrounding whitespace: the two hashes are
        then equal). Non-finite vectors are refused; others are normalised to unit length.

        The file says nothing of the encoder that made it; with ``encoder`` (this cache's) and
        ``texts``, the :data:`IMPORT_CHECKS` longest texts found in the file are embedded first
        and the file is refused, nothing written, when one of its vectors is not theirs (cosine
        below :data:`IMPORT_MIN_COSINE`): a file made at another word-piece cap or by another
        model was stored under this encoder's name, silently (found by a review). Where the
        model is not installed the file is imported unchecked, with a warning: importing is
        how a machine without it gets vectors.
        """
        keys, vectors = shards.read_embeddings_file(Path(path), self.dimension)
        if texts is not None:
            items = as_texts(texts)
            rekey = {hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest(): text_key(t)
                     for t in items}
            keys = [rekey.get(k, k) for k in keys]
            if encoder is not None:
                self._check_import(Path(path), keys, vectors, items, encoder)
        with self._write_lock():
            self.refresh()
            before = len(self)
            self.put_keys(keys, vectors)
            return len(self) - before

    def _check_import(self, path: Path, keys: list[str], vectors: np.ndarray,
                      texts: Sequence[str], encoder: Encoder) -> None:
        if encoder.identifier != self.encoder_id:
            raise CacheError(f"encoder {encoder.identifier!r} does not match this cache's "
                             f"{self.encoder_id!r}")
        row = {k: i for i, k in enumerate(keys)}
        found = {k: t for t in texts if (k := text_key(t)) in row}
        # the longest: a shorter word-piece cap changes only texts longer than it
        sample = sorted(found, key=lambda k: (-len(found[k]), k))[:IMPORT_CHECKS]
        if not sample:
            logger.warning("%s: none of the given texts is in the file; its vectors could not "
                           "be checked against %s", path, self.encoder_id)
            return
        try:
            mine = encoder.encode([found[k] for k in sample])
        except ModelNotInstalledError as exc:  # importing is how to do without the model
            logger.warning("%s: not checked against %s, whose model is not installed here (%s)",
                           path, self.encoder_id, exc)
            return
        theirs = np.asarray(vectors[[row[k] for k in sample]], dtype=np.float64)
        mine = np.asarray(mine, dtype=np.float64)
        cos = np.einsum("nd,nd->n", mine, theirs) / np.maximum(
            np.linalg.norm(mine, axis=1) * np.linalg.norm(theirs, axis=1), 1e-300)
        if cos.min() < IMPORT_MIN_COSINE:
            raise CacheError(
                f"{path}: not vectors of {self.encoder_id!r}: embedding {len(sample)} of its "
                f"texts gives cosine {cos.min():.4f} against the file's (below "
                f"{IMPORT_MIN_COSINE}); import it with the encoder that made it (a word-piece "
                "cap, @max<N>, is another encoder)")

    # ------------------------------------------------------------------ embedding
    def embed(self, texts: str | Sequence[str], encoder: Encoder, batch_size: int = 32,
              chunk_size: int = 256, progress: bool | None = None) -> np.ndarray:
        """Vectors for ``texts`` in input order, encoding only the texts not cached yet.

        Repeated texts are encoded once. New vectors are written a chunk at a time, so an
        interrupted job resumes where it stopped. ``progress`` None shows a bar for long jobs
        (over one chunk) when logging is at INFO or below, or when attached to a terminal.
        """
        if encoder.identifier != self.encoder_id:
            raise CacheError(f"encoder {encoder.identifier!r} does not match this cache's "
                             f"{self.encoder_id!r}")
        batch_size, chunk_size = check_size("batch_size", batch_size), \
            check_size("chunk_size", chunk_size)
        items = as_texts(texts)
        keys = [text_key(t) for t in items]
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        with shards.thread_lock(self.folder):
            for idx in {self._where[k][0] for k in first if k in self._where} - set(self._loaded):
                if not self._shards[idx].is_file():  # deleted since it was listed
                    self._forget(idx)
        todo = [i for k, i in first.items() if k not in self._where]
        if todo:
            from tqdm.auto import tqdm

            if progress is None:
                progress = _PROGRESS.get()
            show = progress if progress is not None else len(todo) > chunk_size
            bar = tqdm(total=len(todo), unit="text", desc="embedding", disable=not show,
                       dynamic_ncols=True)
            encoded = 0
            try:
                for start in range(0, len(todo), chunk_size):
                    with self._write_lock():
                        # another process may have stored some of these since we last looked
                        self.refresh()
                    chunk = [i for i in todo[start:start + chunk_size] if keys[i] not in self._where]
                    if chunk:
                        # encoded without the lock, so that writers sharing a cache (Ray actors on
                        # one node) encode at once; put_keys re-reads the shards under the lock
                        # and stores only keys still missing, so none is written twice
                        vecs = encode_reporting(encoder, [items[i] for i in chunk], batch_size,
                                                bar.update)  # the bar moves per batch
                        self.put_keys([keys[i] for i in chunk], vecs)
                        encoded += len(chunk)
                    # texts another writer stored meanwhile count as done too
                    bar.update(min(chunk_size, len(todo) - start) - len(chunk))
            finally:
                bar.close()
                self.misses += encoded
                self.hits += len(items) - encoded
        else:
            self.hits += len(items)
        vectors, found = self.get_by_keys(keys)
        if not found.all():  # only if a shard vanished under us
            raise CacheError(f"{int((~found).sum())} embeddings missing after encoding")
        return vectors

