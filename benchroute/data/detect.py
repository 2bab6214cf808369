"""``benchroute.load``: one entry point that recognises every layout the loaders read.

Used by the CLI, where a user passes a path and expects the right thing to happen, archives
(as the shared data ships them) included.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchroute.data._io import read_json_records
from benchroute.data.archive import ArchiveLimits, extract_archives
from benchroute.data.helm import find_runs, load_helm
from benchroute.data.mixinstruct import load_mixinstruct
from benchroute.data.options import Metric, Threshold
from benchroute.data.store import BenchmarkData, LoadReport
from benchroute.data.tables import PRESETS, load_table, routerbench_columns
from benchroute.exceptions import DataError

_ARCHIVES = (".tar.xz", ".tar.gz", ".tgz", ".tar")
#: ``table=``: the column options of :func:`load_table` that a generic table may be given.
TABLE_OPTIONS = ("text", "dataset", "dataset_name", "instance_id", "model", "score", "models",
                 "layout")


def load(
    path: str | os.PathLike[str],
    *,
    preset: str | None = None,
    metric: Metric | None = None,
    threshold: Threshold | None = None,
    prices: str | os.PathLike[str] | None = None,
    strict: bool = False,
    strip_common_prefix: bool | Sequence[str] = False,
    check_inputs: bool = False,
    archive_limits: ArchiveLimits | None = None,
    table: Mapping[str, Any] | None = None,
) -> BenchmarkData:
    """Load benchmark results from any supported source, guessing the layout.

    Recognised: a saved store (``.parquet`` written by :meth:`BenchmarkData.save`), HELM run
    trees, RouterDC, RouteLLM, RouterBench and AlpacaEval folders, MixInstruct JSON/JSONL,
    generic tables, and ``.tar.*`` archives of any of these (or a folder holding such archives),
    extracted to a temporary folder that is removed afterwards (the report names the archive,
    never that folder). ``"pack:<name>"`` loads a bundled pack.

    Parameters
    ----------
    preset : str, optional
        Skip the guessing: one of the table presets (``routerbench``, ``routerdc``, ...),
        ``"helm"`` or ``"mixinstruct"``.
    metric : str or mapping of dataset to str, optional
        HELM and MixInstruct: the metric (per dataset with a mapping). Tables carry one score
        per cell, so a metric there is an error rather than ignored.
    threshold : float or mapping of dataset to float, optional
        Binarisation threshold (per dataset with a mapping); the loader's default when omitted.
    prices : path, optional
        HELM: a price table turning token counts into ``cost``.
    strict : bool
        Text conflicts are errors instead of reported skips.
    strip_common_prefix : bool or list of dataset names
        Drop the prefix shared by all inputs of each (or each named) dataset after loading; see
        :meth:`BenchmarkData.strip_common_prefix`.
    check_inputs : bool
        Warn in the report about inputs the encoder would cut or map to one vector
        (:func:`benchroute.data.encoder_check.check_inputs`; needs the installed model's
        tokenizer, skipped without it). Off by default because it tokenizes every input; the
        CLI's inspect, embed and fit turn it on.
    archive_limits : ArchiveLimits, optional
        Bounds on what archives may write (see :class:`ArchiveLimits`: by default at most 500
        times the archive's size, 64 GiB and a million members; the environment variables
        ``BENCHROUTE_ARCHIVE_*`` change the defaults).
    table : mapping, optional
        A generic table's columns, as :func:`load_table` takes them (``text``, ``dataset``,
        ``dataset_name``, ``instance_id``, ``model``, ``score``, ``models``, ``layout``): e.g.
        ``{"models": ["gpt-4", "mixtral"]}`` when a wide table's numeric metadata columns would
        be read as models. An error for any other source, whose columns its loader knows.
    """
    options = _Options(preset, metric, threshold, prices, strict, _table_options(table))
    if isinstance(path, str) and path.startswith("pack:"):
        from benchroute.packs import pack_files

        data = BenchmarkData.load(pack_files(path.removeprefix("pack:"))["data"])
        return _finish(data, strip_common_prefix, check_inputs)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if not path.is_file() and not path.is_dir():  # a pipe (<(cat f)), a FIFO, a device
        raise DataError(f"{path}: not a file or a folder (a pipe or a device?); benchmark "
                        "results are read from files: write them to one first")
    archives = _archives(path)
    if archives:
        with tempfile.TemporaryDirectory(prefix="benchroute-") as tmp:
            roots = extract_archives(archives, Path(tmp), archive_limits)
            try:
                parts = [_load_plain(root, options) for root in roots]
            except DataError as exc:
                raise DataError(_hide_all(str(exc), roots, tmp, str(path))) from exc
            data = parts[0] if len(parts) == 1 else BenchmarkData.concat(parts)
        for root in roots:
            _hide_folder(data.report, str(root), str(path))
        _hide_folder(data.report, tmp, str(path))
        data.report.sources = [str(path)]
        return _finish(data, strip_common_prefix, check_inputs)
    return _finish(_load_plain(path, options), strip_common_prefix, check_inputs)


@dataclass(frozen=True)
class _Options:
    preset: str | None
    metric: Metric | None
    threshold: Threshold | None
    prices: str | os.PathLike[str] | None
    strict: bool
    table: tuple[tuple[str, Any], ...] = ()

    def kwargs(self, loader: str) -> dict[str, Any]:
        """Keyword arguments for one loader: what it accepts, and an error for what it cannot
        use (a metric for a table, prices for anything but HELM) rather than ignoring it."""
        out: dict[str, Any] = {"strict": True} if self.strict else {}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.metric is not None:
            if loader not in ("helm", "mixinstruct"):
                raise DataError(
                    f"metric= applies to HELM and MixInstruct sources; this is a {loader} table "
                    "with one score per cell (choose its columns with load_table's score=/models=)"
                )
            out["metric"] = self.metric
        if self.prices is not None:
            if loader != "helm":
                raise DataError(f"prices= applies to HELM token counts; this is a {loader} source")
            out["prices"] = self.prices
        if self.table:
            if loader != "table":
                raise DataError(f"table= (the CLI's --column/--models) applies to generic tables; "
                                f"this source is read by the {loader} loader, which knows its "
                                "columns")
            out.update(self.table)
        return out


def _table_options(table: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    if table is None:
        return ()
    if not isinstance(table, Mapping):
        raise DataError(f"table= must be a mapping of load_table's column options, got "
                        f"{type(table).__name__}")
    unknown = sorted(str(k) for k in table if k not in TABLE_OPTIONS)
    if unknown:
        raise DataError(f"table= has unknown option(s) {unknown}; choose among {list(TABLE_OPTIONS)}")

    def value(key: str, v: Any) -> Any:  # models: one name as a str, as a list elsewhere
        if key != "models" or v is None:
            return v
        return (v,) if isinstance(v, str) else tuple(v)

    return tuple((k, value(k, v)) for k, v in table.items())


def _call(loader: Callable[..., BenchmarkData], name: str, path: Path, options: _Options,
          **fixed: Any) -> BenchmarkData:
    kwargs = options.kwargs(name)
    accepted = inspect.signature(loader).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(k for k in kwargs if k not in accepted)
        if unknown:
            raise DataError(f"{path}: the {name} loader of this version does not accept {unknown}")
    return loader(path, **{**fixed, **kwargs})  # the caller's columns over a guessed one


def _finish(data: BenchmarkData, strip: bool | Sequence[str], check: bool) -> BenchmarkData:
    if strip is not False:
        data = data.strip_common_prefix(None if strip is True else list(strip))
    if check:
        from benchroute.data.encoder_check import check_inputs

        check_inputs(data)
    return data


def _hide_folder(report: LoadReport, folder: str, shown: str) -> None:
    """Replace the temporary extraction folder by the archive's path in every report string."""
    report.skipped = [(_hide(a, folder, shown), _hide(b, folder, shown)) for a, b in report.skipped]
    report.notes = [_hide(n, folder, shown) for n in report.notes]
    report.warnings = [_hide(w, folder, shown) for w in report.warnings]


def _hide_all(text: str, roots: Sequence[Path], tmp: str, shown: str) -> str:
    for root in roots:
        text = _hide(text, str(root), shown)
    return _hide(text, tmp, shown)


def _hide(text: str, folder: str, shown: str) -> str:
    # Paths may be absolute or relative to the folder's parent (the folder's name remains).
    return text.replace(folder, shown).replace(Path(folder).name, Path(shown).name)


def _archives(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.name.endswith(_ARCHIVES) else []
    children = [p for p in path.iterdir() if not p.name.endswith(".md")]
    archives = [p for p in children if p.name.endswith(_ARCHIVES)]
    return sorted(archives) if archives and len(archives) == len(children) else []


def _load_plain(path: Path, options: _Options) -> BenchmarkData:
    if options.preset is not None:
        return _load_preset(path, options)
    if path.is_dir():
        if (path / "alpaca_eval_preferences.csv.gz").is_file():
            return _call(load_table, "alpaca_eval", path, options, preset="alpaca_eval")
        if any((p / "mmlu" / "responses").is_dir()
               for p in (path, path / "evals", path / "routellm" / "evals")):
            return _call(load_table, "routellm", path, options, preset="routellm")
        if find_runs(path):
            return _call(load_helm, "helm", path, options)
        for candidate in (path / "datasets" / "split2_model7", path / "split2_model7", path):
            first = next(iter(sorted(candidate.glob("*.json"))), None) if candidate.is_dir() else None
            if first is not None and _looks_like_routerdc(first):
                return _call(load_table, "routerdc", path, options, preset="routerdc")
        tables = sorted(p for p in path.iterdir() if p.is_file()
                        and p.name.lower().endswith((".csv", ".csv.gz", ".parquet")))
        if tables and all(routerbench_columns(_columns(t)) for t in tables):
            return _call(load_table, "routerbench", path, options, preset="routerbench")
        children = [p for p in path.iterdir() if not p.name.startswith(".")]
        if len(children) == 1 and children[0].is_dir():  # an archive's top folder
            return _load_plain(children[0], options)
        raise DataError(
            f"{path}: no known layout (HELM runs, RouterDC, RouteLLM, RouterBench or AlpacaEval "
            "folder)"
        )
    name = path.name.lower()
    if name.endswith(".parquet") and _is_store(path):
        if options != _Options(None, None, None, None, False):
            raise DataError(f"{path}: a saved store is loaded as saved; metric, threshold, "
                            "prices, strict and columns apply when reading the original results")
        return BenchmarkData.load(path)
    if name.endswith((".json", ".jsonl", ".json.xz", ".jsonl.xz")):
        records = read_json_records(path)
        if not records:
            raise DataError(f"{path}: no records (an empty JSON list)")
        record = records[0]
        if "candidates" in record:
            return _call(load_mixinstruct, "mixinstruct", path, options)
        if "question" in record and isinstance(record.get("scores"), dict):
            return _call(load_table, "routerdc", path, options, preset="routerdc")
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")):
        columns = _columns(path)
        if routerbench_columns(columns):
            return _call(load_table, "routerbench", path, options, preset="routerbench")
        if "prompt" in columns and "text" not in columns:
            return _call(load_table, "table", path, options, text="prompt")
    return _call(load_table, "table", path, options)


_LOADERS: dict[str, tuple[Callable[..., BenchmarkData], dict[str, Any]]] = {
    "helm": (load_helm, {}),
    "mixinstruct": (load_mixinstruct, {}),
    **{p: (load_table, {"preset": p}) for p in PRESETS},
}


def _load_preset(path: Path, options: _Options) -> BenchmarkData:
    if options.preset not in _LOADERS:
        raise DataError(f"unknown preset {options.preset!r}; choose one of {sorted(_LOADERS)}")
    loader, fixed = _LOADERS[options.preset]
    return _call(loader, options.preset, path, options, **fixed)


def _columns(path: Path) -> list[str]:
    """A table's header without reading its rows; unreadable files are a DataError."""
    if path.name.lower().endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
    sep = "\t" if ".tsv" in path.name.lower() else ","
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0, sep=sep, encoding="utf-8-sig").columns]
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: file is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot parse the table ({exc})") from exc


def _is_store(path: Path) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return b"benchroute" in (pq.read_schema(path).metadata or {})
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc


def _looks_like_routerdc(file: Path) -> bool:
    try:
        with open(file, "rb") as fh:
            head = fh.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    return '"question"' in head and '"scores"' in head
