"""The encoder interface and a fast deterministic encoder for tests and dry runs."""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

# Held while an encoder loads its weights (or makes its identifier) on first use. Why: threads
# sharing one router met a half-loaded ONNX encoder (its session published before its
# tokenizer: None.encode_batch) and each thread loaded the weights once more. One lock for every encoder: loads are rare, and they nest (a static model distilled
# on first use loads the ONNX one), hence reentrant.
_LOAD_LOCK = threading.RLock()


def load_lock() -> threading.RLock:
    """The lock an encoder's first load holds (:data:`_LOAD_LOCK`)."""
    return _LOAD_LOCK


def _fresh_load_lock() -> None:
    # a child forked while a thread of the parent loaded would inherit the lock held for ever
    global _LOAD_LOCK
    _LOAD_LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_load_lock)


def load_once(encoder: object, attribute: str, load: Callable[[], None]) -> None:
    """Call ``load`` unless ``encoder.<attribute>`` is set, once for all threads: under
    :func:`load_lock`, checked again inside it. ``load`` must set the attribute last, so a
    thread that finds it set finds the rest of the loaded state too."""
    if getattr(encoder, attribute) is None:
        with load_lock():
            if getattr(encoder, attribute) is None:
                load()


@runtime_checkable
class Encoder(Protocol):
    """Anything that maps texts to L2-normalised float32 vectors.

    ``identifier`` names the model and its settings; it is the first half of every cache key, so
    two encoders that give different vectors must never share one.
    """

    identifier: str
    dimension: int

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Return an array of shape (len(texts), dimension), float32, rows of unit norm."""
        ...


def as_texts(texts: str | Sequence[str]) -> list[str]:
    """A lone string is one text (as in sentence-transformers), not a sequence of characters."""
    if isinstance(texts, str):
        return [texts]
    if texts is None or isinstance(texts, (bytes, dict)) or hasattr(texts, "columns") \
            or not hasattr(texts, "__iter__"):
        from benchroute.exceptions import DataError

        # a dict or a DataFrame iterates as its keys or column names: never the texts meant
        raise DataError(f"texts is a {type(texts).__name__}; expected a text or a list of texts")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            from benchroute.exceptions import DataError

            raise DataError(f"text {i} is a {type(t).__name__}, expected str")
    return out


class HashingEncoder:
    """Bag-of-words vectors from scikit-learn's ``HashingVectorizer``, L2-normalised.

    Deterministic, dependency-light and about 10,000× faster than a transformer: texts that
    share words get close vectors, which is all that tests of the kNN machinery need.
    """

    def __init__(self, dimension: int = 256, ngram_range: tuple[int, int] = (1, 2)) -> None:
        self.dimension = dimension
        self.ngram_range = ngram_range
        self.identifier = f"hashing-{dimension}-{ngram_range[0]}{ngram_range[1]}"

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        from sklearn.feature_extraction.text import HashingVectorizer

        vec = HashingVectorizer(
            n_features=self.dimension, ngram_range=self.ngram_range, alternate_sign=False,
            norm="l2",
        )
        out = vec.transform(as_texts(texts)).toarray().astype(np.float32)
        empty = ~out.any(axis=1)
        out[empty, 0] = 1.0  # a text with no tokens still gets a unit vector
        return np.ascontiguousarray(out)


def check_size(name: str, value: object) -> int:
    """A batch or chunk size: an integer >= 1 (0 ended in range()'s ValueError, -1 in an empty
    max(), 2.5 in a TypeError; found by fuzzing)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        from benchroute.exceptions import BenchrouteError

        raise BenchrouteError(f"{name} == {value!r:.40}, expected an integer >= 1")
    return int(value)


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Row indices in batches of similar length (shortest first), so a batch pads little.

    Callers write each batch's vectors back at its rows, which restores the input order.
    """
    batch_size = check_size("batch_size", batch_size)
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def model_texts(texts: str | Sequence[str]) -> list[str]:
    """:func:`as_texts` for a model's tokenizer: lone surrogates (a JSON ``\\ud800``, kept in a
    Python string) become U+FFFD, as the loaders and the gateway make them. A tokenizer refused
    the whole batch with a TypeError naming neither the text nor its place (found by a
    review); the cache still keys the text as given."""
    from benchroute.data._io import replace_lone_surrogates

    return [replace_lone_surrogates(t)[0] for t in as_texts(texts)]


def encode_reporting(encoder: Encoder, texts: Sequence[str], batch_size: int,
                     on_batch: Callable[[int], object]) -> np.ndarray:
    """``encoder.encode`` with ``on_batch(n)`` called per batch when the encoder supports it
    (an ``on_batch`` keyword), else once at the end: progress bars then move per batch."""
    try:
        takes = "on_batch" in inspect.signature(encoder.encode).parameters
    except (TypeError, ValueError):
        takes = False
    if takes:
        return encoder.encode(texts, batch_size=batch_size, on_batch=on_batch)  # type: ignore[call-arg]
    out = encoder.encode(texts, batch_size=batch_size)
    on_batch(len(texts))
    return out


#: How far a vector's norm may be from 1 before it is normalised (with a warning), for vectors
#: given to fit, to queries and to the index.
NORM_TOL = 1e-3
#: How far a norm may be from 1 and the vector still be used as it is. Rows off by more are
#: divided by their norm, silently below the tolerance of the caller. Why: an input's cosine
#: distance to itself is 1 - |x|²; vectors stored as float16 (the bundled pack, the shared
#: embedding files) have norms up to 6e-5 off 1, so an input sat at 2e-5 from itself and was
#: not recognised as itself (:data:`benchroute.predictors.SELF_DISTANCE`): its own labels
#: leaked into its features, and results sent again were added instead of replacing.
EXACT_NORM_TOL = 1e-6


def unit_norm_rows(X: np.ndarray, tol: float, normalise: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(normalised, broken, off)`` for (n, d) vectors, the one check behind every place that
    takes vectors from outside (fit, queries, cache shards, imports): ``broken`` marks rows that
    are not finite or are all zero (they cannot be repaired), ``off`` rows whose norm is off 1 by
    more than ``tol`` (for the caller to warn of); ``normalised`` is float32 with every row
    whose norm is off by more than :data:`EXACT_NORM_TOL` divided by its norm (the input
    itself, as float32, when none is, or when ``normalise`` is False: a check alone, which
    allocates no copy).

    One pass of squares summed in float64 (a row with NaN or ±inf has a non-finite sum, so no
    separate pass over the elements): a float32 value's square neither overflows nor
    underflows there, and the sum keeps the precision that a float32 one lost at thousands of
    dimensions (rows of 16,384 were left up to 1e-5 off unit norm, an input then not itself;
    found by fuzzing). Loading a pool checks every stored vector this way
    (:mod:`benchroute.index`).
    """
    out = np.asarray(X).astype(np.float32, copy=False)
    sq = np.einsum("ij,ij->i", out, out, dtype=np.float64)
    finite = np.isfinite(sq)
    norms = np.sqrt(np.where(finite, sq, 0.0))
    broken = ~finite | (norms == 0)
    inexact = ~broken & (np.abs(norms - 1) > EXACT_NORM_TOL)
    if normalise and inexact.any():
        out = out.copy()  # never the caller's array
        out[inexact] = out[inexact] / norms[inexact, None]
    return out, broken, inexact & (np.abs(norms - 1) > tol)
