"""A store's inputs as arrays: the vectors, labels, tasks and model names every fit and every
experiment starts from, rows in ``data.instances()`` order."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from benchroute.data.store import BenchmarkData
from benchroute.exceptions import BenchrouteError


@dataclass(frozen=True)
class Pool:
    """A store's inputs as arrays, rows in ``data.instances()`` order."""

    X: np.ndarray            # (N, d) float32 unit vectors
    Y: np.ndarray            # (N, M) float32 labels, NaN = no result
    datasets: np.ndarray     # (N,) object
    instance_ids: list[str]
    models: list[str]


def pool_labels(data: BenchmarkData, column: str = "correct") -> Pool:
    """The labels of every input of ``data`` with no vectors (``X`` is (N, 0)): for callers
    that take the vectors from elsewhere (an index, a cache) or need none."""
    inst = data.instances()
    mat = data.correctness_matrix(column=column)
    if list(mat.index) != list(zip(inst["dataset"], inst["instance_id"])):
        raise BenchrouteError("internal: correctness matrix and instances are misaligned")
    return Pool(np.zeros((len(inst), 0), dtype=np.float32), mat.to_numpy(dtype=np.float32),
                inst["dataset"].to_numpy(dtype=object), inst["instance_id"].tolist(),
                list(mat.columns))


def pool_arrays(data: BenchmarkData, embeddings: np.ndarray | None,
                embed: Callable[[Sequence[str]], np.ndarray], column: str = "correct") -> Pool:
    """Vectors and labels of every input of ``data``; ``embed(texts)`` runs when no embeddings
    are given, and given ones are checked against the number of inputs."""
    labels = pool_labels(data, column)
    texts = data.instances()["text"].tolist()
    X = embed(texts) if embeddings is None else np.asarray(embeddings)
    if X.ndim != 2 or len(X) != len(texts):
        raise BenchrouteError(f"embeddings must have shape ({len(texts)}, d), got {X.shape}")
    return dataclasses.replace(labels, X=np.ascontiguousarray(X, dtype=np.float32))
