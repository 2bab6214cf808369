"""A human (and JSON) summary of a loaded store, for ``benchroute inspect``."""

from __future__ import annotations

from typing import Any

from benchroute.data.store import BenchmarkData


def summarize(data: BenchmarkData) -> dict[str, Any]:
    """Sizes, per-model accuracy, missing cells, label balance and what the loader skipped."""
    acc = data.model_accuracy()
    coverage = data.frame.groupby("model")["dataset"].nunique()
    missing = data.missing_cells()
    per_dataset = data.frame.groupby("dataset").agg(
        instances=("instance_id", "nunique"), models=("model", "nunique"),
        correct_rate=("correct", "mean"),
    )
    binary = bool(data.frame["correct"].isin([0.0, 1.0]).all())
    return {
        "sources": data.report.sources,
        "n_datasets": len(data.datasets),
        "n_models": len(data.models),
        "n_instances": data.n_instances,
        "n_results": len(data),
        "binary_labels": binary,
        "label_balance": float(data.frame["correct"].mean()),
        "models": [
            {"model": m, "accuracy": round(float(acc[m]), 4), "datasets": int(coverage[m]),
             "results": int((data.frame["model"] == m).sum())}
            for m in acc.index
        ],
        "missing_cells": missing.to_dict(orient="records"),
        "datasets": [
            {"dataset": str(d), "instances": int(r.instances), "models": int(r.models),
             "correct_rate": round(float(r.correct_rate), 4)}
            for d, r in per_dataset.iterrows()
        ],
        "skipped": [{"what": w, "why": y} for w, y in data.report.skipped],
        "counts": data.report.counts,
        "notes": data.report.notes,
    }


def format_summary(s: dict[str, Any], max_datasets: int = 12) -> str:
    lines = [
        f"{s['n_models']} models x {s['n_datasets']} datasets x {s['n_instances']} instances "
        f"({s['n_results']} results)",
        f"labels: {'binary' if s['binary_labels'] else 'continuous'}, "
        f"mean correct {s['label_balance']:.3f}",
        "",
        f"{'model':<48} {'accuracy':>8} {'datasets':>8} {'results':>8}",
    ]
    lines += [f"{m['model']:<48} {m['accuracy']:>8.3f} {m['datasets']:>8} {m['results']:>8}"
              for m in s["models"]]
    if s["missing_cells"]:
        lines += ["", "missing cells (instances a model has no result for):"]
        for m in s["missing_cells"]:
            ds = ", ".join(m["datasets"][:4]) + (" ..." if len(m["datasets"]) > 4 else "")
            lines.append(f"  {m['model']}: {m['missing']} instances in {len(m['datasets'])} datasets ({ds})")
    lines += ["", f"{'dataset':<48} {'instances':>9} {'models':>6} {'correct':>8}"]
    for d in s["datasets"][:max_datasets]:
        lines.append(f"{d['dataset'][:48]:<48} {d['instances']:>9} {d['models']:>6} {d['correct_rate']:>8.3f}")
    if len(s["datasets"]) > max_datasets:
        lines.append(f"... and {len(s['datasets']) - max_datasets} more datasets (--json lists all)")
    if s["counts"]:
        lines += ["", "counts: " + ", ".join(f"{k}={v}" for k, v in sorted(s["counts"].items()))]
    if s["skipped"]:
        lines += ["", f"skipped {len(s['skipped'])}:"]
        lines += [f"  {x['what']}: {x['why']}" for x in s["skipped"]]
    lines += [f"note: {n}" for n in s["notes"][:10]]
    return "\n".join(lines)
