"""`import benchroute` stays light: no torch, faiss or sentence-transformers until first use."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_light():
    code = ("import sys, benchroute; benchroute.BenchmarkData; "
            "print(sorted(m for m in ('torch', 'faiss', 'sentence_transformers', 'transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api():
    import benchroute

    for name in benchroute.__all__:
        assert getattr(benchroute, name) is not None
    assert "Router" in dir(benchroute)
