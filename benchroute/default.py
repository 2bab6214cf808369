"""The pool of a store as arrays, the router fitted on a bundled pack, and a pack's embeddings."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from benchroute.data.store import BenchmarkData
from benchroute.exceptions import BenchrouteError, DataError
from benchroute.router import Router

logger = logging.getLogger(__name__)


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


def default_router(pack: str | None = None, refit: bool = False) -> Router:
    """A router fitted on a bundled pack, built once and then loaded from
    ``$BENCHROUTE_HOME/routers``. The pack carries its pool's embeddings, so only the user's
    texts go through the encoder."""
    from benchroute import __version__
    from benchroute.embedding.install import benchroute_home
    from benchroute.packs import DEFAULT_PACK, pack_files

    name = pack or DEFAULT_PACK
    files = pack_files(name)
    digest = hashlib.sha256(files["data"].read_bytes()).hexdigest()[:12]
    folder = benchroute_home() / "routers" / f"{name}-{digest}-v{__version__}"
    if not refit and (folder / "router.json").is_file():
        try:
            return Router.load(folder)
        except BenchrouteError as exc:
            logger.warning("rebuilding the default router: %s", exc)
    data = BenchmarkData.load(files["data"])
    router = Router().fit(data, embeddings=pack_embeddings(data, name))
    router.save(folder)
    return router


def pack_embeddings(data: BenchmarkData, pack: str) -> np.ndarray:
    """Vectors of ``data.instances()`` looked up by text hash in a pack's embeddings file."""
    from benchroute.embedding import text_key
    from benchroute.packs import pack_files

    with np.load(pack_files(pack)["embeddings"], allow_pickle=False) as z:
        row = {str(k): i for i, k in enumerate(z["sha256"].tolist())}
        emb = z["embedding"]
    keys = [text_key(t) for t in data.instances()["text"]]
    missing = sum(k not in row for k in keys)
    if missing:
        raise DataError(f"pack {pack!r}: {missing} inputs have no embedding in the pack")
    return emb[[row[k] for k in keys]].astype(np.float32)
