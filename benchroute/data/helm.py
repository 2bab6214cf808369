"""Loader for HELM ``benchmark_output`` run trees (see shared HELM_FORMAT.md).

The core parses HELM's JSON directly: crfm-helm is a 6 GB install whose codec imports spacy and
torch, while the files themselves are plain, stable JSON.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchroute.data._io import read_json
from benchroute.data.store import BenchmarkData, LoadReport, binarize
from benchroute.exceptions import DataError

logger = logging.getLogger(__name__)

# Order of preference when the caller names no metric: exact matches first, then the other
# per-instance correctness metrics of HELM_FORMAT.md §4.
METRIC_PRIORITY = (
    "exact_match",
    "quasi_exact_match",
    "prefix_exact_match",
    "quasi_prefix_exact_match",
    "quasi_leave_articles_exact_match",
    "exact_match_indicator",
    "final_number_exact_match",
    "math_equiv",
    "math_equiv_chain_of_thought",
    "chain_of_thought_correctness",
    "exact_set_match",
    "code_eval_acc",
    "pass",
    "ifeval_strict_accuracy",
    "omni_math_accuracy",
    "wildbench_score_rescaled",
    "safety_score",
    "f1_set_match",
    "iou_set_match",
    "f1_score",
    "rouge_l",
    "bleu_4",
)
# Metrics on a fixed non-unit scale, rescaled to [0, 1] before binarisation.
METRIC_RANGES: dict[str, tuple[float, float]] = {"wildbench_score": (1.0, 10.0)}
LOWER_IS_BETTER = frozenset(
    {"wer_score", "cer_score", "mer_score", "absolute_value_difference", "toxic_frac"}
)
# Run-name components that vary with the model, not with the scenario (HELM_FORMAT.md §1.1).
_MODEL_SPECIFIC_ARGS = frozenset(
    {"model", "model_deployment", "data_augmentation", "stop", "num_output_tokens",
     "increase_max_tokens"}
)
_RUN_FILES = ("run_spec.json", "per_instance_stats.json", "scenario_state.json", "scenario.json",
              "instances.json")
_NOT_RUNS = frozenset({"eval_cache", "scenarios", "scenario_instances", "groups", "releases",
                       "prod_env"})

Key = tuple[str, str, int]  # (instance id, perturbation as canonical JSON or "", trial)


@dataclass
class _RunRows:
    rows: list[dict[str, Any]]
    augmented: bool


def find_runs(path: Path) -> list[Path]:
    """Run directories at or below ``path`` (a run, a suite, ``runs/`` or ``benchmark_output/``)."""
    if any((path / f).is_file() for f in _RUN_FILES):
        return [path]
    runs = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _NOT_RUNS)
        here = Path(root)
        if here == path:
            continue
        if any(f in files for f in _RUN_FILES) or ("model=" in here.name and not dirs):
            runs.append(here)
            dirs[:] = []
    return runs


def dataset_key(run_name: str) -> str:
    """The run name without its model-specific components, so that models line up."""
    head, sep, tail = run_name.partition(":")
    if not sep:
        return run_name
    keep = [a for a in tail.split(",") if a and a.split("=", 1)[0] not in _MODEL_SPECIFIC_ARGS]
    return f"{head}:{','.join(keep)}" if keep else head


def load_helm(
    path: str | os.PathLike[str],
    metric: str | None = None,
    threshold: float = 0.5,
    include_perturbed: bool = False,
) -> BenchmarkData:
    """Load per-instance correctness from HELM runs.

    Parameters
    ----------
    path : path-like
        A run directory, a suite directory, or a ``runs/`` / ``benchmark_output/`` root.
    metric : str, optional
        The per-instance stat to use. By default the first of :data:`METRIC_PRIORITY` present in
        each run.
    threshold : float
        Binarisation threshold on [0, 1]; 1–5 and 1–10 metrics are rescaled first.
    include_perturbed : bool
        Keep perturbed copies (robustness/fairness augmentations) as extra instances with ids
        ``"<id>|<perturbation>"``. They are skipped, and counted, by default.

    Returns
    -------
    BenchmarkData
        One row per (dataset, instance, model); ``dataset`` is the run name without its
        model-specific parts. Runs that are incomplete or unreadable are skipped with one warning
        and listed in ``report.skipped``.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such file or directory")
    if not root.is_dir():
        raise DataError(f"{root}: a HELM path must be a directory (a run, a suite or a runs root)")
    if metric is not None and metric in LOWER_IS_BETTER:
        raise DataError(f"metric {metric!r} is lower-is-better; pick a correctness metric")
    runs = find_runs(root)
    if not runs:
        raise DataError(
            f"{root}: no HELM runs found (no directory with run_spec.json or "
            "per_instance_stats.json below it)"
        )
    report = LoadReport(sources=[str(root)])
    parsed: list[_RunRows] = []
    for run in runs:
        try:
            parsed.append(_load_run(run, metric, threshold, include_perturbed, report))
        except DataError as exc:
            report.skipped.append((_shown(run, root), str(exc)))
    if report.skipped:
        logger.warning(
            "skipped %d of %d HELM runs: %s", len(report.skipped), len(runs),
            "; ".join(f"{Path(r).name}: {why}" for r, why in report.skipped),
        )
    rows = [r for p in sorted(parsed, key=lambda p: p.augmented) for r in p.rows]
    if not rows:
        raise DataError(
            f"{root}: none of {len(runs)} HELM runs could be read: "
            + "; ".join(f"{Path(r).name}: {why}" for r, why in report.skipped)
        )
    frame = pd.DataFrame(rows)
    # An augmented run repeats the unperturbed instances of its base run: keep the base copy.
    dup = frame.duplicated(["dataset", "instance_id", "model"], keep="first")
    report.count("duplicate_rows_merged", int(dup.sum()))
    frame = frame.loc[~dup]
    return BenchmarkData(frame, report=report, source=str(root))


def _load_run(
    run: Path, metric: str | None, threshold: float, include_perturbed: bool, report: LoadReport
) -> _RunRows:
    for required in ("run_spec.json", "per_instance_stats.json"):
        if not (run / required).is_file():
            raise DataError(f"incomplete run: {required} is missing")
    spec = read_json(run / "run_spec.json", dict)
    adapter = spec.get("adapter_spec")
    if not isinstance(adapter, dict):
        raise DataError(f"{run / 'run_spec.json'}: field 'adapter_spec' is missing or not an object")
    name = spec.get("name") if isinstance(spec.get("name"), str) else run.name
    model = adapter.get("model")
    if not isinstance(model, str) or not model:
        model = _model_from_run_name(name)
        if model is None:
            raise DataError(f"{run / 'run_spec.json'}: no 'adapter_spec.model' and no model= in name")
    dataset = dataset_key(name)
    augmented = "data_augmentation=" in name

    stats = _merged_stats(run / "per_instance_stats.json")
    texts, splits = _instance_texts(run)
    logprobs = _logprobs(run)
    plain_keys = [k for k in stats if not k[1]]
    chosen = metric or _pick_metric(stats, plain_keys or list(stats))
    if chosen is None:
        names = sorted({n for s in stats.values() for n in s})
        raise DataError(f"no correctness metric among per-instance stats (has: {names[:12]}...)")

    # Average trials of one (instance, perturbation) before binarising.
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (iid, pert, _trial), by_name in stats.items():
        if chosen in by_name:
            scores[(iid, pert)].append(by_name[chosen])
    if not scores:
        raise DataError(f"metric {chosen!r} is not among this run's per-instance stats")
    n_perturbed = sum(1 for _, p in scores if p)
    if include_perturbed:
        report.count("perturbed_included", n_perturbed)
    else:
        report.count("perturbed_skipped", n_perturbed)
        scores = {k: v for k, v in scores.items() if not k[1]}
    report.count("trials_averaged", sum(len(v) - 1 for v in scores.values()))

    values = np.array([float(np.mean(v)) for v in scores.values()])
    lo, hi = _metric_range(chosen, values, run)
    scaled = (values - lo) / (hi - lo)
    correct = binarize(scaled, threshold)

    rows: list[dict[str, Any]] = []
    missing_text = 0
    for ((iid, pert), val), ok in zip(zip(scores, values), correct):
        text = texts.get((iid, pert))
        if text is None:
            missing_text += 1
            continue
        rows.append({
            "dataset": dataset,
            "instance_id": f"{iid}|{_pert_label(pert)}" if pert else iid,
            "text": text,
            "model": model,
            "score": float(val),
            "correct": float(ok),
            "metric": chosen,
            "split": splits.get(iid, ""),
            "logprob": logprobs.get((iid, pert), np.nan),
        })
    if not rows:
        raise DataError(
            "per_instance_stats.json and the instance files share no instance ids "
            f"({len(scores)} scored instances, none with an input text)"
        )
    if missing_text:
        report.count("instances_without_text", missing_text)
        report.notes.append(f"{run.name}: {missing_text} scored instances had no input text")
    if any(_is_hidden(r["text"]) for r in rows):
        raise DataError("input texts are redacted or encrypted; nothing to embed")
    return _RunRows(rows=rows, augmented=augmented)


def _shown(run: Path, root: Path) -> str:
    """The run as the user would name it: relative to the path they passed."""
    return str(Path(root.name) / run.relative_to(root)) if run != root else str(run)


def _model_from_run_name(name: str) -> str | None:
    for part in name.partition(":")[2].split(","):
        k, _, v = part.partition("=")
        if k == "model" and v:
            return v.replace("_", "/", 1)
    return None


def _pert_key(p: Any) -> str:
    return json.dumps(p, sort_keys=True) if p else ""


def _pert_label(pert: str) -> str:
    p = json.loads(pert)
    label = str(p.get("name", "perturbed"))
    return f"{label}:{p['seed']}" if "seed" in p else label


def _merged_stats(path: Path) -> dict[Key, dict[str, float]]:
    """Per-instance stats merged by key: one key appears once per Metric class in HELM."""
    entries = read_json(path, list)
    merged: dict[Key, dict[str, float]] = defaultdict(dict)
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("instance_id"), str):
            raise DataError(f"{path}: entry {i} has no string 'instance_id'")
        stats = entry.get("stats")
        if not isinstance(stats, list):
            raise DataError(f"{path}: entry {i} field 'stats' is not a list")
        key = (entry["instance_id"], _pert_key(entry.get("perturbation")),
               int(entry.get("train_trial_index", 0)))
        for stat in stats:
            name = stat.get("name") if isinstance(stat, dict) else None
            if not isinstance(name, dict) or "name" not in name:
                raise DataError(f"{path}: entry {i} has a stat without 'name.name'")
            if stat.get("count", 1) == 0 or stat.get("mean") is None:
                continue
            mean = stat["mean"]
            if not isinstance(mean, (int, float)) or isinstance(mean, bool):
                raise DataError(
                    f"{path}: entry {i} stat {name['name']!r} has a non-numeric mean {mean!r}"
                )
            merged[key][name["name"]] = float(mean)
    return dict(merged)


def _text_of(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"]
    return None


def _instance_texts(run: Path) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """(instance id, perturbation) → input text, and id → split, from the richest file there."""
    texts: dict[tuple[str, str], str] = {}
    splits: dict[str, str] = {}
    instances: list[Any] = []
    if (run / "scenario_state.json").is_file():
        state = read_json(run / "scenario_state.json", dict)
        states = state.get("request_states")
        if not isinstance(states, list):
            raise DataError(f"{run / 'scenario_state.json'}: field 'request_states' is not a list")
        instances = [rs.get("instance") for rs in states if isinstance(rs, dict)]
    elif (run / "instances.json").is_file():
        instances = read_json(run / "instances.json", list)
    elif (run / "display_requests.json").is_file():
        for req in read_json(run / "display_requests.json", list):
            if not isinstance(req, dict) or not isinstance(req.get("instance_id"), str):
                continue
            prompt = _text_of((req.get("request") or {}).get("prompt"))
            if prompt is not None:
                texts.setdefault((req["instance_id"], _pert_key(req.get("perturbation"))), prompt)
        return texts, splits
    else:
        raise DataError("no scenario_state.json, instances.json or display_requests.json")
    for inst in instances:
        if not isinstance(inst, dict) or not isinstance(inst.get("id"), str):
            continue
        text = _text_of(inst.get("input"))
        if text is not None:
            texts.setdefault((inst["id"], _pert_key(inst.get("perturbation"))), text)
            splits.setdefault(inst["id"], str(inst.get("split", "")))
    return texts, splits


def _logprobs(run: Path) -> dict[tuple[str, str], float]:
    """Log-probability of the first completion, for the LL baseline (joint/generation only)."""
    out: dict[tuple[str, str], float] = {}
    path = run / "scenario_state.json"
    if not path.is_file():
        return out
    for rs in read_json(path, dict).get("request_states") or []:
        if not isinstance(rs, dict) or rs.get("reference_index") is not None:
            continue
        inst = rs.get("instance") or {}
        comps = (rs.get("result") or {}).get("completions") or []
        if comps and isinstance(comps[0], dict) and isinstance(comps[0].get("logprob"), (int, float)):
            out.setdefault((str(inst.get("id")), _pert_key(inst.get("perturbation"))),
                           float(comps[0]["logprob"]))
    return out


def _pick_metric(stats: dict[Key, dict[str, float]], keys: list[Key]) -> str | None:
    present = {n for k in keys for n in stats[k]}
    return next((m for m in METRIC_PRIORITY if m in present), None)


def _metric_range(metric: str, values: np.ndarray, run: Path) -> tuple[float, float]:
    if metric in METRIC_RANGES:
        return METRIC_RANGES[metric]
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    if lo >= 1.0 and hi <= 5.0:
        return 1.0, 5.0
    if lo >= 1.0 and hi <= 10.0:
        return 1.0, 10.0
    raise DataError(
        f"metric {metric!r} has values in [{lo:g}, {hi:g}], outside [0, 1], 1–5 and 1–10; "
        "name another metric"
    )


def _is_hidden(text: str) -> bool:
    return text == "[redacted]" or text.startswith("[encrypted_text_")
