"""The reproduction pipeline: load → embed (cache) → leave-one-task-out with the α sweep →
``results/<name>/{table.md, table.csv, results.csv, alpha_curve.png, p_scatter.png}``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from benchroute.data.store import BenchmarkData
from benchroute.experiments.protocol import leave_one_task_out
from benchroute.experiments.summary import summarize, to_markdown
from benchroute.reference import DEFAULT_ALPHAS


def run_protocol(data: BenchmarkData, name: str, out: str | os.PathLike[str] = "results",
                 alphas: Sequence[float] = DEFAULT_ALPHAS, repeats: int = 10, seed: int = 0,
                 router_params: Mapping[str, object] | None = None,
                 embeddings: np.ndarray | None = None, plots: bool = True) -> dict[str, Path]:
    """Run the leave-one-task-out protocol (:func:`~benchroute.experiments.protocol.leave_one_task_out`) on ``data`` and write the table, the tidy results and the plots."""
    from benchroute.experiments.fetch import safe_component

    folder = Path(out) / safe_component(name, "results name")  # never outside ``out``
    results = leave_one_task_out(data, router_params, alphas=alphas, repeats=repeats, seed=seed,
                                 embeddings=embeddings)
    folder.mkdir(parents=True, exist_ok=True)  # after the run: a refused one leaves no folder
    table = summarize(results, seed=seed)
    paths = {"table_csv": folder / "table.csv", "results_csv": folder / "results.csv.gz",
             "table_md": folder / "table.md"}
    table.to_csv(paths["table_csv"], index=False, float_format="%.4f")
    tidy = results.copy()
    for col in ("p_hat", "p_kernel", "p_true"):
        if col in tidy:
            tidy[col] = tidy[col].map(lambda v: json.dumps(v) if isinstance(v, dict) else "")
    tidy.to_csv(paths["results_csv"], index=False, float_format="%.5f")
    a0 = min(alphas)
    lines = [f"# {name}: leave-one-task-out", "",
             f"{data}; {len(set(results['task']))} held-out tasks; α = {a0:g}.", "",
             to_markdown(table, a0), ""]
    if len(alphas) > 1:
        curve = table.pivot_table(index="alpha", columns="method", values="accuracy", observed=True)
        lines += ["## Accuracy vs few-shot fraction α (mean over tasks, "
                  f"{repeats} repeats)", "", curve.to_markdown(floatfmt=".3f") if _has_tabulate()
                  else "```\n" + curve.to_string(float_format=lambda v: f"{v:.3f}") + "\n```", ""]
    paths["table_md"].write_text("\n".join(lines))
    if plots:
        from benchroute.experiments.plots import alpha_curve, p_scatter

        if len(alphas) > 1:
            paths["alpha_png"] = alpha_curve(table, folder / "alpha_curve.png", title=name)
        paths["p_png"] = p_scatter(results, folder / "p_scatter.png", title=name, alpha=a0)
    return paths


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
