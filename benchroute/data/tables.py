"""Loader for result tables, wide (one column per model) or long, with presets for known layouts.

Each preset encodes its source's score semantics as documented in that source's SOURCE.md, so a
user need not know, say, that a RouterDC multiple-choice score of 0 means "wrong".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchroute.data._io import read_json_records
from benchroute.data.store import BenchmarkData, LoadReport, binarize
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
    threshold: float = 0.5,
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
        booleans.
    correct : {"threshold", "positive", "as_is"} or callable
        How ``score`` becomes ``correct``: ``score >= threshold``, ``score > 0``, the score itself
        (a quality in [0, 1] for per-instance routing), or your own function of the score column.
    """
    if preset is not None:
        if preset not in PRESETS:
            raise DataError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
        loader = {
            "routerdc": _load_routerdc,
            "routellm": _load_routellm,
            "routerbench": _load_routerbench,
            "alpaca_eval": _load_alpaca_eval,
        }[preset]
        return loader(Path(path), threshold=threshold, **preset_options)
    if preset_options:
        raise DataError(f"unexpected options {sorted(preset_options)} without a preset")
    path = Path(path)
    frame = read_table(path)
    report = LoadReport(sources=[str(path)])
    if layout not in ("auto", "wide", "long"):
        raise DataError(f"layout must be 'auto', 'wide' or 'long', got {layout!r}")
    if layout == "auto":
        layout = "long" if {model, score} <= set(frame.columns) else "wide"
    name = dataset_name or _stem(path)
    if layout == "long":
        long = _long_frame(frame, path, text, dataset, name, instance_id, model, score)
    else:
        long = _wide_to_long(frame, path, text, dataset, name, instance_id, models)
    long["correct"] = _apply_rule(correct, long["score"], threshold, path)
    return BenchmarkData(long, report=report, source=str(path))


# ---------------------------------------------------------------------------- generic reading
def read_table(path: Path) -> pd.DataFrame:
    """A table from CSV/TSV (optionally gzipped), JSON/JSONL or parquet, with clear errors."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    name = path.name.lower()
    try:
        if name.endswith((".csv", ".csv.gz")):
            frame = pd.read_csv(path)
        elif name.endswith((".tsv", ".tsv.gz")):
            frame = pd.read_csv(path, sep="\t")
        elif name.endswith((".json", ".jsonl", ".json.xz", ".jsonl.xz")):
            frame = pd.DataFrame(read_json_records(path))
        elif name.endswith(".parquet"):
            frame = pd.read_parquet(path)
        elif name.endswith((".pkl", ".pickle")):
            raise DataError(
                f"{path}: pickle files are not loaded (they can run code); convert once with "
                "pandas.read_pickle(path).to_parquet('table.parquet') if you trust the file"
            )
        else:
            raise DataError(f"{path}: unknown table format; use .csv, .tsv, .json, .jsonl or .parquet")
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: file is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: cannot parse the table ({exc})") from exc
    if frame.empty:
        raise DataError(f"{path}: the table has no rows")
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


def _as_scores(col: pd.Series, where: str) -> pd.Series:
    """Numbers, booleans, or "True"/"False" strings → float; anything else is an error."""
    if col.dtype == bool:
        return col.astype(float)
    if pd.api.types.is_numeric_dtype(col):
        return col.astype(float)
    lowered = col.astype(str).str.strip().str.lower()
    mapped = lowered.map(_BOOL_STRINGS)
    numeric = pd.to_numeric(col, errors="coerce")
    out = numeric.where(numeric.notna(), mapped)
    bad = out.isna() & col.notna() & (lowered != "") & (lowered != "nan")
    if bad.any():
        raise DataError(f"{where}: value {col[bad].iloc[0]!r} is not a number or True/False")
    return out.astype(float)


def _is_score_column(col: pd.Series) -> bool:
    if col.dtype == bool or pd.api.types.is_numeric_dtype(col):
        return True
    values = set(col.dropna().astype(str).str.strip().str.lower().unique())
    return bool(values) and values <= set(_BOOL_STRINGS)


def _wide_to_long(
    frame: pd.DataFrame, path: Path, text: str, dataset: str | None, name: str,
    instance_id: str | None, models: Sequence[str] | None,
) -> pd.DataFrame:
    _require(frame, [text], path)
    ids = [c for c in (dataset, instance_id) if c and c in frame.columns]
    if models is None:
        models = [c for c in frame.columns if c not in {text, *ids} and _is_score_column(frame[c])]
        if not models:
            raise DataError(f"{path}: no model columns (numeric or True/False) besides {text!r}")
    _require(frame, list(models), path)
    base = pd.DataFrame({
        "dataset": frame[dataset].astype(str) if dataset and dataset in frame.columns else name,
        "instance_id": (frame[instance_id].astype(str) if instance_id
                        else pd.Series(range(len(frame)), index=frame.index).astype(str)),
        "text": frame[text],
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
        "dataset": frame[dataset].astype(str) if dataset and dataset in frame.columns else name,
        "text": frame[text],
        "model": frame[model].astype(str),
        "score": _as_scores(frame[score], f"{path}: column {score!r}"),
    })
    if instance_id:
        _require(frame, [instance_id], path)
        out["instance_id"] = frame[instance_id].astype(str)
    else:
        out["instance_id"] = "t" + out.groupby(["dataset", "text"], sort=False).ngroup().astype(str)
    return out


def _apply_rule(rule: CorrectRule, scores: pd.Series, threshold: float, path: Path) -> np.ndarray:
    if callable(rule):
        return np.asarray(rule(scores), dtype=float)
    if rule == "threshold":
        return binarize(scores, threshold)
    if rule == "positive":
        out = (scores.to_numpy() > 0).astype(float)
        out[scores.isna().to_numpy()] = np.nan
        return out
    if rule == "as_is":
        return scores.to_numpy(dtype=float)
    raise DataError(
        f"{path}: correct={rule!r} is not a rule; use 'threshold', 'positive', 'as_is' or a function"
    )


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


def _load_routerdc(path: Path, threshold: float = 0.5) -> BenchmarkData:
    """RouterDC ``{question, scores{model: float}}`` files; one benchmark = one dataset.

    ``dataset`` is the file stem without its ``_train``/``_test`` suffix (kept in ``split``), so
    the train and test files of a benchmark form one task. Multiple choice: correct = score > 0
    (the score is P(gold) when the argmax was right, else 0). GSM8K and code: the fraction of
    correct samples, binarised at ``threshold``. MATH is 0/1.
    """
    report = LoadReport(sources=[str(path)])
    parts = []
    for file in _routerdc_files(path):
        records = read_json_records(file)
        stem = file.stem
        split = next((s for s in ("train", "test") if stem.endswith((f"_{s}", f"-{s}"))), "")
        name = stem[: -len(split) - 1] if split else stem
        for i, rec in enumerate(records):
            if not isinstance(rec.get("question"), str) or not isinstance(rec.get("scores"), dict):
                raise DataError(f"{file}: record {i} needs a string 'question' and a 'scores' object")
        frame = pd.DataFrame({
            "text": [r["question"] for r in records],
            "instance_id": [f"{stem}:{i}" for i in range(len(records))],
        })
        scores = pd.DataFrame([r["scores"] for r in records])
        for m in scores.columns:
            part = frame.assign(dataset=name, split=split, model=str(m))
            part["score"] = _as_scores(scores[m], f"{file}: scores.{m}")
            rule = "positive" if name.lower() in _ROUTERDC_MC else "threshold"
            part["correct"] = _apply_rule(rule, part["score"], threshold, file)
            parts.append(part)
    return BenchmarkData(pd.concat(parts, ignore_index=True), report=report, source=str(path))


def _load_routellm(path: Path, threshold: float = 0.5) -> BenchmarkData:
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
        frame = read_table(file)
        _require(frame, ["prompt"], file)
        models = [c for c in frame.columns if c != "prompt" and not c.endswith("_response")]
        name = _stem(file).removesuffix("_responses")
        parts.append(_wide_to_long(frame, file, "prompt", None, name, None, models))
    long = pd.concat(parts, ignore_index=True)
    long["correct"] = binarize(long["score"], threshold)
    if not path.is_file():
        report.notes.append("mt_bench judge grades left out (not per-sample correctness)")
    return BenchmarkData(long, report=report, source=str(path))


_ROUTERBENCH_FIXED = {"sample_id", "prompt", "eval_name", "oracle_model_to_route_to"}


def _load_routerbench(path: Path, threshold: float = 0.5) -> BenchmarkData:
    """RouterBench wide tables: ``sample_id, prompt, eval_name``, one score column per model, and
    ``<model>|model_response`` / ``<model>|total_cost`` columns (cost kept in ``cost``)."""
    frame = read_table(path)
    _require(frame, ["sample_id", "prompt", "eval_name"], path)
    models = [c for c in frame.columns if "|" not in c and c not in _ROUTERBENCH_FIXED]
    long = _wide_to_long(frame, path, "prompt", "eval_name", _stem(path), "sample_id", models)
    costs = []
    for m in models:
        col = f"{m}|total_cost"
        costs.append(_as_scores(frame[col], f"{path}: {col}") if col in frame.columns
                     else pd.Series(np.nan, index=frame.index))
    long["cost"] = pd.concat(costs, ignore_index=True).to_numpy()
    long["correct"] = binarize(long["score"], threshold)
    return BenchmarkData(long, report=LoadReport(sources=[str(path)]), source=str(path))


def _load_alpaca_eval(
    path: Path, threshold: float = 0.5, annotator: str = "weighted_alpaca_eval_gpt4_turbo"
) -> BenchmarkData:
    """AlpacaEval judge preferences (shared data's compact CSVs).

    ``score`` = preference − 1 in [0, 1] (P(beats the reference)); a 0 preference is a draw and
    becomes 0.5; empty preferences (judge failures) are dropped and counted. ``correct`` =
    1[preference > 1.5], the binary reading of SOURCE.md; use ``score`` for per-instance routing.
    ``threshold`` is not used (the cut is fixed at a win).
    """
    del threshold
    root = path if path.is_dir() else path.parent
    instr = read_table(root / "alpaca_eval_instructions.csv")
    prefs = read_table(root / "alpaca_eval_preferences.csv.gz")
    _require(instr, ["instruction_idx", "dataset", "instruction"], root / "alpaca_eval_instructions.csv")
    _require(prefs, ["instruction_idx", "model", "annotator", "preference"],
             root / "alpaca_eval_preferences.csv.gz")
    annotators = sorted(prefs["annotator"].unique())
    if annotator not in annotators:
        raise DataError(f"{root}: unknown annotator {annotator!r}; choose one of {annotators}")
    prefs = prefs[prefs["annotator"] == annotator]
    merged = prefs.merge(instr[["instruction_idx", "dataset", "instruction"]], on="instruction_idx",
                         how="inner", suffixes=("_pref", ""))
    pref = merged["preference"].astype(float)
    score = (pref.where(pref != 0, 1.5)) - 1.0
    long = pd.DataFrame({
        "dataset": merged["dataset"].astype(str),
        "instance_id": merged["instruction_idx"].astype(str),
        "text": merged["instruction"],
        "model": merged["model"].astype(str),
        "score": score,
        "correct": np.where(score.isna(), np.nan, (score > 0.5).astype(float)),
        "metric": annotator,
    })
    report = LoadReport(sources=[str(root)])
    return BenchmarkData(long, report=report, source=str(root))
