"""Shared machinery of the loader corpus: a case writes files, calls a loader and states the
exact outcome (a DataError matching a pattern, or the loaded store's properties)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from benchroute.data.store import BenchmarkData
from benchroute.exceptions import DataError


@dataclass(frozen=True)
class Ok:
    """Expected properties of a loaded store (only those given are checked)."""

    models: list[str] | None = None
    datasets: list[str] | None = None
    n_instances: int | None = None
    n_results: int | None = None
    counts: dict[str, int] | None = None
    texts: list[str] | None = None
    correct: list[float] | None = None
    extra: Callable[[BenchmarkData], Any] | None = None
    warns: str | None = None


@dataclass(frozen=True)
class Err:
    match: str


@dataclass(frozen=True)
class Case:
    files: dict[str, str | bytes | Any]
    call: Callable[[Path], BenchmarkData]
    expect: Ok | Err
    kind: str = field(default="")


def write(tmp: Path, files: dict[str, str | bytes | Any]) -> None:
    for name, content in files.items():
        target = tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        elif isinstance(content, str):
            target.write_text(content, encoding="utf-8", errors="surrogatepass")
        else:
            target.write_text(json.dumps(content), encoding="utf-8")


def run_case(case: Case, tmp: Path) -> bool:
    """Run one case; its checks assert, and True is returned when all hold."""
    write(tmp, case.files)
    if isinstance(case.expect, Err):
        with pytest.raises(DataError, match=case.expect.match):
            case.call(tmp)
        return True
    data = case.call(tmp)
    e = case.expect
    frame = data.frame.sort_values(["dataset", "instance_id", "model"], kind="stable")
    if e.models is not None:
        assert data.models == e.models
    if e.datasets is not None:
        assert data.datasets == e.datasets
    if e.n_instances is not None:
        assert data.n_instances == e.n_instances
    if e.n_results is not None:
        assert len(data) == e.n_results
    if e.counts is not None:
        assert data.report.counts == e.counts
    if e.texts is not None:
        assert data.instances()["text"].tolist() == e.texts
    if e.correct is not None:
        assert frame["correct"].tolist() == pytest.approx(e.correct)
    if e.warns is not None:
        assert any(e.warns in w for w in data.report.warnings), data.report.warnings
    if e.extra is not None:
        e.extra(data)
    return True


