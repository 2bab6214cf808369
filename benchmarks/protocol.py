"""The leave-one-task-out protocol with the α sweep: benchroute vs a straightforward loop.

    python benchmarks/protocol.py [--tasks 4] [--repeats 10]

Run 1's data (HELM MMLU, 57 subjects x 5 Llama-3 deployments, shared embeddings). The baseline
does what the paper's scripts do: for every held-out task, α and repeat it recomputes everything
with brute-force numpy distances (the reference pass over the other 56 tasks included). Both run
on the same --tasks held-out subjects, with the full α grid; the script checks that every
selection (S1, S2, S3, S3-true-p) is identical and prints the time ratio, then times benchroute
on all 57 tasks (skip with --no-full). The baseline follows docs/method.md line by line: the
kernel estimate with its pseudo-reference, the Beta–binomial update by the few-shot labels
(each predicted leave-one-out), ties to BMA within 1e-9, draws seeded by the task's name.
"""

from __future__ import annotations

import argparse
import math
import time
import zlib

import numpy as np
from _common import SHARED

from benchroute import BenchmarkData, load
from benchroute.embedding import text_key
from benchroute.experiments import leave_one_task_out
from benchroute.reference import DEFAULT_ALPHAS, alpha_key, few_shot_count
from benchroute.sampling import task_seed
from benchroute.scoring import fallback_probability

K_NN, N_NB, H, ETA, DRAWS, REF_REPEATS, PRIOR_A, TIE = 5, 19, 0.09, 0.6, 1000, 3, 50.0, 1e-9
W0 = math.exp(-4.5)  # the kernel's pseudo-reference p = 0.5, as heavy as a pair 3h away


def with_vectors(data):
    """The inputs whose text has a shared vector (texts normalised since the vectors were made
    differ in their key), and their vectors."""
    z = np.load(SHARED / "embeddings" / "helm_mmlu_llama3.npz")
    row = {str(k): i for i, k in enumerate(z["sha256"].tolist())}
    inst = data.instances()
    keep = inst[[text_key(t) in row for t in inst["text"]]]
    data = BenchmarkData(data.frame.merge(keep[["dataset", "instance_id"]], on=["dataset", "instance_id"]))
    X = z["embedding"][[row[text_key(t)] for t in data.instances()["text"]]].astype(np.float32)
    return data, X


def bf_predict(Q, PX, PY, means):
    """g and per-input mean distance to the 19 nearest, by brute force."""
    d = 1.0 - Q.astype(np.float64) @ PX.T.astype(np.float64)
    order = np.argsort(d, axis=1, kind="stable")[:, :max(K_NN, N_NB)]
    lab = PY[order[:, :K_NN]]
    has = ~np.isnan(lab)
    g = np.where(has.any(1), np.nansum(lab, 1) / np.maximum(has.sum(1), 1), means)
    u = np.take_along_axis(d, order[:, :N_NB], axis=1).mean()
    return g, u


def acc_of(g, y):
    has = ~np.isnan(y)
    hit = ((g > 0.5) == (y >= 0.5)) & has
    return np.where(has.sum(0) > 0, hit.sum(0) / np.maximum(has.sum(0), 1), np.nan)


def bf_reference(X, Y, ds, others, held):
    us, ps = [], []
    for task in others:
        rng = np.random.default_rng([0, zlib.crc32(task.encode())])
        rows = np.flatnonzero(ds == task)
        pool0 = np.flatnonzero((ds != task) & (ds != held))
        means = np.where((~np.isnan(Y[pool0])).any(0), np.nanmean(Y[pool0], 0), 0.5)
        for alpha in DEFAULT_ALPHAS:
            n_lab = few_shot_count(len(rows), alpha)
            for _ in range(1 if n_lab == 0 else REF_REPEATS):
                lab = rng.choice(len(rows), n_lab, replace=False) if n_lab else np.array([], int)
                test = np.setdiff1d(np.arange(len(rows)), lab)
                pool = np.concatenate([pool0, rows[lab]])
                g, u = bf_predict(X[rows[test]], X[pool], Y[pool], means)
                us.append(u)
                ps.append(acc_of(g, Y[rows[test]]))
    return np.array(us), np.array(ps)


def bf_protocol(data, X, tasks, repeats):
    inst = data.instances()
    Y = data.correctness_matrix().to_numpy(dtype=float)
    ds = inst["dataset"].to_numpy(dtype=object)
    all_tasks = sorted(set(ds))
    acc_tab = data.dataset_accuracy().reindex(columns=data.models)
    out = {}
    for held in tasks:
        ref_u, ref_p = bf_reference(X, Y, ds, [t for t in all_tasks if t != held], held)
        rows = np.flatnonzero(ds == held)
        pool0 = np.flatnonzero(ds != held)
        means = np.nanmean(Y[pool0], 0)
        bma_scores = acc_tab.drop(index=held).mean(axis=0).to_numpy()
        for alpha in DEFAULT_ALPHAS:
            n_lab = few_shot_count(len(rows), alpha)
            rng = np.random.default_rng(task_seed(0, held, alpha_key(alpha)))
            for rep in range(1 if n_lab == 0 else repeats):
                lab = rng.choice(len(rows), n_lab, replace=False) if n_lab else np.array([], int)
                test = np.setdiff1d(np.arange(len(rows)), lab)
                pool = np.concatenate([pool0, rows[lab]])
                g, u = bf_predict(X[rows[test]], X[pool], Y[pool], means)
                y = Y[rows[test]]
                cand = np.flatnonzero((~np.isnan(y)).any(0))
                bma = int(cand[np.argmax(bma_scores[cand])])
                w = np.exp(-((u - ref_u) ** 2) / (2 * H * H))
                p_hat = np.array([(np.nansum(w * ref_p[:, m]) + 0.5 * W0)
                                  / (w[~np.isnan(ref_p[:, m])].sum() + W0) for m in range(Y.shape[1])])
                if n_lab:  # Beta-binomial update by the labels, each predicted leave-one-out
                    hits, n = np.zeros(Y.shape[1]), np.zeros(Y.shape[1])
                    for j in lab:
                        others = np.concatenate([pool0, rows[np.setdiff1d(lab, [j])]])
                        gj, _ = bf_predict(X[rows[[j]]], X[others], Y[others], means)
                        yj = Y[rows[[j]]]
                        hits += np.nan_to_num(((gj > 0.5) == (yj >= 0.5)) & ~np.isnan(yj))[0]
                        n += (~np.isnan(yj))[0]
                    p_hat = (PRIOR_A * p_hat + hits) / (PRIOR_A + n)
                p_true = acc_of(g, y)
                S2 = (g > 0.5).mean(0)
                for method, score, p in (("S1", g.mean(0), None), ("S2", S2, None),
                                         ("S3", p_hat * S2 + (1 - p_hat) * (1 - S2), p_hat),
                                         ("S3-true-p", p_true * S2 + (1 - p_true) * (1 - S2), p_true)):
                    best = int(cand[np.argmax(score[cand])])
                    if score[bma] >= score[best] - TIE:
                        best = bma
                    if p is not None and best != bma:
                        n_plus = (g > 0.5).sum(0)
                        if fallback_probability(best, bma, n_plus, len(g) - n_plus, p, DRAWS, 0) < ETA:
                            best = bma
                    out[(held, float(alpha), rep, method)] = data.models[best]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--no-full", action="store_true", help="skip timing all 57 subjects")
    args = ap.parse_args()
    data, X = with_vectors(load(SHARED / "data" / "helm_mmlu_llama3"))
    tasks = data.datasets[:: max(1, len(data.datasets) // args.tasks)][:args.tasks]
    params = {"encoder": "hashing-8-12"}  # embeddings are given; the encoder is never called

    t0 = time.perf_counter()
    ours = leave_one_task_out(data, params, alphas=DEFAULT_ALPHAS, repeats=args.repeats,
                              embeddings=X, tasks=tasks)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = bf_protocol(data, X, tasks, args.repeats)
    t_base = time.perf_counter() - t0
    sel = ours[ours["method"].isin(["S1", "S2", "S3", "S3-true-p"])]
    same = [base[(r.task, float(r.alpha), int(r.repeat), r.method)] == r.model for r in sel.itertuples()]
    print(f"{len(tasks)} held-out subjects x {len(DEFAULT_ALPHAS)} alphas x {args.repeats} repeats, "
          f"{len(sel)} selections")
    print(f"  straightforward brute-force loop: {t_base:8.1f} s")
    print(f"  benchroute leave_one_task_out:    {t_ours:8.1f} s   speed-up {t_base / t_ours:.1f}x")
    print(f"  identical selections: {sum(same)}/{len(same)}")
    if args.no_full:
        return
    t0 = time.perf_counter()
    full = leave_one_task_out(data, params, alphas=DEFAULT_ALPHAS, repeats=args.repeats, embeddings=X)
    t_full = time.perf_counter() - t0
    print(f"benchroute, all {full['task'].nunique()} subjects with the α sweep: {t_full:.1f} s "
          f"(baseline extrapolated: ~{t_base / len(tasks) * full['task'].nunique() / 60:.0f} min)")


if __name__ == "__main__":
    main()
