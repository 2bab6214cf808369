"""What a frame must hold to become a :class:`~benchroute.data.store.BenchmarkData`.

The store validates once, at its boundary, and everything downstream trusts its frame: the
columns and their types, rows without a key, a text or a label dropped and counted, wrong
values refused with the file, field, value and row named, and one text per instance. Loaders
call :func:`row_key` and :func:`describe_difference` for their own messages, so that a bad row
reads the same whichever loader found it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from benchroute.data.text import is_blank, normalize_text
from benchroute.exceptions import DataError

if TYPE_CHECKING:  # the store imports this module; the report is only passed through here
    from benchroute.data.store import LoadReport

# The store's logger, not this module's: its messages are the store's, and `benchroute inspect`
# quiets that logger while its summary lists the same warnings.
logger = logging.getLogger("benchroute.data.store")

REQUIRED_COLUMNS = ("dataset", "instance_id", "text", "model", "score", "correct")
# cost: USD per call; prompt_tokens / completion_tokens: token counts of that call.
# output: the model's response where the source has it (RouterBench's <model>|model_response).
OPTIONAL_COLUMNS = ("metric", "split", "cost", "prompt_tokens", "completion_tokens", "logprob",
                    "output")
_KEY_COLUMNS = ("dataset", "instance_id", "model")
_STRING_COLUMNS = ("dataset", "instance_id", "text", "model", "metric", "split", "output")
#: Columns of amounts: a token count or a cost is never negative or infinite.
_AMOUNT_COLUMNS = ("cost", "prompt_tokens", "completion_tokens")
_FLOAT_COLUMNS = ("score", "correct", "cost", "prompt_tokens", "completion_tokens", "logprob")


def validate_frame(frame: pd.DataFrame, source: str, report: LoadReport, strict: bool = False
                   ) -> pd.DataFrame:
    """The store's frame made from ``frame``: required and known optional columns, numeric
    columns as float, string columns as str, texts normalised, rows in a fresh index.

    Rows that cannot be used (no key, no text, a NaN score or correctness) are dropped and
    counted in ``report``; values that are wrong (``correct`` outside [0, 1], a negative or
    infinite amount, a repeated key) are a :class:`DataError` naming ``source``, the field, the
    value and the row, since dropping them would hide a broken loader.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{source}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; the store needs {list(REQUIRED_COLUMNS)}"
        )
    cols = list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in frame.columns]
    df = frame.loc[:, cols].copy()
    if df.empty:
        raise DataError(f"{source}: no benchmark results (0 rows)")
    for col in _FLOAT_COLUMNS:
        if col in _AMOUNT_COLUMNS and col in df.columns and df[col].dtype.kind not in "iuf":
            flags = df[col].map(lambda v: isinstance(v, (bool, np.bool_)))
            if flags.any():  # True read as 1.0: a flag where an amount belongs is a wrong column
                row = df.loc[flags].iloc[0]
                raise DataError(f"{source}: field '{col}' must be a number; got "
                                f"{bool(row[col])} for {row_key(row)} ({int(flags.sum())} such "
                                "rows)")
        if col in df.columns:
            try:
                df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
            except (TypeError, ValueError) as exc:
                bad = _first_non_numeric(df[col])
                raise DataError(
                    f"{source}: column '{col}' must be numeric; found {bad!r}"
                ) from exc

    # pandas 3 keeps NaN through astype(str) (pandas 2 made it "nan"): a row without a
    # dataset, instance id or model is dropped and counted on every version.
    no_key = df[list(_KEY_COLUMNS)].isna().any(axis=1)
    if no_key.any():
        report.count("missing_key_dropped", int(no_key.sum()))
        df = df.loc[~no_key]
    # A blank input is no input: there is nothing to embed or route.
    blank = {t for t in df["text"].dropna().unique() if isinstance(t, str) and is_blank(t)}
    no_text = df["text"].isna() | (df["text"].isin(list(blank)) if blank else False)
    if no_text.any():
        report.count("missing_text_dropped", int(no_text.sum()))
    nan_rows = df["score"].isna() | df["correct"].isna()
    if nan_rows.any():
        report.count("nan_dropped", int((nan_rows & ~no_text).sum()))
    drop = no_text | nan_rows
    if drop.any():
        logger.warning(
            "%s: dropped %d of %d rows with a NaN score/correct or no text",
            source, int(drop.sum()), len(df),
        )
        df = df.loc[~drop]
    if df.empty:
        raise DataError(f"{source}: every row had a NaN score or no text; nothing is left")

    _replace_lone_surrogates(df, report)
    for col in _STRING_COLUMNS:
        if col in df.columns:
            df[col] = df[col].where(df[col].notna(), "").astype(str)

    bad = (df["correct"] < 0) | (df["correct"] > 1)
    if bad.any():
        row = df.loc[bad].iloc[0]
        raise DataError(
            f"{source}: field 'correct' must lie in [0, 1]; got {float(row['correct']):g} for "
            f"{row_key(row)} ({int(bad.sum())} such rows)"
        )

    for col in _AMOUNT_COLUMNS:  # NaN is a missing count or cost; inf or < 0 is wrong
        if col in df.columns:
            values = df[col].to_numpy()
            wrong = ~np.isnan(values) & (~np.isfinite(values) | (values < 0))
            if wrong.any():
                row = df.loc[wrong].iloc[0]
                raise DataError(
                    f"{source}: field '{col}' must be a finite number >= 0 (or empty); got "
                    f"{float(row[col]):g} for {row_key(row)} ({int(wrong.sum())} such rows)"
                )

    dup = df.duplicated(["dataset", "instance_id", "model"], keep=False)
    if dup.any():
        row = df.loc[dup].iloc[0]
        raise DataError(
            f"{source}: {int(dup.sum())} rows share a (dataset, instance_id, model) key, "
            f"e.g. dataset={row['dataset']!r} instance_id={row['instance_id']!r} "
            f"model={row['model']!r}; each model may have one result per instance"
        )

    df["text"] = df["text"].map(normalize_text)
    df = drop_text_conflicts(df, source, report, strict)
    return df.reset_index(drop=True)


def drop_text_conflicts(df: pd.DataFrame, source: str, report: LoadReport, strict: bool = False
                        ) -> pd.DataFrame:
    """``df`` without the instances whose models disagree on the (normalised) text: skipped,
    counted and warned about in ``report``, or with ``strict`` a :class:`DataError`."""
    texts = df.groupby(["dataset", "instance_id"], sort=False)["text"].nunique()
    conflicts = texts[texts > 1]
    if conflicts.empty:
        return df
    (ds, iid) = conflicts.index[0]
    variants = df.loc[(df["dataset"] == ds) & (df["instance_id"] == iid), "text"].unique()
    where = describe_difference(str(variants[0]), str(variants[1]))
    message = (
        f"instance dataset={ds!r} instance_id={iid!r} has {len(variants)} different texts "
        f"across models ({where})"
    )
    if strict:
        raise DataError(f"{source}: {message}; one instance must have one input text")
    report.count("text_conflict_skipped", len(conflicts))
    report.skipped.append((f"{source}: {len(conflicts)} instance(s)", message))
    report.warn(
        f"{source}: skipped {len(conflicts)} instance(s) whose text differs between models, "
        f"e.g. {message}; pass strict=True to make this an error"
    )
    keys = pd.MultiIndex.from_frame(df[["dataset", "instance_id"]])
    df = df.loc[~keys.isin(conflicts.index)]
    if df.empty:
        raise DataError(f"{source}: every instance's text differs between models; {message}")
    return df


def warn_degenerate(df: pd.DataFrame, report: LoadReport) -> None:
    """Warn when a dataset's labels are all 0 or all 1 across every model: no selection can
    tell the models apart there, and the usual cause (a ROUGE-like metric binarised at 0.5, or a
    wrong metric) has a fix the user should hear about."""
    for ds, labels in df.groupby("dataset", sort=True)["correct"]:
        values = labels.to_numpy(dtype=float)
        if len(values) < 2 or not np.all((values == 0) | (values == 1)):
            continue
        if values.min() == values.max():
            metric = report.metrics.get(str(ds), "its metric")
            report.warn(
                f"dataset {ds!r}: every label is {int(values[0])} across all models "
                f"({len(values)} results, {metric}); labels this degenerate cannot separate "
                f"models. Choose another metric (metric={{{str(ds)!r}: ...}}) or a per-dataset "
                f"threshold (threshold={{{str(ds)!r}: ...}})"
            )


def row_key(row: pd.Series) -> str:
    """``dataset=... instance_id=... model=...`` of one result, for error messages."""
    return (f"dataset={row['dataset']!r} instance_id={row['instance_id']!r} "
            f"model={row['model']!r}")


def describe_difference(a: str, b: str, context: int = 30) -> str:
    """Where two texts first differ, with a little context: the first 60 characters of two
    few-shot prompts are usually identical, so showing them says nothing."""
    n = 0
    limit = min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    lo = max(0, n - context)
    return (
        f"first difference at character {n}: {a[lo:n + context]!r} vs {b[lo:n + context]!r}"
    )


def _replace_lone_surrogates(df: pd.DataFrame, report: LoadReport) -> None:
    """Texts with lone surrogates (from JSON ``\\ud800`` escapes) cannot be written as UTF-8 by
    parquet or read by a tokenizer: replace them with U+FFFD and count the texts."""

    from benchroute.data._io import replace_lone_surrogates

    fixes = {}
    for t in df["text"].dropna().unique():
        fixed, changed = replace_lone_surrogates(t)
        if changed:
            fixes[t] = fixed
    if fixes:
        mask = df["text"].isin(list(fixes))
        df.loc[mask, "text"] = df.loc[mask, "text"].map(fixes)
        report.count("lone_surrogates_replaced", int(mask.sum()))


def _first_non_numeric(col: pd.Series) -> Any:
    coerced = pd.to_numeric(col, errors="coerce")
    bad = col[coerced.isna() & col.notna()]
    return bad.iloc[0] if len(bad) else None
