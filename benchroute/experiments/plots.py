"""PNG plots of the protocol's results (matplotlib, installed with ``benchroute[plots]``).

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``), not pyplot, so
the caller's backend, open figures and pyplot state are left untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchroute.exceptions import BenchrouteError


def _figure(figsize: tuple[float, float]) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise BenchrouteError("plots need matplotlib: pip install 'benchroute[plots]'") from exc
    return Figure(figsize=figsize)


def alpha_curve(summary: pd.DataFrame, path: str | Path, title: str = "",
                methods: tuple[str, ...] = ("S1", "S2", "S3", "BMA", "Oracle")) -> Path:
    """Accuracy of each method against the few-shot fraction α, with 95% bootstrap bands."""
    fig = _figure((6.4, 4.2))
    ax = fig.subplots()
    for method in methods:
        t = summary[summary["method"] == method].sort_values("alpha")
        if t.empty:
            continue
        ax.plot(t["alpha"], t["accuracy"], marker="o", ms=3, label=method)
        ax.fill_between(t["alpha"], t["acc_lo"], t["acc_hi"], alpha=0.12)
    ax.set_xlabel("few-shot fraction α of the held-out task's inputs")
    ax.set_ylabel("mean accuracy of the chosen model")
    ax.set_title(title or "Leave-one-task-out: accuracy vs α")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def p_scatter(results: pd.DataFrame, path: str | Path, title: str = "", alpha: float = 0.0) -> Path:
    """p̂ against the true predictor accuracy p, one point per (task, model), with the MAE."""
    s3 = results[(results["method"] == "S3") & np.isclose(results["alpha"], alpha)]
    ph, pt = [], []
    for _, r in s3.iterrows():
        for m, v in r["p_hat"].items():
            if not np.isnan(r["p_true"][m]):
                ph.append(v)
                pt.append(r["p_true"][m])
    ph_a, pt_a = np.asarray(ph), np.asarray(pt)
    mae = float(np.mean(np.abs(ph_a - pt_a))) if len(ph_a) else float("nan")
    fig = _figure((4.8, 4.6))
    ax = fig.subplots()
    ax.scatter(pt_a, ph_a, s=8, alpha=0.5)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("true accuracy p of the correctness predictor")
    ax.set_ylabel("kernel-smoothed estimate p̂")
    ax.set_title((title + "\n" if title else "") + f"MAE = {mae:.3f} ({len(ph_a)} task-model pairs)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
