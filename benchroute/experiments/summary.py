"""The paper-style table from the protocol's tidy results, with bootstrap intervals over tasks."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from benchroute.experiments.bootstrap import interval, resample_rows
from benchroute.experiments.sizes import MODEL_SIZES_B

ORDER = ("S1", "S2", "S3", "S3-true-p", "BMA", "BMA-incl", "LL", "Oracle")


def _boot(values: np.ndarray, oracle: np.ndarray, n_boot: int, rng: np.random.Generator
          ) -> tuple[tuple[float, float], tuple[float, float]]:
    idx = resample_rows(len(values), n_boot, rng)
    means = values[idx].mean(axis=1)
    return (interval(means, point=values.mean()),
            interval(means / oracle[idx].mean(axis=1), point=values.mean() / oracle.mean()))


def summarize(results: pd.DataFrame, sizes: Mapping[str, float] | None = None,
              n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (alpha, method).

    Columns: ``accuracy`` (mean over tasks of the chosen model's accuracy, repeats averaged
    within a task first) with ``acc_lo``/``acc_hi`` (95% bootstrap over tasks), ``minus_bma``
    (the mean over tasks of the accuracy minus the BMA's on the same task) with
    ``minus_bma_lo``/``minus_bma_hi`` (a paired 95% bootstrap over tasks: how two methods
    compare, which the overlap of their separate intervals does not say), ``ratio`` to the
    Oracle with ``ratio_lo``/``ratio_hi``, ``mean_size_b`` over chosen models of known size with
    ``size_known`` (share of choices with a known size), ``bma_share`` (share of choices equal to
    the held-out-free BMA), and for S3 ``p_mae`` (mean |p̂ − p| over tasks and models) with an
    interval, ``p_mae_kernel`` (the same for the kernel estimate at the task's distance alone:
    before the self-estimate map and the few-shot labels) and ``predictor_acc`` (mean true
    accuracy of the correctness predictors). Percentile intervals over few tasks cover less than
    95%: about 88-92% over 7-10 tasks in a review's simulation.
    """
    sizes = dict(MODEL_SIZES_B if sizes is None else sizes)
    rng = np.random.default_rng(seed)
    paired_rng = np.random.default_rng([seed, 1])  # its own stream: the intervals above stay
    res = results.copy()
    res["size"] = res["model"].map(sizes)
    res["is_bma"] = res["model"] == res["bma"]
    bma_acc = res[res["method"] == "BMA"].groupby(["alpha", "task"])["accuracy"].mean()
    out = []
    for (alpha, method), grp in res.groupby(["alpha", "method"], sort=False):
        per_task = grp.groupby("task").agg(acc=("accuracy", "mean"), oracle=("oracle_accuracy", "mean"))
        acc, orc = per_task["acc"].to_numpy(), per_task["oracle"].to_numpy()
        (alo, ahi), (rlo, rhi) = _boot(acc, orc, n_boot, rng)
        row = {"alpha": alpha, "method": method, "tasks": len(per_task),
               "accuracy": acc.mean(), "acc_lo": alo, "acc_hi": ahi,
               "ratio": acc.mean() / orc.mean(), "ratio_lo": rlo, "ratio_hi": rhi,
               "mean_size_b": grp["size"].mean(), "size_known": grp["size"].notna().mean(),
               "bma_share": grp["is_bma"].mean()}
        if alpha in bma_acc.index.get_level_values(0):
            # paired over tasks: each task's accuracy minus the BMA's on the same task, the
            # comparison two separate intervals cannot make (they overlapped where this one
            # excluded 0: RouterDC's S3, +0.026 [+0.009, +0.043])
            diff = acc - bma_acc.loc[alpha].reindex(per_task.index).to_numpy()
            lo, hi = interval(diff[resample_rows(len(diff), n_boot, paired_rng)].mean(axis=1),
                              point=diff.mean())
            row.update(minus_bma=diff.mean(), minus_bma_lo=lo, minus_bma_hi=hi)
        if method == "S3" and "p_hat" in grp:
            err = grp.apply(lambda r: np.mean([abs(r["p_hat"][m] - r["p_true"][m])
                                               for m in r["p_hat"] if not np.isnan(r["p_true"][m])]),
                            axis=1)
            per_task_err = err.groupby(grp["task"]).mean().to_numpy()
            lo, hi = interval(per_task_err[resample_rows(len(per_task_err), n_boot, rng)].mean(axis=1),
                              point=per_task_err.mean())
            row.update(p_mae=per_task_err.mean(), p_mae_lo=lo, p_mae_hi=hi,
                       predictor_acc=grp.groupby("task")["predictor_accuracy"].mean().mean())
            if "p_kernel" in grp:  # the kernel estimate alone (no self-estimate, no labels)
                kerr = grp.apply(lambda r: np.mean([abs(r["p_kernel"][m] - r["p_true"][m])
                                                    for m in r["p_kernel"]
                                                    if not np.isnan(r["p_true"][m])]), axis=1)
                row["p_mae_kernel"] = kerr.groupby(grp["task"]).mean().mean()
        out.append(row)
    table = pd.DataFrame(out)
    table["method"] = pd.Categorical(table["method"], [m for m in ORDER if m in set(table["method"])])
    return table.sort_values(["alpha", "method"]).reset_index(drop=True)


def to_markdown(table: pd.DataFrame, alpha: float = 0.0) -> str:
    """The paper's table for one α as Markdown: accuracy [95% CI], ratio to Oracle [CI], size,
    BMA share, p̂ MAE, predictor accuracy."""
    t = table[np.isclose(table["alpha"], alpha)]
    lines = ["| method | accuracy [95% CI] | minus BMA, paired by task [95% CI] | ratio to Oracle [95% CI] | mean size (B) | chose BMA | MAE of p̂ | predictor acc. |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in t.iterrows():
        size = "" if pd.isna(r["mean_size_b"]) else f"{r['mean_size_b']:.1f}" + \
            ("" if r["size_known"] == 1 else f" ({r['size_known']:.0%} known)")
        mae = f"{r['p_mae']:.3f} [{r['p_mae_lo']:.3f}, {r['p_mae_hi']:.3f}]" if "p_mae" in r and pd.notna(r.get("p_mae")) else ""
        pacc = f"{r['predictor_acc']:.3f}" if "predictor_acc" in r and pd.notna(r.get("predictor_acc")) else ""
        paired = "" if pd.isna(r.get("minus_bma")) or r["method"] == "BMA" else \
            f"{r['minus_bma']:+.3f} [{r['minus_bma_lo']:+.3f}, {r['minus_bma_hi']:+.3f}]"
        lines.append(
            f"| {r['method']} | {r['accuracy']:.3f} [{r['acc_lo']:.3f}, {r['acc_hi']:.3f}] | "
            f"{paired} | "
            f"{r['ratio']:.3f} [{r['ratio_lo']:.3f}, {r['ratio_hi']:.3f}] | {size} | "
            f"{r['bma_share']:.0%} | {mae} | {pacc} |")
    return "\n".join(lines)
