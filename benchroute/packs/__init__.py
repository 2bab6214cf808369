"""Benchmark packs bundled in the package: a store plus its inputs' embeddings.

Packs make the default router work on a fresh machine with no data download and no
re-embedding of the pool. Name a pack as ``pack:<name>`` wherever a data path is accepted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchroute.exceptions import DataError

HERE = Path(__file__).resolve().parent
DEFAULT_PACK = "helm_mmlu_llama3"
PREFIX = "pack:"


def available() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.parquet"))


def pack_files(name: str = DEFAULT_PACK) -> dict[str, Path]:
    """Paths of a pack's store (``data``), embeddings (``embeddings``) and card (``card``)."""
    if name not in available():
        raise DataError(f"unknown pack {name!r}; bundled packs: {available()}")
    return {"data": HERE / f"{name}.parquet", "embeddings": HERE / f"{name}.embeddings.npz",
            "card": HERE / f"{name}.json"}


def pack_card(name: str = DEFAULT_PACK) -> dict[str, Any]:
    return dict(json.loads(pack_files(name)["card"].read_text()))
