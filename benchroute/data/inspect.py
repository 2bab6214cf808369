"""A human (and JSON) summary of a loaded store, for ``benchroute inspect``."""

from __future__ import annotations

import re
from typing import Any

from benchroute.data.store import BenchmarkData

_USAGE_COLUMNS = ("cost", "prompt_tokens", "completion_tokens")
_MAX_EXAMPLE = 100


def summarize(data: BenchmarkData) -> dict[str, Any]:
    """Sizes, per-model accuracy (and mean cost and tokens where the source has them), per-dataset
    metric and scale source, missing cells, label balance, warnings and what was skipped."""
    acc = data.model_accuracy()
    frame = data.frame
    coverage = frame.groupby("model")["dataset"].nunique()
    usage = {c: frame.groupby("model")[c].mean() for c in _USAGE_COLUMNS
             if c in frame.columns and frame[c].notna().any()}
    missing = data.missing_cells()
    per_dataset = frame.groupby("dataset").agg(
        instances=("instance_id", "nunique"), models=("model", "nunique"),
        correct_rate=("correct", "mean"),
    )
    binary = bool(frame["correct"].isin([0.0, 1.0]).all())
    report = data.report
    models = []
    for m in acc.index:
        row: dict[str, Any] = {"model": m, "accuracy": round(float(acc[m]), 4),
                               "datasets": int(coverage[m]),
                               "results": int((frame["model"] == m).sum())}
        for col, means in usage.items():
            value = means.get(m)
            row[f"mean_{col}"] = None if value is None or value != value else float(value)
        models.append(row)
    return {
        "sources": report.sources,
        "n_datasets": len(data.datasets),
        "n_models": len(data.models),
        "n_instances": data.n_instances,
        "n_results": len(data),
        "binary_labels": binary,
        "label_balance": float(frame["correct"].mean()),
        "usage_columns": [f"mean_{c}" for c in usage],
        "models": models,
        "missing_cells": missing.to_dict(orient="records"),
        "datasets": [
            {"dataset": str(d), "instances": int(r.instances), "models": int(r.models),
             "correct_rate": round(float(r.correct_rate), 4),
             "metric": report.metrics.get(str(d)), "scale": report.scales.get(str(d))}
            for d, r in per_dataset.iterrows()
        ],
        "warnings": list(report.warnings),
        "skipped": [{"what": w, "why": y} for w, y in report.skipped],
        "skipped_by_reason": skipped_by_reason(report.skipped),
        "counts": report.counts,
        "notes": report.notes,
    }


def skipped_by_reason(skipped: list[tuple[str, str]], examples: int = 3) -> list[dict[str, Any]]:
    """Skips grouped by reason (the ``why`` without its parenthesised or listed details), each
    with a count and at most ``examples`` short examples: a suite with 200 skipped runs gives a
    few readable lines, not a 10 kB one."""
    groups: dict[str, list[str]] = {}
    for what, why in skipped:
        reason = re.split(r"\s*[(\[{]", why, maxsplit=1)[0].strip() or why[:_MAX_EXAMPLE]
        groups.setdefault(reason, []).append(what)
    return [{"reason": r, "count": len(w), "examples": [_short(x) for x in w[:examples]]}
            for r, w in groups.items()]


def _short(text: str, limit: int = _MAX_EXAMPLE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_summary(s: dict[str, Any], max_datasets: int = 12) -> str:
    lines = [
        f"{s['n_models']} models x {s['n_datasets']} datasets x {s['n_instances']} instances "
        f"({s['n_results']} results)",
        f"labels: {'binary' if s['binary_labels'] else 'continuous'}, "
        f"mean correct {s['label_balance']:.3f}",
    ]
    if s["warnings"]:
        lines += ["", f"WARNINGS ({len(s['warnings'])}):"]
        lines += [f"  ! {w}" for w in s["warnings"]]
    usage = s.get("usage_columns", [])
    width = max([len(m["model"]) for m in s["models"]] + [5])
    head = f"{'model':<{width}} {'accuracy':>8} {'datasets':>8} {'results':>8}"
    head += "".join(f" {c.removeprefix('mean_'):>17}" for c in usage)
    lines += ["", head]
    for m in s["models"]:
        line = f"{m['model']:<{width}} {m['accuracy']:>8.3f} {m['datasets']:>8} {m['results']:>8}"
        for c in usage:
            value = m.get(c)
            line += f" {'-' if value is None else f'{value:.6g}':>17}"
        lines.append(line)
    said = [what for col, what in (("mean_cost", "cost: mean USD per call"),
                                   ("mean_prompt_tokens", "tokens: mean per call"))
            if col in usage or (col == "mean_prompt_tokens" and "mean_completion_tokens" in usage)]
    if said:  # only the columns shown
        lines.append(f"({'; '.join(said)})")
    if s["missing_cells"]:
        lines += ["", "missing cells (instances a model has no result for):"]
        for m in s["missing_cells"]:
            ds = ", ".join(m["datasets"][:4]) + (" ..." if len(m["datasets"]) > 4 else "")
            lines.append(f"  {m['model']}: {m['missing']} instances in {len(m['datasets'])} datasets ({ds})")
    shown = s["datasets"][:max_datasets]
    dwidth = max([len(d["dataset"]) for d in shown] + [7])
    lines += ["", f"{'dataset':<{dwidth}} {'instances':>9} {'models':>6} {'correct':>8}  metric (scale)"]
    for d in shown:
        metric = f"{d.get('metric') or '-'} ({d.get('scale') or '-'})"
        lines.append(f"{d['dataset']:<{dwidth}} {d['instances']:>9} {d['models']:>6} "
                     f"{d['correct_rate']:>8.3f}  {metric}")
    if len(s["datasets"]) > max_datasets:
        lines.append(f"... and {len(s['datasets']) - max_datasets} more datasets (--json lists all)")
    if s["counts"]:
        lines += ["", "counts: " + ", ".join(f"{k}={v}" for k, v in sorted(s["counts"].items()))]
    if s["skipped"]:
        lines += ["", f"skipped {len(s['skipped'])}:"]
        for g in s["skipped_by_reason"]:
            lines.append(f"  {_short(g['reason'], 200)}: {g['count']} (e.g. "
                         + "; ".join(g["examples"]) + ")")
    lines += [f"note: {_short(n, 300)}" for n in s["notes"][:10]]
    return "\n".join(lines)
