"""Turning texts into vectors: encoders, the content-addressed cache, model provisioning."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from benchroute.embedding.backends import is_mpnet_name, mpnet_encoder
from benchroute.embedding.base import Encoder, HashingEncoder
from benchroute.embedding.cache import EmbeddingCache, text_key
from benchroute.embedding.install import DEFAULT_MODEL

__all__ = ["Encoder", "EmbeddingCache", "HashingEncoder", "embed_texts", "get_encoder", "text_key"]


def get_encoder(encoder: Encoder | str | None = None, device: str | None = None) -> Encoder:
    """An encoder object from a name (sentence-transformers model or local folder) or None.

    ``"all-mpnet-base-v2[@torch|@onnx|@static][@max<N>]"`` picks a backend and word-piece cap
    (see :mod:`benchroute.embedding.backends`); without a backend the default one serves.

    ``"hashing-<dim>-<ngram lo><ngram hi>"`` names a :class:`HashingEncoder`, so routers fitted
    with one (in tests, say) can be saved and loaded by name.
    """
    if isinstance(encoder, str) and encoder.startswith("hashing-"):
        try:
            _, dim, grams = encoder.split("-")
            return HashingEncoder(int(dim), (int(grams[0]), int(grams[1])))
        except ValueError as exc:
            from benchroute.exceptions import BenchrouteError

            raise BenchrouteError(f"bad hashing encoder name {encoder!r}; "
                                  "expected hashing-<dim>-<lo><hi>, e.g. hashing-256-12") from exc
    if encoder is None or (isinstance(encoder, str) and is_mpnet_name(encoder)):
        return mpnet_encoder(encoder or DEFAULT_MODEL, device=device)
    if isinstance(encoder, str):
        from benchroute.embedding.sentence import SentenceTransformerEncoder

        return SentenceTransformerEncoder(encoder or "all-mpnet-base-v2", device=device)
    return encoder


def embed_texts(
    texts: str | Sequence[str], encoder: Encoder | str | None = None,
    cache_dir: str | os.PathLike[str] | None = None, progress: bool | None = None,
) -> np.ndarray:
    """Embed through the on-disk cache: (n, d) float32 unit vectors in input order."""
    enc = get_encoder(encoder)
    return EmbeddingCache.for_encoder(enc, cache_dir).embed(texts, enc, progress=progress)
