"""Does the per-input OOD fallback help on tasks the pool never saw?

Leave one task out: the held-out task's inputs are routed by argmax g_m(x) from the other
tasks (ties to the best model on average of the other tasks, "BMA"), and each gets its OOD
p-value (:mod:`benchroute.ood`) against the other tasks' leave-one-task-out scores. The
fallback sends inputs with p < a to the BMA. Reported per input: the task, p, and the true
quality of the routed model, of the BMA and of the per-input oracle, so that routed accuracy
with and without the fallback can be compared overall and by OOD decile.

The reference of a fold (scores of the pool rows not in the held-out task t, each with its own
task and t left out) comes from one search per pool task of its rows' ``k + extra`` nearest
neighbours outside their own task, neighbours in t dropped afterwards; rows left with fewer than
k are searched again with both tasks excluded (counted in ``short_rows``), so every fold's
reference is exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from benchroute.experiments.bootstrap import interval
from benchroute.ood import neighbour_score, p_values
from benchroute.predictors import KNNCorrectnessPredictor
from benchroute.scoring import best_on_average, task_means
from benchroute.selection import route_rows


def _bma(Y: np.ndarray, ds: np.ndarray, exclude: str) -> int:
    """The best model on average over the tasks other than ``exclude``."""
    keep = ds != exclude
    return best_on_average(task_means(Y[keep], ds[keep]))


def held_out_ood(X: np.ndarray, Y: np.ndarray, datasets: Sequence[str], k: int = 5,
                 extra: int = 40) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per input of every held-out task: ``task``, ``ood_p``, ``routed``, ``bma``,
    ``oracle`` (true quality of the routed model, of the BMA, of the best model on the input)."""
    ds = np.asarray(datasets, dtype=object)
    pred = KNNCorrectnessPredictor(k=k).fit(X, Y, ds)
    index = pred.index_
    tasks = sorted(set(ds.tolist()))
    K = min(k + extra, len(X))
    near_d = np.full((len(X), K), np.inf)
    near_t = np.empty((len(X), K), dtype=object)
    for task in tasks:  # each row's nearest neighbours outside its own task
        rows = np.flatnonzero(ds == task)
        d, r = index.search(X[rows], K, exclude_datasets=[task])
        near_d[rows] = d
        near_t[rows] = np.where(r >= 0, ds[np.maximum(r, 0)], None)
    available = ~np.isnan(Y)
    parts, short = [], 0
    for t in tasks:
        test = np.flatnonzero(ds == t)
        rest = np.flatnonzero(ds != t)
        d_ref = np.where(near_t[rest] == t, np.inf, near_d[rest])
        d_ref = np.sort(d_ref, axis=1)[:, :k]
        few = np.flatnonzero(~np.isfinite(d_ref[:, -1]))  # searched again, exactly
        short += len(few)
        for u in sorted(set(ds[rest[few]].tolist())):
            mine = few[ds[rest[few]] == u]
            d_ref[mine] = index.search(X[rest[mine]], k, exclude_datasets=[u, t])[0]
        reference = neighbour_score(d_ref, k)
        dist, _ = index.search(X[test], k, exclude_datasets=[t])
        p = p_values(neighbour_score(dist, k), reference)
        g = pred.predict_proba(X[test], exclude_datasets=[t])
        bma = _bma(Y, ds, t)
        pick = route_rows(g, np.arange(Y.shape[1]), bma, available=available[test])
        q = Y[test]
        rows = np.arange(len(test))
        parts.append(pd.DataFrame({
            "task": t, "ood_p": p, "routed": q[rows, pick], "bma": q[:, bma],
            "oracle": np.nanmax(q, axis=1)}))
    return pd.concat(parts, ignore_index=True), {"short_rows": short}


def fallback_table(per_input: pd.DataFrame, alphas: Sequence[float] = (0.01, 0.05, 0.1, 0.2),
                   n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Routed quality without and with the fallback at each level, the share of inputs moved,
    and a 95% interval of the change from resampling whole tasks."""
    rng = np.random.default_rng(seed)
    tasks = per_input["task"].to_numpy()
    names = np.unique(tasks)
    by_task = {t: np.flatnonzero(tasks == t) for t in names}
    draws = [np.concatenate([by_task[t] for t in rng.choice(names, len(names))])
             for _ in range(n_boot)]
    routed = per_input["routed"].to_numpy(dtype=float)
    rows = [{"fallback": "none", "flagged": 0.0, "quality": np.nanmean(routed),
             "change": 0.0, "lo": 0.0, "hi": 0.0}]
    for a in alphas:
        flag = per_input["ood_p"].to_numpy() < a
        q = np.where(flag, per_input["bma"].to_numpy(dtype=float), routed)
        diff = q - routed
        lo, hi = interval([np.nanmean(diff[i]) for i in draws], point=np.nanmean(diff))
        rows.append({"fallback": f"p < {a:g}", "flagged": float(flag.mean()),
                     "quality": np.nanmean(q), "change": np.nanmean(diff), "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def decile_table(per_input: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """By OOD decile (1 = smallest p, farthest from the pool): routed, BMA and oracle quality."""
    rank = per_input["ood_p"].rank(method="first")
    decile = np.ceil(rank / len(per_input) * bins).astype(int)
    grouped = per_input.assign(decile=decile).groupby("decile")
    out = grouped.agg(n=("routed", "size"), p_max=("ood_p", "max"), routed=("routed", "mean"),
                      bma=("bma", "mean"), oracle=("oracle", "mean"))
    out["bma_minus_routed"] = out["bma"] - out["routed"]
    return out.reset_index()
