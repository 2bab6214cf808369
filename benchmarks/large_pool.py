"""Approximate indexes on large synthetic pools: recall, change in P(m, x) and in routed
choices against exact search, memory per input, time to route one input.

    python benchmarks/large_pool.py [--sizes 100000 1000000] [--models 100] [--queries 1000]

A pool of N unit vectors (768-d) drawn around C cluster centres (C = N / 100), each model's
label on an input a Bernoulli draw of that model's skill on the input's cluster, 10 % of the
labels missing; queries are fresh draws around the same centres. For every index
configuration the kNN correctness predictor (k = 5, the router's g_m(x)) is fitted on the
pool and compared with the exact flat index built in the same run:

* recall@5: the share of the exact 5 nearest neighbours the index returns;
* max |ΔP|, mean |ΔP|: the largest and the mean change of g_m(x) over all queries and models
  (g is a mean of at most 5 labels: one neighbour swapped moves it by 1/5 to 1/2);
* routed changed: the share of queries whose top model (``policies.best`` on g) changes;
* B/input: resident memory the fitted predictor added (``/proc/self/statm`` before and after
  building), per input: rough, since memory freed by the previous index is reused;
* ms/input: one query at a time (the latency of routing one input), median of 200.

The labels are float32 (N, M) with NaN for missing, as the router stores them.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

import numpy as np

from benchroute.policies import best
from benchroute.predictors import KNNCorrectnessPredictor

K = 5
CONFIGS_SMALL = [("Flat", None, None), ("SQfp16", None, None), ("IVF1024,Flat", 16, None),
                 ("IVF1024,Flat", 64, None), ("HNSW32", None, 64), ("HNSW32", None, 128)]
# HNSW32 over 1M inputs builds for tens of minutes on two shared cores: left out there
CONFIGS_LARGE = [("Flat", None, None), ("SQfp16", None, None), ("IVF1024,Flat", 16, None),
                 ("IVF1024,Flat", 64, None)]


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def synthetic_pool(n: int, n_models: int, d: int, n_queries: int, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_clusters = max(10, n // 100)
    centres = rng.normal(size=(n_clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    skill = rng.beta(2, 2, size=(n_clusters, n_models)).astype(np.float32)

    def draw(m: int, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
        X = np.empty((m, d), np.float32)
        cl = rng.integers(0, n_clusters, size=m)
        for s in range(0, m, chunk):
            part = centres[cl[s:s + chunk]] + 0.04 * rng.normal(size=(len(cl[s:s + chunk]), d)
                                                               ).astype(np.float32)
            X[s:s + chunk] = part / np.linalg.norm(part, axis=1, keepdims=True)
        return X, cl

    X, cl = draw(n)
    Y = np.empty((n, n_models), np.float32)
    for s in range(0, n, 100_000):
        sk = skill[cl[s:s + 100_000]]
        y = (rng.random(sk.shape, dtype=np.float32) < sk).astype(np.float32)
        y[rng.random(sk.shape) < 0.1] = np.nan
        Y[s:s + 100_000] = y
    Q, _ = draw(n_queries)
    return X, Y, Q


def one_by_one(pred: KNNCorrectnessPredictor, Q: np.ndarray, n: int = 200) -> float:
    times = []
    for q in Q[:n]:
        t0 = time.perf_counter()
        pred.predict_proba(q[None, :])
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    print(f"{args.models} models, {args.dim}-d, {args.queries} queries, k = {K}")
    print(f"{'N':>9} {'index':<14} {'knob':>6} {'build s':>8} {'recall@5':>9} {'max|dP|':>8} "
          f"{'mean|dP|':>9} {'routed chg':>10} {'B/input':>8} {'ms/input':>9}")
    for n in args.sizes:
        X, Y, Q = synthetic_pool(n, args.models, args.dim, args.queries)
        datasets = np.full(n, "pool", dtype=object)
        ref_rows: np.ndarray | None = None
        ref_P: np.ndarray | None = None
        for factory, nprobe, ef in (CONFIGS_SMALL if n <= 200_000 else CONFIGS_LARGE):
            gc.collect()
            before = rss_bytes()
            t0 = time.perf_counter()
            pred = KNNCorrectnessPredictor(K, index_factory=factory, nprobe=nprobe,
                                           ef_search=ef).fit(X, Y, datasets)
            build = time.perf_counter() - t0
            added = rss_bytes() - before
            _, rows = pred.index_.search(Q, K)
            P = pred.predict_proba(Q)
            if ref_rows is None:
                ref_rows, ref_P = rows, P
            assert ref_P is not None
            recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(rows, ref_rows)])
            dP = float(np.max(np.abs(P - ref_P)))
            mean_dP = float(np.mean(np.abs(P - ref_P)))
            changed = float(np.mean(best(P) != best(ref_P)))
            ms = one_by_one(pred, Q)
            knob = f"np{nprobe}" if nprobe else (f"ef{ef}" if ef else "")
            print(f"{n:>9} {factory:<14} {knob:>6} {build:8.1f} {recall:9.4f} {dP:8.3f} "
                  f"{mean_dP:9.5f} {changed:10.4f} {added / n:8.0f} {ms:9.2f}", flush=True)
            del pred
        print(f"{n:>9} labels float32 (N, M): {Y.nbytes / n:.0f} B/input; vectors float32: "
              f"{X.nbytes / n:.0f} B/input", flush=True)
        del X, Y, Q


if __name__ == "__main__":
    main()
