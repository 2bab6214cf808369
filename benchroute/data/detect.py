"""``benchroute.load``: one entry point that recognises every layout the loaders read.

Used by the CLI, where a user passes a path and expects the right thing to happen, archives
(as the shared data ships them) included.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from benchroute.data._io import read_json_records
from benchroute.data.archive import ArchiveLimits, extract_archives
from benchroute.data.helm import find_runs, load_helm
from benchroute.data.mixinstruct import load_mixinstruct
from benchroute.data.store import BenchmarkData
from benchroute.data.tables import load_table
from benchroute.exceptions import DataError

_ARCHIVES = (".tar.xz", ".tar.gz", ".tgz", ".tar")


def load(path: str | os.PathLike[str], *, archive_limits: ArchiveLimits | None = None
         ) -> BenchmarkData:
    """Load benchmark results from any supported source, guessing the layout.

    Recognised: a saved store (``.parquet`` written by :meth:`BenchmarkData.save`), HELM run
    trees, RouterDC, RouteLLM and AlpacaEval folders, MixInstruct JSON/JSONL, generic tables, and
    ``.tar.*`` archives of any of these (or a folder holding such archives), extracted to a
    temporary folder that is removed afterwards. ``"pack:<name>"`` loads a bundled pack.

    ``archive_limits`` bounds what archives may write (see :class:`ArchiveLimits`: by default
    at most 500 times the archive's size, 64 GiB and a million members; environment variables
    ``BENCHROUTE_ARCHIVE_*`` change the defaults).
    """
    if isinstance(path, str) and path.startswith("pack:"):
        from benchroute.packs import pack_files

        return BenchmarkData.load(pack_files(path.removeprefix("pack:"))["data"])
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    archives = _archives(path)
    if archives:
        with tempfile.TemporaryDirectory(prefix="benchroute-") as tmp:
            parts = [_load_plain(root) for root in extract_archives(archives, Path(tmp), archive_limits)]
            data = parts[0] if len(parts) == 1 else BenchmarkData.concat(parts)
        data.report.sources = [str(path)]
        return data
    return _load_plain(path)


def _archives(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.name.endswith(_ARCHIVES) else []
    children = [p for p in path.iterdir() if not p.name.endswith(".md")]
    archives = [p for p in children if p.name.endswith(_ARCHIVES)]
    return sorted(archives) if archives and len(archives) == len(children) else []


def _load_plain(path: Path) -> BenchmarkData:
    if path.is_dir():
        if (path / "alpaca_eval_preferences.csv.gz").is_file():
            return load_table(path, preset="alpaca_eval")
        if any((p / "mmlu" / "responses").is_dir()
               for p in (path, path / "evals", path / "routellm" / "evals")):
            return load_table(path, preset="routellm")
        if find_runs(path):
            return load_helm(path)
        for candidate in (path / "datasets" / "split2_model7", path / "split2_model7", path):
            first = next(iter(sorted(candidate.glob("*.json"))), None) if candidate.is_dir() else None
            if first is not None and _looks_like_routerdc(first):
                return load_table(path, preset="routerdc")
        raise DataError(
            f"{path}: no known layout (HELM runs, RouterDC, RouteLLM or AlpacaEval folder)"
        )
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        if b"benchroute" in (pq.read_schema(path).metadata or {}):
            return BenchmarkData.load(path)
        return load_table(path)
    if name.endswith((".json", ".jsonl", ".json.xz", ".jsonl.xz")):
        record = read_json_records(path)[0]
        if "candidates" in record:
            return load_mixinstruct(path)
        if "question" in record and isinstance(record.get("scores"), dict):
            return load_table(path, preset="routerdc")
    if name.endswith(".csv") and "prompt" in pd.read_csv(path, nrows=0).columns:
        return load_table(path, text="prompt")
    return load_table(path)


def _looks_like_routerdc(file: Path) -> bool:
    with open(file, encoding="utf-8") as fh:
        head = fh.read(4096)
    return '"question"' in head and '"scores"' in head
