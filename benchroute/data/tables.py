"""Loader for result tables, wide (one column per model) or long, with presets for known layouts.

The generic reading is :mod:`benchroute.data.table_reader`; the presets, each with its source's
score semantics, are :mod:`benchroute.data.table_presets`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchroute.data.options import Threshold
from benchroute.data.store import BenchmarkData, LoadReport
from benchroute.data.table_presets import (
    load_alpaca_eval,
    load_routellm,
    load_routerbench,
    load_routerdc,
    routerbench_columns,
)
from benchroute.data.table_reader import (
    TEXT_EXTRAS,
    CorrectRule,
    apply_rule,
    as_scores,
    long_frame,
    read_table,
    record_scores,
    table_stem,
    wide_to_long,
)
from benchroute.exceptions import DataError

__all__ = ["PRESETS", "CorrectRule", "load_table", "read_table", "routerbench_columns"]

PRESETS = ("routerdc", "routellm", "routerbench", "alpaca_eval")


#: The store's id column: a table holding it is read with it as the id (never as a model).
ID_COLUMN = "instance_id"


def _auto_layout(frame: pd.DataFrame, path: Path, model: str, score: str, report: LoadReport
                 ) -> tuple[str, str]:
    """``layout="auto"``: the layout and the label column. Why a ``correct`` column counts: it
    is what :class:`BenchmarkData` itself writes, and reading such a table as wide made its id
    and label columns two "models"."""
    if model not in frame.columns:
        return "wide", score
    if score in frame.columns:
        return "long", score
    if score == "score" and "correct" in frame.columns:
        report.notes.append(f"{path.name}: no 'score' column; labels read from 'correct'")
        return "long", "correct"  # as written, unless correct= or threshold= is given
    raise DataError(f"{path}: has a {model!r} column, as a long table does, but no score column "
                    f"{score!r} (nor 'correct'); name it with score=..., or pass layout='wide' "
                    "if the table has one column per model")


def _drop_unread_amounts(long: pd.DataFrame, path: Path, report: LoadReport) -> pd.DataFrame:
    """A long table's own cost, token or logprob column that does not read as numbers
    ('$0.002') is left out with a note: the table loaded before these columns were read."""
    for col in ("cost", "prompt_tokens", "completion_tokens", "logprob"):
        if col in long.columns:
            try:
                pd.to_numeric(long[col], errors="raise")
            except (TypeError, ValueError):
                long = long.drop(columns=col)
                report.notes.append(f"{path.name}: column {col!r} is not numbers; not read "
                                    "(the store reads it as numbers only)")
    return long


class LayoutOptionError(DataError):
    """A column option of the other layout (``score=`` on a wide table, ``models=`` on a long
    one), which would be ignored; ``options`` names them, so that a command reading several
    tables with one set of options can apply each where it fits."""

    def __init__(self, message: str, options: tuple[str, ...]) -> None:
        super().__init__(message)
        self.options = options


def load_table(
    path: str | os.PathLike[str] | pd.DataFrame,
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
    correct: CorrectRule | None = None,
    threshold: Threshold | None = None,
    strict: bool = False,
    **preset_options: Any,
) -> BenchmarkData:
    """Load a table of per-sample results (CSV, TSV, JSON, JSONL or parquet, or a DataFrame).

    Parameters
    ----------
    path : path-like or DataFrame
        The table, or for a preset the source's file or folder. A DataFrame is read as a file's
        typed columns are (a parquet file's); its dataset defaults to ``dataset_name`` or
        "table", and messages name it "DataFrame".
    preset : {"routerdc", "routellm", "routerbench", "alpaca_eval"}, optional
        A known layout; the column arguments below are then ignored.
    layout : {"auto", "wide", "long"}
        Wide has one score column per model; long has ``model`` and ``score`` columns. "auto"
        picks long when the ``model`` column exists, with a ``score`` or a ``correct`` column
        (the store's own layout; see ``correct`` for how its labels are read). A ``model``
        column with neither is an error, not a wide table.
    text, dataset, instance_id, model, score : str
        Column names. ``dataset`` may be missing from the table: then ``dataset_name`` or the
        file stem names the single dataset. ``instance_id`` defaults to the column
        ``instance_id`` when the table has one; without an id column rows are numbered (wide)
        or identical texts within a dataset are one instance (long).
    models : sequence of str, optional
        Wide layout: the model columns. Default: every other column whose values are numbers or
        booleans (the others are listed in ``report.notes``; a column mixing numbers with other
        values is reported, one mixing them with objects is an error).
    correct : {"threshold", "positive", "as_is"} or callable, optional
        How ``score`` becomes ``correct``: ``score >= threshold`` (scores must lie in [0, 1]),
        ``score > 0``, the score itself (a quality in [0, 1] for per-instance routing), or your own
        function of the score column (one value in [0, 1] per row). Default: a long table's own
        ``correct`` column as written when it has one and no ``threshold`` is given, else
        "threshold".
    threshold : float or mapping of dataset to float, optional
        In (0, 1] (default 0.5); a mapping sets it per dataset (datasets it does not name use
        0.5).
    strict : bool
        Passed to :class:`BenchmarkData`: a text conflict is an error instead of a reported skip.
    """
    if preset is not None:
        if isinstance(path, pd.DataFrame):
            raise DataError(f"preset {preset!r} reads its source's files; a DataFrame is read "
                            "as a generic table (no preset)")
        if preset not in PRESETS:
            raise DataError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
        loaders: dict[str, Callable[..., BenchmarkData]] = {
            "routerdc": load_routerdc,
            "routellm": load_routellm,
            "routerbench": load_routerbench,
            "alpaca_eval": load_alpaca_eval,
        }
        loader = loaders[preset]
        if threshold is not None:
            preset_options["threshold"] = threshold
        return loader(Path(path), strict=strict, **preset_options)
    if preset_options:
        raise DataError(f"unexpected options {sorted(preset_options)} without a preset")
    if layout not in ("auto", "wide", "long"):
        raise DataError(f"layout must be 'auto', 'wide' or 'long', got {layout!r}")
    if isinstance(path, pd.DataFrame):  # read as a parquet file's typed columns would be
        if path.empty:
            raise DataError("the DataFrame has no rows")
        twice = sorted({str(c) for c in path.columns[path.columns.duplicated()]})
        if twice:  # a file's header is refused for it too (pandas would rename or stack them)
            raise DataError(f"DataFrame: the columns name {twice} twice; give each column one "
                            "name")
        frame = path.reset_index(drop=True).copy()
        path = Path("DataFrame")  # what the report and messages name; dataset_name else "table"
        dataset_name = dataset_name or "table"
        report = LoadReport(sources=["DataFrame"])
    else:
        path = Path(path)
        report = LoadReport(sources=[str(path)])
        frame = read_table(path, keep=(text, dataset, instance_id or ID_COLUMN, model,
                                       *TEXT_EXTRAS), report=report)
    if instance_id is None and ID_COLUMN in frame.columns:
        instance_id = ID_COLUMN  # the store's own id column is an id, never a model's scores
    if layout == "auto":
        layout, score = _auto_layout(frame, path, model, score, report)
    elif layout == "long" and score == "score" and score not in frame.columns \
            and "correct" in frame.columns:
        score = "correct"
    # an option of the other layout would be ignored (found by fuzzing: --column score=nope on
    # a wide table, --models on a long one, exit 0 and no effect)
    if layout == "wide" and (model, score) != ("model", "score"):
        given = {k: v for k, v in (("model", model), ("score", score)) if v != k}
        present = [v for v in given.values() if v in frame.columns]
        if present:  # a long table whose model column is named otherwise: not another layout
            raise DataError(f"{path}: column(s) {present} named by "
                            f"{', '.join(f'{k}=' for k in given)} are here, "
                            f"but no model column {model!r}: name the table's model column with "
                            "model=... (read as wide, a score column would be a model)")
        raise LayoutOptionError(
            f"{path}: {', '.join(f'{k}={v!r}' for k, v in given.items())} name a long table's "
            "columns; this table is wide (one score column per model: pick them with "
            "models=[...])", tuple(given))
    if layout == "long" and models is not None:
        raise LayoutOptionError(f"{path}: models= picks a wide table's score columns; this table "
                                f"is long (its models are the values of column {model!r})",
                                ("models",))
    name = dataset_name or table_stem(path)
    # a long table's own 'correct' column is its labels as written (the store's layout reads
    # back), unless a rule or a threshold says to derive them from the scores
    as_written = layout == "long" and "correct" in frame.columns \
        and correct is None and threshold is None
    if layout == "long":
        long = long_frame(frame, path, text, dataset, name, instance_id, model, score)
        long = _drop_unread_amounts(long, path, report)
        label = score
    else:
        long = wide_to_long(frame, path, text, dataset, name, instance_id, models, report)
        label = "score"
    if as_written:
        long["correct"] = as_scores(frame["correct"], f"{path}: column 'correct'").to_numpy()
        if score != "correct":
            report.notes.append(f"{path.name}: labels from the 'correct' column as written; "
                                "give correct= or threshold= to derive them from 'score'")
    else:
        try:
            long["correct"] = apply_rule(correct or "threshold", long,
                                         0.5 if threshold is None else threshold, path)
        except DataError as exc:
            if layout != "wide" or models is not None:
                raise
            # the offending column may be no model at all: a wide table's numeric columns
            # are taken for models unless named
            raise DataError(f"{exc}; or, if that column is not a model's scores, name the model "
                            "columns (models=[...]; on the command line --models a,b) or the "
                            "id column (instance_id=...; --column instance_id=COL)") from None
    metric: str | pd.Series = label
    if "metric" in long.columns:  # the table's own (a store's frame written out), else the label's
        named = long["metric"].notna() & (long["metric"].astype(str).str.strip() != "")
        metric = long["metric"].where(named, label).astype(str)
    record_scores(report, long, metric, "caller")
    return BenchmarkData(long, report=report, source=str(path), strict=strict)
