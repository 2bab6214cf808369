"""Collect, for a leave-one-task-out run at α = 0, what p̂ could be learnt from.

For every held-out task d: the router's p̂ (kernel, as the protocol computes it), the true p,
u and label-free self-confidence features of d; and the same features for every reference
task i ≠ d, computed leave-one-task-out with d also left out (a nested pass at α = 0).

    python scripts/phat_features.py helm|routellm|routerdc OUT.npz [SHARED]

SHARED is the folder with the shared data (default: ../shared beside the repository).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_experiments import cached, routellm_mmlu_subsample  # noqa: E402

from benchroute import load  # noqa: E402
from benchroute.data.pool import pool_arrays  # noqa: E402
from benchroute.predictors import column_means, knn_mean  # noqa: E402
from benchroute.router import Router  # noqa: E402
from benchroute.scoring import mean_distance, predictor_accuracy, self_estimate  # noqa: E402
from benchroute.task import reference_without  # noqa: E402

L = 1500  # neighbours kept per input before the nested exclusion


def features(g5: np.ndarray, q: np.ndarray, y: np.ndarray, q10: np.ndarray,
             q19s: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "ep10": self_estimate(g5, q10),
        "ep19s": self_estimate(g5, q19s),
        "p": predictor_accuracy(g5, y),
        "conf5": np.mean(np.maximum(g5, 1 - g5), axis=0),
        "ep19": self_estimate(g5, q),
        "s2": (g5 > 0.5).mean(axis=0),
        "s1": g5.mean(axis=0),
        "q19": q.mean(axis=0),
    }


def main() -> None:
    which, out = sys.argv[1], sys.argv[2]
    shared = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(__file__).resolve().parents[2] / "shared"
    if which == "helm":
        from benchroute.data.store import BenchmarkData
        from benchroute.default import pack_embeddings
        from benchroute.packs import pack_files
        data = BenchmarkData.load(pack_files("helm_mmlu_llama3")["data"])
        X = pack_embeddings(data, "helm_mmlu_llama3")
    elif which == "routellm":
        data, X = cached(routellm_mmlu_subsample(shared, 0))
    else:
        data, X = cached(load(shared / "data" / "routerdc"))
    router = Router().set_params(encoder="hashing-8-12", tune=False)
    pool = pool_arrays(data, X, router.embed)
    X, Y, ds, models = pool.X, pool.Y, pool.datasets, pool.models
    router.fit_arrays(X, Y, ds, models, pool.instance_ids,
                      data.dataset_accuracy().reindex(columns=models))
    router.texts_ = texts = list(data.instances()["text"])
    tasks = sorted(set(ds.tolist()))
    T, M = len(tasks), len(models)
    tidx = {t: i for i, t in enumerate(tasks)}
    dsi = np.array([tidx[t] for t in ds])
    names = ["p", "conf5", "ep19", "s2", "s1", "q19", "ep10", "ep19s"]
    held = {n: np.full((T, M), np.nan) for n in names + ["phat", "u"]}
    held["shift_T"] = np.full(T, np.nan)
    refp: dict[str, np.ndarray] = {}
    ref = {n: np.full((T, T, M), np.nan) for n in names + ["u"]}  # [d, i, m]
    Xf = np.asarray(X, dtype=np.float32)
    for d, task in enumerate(tasks):
        rd = np.flatnonzero(ds == task)
        view = router.task_neighbours(X[rd], exclude_datasets=[task], texts=[texts[i] for i in rd])
        sel = view.select(np.arange(len(rd)))
        g5 = sel.proba
        q = knn_mean(view.base.distances, view.base.labels, 19, means=view.means)[0]
        q10 = knn_mean(view.base.distances, view.base.labels, 10, means=view.means)[0]
        q19s = knn_mean(view.base.distances, view.base.labels, 19, means=view.means, prior=5)[0]
        f = features(g5, q, Y[rd], q10, q19s)
        for n in names:
            held[n][d] = f[n]
        held["phat"][d] = sel.scores["p_kernel"].reindex(models).to_numpy()  # the kernel estimate
        held["u"][d] = sel.task_distance
        if sel.shift is not None:
            held["shift_T"][d] = sel.shift.statistic
        rp = reference_without(router, [task])  # the pairs select just used (memoised)
        refp[f"ru_{d}"] = rp.u
        refp[f"rp_{d}"] = rp.p
        refp[f"rt_{d}"] = np.array([tidx[t] for t in rp.task])
        refp[f"ra_{d}"] = rp.alpha
    print("held-out MAE", np.nanmean(np.nanmean(np.abs(held["phat"] - held["p"]), axis=1)))
    # nested pass: for each reference task i, its neighbours without i, then without each d
    for i, task in enumerate(tasks):
        ri = np.flatnonzero(ds == task)
        S = Xf[ri] @ Xf.T
        S[:, ri] = -np.inf
        top = np.argsort(-S, axis=1)[:, :L]
        dist = 1.0 - np.take_along_axis(S, top, axis=1).astype(np.float64)
        for d in range(T):
            if d == i:
                continue
            keep = dsi[top] != d
            order = np.argsort(~keep, axis=1, kind="stable")[:, :19]
            ok = np.take_along_axis(keep, order, axis=1)
            if not ok.all():
                raise SystemExit(f"{task} without {tasks[d]}: fewer than 19 neighbours in top {L}")
            rows = np.take_along_axis(top, order, axis=1)
            dd = np.take_along_axis(dist, order, axis=1)
            lab = Y[rows]
            means = column_means(Y[(dsi != d) & (dsi != i)], 0.5)
            g5 = knn_mean(dd, lab, 5, means=means)[0]
            q = knn_mean(dd, lab, 19, means=means)[0]
            q10 = knn_mean(dd, lab, 10, means=means)[0]
            q19s = knn_mean(dd, lab, 19, means=means, prior=5)[0]
            f = features(g5, q, Y[ri], q10, q19s)
            for n in names:
                ref[n][d, i] = f[n]
            ref["u"][d, i] = mean_distance(dd, 19)
        print("nested", task, flush=True)
    np.savez(out, tasks=np.array(tasks), models=np.array(models),
             **{f"held_{k}": v for k, v in held.items()},
             **{f"ref_{k}": v for k, v in ref.items()}, **refp)


if __name__ == "__main__":
    main()
