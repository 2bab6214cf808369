"""The default encoder: sentence-transformers, all-mpnet-base-v2 (768-d, cosine)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchroute.embedding.base import as_texts
from benchroute.embedding.install import DEFAULT_ENCODER_ID, DEFAULT_MODEL, installed_model

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` while a local model loads, so no library in the stack retries the
    hub for a file it does not find. (``huggingface_hub`` reads the variable when first imported:
    a process whose first load was local stays offline.)"""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


class SentenceTransformerEncoder:
    """Wraps :class:`sentence_transformers.SentenceTransformer`; loads weights on first encode.

    Parameters
    ----------
    model : str
        ``"all-mpnet-base-v2"`` (the default, found where ``benchroute model install`` put it),
        a local model folder, or any other sentence-transformers model name.
    device : str, optional
        None picks CUDA when torch sees a GPU, else the CPU.
    """

    def __init__(self, model: str = DEFAULT_MODEL, device: str | None = None) -> None:
        self.model = model
        self.device = device
        self._st: Any = None
        if model in (DEFAULT_MODEL, DEFAULT_ENCODER_ID):
            self.identifier = DEFAULT_ENCODER_ID
            self.dimension = 768
        else:
            self.identifier = str(Path(model).resolve()) if Path(model).is_dir() else model
            self.dimension = -1  # known once the model is loaded

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder(model={self.model!r}, device={self.device!r})"

    def _load(self) -> Any:
        if self._st is None:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            # the weight-loading bar of transformers follows our logger, as ours do, for this
            # load only: the caller's setting is restored after
            bars = hf_logging.is_progress_bar_enabled()
            if not logger.isEnabledFor(logging.INFO):
                hf_logging.disable_progress_bar()
            try:
                if self.model in (DEFAULT_MODEL, DEFAULT_ENCODER_ID):
                    path = str(installed_model())
                    with hub_offline():
                        self._st = SentenceTransformer(path, device=self.device, local_files_only=True)
                elif Path(self.model).is_dir():  # a local folder: never ask the hub
                    from benchroute.exceptions import ModelNotInstalledError

                    try:
                        with hub_offline():
                            self._st = SentenceTransformer(self.model, device=self.device,
                                                           local_files_only=True)
                    except (OSError, ValueError, KeyError, ImportError) as exc:
                        raise ModelNotInstalledError(f"{self.model}: cannot load the model "
                                                     f"({type(exc).__name__}: {exc})") from exc
                else:  # a hub name; get_encoder passes one only when downloads are allowed
                    self._st = SentenceTransformer(self.model, device=self.device)
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            get_dim = getattr(self._st, "get_embedding_dimension", None) or \
                self._st.get_sentence_embedding_dimension
            self.dimension = int(get_dim())
            logger.info("loaded %s on %s", self.model, self._st.device)
        return self._st

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        items = as_texts(texts)
        if not items:
            return np.zeros((0, max(self.dimension, 0)), dtype=np.float32)
        vectors = self._load().encode(
            items, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
