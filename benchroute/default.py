"""The default router: the one fitted on a bundled pack (built once, then loaded), a pack's
embeddings, and the top-level :func:`select_model` and :func:`route` that use it when no router
is given."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from benchroute.data.store import BenchmarkData
from benchroute.deprecation import keywords_after
from benchroute.exceptions import BenchrouteError, DataError
from benchroute.inputs import LabeledRecords, Texts
from benchroute.router import Router
from benchroute.selection import Selection

logger = logging.getLogger(__name__)


def default_router(pack: str | None = None, refit: bool = False) -> Router:
    """A router fitted on a bundled pack, built once and then loaded from
    ``$BENCHROUTE_HOME/routers``. The pack carries its pool's embeddings, so only the user's
    texts go through the encoder."""
    from benchroute import __version__
    from benchroute._persist import sha256_file
    from benchroute.embedding.install import benchroute_home
    from benchroute.packs import DEFAULT_PACK, pack_files

    name = pack or DEFAULT_PACK
    files = pack_files(name)
    digest = sha256_file(files["data"])[:12]
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


def router_of(router: Router | str | os.PathLike[str] | None) -> Router:
    """The router the top-level functions use: the one given, one loaded from a saved folder
    (as the CLI's ``--router PATH``), or the default one. Anything else is refused by name:
    ``select_model(texts, labeled)`` (the methods' order) put the labels here, and failed with
    "'list' object has no attribute 'select_model'"."""
    if router is None:
        return default_router()
    if isinstance(router, Router):
        return router
    if isinstance(router, (str, os.PathLike)):
        return Router.load(router)
    raise BenchrouteError(f"router must be a Router, a saved router's folder or None, got "
                          f"{type(router).__name__}; the top-level functions take the router "
                          "second, so pass the method's other arguments by keyword "
                          "(labeled=..., candidates=...)")


@keywords_after(1)
def select_model(task_examples: Texts, *, router: Router | str | os.PathLike[str] | None = None,
                 labeled: LabeledRecords | None = None, candidates: Iterable[str] | None = None,
                 method: str = "S3", fallback: bool = True, exclude_datasets: Sequence[str] = (),
                 max_quality_drop: float | None = None,
                 costs: Mapping[str, float] | None = None,
                 keep_duplicates: bool = False) -> Selection:
    """Choose the best model for a task (:meth:`Router.select_model`, same parameters but the
    router second: a Router, a saved router's folder, or None for the default one fitted on the
    bundled pack)."""
    return router_of(router).select_model(
        task_examples, labeled=labeled, candidates=candidates, method=method, fallback=fallback,
        exclude_datasets=exclude_datasets, max_quality_drop=max_quality_drop, costs=costs,
        keep_duplicates=keep_duplicates)


@keywords_after(1)
def route(texts: Texts, *, router: Router | str | os.PathLike[str] | None = None,
          candidates: Iterable[str] | None = None, policy: str | None = None,
          costs: Mapping[str, float] | None = None, ood_alpha: float | None = None,
          keep_duplicates: bool = False, **policy_params: float | str) -> list[str]:
    """The model for each input (:meth:`Router.route`, same parameters but the router second,
    as for :func:`select_model`)."""
    return router_of(router).route(texts, candidates=candidates, policy=policy, costs=costs,
                                   ood_alpha=ood_alpha, keep_duplicates=keep_duplicates,
                                   **policy_params)


def route_table(texts: Texts, policy: str = "best", *,
                router: Router | str | os.PathLike[str] | None = None,
                candidates: Iterable[str] | None = None,
                costs: Mapping[str, float] | None = None, ood_alpha: float | None = None,
                keep_duplicates: bool = False, **policy_params: float | str) -> pd.DataFrame:
    """Each input's decision under a policy (:meth:`Router.route_table`, same parameters;
    ``router`` as for :func:`select_model`)."""
    return router_of(router).route_table(
        texts, policy, candidates=candidates, costs=costs, ood_alpha=ood_alpha,
        keep_duplicates=keep_duplicates, **policy_params)
