"""The torch backend: sentence-transformers, all-mpnet-base-v2 (768-d, cosine)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchroute.embedding.base import length_batches, load_once, model_texts
from benchroute.embedding.install import DEFAULT_ENCODER_ID, DEFAULT_MODEL, installed_model
from benchroute.embedding.names import (
    DEFAULT_MAX_SEQ_LENGTH,
    MAX_SEQ_LENGTH_LIMIT,
    check_cap,
    shared_identifier,
)
from benchroute.exceptions import BenchrouteError

logger = logging.getLogger(__name__)


class SentenceTransformerEncoder:
    """Wraps :class:`sentence_transformers.SentenceTransformer`; loads weights on first encode.

    Parameters
    ----------
    model : str
        ``"all-mpnet-base-v2"`` (the default, found where ``benchroute model install`` put it),
        a local model folder, or any other sentence-transformers model name.
    device : str, optional
        None picks CUDA when torch sees a GPU, else the CPU.
    max_seq_length : int, optional
        Word-piece cap from 3 (default: the model's own, 384 for all-mpnet-base-v2), at most
        512 for all-mpnet-base-v2 and another model's position embeddings when it loads. A cap
        other than the model's own is part of the identifier, so vectors of different caps
        never mix.
    """

    backend = "torch"

    def __init__(self, model: str = DEFAULT_MODEL, device: str | None = None,
                 max_seq_length: int | None = None) -> None:
        self.model = model
        self.device = device
        # checked here as the name's @max<N> is: built directly, a cap of 1 truncated nothing
        # and texts past 512 word pieces crashed the model on encode
        own = model in (DEFAULT_MODEL, DEFAULT_ENCODER_ID)
        self.max_seq_length = None if max_seq_length is None else \
            check_cap(max_seq_length, type(self).__name__,
                      MAX_SEQ_LENGTH_LIMIT if own else None)
        self._st: Any = None
        if own:
            self.identifier = shared_identifier(self.max_seq_length or DEFAULT_MAX_SEQ_LENGTH)
            self.dimension = 768
        else:
            self.identifier = str(Path(model).resolve()) if Path(model).is_dir() else model
            if self.max_seq_length is not None:
                self.identifier += f"@max{self.max_seq_length}"
            self.dimension = -1  # known once the model is loaded

    def __repr__(self) -> str:
        return (f"SentenceTransformerEncoder(model={self.model!r}, device={self.device!r}, "
                f"max_seq_length={self.max_seq_length!r})")

    def _load(self) -> Any:
        load_once(self, "_st", self._load_now)
        return self._st

    def _load_now(self) -> None:
        """The first load, once for every thread (:func:`~benchroute.embedding.base.load_once`);
        ``_st`` is set last."""
        logger.info("loading %s (sentence-transformers, torch)", self.model)
        installed = _verified_install() if self.model in (DEFAULT_MODEL, DEFAULT_ENCODER_ID) \
            else None
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            import importlib.util

            from benchroute.exceptions import ModelNotInstalledError

            onnx = ("onnxruntime is installed, but the ONNX graph is not exported: "
                    "`benchroute model export-onnx` makes it (it needs torch once)"
                    if importlib.util.find_spec("onnxruntime") is not None else
                    "or use the ONNX backend (`pip install 'benchroute[onnx]'`)")
            raise ModelNotInstalledError(
                f"the torch backend needs sentence-transformers ({exc}): "
                f"`pip install 'benchroute[torch]'`; {onnx}") from exc

        # the weight-loading bar of transformers follows our logger, as ours do, for this
        # load only: the caller's setting is restored after
        bars = hf_logging.is_progress_bar_enabled()
        if not logger.isEnabledFor(logging.INFO):
            hf_logging.disable_progress_bar()
        try:
            if installed is not None:
                st = _load_installed(SentenceTransformer, installed, self.device)
            elif Path(self.model).is_dir():  # a local folder: never ask the hub
                from benchroute.exceptions import ModelNotInstalledError

                try:
                    # local_files_only: a missing file fails at once, without the hub's
                    # retries, and without setting HF_HUB_OFFLINE for the whole process
                    st = SentenceTransformer(self.model, device=self.device,
                                             local_files_only=True)
                except (OSError, ValueError, KeyError, ImportError) as exc:
                    raise ModelNotInstalledError(f"{self.model}: cannot load the model "
                                                 f"({type(exc).__name__}: {exc})") from exc
            else:  # a hub name; get_encoder passes one only when downloads are allowed
                st = SentenceTransformer(self.model, device=self.device)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        if self.max_seq_length is not None:
            limit = _position_limit(st)
            if limit is not None and self.max_seq_length > limit:  # not kept: every encode
                raise BenchrouteError(  # would crash past the limit
                    f"{type(self).__name__}: max_seq_length == {self.max_seq_length}, above "
                    f"{self.model}'s {limit} position embeddings")
            st.max_seq_length = self.max_seq_length
        get_dim = getattr(st, "get_embedding_dimension", None) or \
            st.get_sentence_embedding_dimension
        self.dimension = int(get_dim())
        logger.info("loaded %s on %s", self.model, st.device)
        self._st = st  # published once capped: another thread never sees it uncapped

    def encode(self, texts: Sequence[str], batch_size: int = 32,
               on_batch: Callable[[int], object] | None = None) -> np.ndarray:
        """(n, d) float32 unit vectors in input order; ``on_batch(n_done)`` after each batch."""
        items = model_texts(texts)
        if not items:
            return np.zeros((0, max(self.dimension, 0)), dtype=np.float32)
        st = self._load()
        if on_batch is None:  # one call: sentence-transformers sorts by length itself
            vectors = st.encode(items, batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
            return np.ascontiguousarray(vectors, dtype=np.float32)
        out = np.empty((len(items), self.dimension), dtype=np.float32)
        for rows in length_batches([len(t) for t in items], batch_size):
            out[rows] = st.encode([items[r] for r in rows], batch_size=batch_size,
                                  normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=False)
            on_batch(len(rows))
        return out


def _verified_install() -> Path:
    """The installed all-mpnet-base-v2, its weights checked against the published SHA-256
    (once per process and file state) before anything loads them: its vectors go into the
    namespace shared with the other backends."""
    from benchroute.embedding.install import SAFETENSORS_SHA256, check_sha256

    path = installed_model()
    check_sha256(path / "model.safetensors", SAFETENSORS_SHA256, "the published model",
                 "benchroute model install --force")
    return path


def _position_limit(st: Any) -> int | None:
    """Word pieces the loaded model's position embeddings take, where its config says. Models
    that number positions after the padding index (RoBERTa, MPNet and their kin) give their
    position embeddings that padding index, and lose it plus one: 514 embeddings take 512."""
    model = getattr(st[0], "auto_model", None) if len(st) else None
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(positions, int):
        return None
    table = getattr(getattr(model, "embeddings", None), "position_embeddings", None)
    pad = getattr(table, "padding_idx", None)
    return positions - (pad + 1 if isinstance(pad, int) else 0)


def _load_installed(factory: Any, path: Path, device: str | None) -> Any:
    """sentence-transformers on the installed folder; a broken folder (config, tokenizer) is a
    :class:`BenchrouteError` naming it."""
    from benchroute.exceptions import BenchrouteError

    try:
        return factory(str(path), device=device, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise BenchrouteError(f"{path}: cannot load the installed model ({type(exc).__name__}: "
                              f"{exc!s:.200}); reinstall with `benchroute model install "
                              "--force`") from exc
