"""Turning texts into vectors: encoders, the content-addressed cache, model provisioning."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from benchroute.embedding.backends import mpnet_encoder
from benchroute.embedding.base import Encoder, HashingEncoder
from benchroute.embedding.cache import EmbeddingCache, text_key
from benchroute.embedding.names import EncoderName, resolve_encoder_name

__all__ = ["Encoder", "EmbeddingCache", "EncoderName", "HashingEncoder", "embed_texts", "get_encoder",
           "resolve_encoder_name", "text_key"]


def get_encoder(encoder: Encoder | str | None = None, device: str | None = None,
                allow_download: bool | None = None) -> Encoder:
    """An encoder object from a name (see :func:`resolve_encoder_name`) or None (the default).

    ``"all-mpnet-base-v2[@torch|@onnx|@static][@max<N>]"`` picks a backend and word-piece cap
    (see :mod:`benchroute.embedding.backends`); without a backend the default one serves.

    ``"hashing-<dim>-<ngram lo><ngram hi>"`` names a :class:`HashingEncoder`, so routers fitted
    with one (in tests, say) can be saved and loaded by name. Names are resolved locally and
    unknown ones fail at once; the Hugging Face hub is used only with ``allow_download=True``.
    """
    if encoder is not None and not isinstance(encoder, str):
        if not isinstance(encoder, Encoder):
            from benchroute.exceptions import BenchrouteError

            raise BenchrouteError(f"encoder {encoder!r:.80} is a {type(encoder).__name__}, expected "
                                  "a name or an object with identifier, dimension and encode")
        return encoder
    name = resolve_encoder_name("all-mpnet-base-v2" if encoder is None else encoder,
                                allow_download=allow_download)
    if name.kind == "hashing":
        return HashingEncoder(name.dimension, name.ngram_range)
    if name.kind == "default":  # all-mpnet-base-v2 with any backend/cap suffix (backends.py checks it)
        return mpnet_encoder(name.name, device=device)
    if name.suffix:
        from benchroute.exceptions import BenchrouteError

        raise BenchrouteError(f"encoder name {name.name!r}: unknown suffix {name.suffix!r}")
    from benchroute.embedding.sentence import SentenceTransformerEncoder

    return SentenceTransformerEncoder(str(name.path) if name.path else name.base, device=device)


def embed_texts(
    texts: str | Sequence[str], encoder: Encoder | str | None = None,
    cache_dir: str | os.PathLike[str] | None = None, progress: bool | None = None,
) -> np.ndarray:
    """Embed through the on-disk cache: (n, d) float32 unit vectors in input order."""
    enc = get_encoder(encoder)
    return EmbeddingCache.for_encoder(enc, cache_dir).embed(texts, enc, progress=progress)
