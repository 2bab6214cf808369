"""Loader for result tables, wide (one column per model) or long, with presets for known layouts.

Each preset encodes its source's score semantics (documented on each preset: what a score means,
where the files come from), so a user need not know, say, that a RouterDC multiple-choice score of 0 means "wrong".
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchroute.data._io import read_json_records
from benchroute.data.options import Threshold, thresholds_for
from benchroute.data.store import BenchmarkData, LoadReport, binarize, resolve_repeated, row_key
from benchroute.exceptions import DataError

PRESETS = ("routerdc", "routellm", "routerbench", "alpaca_eval")
CorrectRule = str | Callable[[pd.Series], np.ndarray]
_BOOL_STRINGS = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0}


def load_table(
    path: str | os.PathLike[str],
    preset: str | None = None,
    *,
    layout: str = "auto",
    text: str = "text",
    dataset: str | None = "dataset",
    dataset_name: str | None = None,
    instance_id: str | None = None,
    model: str = "model",
    score: str = "score",
    models: Sequence[str] | None = None,
    correct: CorrectRule = "threshold",
    threshold: Threshold = 0.5,
    strict: bool = False,
    **preset_options: Any,
) -> BenchmarkData:
    """Load a table of per-sample results (CSV, TSV, JSON, JSONL or parquet).

    Parameters
    ----------
    path : path-like
        The table, or for a preset the source's file or folder.
    preset : {"routerdc", "routellm", "routerbench", "alpaca_eval"}, optional
        A known layout; the column arguments below are then ignored.
    layout : {"auto", "wide", "long"}
        Wide has one score column per model; long has ``model`` and ``score`` columns. "auto"
        picks long when both of those columns exist.
    text, dataset, instance_id, model, score : str
        Column names. ``dataset`` may be missing from the table: then ``dataset_name`` or the
        file stem names the single dataset. Without ``instance_id`` rows are numbered (wide) or
        identical texts within a dataset are one instance (long).
    models : sequence of str, optional
        Wide layout: the model columns. Default: every other column whose values are numbers or
        booleans (the others are listed in ``report.notes``; a column mixing numbers with other
        values is reported, one mixing them with objects is an error).
    correct : {"threshold", "positive", "as_is"} or callable
        How ``score`` becomes ``correct``: ``score >= threshold`` (scores must lie in [0, 1]),
        ``score > 0``, the score itself (a quality in [0, 1] for per-instance routing), or your own
        function of the score column (one value in [0, 1] per row).
    threshold : float or mapping of dataset to float
        In (0, 1]; a mapping sets it per dataset (datasets it does not name use 0.5).
    strict : bool
        Passed to :class:`BenchmarkData`: a text conflict is an error instead of a reported skip.
    """
    if preset is not None:
        if preset not in PRESETS:
            raise DataError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
        loaders: dict[str, Callable[..., BenchmarkData]] = {
            "routerdc": _load_routerdc,
            "routellm": _load_routellm,
            "routerbench": _load_routerbench,
            "alpaca_eval": _load_alpaca_eval,
        }
        loader = loaders[preset]
        return loader(Path(path), threshold=threshold, strict=strict, **preset_options)
    if preset_options:
        raise DataError(f"unexpected options {sorted(preset_options)} without a preset")
    path = Path(path)
    if layout not in ("auto", "wide", "long"):
        raise DataError(f"layout must be 'auto', 'wide' or 'long', got {layout!r}")
    report = LoadReport(sources=[str(path)])
    frame = read_table(path, keep=(text, dataset, instance_id, model), report=report)
    if layout == "auto":
        layout = "long" if {model, score} <= set(frame.columns) else "wide"
    name = dataset_name or _stem(path)
    if layout == "long":
        long = _long_frame(frame, path, text, dataset, name, instance_id, model, score)
        label = score
    else:
        long = _wide_to_long(frame, path, text, dataset, name, instance_id, models, report)
        label = "score"
    long["correct"] = _apply_rule(correct, long, threshold, path)
    _record(report, long, label, "caller")
    return BenchmarkData(long, report=report, source=str(path), strict=strict)


# ---------------------------------------------------------------------------- generic reading
_NA_STRINGS = frozenset({"", "nan", "na", "n/a", "null", "none", "#n/a"})


def read_table(path: Path, keep: Sequence[str | None] = (), report: LoadReport | None = None
               ) -> pd.DataFrame:
    """A table from CSV/TSV (optionally gzipped), JSON/JSONL or parquet, with clear errors.

    CSV/TSV cells are read as text and a column becomes numeric only when every filled cell is a
    number, except the columns in ``keep`` (texts, ids), which stay text: a prompt ``1`` must not
    become ``"1.0"``. A row with more or fewer fields than the header, or a header naming a column
    twice, is an error (pandas would shift the row or rename the column ``m1.1``).
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    name = path.name.lower()
    try:
        if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
            frame = _read_delimited(path, "\t" if ".tsv" in name else ",", keep)
        elif name.endswith((".json", ".jsonl", ".json.xz", ".jsonl.xz")):
            records = read_json_records(
                path, None if report is None else lambda n: report.count("lone_surrogates_replaced", n))
            if not records:
                raise DataError(f"{path}: the table has no rows (an empty JSON list)")
            try:
                frame = pd.DataFrame(records)
            except OverflowError:  # pandas 2 on a 400-digit integer: keep the cells as they are
                frame = pd.DataFrame(records, dtype=object)
        elif name.endswith(".parquet"):
            frame = _read_parquet(path)
        elif name.endswith((".pkl", ".pickle")):
            raise DataError(
                f"{path}: pickle files are not loaded (they can run code); convert once with "
                "pandas.read_pickle(path).to_parquet('table.parquet') if you trust the file"
            )
        else:
            raise DataError(f"{path}: unknown table format; use .csv, .tsv, .json, .jsonl or .parquet")
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: file is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: cannot parse the table ({exc})") from exc
    if frame.empty:
        raise DataError(f"{path}: the table has no rows")
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa

    try:
        return pd.read_parquet(path)
    except pa.ArrowException as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc


def _check_row_widths(path: Path, sep: str) -> None:
    """Every row has the header's number of fields: pandas shifts a longer row (or all of them)
    into an index and pads a shorter one with blanks, both silently."""
    import gzip

    from benchroute.data._io import csv_rows

    opener: Callable[..., Any] = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        width = None
        for lineno, row in csv_rows(fh, str(path), sep):
            if not row:
                continue
            if width is None:
                width = len(row)
            elif len(row) != width:
                raise DataError(
                    f"{path}: line {lineno} has {len(row)} fields, the header has "
                    f"{width} (a ragged row would shift its values into other columns)"
                )


def _read_delimited(path: Path, sep: str, keep: Sequence[str | None]) -> pd.DataFrame:
    # Every cell as text, the header as a row: repeated names are an error (pandas would rename
    # them m1.1), and a column becomes numeric only when all its filled cells are numbers.
    _check_row_widths(path, sep)
    raw = pd.read_csv(path, sep=sep, header=None, dtype=str, keep_default_na=False,
                      encoding="utf-8-sig")
    header = [str(c) for c in raw.iloc[0]]
    seen: set[str] = set()
    for col in header:
        if col in seen:
            raise DataError(
                f"{path}: the header names column {col!r} twice; rename one (a duplicate "
                "model column cannot be told apart)"
            )
        seen.add(col)
    frame = raw.iloc[1:].reset_index(drop=True)
    frame.columns = header
    keep_set = {k for k in keep if k}
    for col in frame.columns:
        values = frame[col]
        stripped = values.str.strip()
        if col in keep_set:
            frame[col] = values.where(stripped != "", None)
            continue
        blank = stripped.str.lower().isin(_NA_STRINGS)
        filled = values[~blank]
        # a text column fails on its first few cells: skip parsing all of it
        numeric_head = pd.to_numeric(filled.head(64), errors="coerce").notna().all()
        numeric = pd.to_numeric(values.where(~blank), errors="coerce") if numeric_head else None
        if numeric is not None and (numeric.notna() | blank).all() and not blank.all():
            frame[col] = numeric.astype(float)
        else:
            frame[col] = values.where(~blank, None)
    return frame


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".xz", ".csv", ".tsv", ".jsonl", ".json", ".parquet"):
        name = name.removesuffix(suffix)
    return name


def _require(frame: pd.DataFrame, cols: Sequence[str], path: Path) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)}")


class _NotAScore(Exception):
    pass


def _score_of(value: object) -> float:
    """One cell as a score: numbers, booleans, "True"/"False" or number strings; blanks → NaN."""
    if value is None:
        return float("nan")
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            return float(value)
        except OverflowError as exc:  # a 400-digit integer
            raise _NotAScore from exc
    if isinstance(value, str):
        s = value.strip().lower()
        if s in _NA_STRINGS:
            return float("nan")
        if s in _BOOL_STRINGS:
            return _BOOL_STRINGS[s]
        try:
            return float(s)
        except (ValueError, OverflowError) as exc:
            raise _NotAScore from exc
    raise _NotAScore


def _as_scores(col: pd.Series, where: str) -> pd.Series:
    """Numbers, booleans, or "True"/"False" strings → float; anything else is an error."""
    if col.dtype == bool or pd.api.types.is_numeric_dtype(col):
        return col.astype(float)
    out = []
    for pos, value in enumerate(col.tolist()):
        try:
            out.append(_score_of(value))
        except _NotAScore:
            raise DataError(
                f"{where}: value {value!r} is not a number or True/False (row {pos})"
            ) from None
    return pd.Series(out, index=col.index, dtype=float)


def _score_kinds(col: pd.Series) -> tuple[int, object]:
    """How many filled cells are scores, and the first cell that is not (or None)."""
    if col.dtype == bool or pd.api.types.is_numeric_dtype(col):
        return int(col.notna().sum()), None
    n, bad = 0, None
    for value in col.tolist():
        try:
            n += not np.isnan(_score_of(value))
        except _NotAScore:
            if bad is None:
                bad = value
    return n, bad


def _text_column(col: pd.Series, where: str) -> pd.Series:
    """Texts or ids as strings (numbers written as they were: 1 stays "1"); NaN stays missing;
    objects, lists and booleans are errors rather than their Python repr."""
    kind = pd.api.types.infer_dtype(col, skipna=True)
    if kind in ("string", "empty"):
        return col.where(col.notna(), None).astype(object)
    if kind == "integer" and pd.api.types.is_integer_dtype(col):
        return col.astype(str).astype(object)
    if kind == "floating" and pd.api.types.is_float_dtype(col):
        values = col.to_numpy(dtype=float)
        filled = ~np.isnan(values)
        if np.all(np.isfinite(values[filled]) & (values[filled] == np.round(values[filled]))):
            out = pd.Series(None, index=col.index, dtype=object)
            out[filled] = values[filled].astype(np.int64).astype(str)
            return out

    def one(value: object) -> object:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return str(int(value))
        if isinstance(value, (float, np.floating)):
            return str(int(value)) if float(value).is_integer() else str(float(value))
        raise DataError(f"{where}: value {value!r} is a {type(value).__name__}, expected text")
    return col.map(one).astype(object)


def _pick_models(
    frame: pd.DataFrame, path: Path, exclude: set[str], report: LoadReport
) -> list[str]:
    """Model columns of a wide table: every other column whose filled cells are all scores.

    A column mixing scores with objects is an error; one mixing scores with other text is not
    read as a model and is reported; other text columns are listed in the report's notes, so no
    column disappears without a word.
    """
    models, ignored = [], []
    for c in frame.columns:
        if c in exclude:
            continue
        n_scores, bad = _score_kinds(frame[c])
        if bad is None and n_scores:
            models.append(c)
            continue
        ignored.append(str(c))
        if n_scores and isinstance(bad, (dict, list)):
            raise DataError(
                f"{path}: column {c!r} mixes scores with a {type(bad).__name__} ({bad!r}); a "
                "model column holds numbers or True/False only"
            )
        if n_scores:
            report.warn(
                f"{path}: column {c!r} holds {n_scores} numbers but also {bad!r}; it is not read "
                "as a model (fix the cell, or pass models=[...] to get an error naming it)"
            )
            report.skipped.append((f"{path}: column {c!r}", f"not all scores (e.g. {bad!r})"))
    if ignored:
        report.notes.append(f"{path.name}: columns not read as models: {ignored}")
    return models


def _wide_to_long(
    frame: pd.DataFrame, path: Path, text: str, dataset: str | None, name: str,
    instance_id: str | None, models: Sequence[str] | None, report: LoadReport | None = None,
    ids: pd.Series | None = None,
) -> pd.DataFrame:
    _require(frame, [text], path)
    id_cols = [c for c in (dataset, instance_id) if c and c in frame.columns]
    if models is None:
        models = _pick_models(frame, path, {text, *id_cols}, report or LoadReport())
        if not models:
            raise DataError(f"{path}: no model columns (numeric or True/False) besides {text!r}")
    _require(frame, list(models), path)
    if ids is None:
        if instance_id:
            _require(frame, [instance_id], path)
            ids = _text_column(frame[instance_id], f"{path}: column {instance_id!r}")
        else:
            ids = pd.Series(range(len(frame)), index=frame.index).astype(str)
    base = pd.DataFrame({
        "dataset": (_text_column(frame[dataset], f"{path}: column {dataset!r}")
                    if dataset and dataset in frame.columns else name),
        "instance_id": ids,
        "text": _text_column(frame[text], f"{path}: column {text!r}"),
    })
    parts = []
    for m in models:
        part = base.copy()
        part["model"] = str(m)
        part["score"] = _as_scores(frame[m], f"{path}: column {m!r}")
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _long_frame(
    frame: pd.DataFrame, path: Path, text: str, dataset: str | None, name: str,
    instance_id: str | None, model: str, score: str,
) -> pd.DataFrame:
    _require(frame, [text, model, score], path)
    out = pd.DataFrame({
        "dataset": (_text_column(frame[dataset], f"{path}: column {dataset!r}")
                    if dataset and dataset in frame.columns else name),
        "text": _text_column(frame[text], f"{path}: column {text!r}"),
        "model": _text_column(frame[model], f"{path}: column {model!r}"),
        "score": _as_scores(frame[score], f"{path}: column {score!r}"),
    })
    if instance_id:
        _require(frame, [instance_id], path)
        out["instance_id"] = _text_column(frame[instance_id], f"{path}: column {instance_id!r}")
    else:
        out["instance_id"] = "t" + out.groupby(["dataset", "text"], sort=False,
                                               dropna=False).ngroup().astype(str)
    return out


def _apply_rule(rule: CorrectRule, long: pd.DataFrame, threshold: Threshold, path: Path,
                known: Sequence[str] = ()) -> np.ndarray:
    scores = long["score"]
    if callable(rule):
        out = np.asarray(rule(scores), dtype=float)
        if out.shape != (len(scores),):
            raise DataError(
                f"{path}: correct= function returned shape {out.shape}; expected one value per "
                f"row ({len(scores)})"
            )
        return out
    if rule == "threshold":
        values = scores.to_numpy(dtype=float)
        outside = ~np.isnan(values) & ~((values >= 0) & (values <= 1))
        if outside.any():
            row = long.loc[outside].iloc[0]
            raise DataError(
                f"{path}: correct='threshold' needs scores in [0, 1]; got {float(row['score'])!r} "
                f"for {row_key(row)} ({int(outside.sum())} such cells); rescale them, or pass "
                "correct='positive', 'as_is' or a function"
            )
        return binarize(values, thresholds_for(threshold, long, known=known).to_numpy())
    if rule == "positive":
        out = (scores.to_numpy() > 0).astype(float)
        out[scores.isna().to_numpy()] = np.nan
        return out
    if rule == "as_is":
        return scores.to_numpy(dtype=float)
    raise DataError(
        f"{path}: correct={rule!r} is not a rule; use 'threshold', 'positive', 'as_is' or a function"
    )


def _record(report: LoadReport, long: pd.DataFrame, metric: str | pd.Series, scale: str) -> None:
    """``report.metrics``/``scales`` per dataset (``binary`` where every score is 0 or 1) and the
    store's ``metric`` column."""
    long["metric"] = metric
    for ds, part in long.groupby("dataset", sort=True):
        scores = part["score"].dropna()
        report.metrics[str(ds)] = str(part["metric"].iloc[0])
        report.scales[str(ds)] = "binary" if scores.isin([0.0, 1.0]).all() else scale


# ---------------------------------------------------------------------------- presets
_ROUTERDC_MC = ("mmlu", "cmmlu", "ceval", "arc_challenge", "arc_easy")


def _routerdc_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    for candidate in (path / "datasets" / "split2_model7", path / "split2_model7", path):
        files = sorted(candidate.glob("*.json")) if candidate.is_dir() else []
        if files:
            return files
    raise DataError(f"{path}: no RouterDC *.json files (looked in datasets/split2_model7/ too)")


def _load_routerdc(path: Path, threshold: Threshold = 0.5, strict: bool = False) -> BenchmarkData:
    """RouterDC ``{question, scores{model: float}}`` files; one benchmark = one dataset.

    ``dataset`` is the file stem without its ``_train``/``_test`` suffix (kept in ``split``), so
    the train and test files of a benchmark form one task. Multiple choice: correct = score > 0
    (the score is P(gold) when the argmax was right, else 0). GSM8K and code: the fraction of
    correct samples, binarised at ``threshold``. MATH is 0/1.
    """
    report = LoadReport(sources=[str(path)])
    parts = []
    files = _routerdc_files(path)
    names = [_routerdc_name(f.stem) for f in files]
    for file in files:
        records = read_json_records(file)
        stem = file.stem
        split, name = _split_of(stem), _routerdc_name(stem)
        for i, rec in enumerate(records):
            if not isinstance(rec.get("question"), str) or not isinstance(rec.get("scores"), dict):
                raise DataError(f"{file}: record {i} needs a string 'question' and a 'scores' object")
        frame = pd.DataFrame({
            "text": [r["question"] for r in records],
            "instance_id": [f"{stem}:{i}" for i in range(len(records))],
        })
        scores = pd.DataFrame([r["scores"] for r in records])
        mc = name.lower() in _ROUTERDC_MC
        for m in scores.columns:
            part = frame.assign(dataset=name, split=split, model=str(m))
            part["score"] = _as_scores(scores[m], f"{file}: scores.{m}")
            part["correct"] = _apply_rule("positive" if mc else "threshold", part, threshold,
                                          file, names)
            part["metric"] = "p_gold_if_correct" if mc else "accuracy"
            parts.append(part)
    long = pd.concat(parts, ignore_index=True)
    _record(report, long, long["metric"], "known")
    return BenchmarkData(long, report=report, source=str(path), strict=strict)


def _routerdc_name(stem: str) -> str:
    split = _split_of(stem)
    return stem[: -len(split) - 1] if split else stem


def _split_of(stem: str) -> str:
    return next((s for s in ("train", "test") if stem.endswith((f"_{s}", f"-{s}"))), "")


def _load_routellm(path: Path, threshold: Threshold = 0.5, strict: bool = False) -> BenchmarkData:
    """RouteLLM evals: ``mmlu/responses/mmlu_<subject>.csv`` (one dataset per subject) and
    ``gsm8k/gsm8k_responses.csv``; correctness is True/False. MT-Bench (1–10 judge grades of
    different answers to one prompt) is not a per-sample correctness table and is left out."""
    if path.is_file():
        files = [path]
    else:
        root = next((p for p in (path / "routellm" / "evals", path / "evals", path)
                     if (p / "mmlu").is_dir() or (p / "gsm8k").is_dir()), path)
        files = sorted((root / "mmlu" / "responses").glob("*.csv"))
        files += sorted((root / "gsm8k").glob("*_responses.csv"))
    if not files:
        raise DataError(f"{path}: no RouteLLM response CSVs (mmlu/responses/*.csv, gsm8k/*.csv)")
    report = LoadReport(sources=[str(path)])
    parts = []
    for file in files:
        frame = read_table(file, keep=("prompt",))
        _require(frame, ["prompt"], file)
        models = [c for c in frame.columns if c != "prompt" and not c.endswith("_response")]
        name = _stem(file).removesuffix("_responses")
        parts.append(_wide_to_long(frame, file, "prompt", None, name, None, models))
    long = pd.concat(parts, ignore_index=True)
    long["correct"] = _apply_rule("threshold", long, threshold, path)
    _record(report, long, "correct", "known")
    if not path.is_file():
        report.notes.append("mt_bench judge grades left out (not per-sample correctness)")
    return BenchmarkData(long, report=report, source=str(path), strict=strict)


# RouterBench exports: fixed columns, and index-like columns pandas or a clustering step added.
_ROUTERBENCH_FIXED = {"sample_id", "prompt", "eval_name", "oracle_model_to_route_to"}
_INDEX_LIKE = re.compile(r"^(unnamed:\s*\d+|index|level_\d+|cluster_id|cluster|row_id)$", re.I)
_TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")


def routerbench_columns(columns: Sequence[object]) -> bool:
    """Whether a table's columns are a RouterBench export's (used by auto-detection)."""
    names = {str(c) for c in columns}
    return ({"sample_id", "prompt", "eval_name"} <= names
            or any(n.endswith(("|total_cost", "|model_response")) for n in names))


def _routerbench_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(_TABLE_SUFFIXES))
    if files:
        return files
    pickles = sorted(p.name for p in path.rglob("*") if p.suffix.lower() in (".pkl", ".pickle"))
    if pickles:
        raise DataError(
            f"{path}: only pickle files ({pickles[:3]}); pickles are not loaded (they can run "
            "code): convert once with pandas.read_pickle(path).to_parquet(...) if you trust them"
        )
    raise DataError(f"{path}: no RouterBench CSV or parquet files")


def _load_routerbench(path: Path, threshold: Threshold = 0.5, strict: bool = False) -> BenchmarkData:
    """RouterBench wide tables, one file or a folder of them (train/test files of a benchmark).

    ``sample_id, prompt, eval_name``, one score column per model, ``<model>|model_response``
    (kept in ``output``) and ``<model>|total_cost`` (kept in ``cost``). Index-like columns
    (``Unnamed: 0``, ``cluster_id``, ...) and other non-model columns are ignored and listed in
    the report. dataset = ``eval_name``; with several files the instance id is
    ``<file stem>:<sample_id>``, since row ids restart per file. A ``sample_id`` repeated with
    different prompts is skipped and reported (error with ``strict=True``).
    """
    files = _routerbench_files(path)
    report = LoadReport(sources=[str(path)])
    parts = []
    for file in files:
        frame = read_table(file, keep=("sample_id", "prompt", "eval_name"))
        _require(frame, ["sample_id", "prompt", "eval_name"], file)
        cols = [str(c) for c in frame.columns]
        frame.columns = cols
        bases = {c.rsplit("|", 1)[0] for c in cols if "|" in c}
        candidates = [c for c in cols if "|" not in c and c not in _ROUTERBENCH_FIXED
                      and not _INDEX_LIKE.match(c)]
        if bases:
            models = [c for c in candidates if c in bases]
            ignored = [c for c in cols if c not in models and "|" not in c
                       and c not in _ROUTERBENCH_FIXED]
            if ignored:
                report.notes.append(f"{file.name}: columns not read as models: {ignored}")
        else:
            models = _pick_models(frame, file, _ROUTERBENCH_FIXED | {
                c for c in candidates if _INDEX_LIKE.match(c)} | {
                c for c in cols if _INDEX_LIKE.match(c)}, report)
        if not models:
            raise DataError(f"{file}: no model score columns (columns are {cols})")
        sid = _text_column(frame["sample_id"], f"{file}: column 'sample_id'")
        ids = (file.name.split(".")[0] + ":" + sid) if len(files) > 1 else sid
        long = _wide_to_long(frame, file, "prompt", "eval_name", _stem(file), None, models,
                             report, ids=ids)
        extra = {}
        for kind, column, conv in (("cost", "total_cost", _as_scores),
                                   ("output", "model_response", None)):
            values = []
            for m in models:
                col = f"{m}|{column}"
                if col not in frame.columns:
                    values.append(pd.Series(np.nan if conv else None, index=frame.index))
                elif conv is not None:
                    values.append(conv(frame[col], f"{file}: column {col!r}"))
                else:
                    values.append(frame[col].where(frame[col].notna(), None).astype(object))
            extra[kind] = pd.concat(values, ignore_index=True).to_numpy()
        long["cost"] = extra["cost"]
        if (long["cost"] < 0).any():
            raise DataError(f"{file}: a '|total_cost' column holds a negative cost")
        long["output"] = extra["output"]
        long["split"] = _split_of(_stem(file))
        parts.append(long)
    long = resolve_repeated(pd.concat(parts, ignore_index=True), report, str(path), strict)
    long["correct"] = _apply_rule("threshold", long, threshold, path)
    _record(report, long, "performance", "known")
    return BenchmarkData(long, report=report, source=str(path), strict=strict)


def _load_alpaca_eval(
    path: Path, threshold: Threshold = 0.5, annotator: str = "weighted_alpaca_eval_gpt4_turbo",
    strict: bool = False,
) -> BenchmarkData:
    """AlpacaEval judge preferences, in the compact CSVs derived from ``tatsu-lab/alpaca_eval``'s
    ``results/<model>/<annotator>/annotations.json`` (one row per model and instruction,
    ``preference`` in [1, 2]).

    ``score`` = preference − 1 in [0, 1] (P(beats the reference)); a 0 preference is a draw and
    becomes 0.5; empty preferences (judge failures) are dropped and counted. ``correct`` =
    1[preference > 1.5] (the judge prefers the model over the reference); use ``score`` for per-instance routing.
    ``threshold`` does not apply (the cut is fixed at a win): another value is an error rather
    than ignored.
    """
    if not (isinstance(threshold, (int, float)) and threshold == 0.5):
        raise DataError(f"{path}: AlpacaEval's correct is fixed at a win (preference > 1.5); "
                        f"threshold={threshold!r} does not apply (use the score column instead)")
    root = path if path.is_dir() else path.parent
    instr = read_table(root / "alpaca_eval_instructions.csv", keep=("instruction", "dataset"))
    prefs = read_table(root / "alpaca_eval_preferences.csv.gz", keep=("model", "annotator"))
    _require(instr, ["instruction_idx", "dataset", "instruction"], root / "alpaca_eval_instructions.csv")
    _require(prefs, ["instruction_idx", "model", "annotator", "preference"],
             root / "alpaca_eval_preferences.csv.gz")
    annotators = sorted(prefs["annotator"].dropna().unique())
    if annotator not in annotators:
        raise DataError(f"{root}: unknown annotator {annotator!r}; choose one of {annotators}")
    prefs = prefs[prefs["annotator"] == annotator]
    merged = prefs.merge(instr[["instruction_idx", "dataset", "instruction"]], on="instruction_idx",
                         how="inner", suffixes=("_pref", ""))
    pref = _as_scores(merged["preference"], f"{root}: column 'preference'")
    score = (pref.where(pref != 0, 1.5)) - 1.0
    long = pd.DataFrame({
        "dataset": merged["dataset"].astype(str),
        "instance_id": _text_column(merged["instruction_idx"], f"{root}: instruction_idx"),
        "text": merged["instruction"],
        "model": merged["model"].astype(str),
        "score": score,
        "correct": np.where(score.isna(), np.nan, (score > 0.5).astype(float)),
    })
    report = LoadReport(sources=[str(root)])
    _record(report, long, annotator, "known")
    return BenchmarkData(long, report=report, source=str(root), strict=strict)
