"""The scripts in examples/ run as their docstrings say, with the real encoder (a few dozen
texts), each in a process of its own with the tests' temporary benchroute home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_select_for_a_task(mpnet_installed):
    out = _run("examples/select_for_a_task.py")
    assert out.startswith("Selection: ") and " by S3 " in out
    assert "2 labelled" in out  # the few-shot call with candidates ran
    last = out.strip().splitlines()[-1]
    assert last.startswith("[") and last.count("'") == 10  # five routed models


def test_fit_your_own(mpnet_installed, tmp_path):
    """The store's own long layout (model and correct columns) is what a user writes first."""
    table = tmp_path / "mine.csv"
    rows = ["dataset,instance_id,text,model,correct"]
    for task in ("math", "code", "history"):
        for i in range(8):
            text = f"A {task} question number {i} about topic {i * 7 % 5}"
            rows += [f"{task},{task}-{i},{text},small,{i % 3 == 0:d}",
                     f"{task},{task}-{i},{text},large,{i % 4 != 0:d}"]
    table.write_text("\n".join(rows) + "\n")
    out = _run("examples/fit_your_own.py", str(table), str(tmp_path / "router"))
    assert "BenchmarkData(3 datasets, 2 models, 24 instances, 48 results)" in out
    assert "best model on average: large" in out
    assert (tmp_path / "router" / "router.json").is_file()
