"""The four known table layouts (RouterDC, RouteLLM, RouterBench, AlpacaEval): each preset knows
its source's files and score semantics (what a score means, where the files come from), so a user
need not know, say, that a RouterDC multiple-choice score of 0 means "wrong".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchroute.data._io import read_json_records
from benchroute.data.options import Threshold
from benchroute.data.store import BenchmarkData, LoadReport, resolve_repeated
from benchroute.data.table_reader import (
    apply_rule,
    as_scores,
    pick_models,
    read_table,
    record_scores,
    require_columns,
    table_stem,
    text_column,
    wide_to_long,
)
from benchroute.exceptions import DataError

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


def load_routerdc(path: Path, threshold: Threshold = 0.5, strict: bool = False) -> BenchmarkData:
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
            part["score"] = as_scores(scores[m], f"{file}: scores.{m}")
            part["correct"] = apply_rule("positive" if mc else "threshold", part, threshold,
                                          file, names)
            part["metric"] = "p_gold_if_correct" if mc else "accuracy"
            parts.append(part)
    long = pd.concat(parts, ignore_index=True)
    record_scores(report, long, long["metric"], "known")
    return BenchmarkData(long, report=report, source=str(path), strict=strict)


def _routerdc_name(stem: str) -> str:
    split = _split_of(stem)
    return stem[: -len(split) - 1] if split else stem


def _split_of(stem: str) -> str:
    return next((s for s in ("train", "test") if stem.endswith((f"_{s}", f"-{s}"))), "")


def load_routellm(path: Path, threshold: Threshold = 0.5, strict: bool = False) -> BenchmarkData:
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
        require_columns(frame, ["prompt"], file)
        models = [c for c in frame.columns if c != "prompt" and not c.endswith("_response")]
        name = table_stem(file).removesuffix("_responses")
        parts.append(wide_to_long(frame, file, "prompt", None, name, None, models))
    long = pd.concat(parts, ignore_index=True)
    long["correct"] = apply_rule("threshold", long, threshold, path)
    record_scores(report, long, "correct", "known")
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


def load_routerbench(path: Path, threshold: Threshold = 0.5, strict: bool = False) -> BenchmarkData:
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
        require_columns(frame, ["sample_id", "prompt", "eval_name"], file)
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
            models = pick_models(frame, file, _ROUTERBENCH_FIXED | {
                c for c in candidates if _INDEX_LIKE.match(c)} | {
                c for c in cols if _INDEX_LIKE.match(c)}, report)
        if not models:
            raise DataError(f"{file}: no model score columns (columns are {cols})")
        sid = text_column(frame["sample_id"], f"{file}: column 'sample_id'")
        ids = (file.name.split(".")[0] + ":" + sid) if len(files) > 1 else sid
        long = wide_to_long(frame, file, "prompt", "eval_name", table_stem(file), None, models,
                             report, ids=ids)
        extra = {}
        for kind, column, conv in (("cost", "total_cost", as_scores),
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
        long["split"] = _split_of(table_stem(file))
        parts.append(long)
    long = resolve_repeated(pd.concat(parts, ignore_index=True), report, str(path), strict)
    long["correct"] = apply_rule("threshold", long, threshold, path)
    record_scores(report, long, "performance", "known")
    return BenchmarkData(long, report=report, source=str(path), strict=strict)


def load_alpaca_eval(
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
    require_columns(instr, ["instruction_idx", "dataset", "instruction"], root / "alpaca_eval_instructions.csv")
    require_columns(prefs, ["instruction_idx", "model", "annotator", "preference"],
             root / "alpaca_eval_preferences.csv.gz")
    annotators = sorted(prefs["annotator"].dropna().unique())
    if annotator not in annotators:
        raise DataError(f"{root}: unknown annotator {annotator!r}; choose one of {annotators}")
    prefs = prefs[prefs["annotator"] == annotator]
    merged = prefs.merge(instr[["instruction_idx", "dataset", "instruction"]], on="instruction_idx",
                         how="inner", suffixes=("_pref", ""))
    pref = as_scores(merged["preference"], f"{root}: column 'preference'")
    score = (pref.where(pref != 0, 1.5)) - 1.0
    long = pd.DataFrame({
        "dataset": merged["dataset"].astype(str),
        "instance_id": text_column(merged["instruction_idx"], f"{root}: instruction_idx"),
        "text": merged["instruction"],
        "model": merged["model"].astype(str),
        "score": score,
        "correct": np.where(score.isna(), np.nan, (score > 0.5).astype(float)),
    })
    report = LoadReport(sources=[str(root)])
    record_scores(report, long, annotator, "known")
    return BenchmarkData(long, report=report, source=str(root), strict=strict)
