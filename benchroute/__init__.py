"""benchroute: pick the best LLM for a task, or for each input, from existing benchmark results.

Nothing heavy is imported here: names resolve on first use, so ``import benchroute`` stays fast
and loads neither torch nor faiss.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Every public name and the module that defines it: ``__all__`` is derived from this one list.
_EXPORTS = {
    "BenchmarkData": "benchroute.data.store",
    "LoadReport": "benchroute.data.store",
    "load": "benchroute.data.detect",
    "load_helm": "benchroute.data.helm",
    "load_mixinstruct": "benchroute.data.mixinstruct",
    "load_prices": "benchroute.data.prices",
    "load_table": "benchroute.data.tables",
    "embed_texts": "benchroute.embedding",
    "BenchrouteError": "benchroute.exceptions",
    "DataError": "benchroute.exceptions",
    "NotFittedError": "benchroute.exceptions",
    "Router": "benchroute.router",
    "Selection": "benchroute.selection",
    "select_model": "benchroute.default",
    "route": "benchroute.default",
    "route_table": "benchroute.default",
    "PerInputPredictor": "benchroute.tuning",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
    # for type checkers only (names listed in _EXPORTS, so ruff cannot see them used)
    from benchroute.data.detect import load  # noqa: F401
    from benchroute.data.helm import load_helm  # noqa: F401
    from benchroute.data.mixinstruct import load_mixinstruct  # noqa: F401
    from benchroute.data.prices import load_prices  # noqa: F401
    from benchroute.data.store import BenchmarkData, LoadReport  # noqa: F401
    from benchroute.data.tables import load_table  # noqa: F401
    from benchroute.default import route, route_table, select_model  # noqa: F401
    from benchroute.embedding import embed_texts  # noqa: F401
    from benchroute.exceptions import BenchrouteError, DataError, NotFittedError  # noqa: F401
    from benchroute.router import Router  # noqa: F401
    from benchroute.selection import Selection  # noqa: F401
    from benchroute.tuning import PerInputPredictor  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'benchroute' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
