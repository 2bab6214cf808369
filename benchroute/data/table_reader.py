"""Reading a result table, wide (one column per model) or long, into the store's long frame:
the file formats, the column checks, scores as numbers, and how a score becomes ``correct``.
:func:`benchroute.data.tables.load_table` and the presets of
:mod:`benchroute.data.table_presets` are built on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchroute.data._io import read_json_records
from benchroute.data.options import Threshold, thresholds_for
from benchroute.data.store import LoadReport, binarize, row_key
from benchroute.data.store_checks import OPTIONAL_COLUMNS
from benchroute.exceptions import DataError

CorrectRule = str | Callable[[pd.Series], np.ndarray]
#: the store's optional columns a long table carries along when it has them
STORE_EXTRAS = OPTIONAL_COLUMNS
#: those of them that are text: read as written, never as numbers ("42" stays "42")
TEXT_EXTRAS = ("metric", "split", "output")
_BOOL_STRINGS = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0}


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


def table_stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".xz", ".csv", ".tsv", ".jsonl", ".json", ".parquet"):
        name = name.removesuffix(suffix)
    return name


def require_columns(frame: pd.DataFrame, cols: Sequence[str], path: Path) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)}")


class _NotAScore(Exception):
    pass


def _score_of(value: object) -> float:
    """One cell as a score: numbers, booleans, "True"/"False" or number strings; blanks → NaN."""
    if value is None or value is pd.NA or value is pd.NaT:  # pandas' own blanks too
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


def as_scores(col: pd.Series, where: str) -> pd.Series:
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


def text_column(col: pd.Series, where: str) -> pd.Series:
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
            # whole floats as the integers they are, exactly (int64 wraps past 9.2e18)
            out[filled] = [str(int(v)) for v in values[filled]]
            return out

    def one(value: object) -> object:
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return str(int(value))
        if isinstance(value, (float, np.floating)):
            return str(int(value)) if float(value).is_integer() else str(float(value))
        raise DataError(f"{where}: value {value!r} is a {type(value).__name__}, expected text")
    return col.map(one).astype(object)


def pick_models(
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


def wide_to_long(
    frame: pd.DataFrame, path: Path, text: str, dataset: str | None, name: str,
    instance_id: str | None, models: Sequence[str] | None, report: LoadReport | None = None,
    ids: pd.Series | None = None,
) -> pd.DataFrame:
    require_columns(frame, [text], path)
    id_cols = [c for c in (dataset, instance_id) if c and c in frame.columns]
    if models is None:
        models = pick_models(frame, path, {text, *id_cols}, report or LoadReport())
        if not models:
            raise DataError(f"{path}: no model columns (numeric or True/False) besides {text!r}")
    require_columns(frame, list(models), path)
    if ids is None:
        if instance_id:
            require_columns(frame, [instance_id], path)
            ids = text_column(frame[instance_id], f"{path}: column {instance_id!r}")
        else:
            ids = pd.Series(range(len(frame)), index=frame.index).astype(str)
    base = pd.DataFrame({
        "dataset": (text_column(frame[dataset], f"{path}: column {dataset!r}")
                    if dataset and dataset in frame.columns else name),
        "instance_id": ids,
        "text": text_column(frame[text], f"{path}: column {text!r}"),
    })
    parts = []
    for m in models:
        part = base.copy()
        part["model"] = str(m)
        part["score"] = as_scores(frame[m], f"{path}: column {m!r}")
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def long_frame(
    frame: pd.DataFrame, path: Path, text: str, dataset: str | None, name: str,
    instance_id: str | None, model: str, score: str,
) -> pd.DataFrame:
    require_columns(frame, [text, model, score], path)
    out = pd.DataFrame({
        "dataset": (text_column(frame[dataset], f"{path}: column {dataset!r}")
                    if dataset and dataset in frame.columns else name),
        "text": text_column(frame[text], f"{path}: column {text!r}"),
        "model": text_column(frame[model], f"{path}: column {model!r}"),
        "score": as_scores(frame[score], f"{path}: column {score!r}"),
    })
    if instance_id:
        require_columns(frame, [instance_id], path)
        out["instance_id"] = text_column(frame[instance_id], f"{path}: column {instance_id!r}")
    else:
        out["instance_id"] = "t" + out.groupby(["dataset", "text"], sort=False,
                                               dropna=False).ngroup().astype(str)
    # the store's own optional columns (cost, token counts, ...) come along, so a store's frame
    # written as a table reads back whole: its costs were dropped without a word
    used = {text, dataset, instance_id, model, score, "correct"}
    for col in STORE_EXTRAS:
        if col in frame.columns and col not in used:
            out[col] = frame[col].to_numpy()
    return out


def apply_rule(rule: CorrectRule, long: pd.DataFrame, threshold: Threshold, path: Path,
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


def record_scores(report: LoadReport, long: pd.DataFrame, metric: str | pd.Series, scale: str) -> None:
    """``report.metrics``/``scales`` per dataset (``binary`` where every score is 0 or 1) and the
    store's ``metric`` column."""
    long["metric"] = metric
    for ds, part in long.groupby("dataset", sort=True):
        scores = part["score"].dropna()
        report.metrics[str(ds)] = str(part["metric"].iloc[0])
        report.scales[str(ds)] = "binary" if scores.isin([0.0, 1.0]).all() else scale
