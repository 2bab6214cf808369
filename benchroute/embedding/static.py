"""A static tier: all-mpnet-base-v2 distilled into static word-piece embeddings (model2vec's method).

Distillation (``benchroute model distill-static``) runs the installed model (its ONNX export)
over its own vocabulary, offline, and keeps one PCA-reduced vector per word piece; a text's
vector is then the mean of its word pieces' vectors — no transformer at encode time, hence about
two orders of magnitude faster. The vectors differ from mpnet's, so they get a cache namespace of
their own (``all-mpnet-base-v2@static``). Meant for pools too big to embed with mpnet; see
docs/performance.md for how it routes compared with mpnet.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchroute._persist import read_json_file, sha256_file
from benchroute.embedding.base import load_once, model_texts
from benchroute.embedding.install import (
    DEFAULT_MODEL,
    benchroute_home,
    check_sha256,
    installed_model,
    read_sidecar,
    tokenizer_file,
)
from benchroute.embedding.names import DEFAULT_MAX_SEQ_LENGTH, check_cap, own_identifier
from benchroute.exceptions import BenchrouteError, ModelNotInstalledError
from benchroute.npz import read_npz

logger = logging.getLogger(__name__)

STATIC_FOLDER = f"{DEFAULT_MODEL}-static"
STATIC_FORMAT_VERSION = 1
#: model2vec's distillation settings (its defaults); part of what the cache namespace stands for
DISTILL_PARAMS: dict[str, Any] = {"pca_dims": 256, "sif_coefficient": 1e-4,
                                  "token_remove_pattern": r"\[unused\d+\]", "pooling": "mean"}


def static_dir(root: Path | None = None) -> Path:
    """``$BENCHROUTE_HOME/models/all-mpnet-base-v2-static``."""
    return (root or benchroute_home() / "models") / STATIC_FOLDER


def read_static_info(root: Path | None = None) -> dict[str, Any] | None:
    """The distillation sidecar (``distill.json``), or None when not distilled yet."""
    folder = static_dir(root)
    return read_sidecar(folder / "distill.json", folder / "vectors.npz",
                        {"format_version": STATIC_FORMAT_VERSION, "params": DISTILL_PARAMS},
                        "benchroute model distill-static --force")


def distill_static(root: Path | None = None, force: bool = False, batch_size: int = 512) -> Path:
    """Distil the installed model into one vector per word piece; returns the folder.

    model2vec's method (``model2vec.distill`` with its defaults), run on the ONNX export so that
    it needs neither torch nor model2vec's distillation extra (which pins ``transformers<5.4``):
    every word piece of the vocabulary except ``[unused*]`` and the special tokens goes through
    the model as ``<s> piece </s>``, mean-pooled; the vectors are reduced to 256 dimensions by
    PCA and scaled by SIF weights estimated from the piece's rank with Zipf's law. A few minutes
    on two cores.
    """
    dest = static_dir(root)
    if not force and read_static_info(root) is not None:
        return dest
    from benchroute.embedding.onnx import OnnxEncoder, export_onnx, onnx_dir, read_export_info

    export_onnx(root)
    tok_path = installed_model(root) / "tokenizer.json"
    logger.info("distilling %s into static embeddings at %s (once; a few minutes)",
                DEFAULT_MODEL, dest)
    tok = read_json_file(tok_path)
    specials = {t["id"] for t in tok.get("added_tokens", []) if t.get("special")}
    pattern = re.compile(DISTILL_PARAMS["token_remove_pattern"])
    vocab = sorted((i, t) for t, i in tok["model"]["vocab"].items())
    ids = np.array([i for i, t in vocab if i not in specials and not pattern.fullmatch(t)])
    bos, eos = _special_id(tok, "<s>"), _special_id(tok, "</s>")
    enc = OnnxEncoder(root=root)
    session, _ = enc._load()
    pooled = np.empty((len(ids), 768), dtype=np.float32)
    mask = np.ones((1, 3), dtype=np.int64)
    for s in range(0, len(ids), batch_size):
        chunk = ids[s:s + batch_size]
        seq = np.stack([np.full(len(chunk), bos), chunk, np.full(len(chunk), eos)], axis=1)
        (tokens,) = session.run(None, {"input_ids": seq.astype(np.int64),
                                       "attention_mask": np.repeat(mask, len(chunk), axis=0)})
        pooled[s:s + len(chunk)] = tokens.mean(axis=1)  # model2vec: mean, not normalised
    vectors = _pca(pooled.astype(np.float64), int(DISTILL_PARAMS["pca_dims"]))
    vectors *= _sif_weights(len(vectors), float(DISTILL_PARAMS["sif_coefficient"]))[:, None]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".distill-", dir=dest.parent) as tmp_name:
        tmp = Path(tmp_name) / STATIC_FOLDER
        tmp.mkdir()
        np.savez(tmp / "vectors.npz", token_ids=ids.astype(np.int32),
                 vectors=vectors.astype(np.float16))
        info = {
            "format_version": STATIC_FORMAT_VERSION,
            "params": DISTILL_PARAMS,
            "method": "model2vec distillation (reimplemented on the ONNX export)",
            "source_onnx_sha256": (read_export_info(root) or {}).get("onnx_sha256"),
            "onnx": str(onnx_dir(root)),
            "tokens": int(len(ids)),
            "vectors_sha256": sha256_file(tmp / "vectors.npz"),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / "distill.json").write_text(json.dumps(info, indent=1))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    logger.info("distilled %d word pieces into %s", len(ids), dest)
    return dest


def _special_id(tok: dict[str, Any], content: str) -> int:
    for t in tok.get("added_tokens", []):
        if t.get("content") == content:
            return int(t["id"])
    raise BenchrouteError(f"tokenizer.json has no special token {content!r}")


def _pca(X: np.ndarray, k: int) -> np.ndarray:
    """model2vec's PCA: eigenvectors of the covariance, signs fixed by the largest score."""
    Xc = X - X.mean(axis=0)
    eigvals, eigvecs = np.linalg.eigh((Xc.T @ Xc) / (len(X) - 1))
    components = eigvecs[:, ::-1][:, :k].T
    scores = Xc @ components.T
    signs = np.sign(scores[np.argmax(np.abs(scores), axis=0), range(k)])
    return scores * signs


def _sif_weights(n: int, sif: float) -> np.ndarray:
    """model2vec's weights: Zipf probabilities from the rank, then ``sif / (sif + p)``."""
    inv_rank = 1 / np.arange(2, n + 2)
    proba = inv_rank / inv_rank.sum()
    return sif / (sif + proba)


_REDISTILL = "benchroute model distill-static --force"


def _read_vectors(path: Path, vocab_size: int, dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """``token_ids`` (n,) distinct ids of the vocabulary and ``vectors`` (n, dimension) finite
    floats from ``vectors.npz``; anything else is a :class:`BenchrouteError` naming the field."""
    import zipfile

    try:  # at most one vector per word piece: the vocabulary bounds what is decompressed
        z = read_npz(path, {"token_ids": ("n",), "vectors": ("n", dimension)},
                     kinds={"token_ids": "iu", "vectors": "f"})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise BenchrouteError(f"{path}: unreadable ({exc!s:.200}); run `{_REDISTILL}`") from exc
    ids, vectors = z["token_ids"], z["vectors"]
    if len(ids) > vocab_size or len(np.unique(ids)) != len(ids) \
            or (len(ids) and (ids.min() < 0 or ids.max() >= vocab_size)):
        raise BenchrouteError(f"{path}: field 'token_ids' must be distinct ids in [0, "
                              f"{vocab_size}); run `{_REDISTILL}`")
    if not np.isfinite(vectors).all():
        raise BenchrouteError(f"{path}: field 'vectors' must be ({len(ids)}, {dimension}) finite "
                              f"floats, got {vectors.dtype} {vectors.shape}; run `{_REDISTILL}`")
    return ids.astype(np.int64), vectors.astype(np.float32)


class StaticEncoder:
    """Static word-piece embeddings of all-mpnet-base-v2 (256-d), mean-pooled, L2-normalised.

    Encoding needs only ``tokenizers`` and numpy.

    Parameters
    ----------
    max_seq_length : int
        Word-piece cap, as for the transformer backends.
    root : Path, optional
        Models folder (default ``$BENCHROUTE_HOME/models``).
    distill : bool
        Distil on first use when missing (a few minutes); else raise.
    """

    backend = "static"

    def __init__(self, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH, root: Path | None = None,
                 distill: bool = True) -> None:
        self.max_seq_length = check_cap(max_seq_length, "StaticEncoder")
        self.root = root
        self.distill = distill
        self.identifier = own_identifier("static", max_seq_length)
        self.dimension = int(DISTILL_PARAMS["pca_dims"])
        self._table: np.ndarray | None = None
        self._tokenizer: Any = None

    def __repr__(self) -> str:
        return f"StaticEncoder(max_seq_length={self.max_seq_length})"

    def _load(self) -> tuple[np.ndarray, Any]:
        load_once(self, "_table", self._load_now)
        assert self._table is not None
        return self._table, self._tokenizer

    def _load_now(self) -> None:
        """The first load, once for every thread (:func:`~benchroute.embedding.base.load_once`);
        ``_table`` is set last."""
        info = read_static_info(self.root)
        if info is None:
            if not self.distill:
                raise ModelNotInstalledError(f"no static model in {static_dir(self.root)}; "
                                             "run `benchroute model distill-static`")
            distill_static(self.root)
            info = read_static_info(self.root) or {}
        from benchroute.embedding.onnx import load_tokenizer

        folder = static_dir(self.root)
        logger.info("loading %s static embeddings from %s", DEFAULT_MODEL, folder)
        check_sha256(folder / "vectors.npz", info.get("vectors_sha256"),
                     str(folder / "distill.json"), _REDISTILL)
        tok = load_tokenizer(tokenizer_file(self.root), self.max_seq_length)
        ids, vectors = _read_vectors(folder / "vectors.npz", tok.get_vocab_size(),
                                     self.dimension)
        # row per vocabulary id; the last row (zeros) stands for pieces without a vector
        table = np.zeros((tok.get_vocab_size() + 1, self.dimension), dtype=np.float32)
        table[ids] = vectors
        known = np.zeros(len(table), dtype=bool)
        known[ids] = True
        self._known = known
        self._tokenizer, self._table = tok, table  # the table last

    def encode(self, texts: Sequence[str], batch_size: int = 32,
               on_batch: Callable[[int], object] | None = None) -> np.ndarray:
        """(n, 256) float32 unit vectors in input order."""
        items = model_texts(texts)
        out = np.zeros((len(items), self.dimension), dtype=np.float32)
        if not items:
            return out
        table, tok = self._load()
        step = max(batch_size, 1024)  # no transformer: big batches cost nothing, callbacks do
        for s in range(0, len(items), step):
            encodings = tok.encode_batch(items[s:s + step])
            for j, e in enumerate(encodings):
                ids = np.asarray(e.ids, dtype=np.int64)
                ids = ids[self._known[ids]]  # drops <s>, </s> and [unused*], as model2vec does
                if len(ids):
                    out[s + j] = table[ids].mean(axis=0)
            if on_batch is not None:
                on_batch(len(encodings))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        empty = norms[:, 0] == 0
        out /= np.where(norms > 0, norms, 1.0)
        out[empty, 0] = 1.0  # a text with no known word piece still gets a unit vector
        return out
