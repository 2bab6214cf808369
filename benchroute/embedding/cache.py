"""Content-addressed embedding cache: key = (encoder identifier, SHA-256 of the exact text).

Layout: ``<root>/<encoder slug>/meta.json`` plus append-only shards ``shard-*.npz`` holding
``sha256`` (n,) and ``embedding`` (n, d). A shard is written to a temporary name and renamed, so
a reader lists only complete shards and a killed job loses at most the batch in flight. The
lookup index (key → shard, row) is rebuilt from the shards' keys when the cache is opened, which
keeps concurrent writers free of a shared manifest to corrupt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchroute._persist import read_versioned_json
from benchroute.embedding.base import Encoder, as_texts, encode_reporting
from benchroute.exceptions import CacheError

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1


def text_key(text: str) -> str:
    """Hex SHA-256 of the UTF-8 bytes of the text, exactly as given (no stripping)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
        self._loaded: dict[int, np.ndarray] = {}
        self._open()

    @classmethod
    def for_encoder(cls, encoder: Encoder, root: str | os.PathLike[str] | None = None
                    ) -> EmbeddingCache:
        """The cache of one encoder; its dimension is checked when the encoder knows it."""
        dim = encoder.dimension if encoder.dimension > 0 else None
        return cls(root, encoder.identifier, dim)

    # ------------------------------------------------------------------ opening
    def _open(self) -> None:
        meta_path = self.folder / "meta.json"
        if meta_path.is_file():
            meta = read_versioned_json(meta_path, CACHE_FORMAT_VERSION, "cache", CacheError)
            if meta.get("encoder") != self.encoder_id:
                raise CacheError(f"{meta_path}: holds {meta.get('encoder')!r}, not {self.encoder_id!r}")
            stored = int(meta["dimension"])
            if self.dimension is not None and self.dimension > 0 and stored != self.dimension:
                raise CacheError(
                    f"{meta_path}: stored vectors have dimension {stored}, the encoder gives "
                    f"{self.dimension}"
                )
            self.dimension = stored
        self.refresh()

    def refresh(self) -> None:
        """Re-read the shard list (picks up shards written by other processes)."""
        if not self.folder.is_dir():
            return
        known = set(self._shards)
        for shard in sorted(self.folder.glob("shard-*.npz")):
            if shard in known:
                continue
            try:
                with np.load(shard) as z:
                    keys = z["sha256"]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
                self._report_corrupt(shard, exc)
                continue
            idx = len(self._shards)
            self._shards.append(shard)
            for row, key in enumerate(keys.tolist()):
                self._where.setdefault(str(key), (idx, row))

    def _report_corrupt(self, shard: Path, exc: Exception) -> None:
        self.corrupt_shards.append(shard)
        logger.warning("embedding cache shard %s is corrupt and was ignored (%s); its texts "
                       "will be embedded again. Delete the file to silence this.", shard, exc)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, text: str) -> bool:
        return text_key(text) in self._where

    # ------------------------------------------------------------------ reading
    def _shard_vectors(self, idx: int) -> np.ndarray:
        if idx not in self._loaded:
            shard = self._shards[idx]
            try:
                with np.load(shard) as z:
                    vectors = z["embedding"]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise CacheError(f"{shard}: corrupt embedding shard ({exc}); delete it") from exc
            if self.dimension is not None and vectors.shape[1] != self.dimension:
                raise CacheError(f"{shard}: vectors of dimension {vectors.shape[1]}, expected "
                                 f"{self.dimension}")
            self._loaded[idx] = vectors
        return self._loaded[idx]

    def get_by_keys(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for the keys found, and a boolean mask of which were found."""
        found = np.array([k in self._where for k in keys], dtype=bool)
        dim = self.dimension or 0
        out = np.zeros((len(keys), dim), dtype=np.float32)
        by_shard: dict[int, tuple[list[int], list[int]]] = {}
        for i, k in enumerate(keys):
            loc = self._where.get(k)
            if loc is not None:
                pos, rows = by_shard.setdefault(loc[0], ([], []))
                pos.append(i)
                rows.append(loc[1])
        for idx, (pos, rows) in by_shard.items():
            out[pos] = self._shard_vectors(idx)[rows]
        return out, found

    def get(self, texts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.get_by_keys([text_key(t) for t in as_texts(texts)])

    # ------------------------------------------------------------------ writing
    def put_keys(self, keys: Sequence[str], vectors: np.ndarray) -> Path | None:
        """Append one shard with the keys not stored yet; atomic (temp file + rename)."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) != len(keys):
            raise CacheError(f"expected {len(keys)} vectors, got an array of shape {vectors.shape}")
        if self.dimension is None or self.dimension <= 0:
            self.dimension = int(vectors.shape[1])
        elif vectors.shape[1] != self.dimension:
            raise CacheError(f"vectors have dimension {vectors.shape[1]}, cache holds {self.dimension}")
        new = [i for i, k in enumerate(keys) if k not in self._where]
        new = list(dict((keys[i], i) for i in new).values())  # one row per key
        if not new:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_meta()
        name = f"shard-{uuid.uuid4().hex}.npz"
        tmp = self.folder / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, sha256=np.array([keys[i] for i in new]), embedding=vectors[new])
            fh.flush()
            os.fsync(fh.fileno())
        final = self.folder / name
        os.replace(tmp, final)
        idx = len(self._shards)
        self._shards.append(final)
        self._loaded[idx] = vectors[new]
        for row, i in enumerate(new):
            self._where[keys[i]] = (idx, row)
        return final

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> Path | None:
        return self.put_keys([text_key(t) for t in texts], vectors)

    def _write_meta(self) -> None:
        meta = self.folder / "meta.json"
        if meta.is_file():
            return
        tmp = self.folder / f".meta-{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps({"format_version": CACHE_FORMAT_VERSION,
                                   "encoder": self.encoder_id, "dimension": self.dimension}))
        os.replace(tmp, meta)

    def import_npz(self, path: str | os.PathLike[str]) -> int:
        """Import precomputed vectors (``sha256`` + ``embedding`` arrays, as in shared/embeddings)
        made with this cache's encoder; returns how many keys were new."""
        path = Path(path)
        try:
            with np.load(path) as z:
                keys = [str(k) for k in z["sha256"].tolist()]
                vectors = z["embedding"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise CacheError(f"{path}: not an embeddings file with 'sha256' and 'embedding' "
                             f"arrays ({exc})") from exc
        before = len(self)
        self.put_keys(keys, vectors)
        return len(self) - before

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
        items = as_texts(texts)
        keys = [text_key(t) for t in items]
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        todo = [i for k, i in first.items() if k not in self._where]
        self.hits += len(items) - len(todo)
        self.misses += len(todo)
        if todo:
            from tqdm.auto import tqdm

            show = progress if progress is not None else len(todo) > chunk_size
            bar = tqdm(total=len(todo), unit="text", desc="embedding", disable=not show,
                       dynamic_ncols=True)
            try:
                for start in range(0, len(todo), chunk_size):
                    chunk = todo[start:start + chunk_size]
                    vecs = encode_reporting(encoder, [items[i] for i in chunk], batch_size,
                                            bar.update)  # the bar moves per batch
                    self.put_keys([keys[i] for i in chunk], vecs)
            finally:
                bar.close()
        vectors, found = self.get_by_keys(keys)
        if not found.all():  # only if a shard vanished under us
            raise CacheError(f"{int((~found).sum())} embeddings missing after encoding")
        return vectors
