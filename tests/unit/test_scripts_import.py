"""Every script and benchmark still imports: they are not part of the package, so a module that
moves (as pool_arrays did to benchroute.data.pool) would otherwise break them silently."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "scripts").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.syspath_prepend(str(path.parent))  # benchmarks import their _common
    spec = importlib.util.spec_from_file_location(f"_checked_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # top level only: main() runs under __main__ alone
    assert hasattr(module, "main") or path.name.startswith("_")
    sys.modules.pop(f"_checked_{path.stem}", None)
