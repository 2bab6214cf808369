"""benchroute: pick the best LLM for a task, or for each input, from existing benchmark results.

Nothing heavy is imported here: names resolve on first use, so ``import benchroute`` stays fast
and loads neither torch nor faiss.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "BenchmarkData": "benchroute.data.store",
    "LoadReport": "benchroute.data.store",
    "load": "benchroute.data.detect",
    "load_helm": "benchroute.data.helm",
    "load_mixinstruct": "benchroute.data.mixinstruct",
    "load_prices": "benchroute.data.prices",
    "load_table": "benchroute.data.tables",
    "BenchrouteError": "benchroute.exceptions",
    "Router": "benchroute.router",
    "Selection": "benchroute.selection",
    "select_model": "benchroute.default",
    "route": "benchroute.default",
    "DataError": "benchroute.exceptions",
    "PerInputPredictor": "benchroute.tuning",
}

__all__ = [
    "BenchmarkData",
    "BenchrouteError",
    "DataError",
    "LoadReport",
    "PerInputPredictor",
    "Router",
    "Selection",
    "__version__",
    "load",
    "load_helm",
    "load_mixinstruct",
    "load_prices",
    "load_table",
    "route",
    "select_model",
]

if TYPE_CHECKING:
    from benchroute.data.detect import load
    from benchroute.data.helm import load_helm
    from benchroute.data.mixinstruct import load_mixinstruct
    from benchroute.data.prices import load_prices
    from benchroute.data.store import BenchmarkData, LoadReport
    from benchroute.data.tables import load_table
    from benchroute.default import route, select_model
    from benchroute.exceptions import BenchrouteError, DataError
    from benchroute.router import Router
    from benchroute.selection import Selection
    from benchroute.tuning import PerInputPredictor


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'benchroute' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
