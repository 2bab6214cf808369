"""The module graph of docs/architecture.md: no import circle, no import pointing up a layer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_circles_and_every_arrow_points_down():
    ig = _script()
    g = ig.graph(ROOT / "benchroute")
    assert ig.circles(g) == []
    assert ig.upward(g) == []
    # every module has a layer, so a new one cannot slip past the check
    assert [m for m in g if m != "benchroute" and ig.layer_of(m) is None] == []


def test_the_check_finds_a_circle_and_an_upward_arrow():
    ig = _script()
    g = {"benchroute.router": {"benchroute.persistence"},
         "benchroute.persistence": {"benchroute.router"},
         "benchroute.scoring": {"benchroute.selection"}, "benchroute.selection": set()}
    assert ig.circles(g) == [["benchroute.persistence", "benchroute.router"]]
    assert ig.upward(g) == [("benchroute.scoring", "benchroute.selection")]
