"""A store's inputs as arrays: the vectors, labels, tasks and model names every fit and every
experiment starts from, rows in ``data.instances()`` order."""

from __future__ import annotations

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


def pool_arrays(data: BenchmarkData, embeddings: np.ndarray | None,
                embed: Callable[[Sequence[str]], np.ndarray], column: str = "correct") -> Pool:
    """Vectors and labels of every input of ``data``; ``embed(texts)`` runs when no embeddings
    are given, and given ones are checked against the number of inputs."""
    inst = data.instances()
    mat = data.correctness_matrix(column=column)
    if list(mat.index) != list(zip(inst["dataset"], inst["instance_id"])):
        raise BenchrouteError("internal: correctness matrix and instances are misaligned")
    X = embed(inst["text"].tolist()) if embeddings is None else np.asarray(embeddings)
    if X.ndim != 2 or len(X) != len(inst):
        raise BenchrouteError(f"embeddings must have shape ({len(inst)}, d), got {X.shape}")
    return Pool(np.ascontiguousarray(X, dtype=np.float32), mat.to_numpy(dtype=np.float32),
                inst["dataset"].to_numpy(dtype=object), inst["instance_id"].tolist(),
                list(mat.columns))
