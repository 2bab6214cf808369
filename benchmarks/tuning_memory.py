"""Memory of the tuned predictor's fit on a large pool, against the pool's own size, and the
speed of scoring its grid in one pass.

    python benchmarks/tuning_memory.py [--sizes 100000 300000] [--models 100] [--cap 2000]
                                       [--grid-queries 2000]

The tuned per-input predictor (``PerInputPredictor(max_task_queries=--cap)``) is fitted on a
synthetic pool (768-d, 10 tasks, labels as in ``large_pool.py``) held as a router holds it:
float32 vectors, float64 labels. Measured in the same run, for each size:

* the largest memory the fit allocates through Python and NumPy on top of the pool
  (``tracemalloc``'s peak, which sees every NumPy array; FAISS's own C++ buffers, a few MB per
  search block, are not in it), as a ratio to the pool's bytes (vectors + labels);
* the fit's seconds, as a ratio to one exact search of the same scored inputs against the
  whole pool (what the cross-validation cannot do with less).

A fit that copied the pool's vectors or labels per fold would show a ratio near or above 1;
one that holds only the scored inputs' neighbours stays well below it.

First, the grid: the default 84 (k, weighting, prior) configurations scored on the same
neighbours (``--grid-queries`` inputs, their 160 nearest pool inputs, ``--models`` models), one
``knn_mean`` call per configuration (the baseline, as the tuning did before) against
``KNNSums``, one pass per weighting; the ratio of the two times, and the largest difference
between their P.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

import numpy as np
from large_pool import SyntheticPool

from benchroute.predictors import KNNSums, knn_mean
from benchroute.sampling import query_mask
from benchroute.tuning import PerInputPredictor, knn_search


def grid_speed(n_queries: int, models: int) -> None:
    pool = SyntheticPool(50_000, models, 768)
    X, Y = pool.whole()
    Q = pool.queries(n_queries)[0]
    dist, rows = knn_search(X, Q, 160)
    labels = Y.astype(np.float64)[rows]
    pred = PerInputPredictor()
    grid = pred._grid()
    means = np.nanmean(Y, axis=0)
    t0 = time.perf_counter()
    base = [knn_mean(dist, labels, k, w, means, p)[0] for k, w, p in grid]
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    sums = {w: KNNSums(dist, labels, [k for k, w_, _ in grid if w_ == w], w)
            for w in dict.fromkeys(w for _, w, _ in grid)}
    one = [sums[w].mean(k, means, p)[0] for k, w, p in grid]
    t_one = time.perf_counter() - t0
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(base, one))
    print(f"grid of {len(grid)} configurations, {n_queries:,} inputs x 160 neighbours x "
          f"{models} models: one call each {t_base:.2f} s, one pass per weighting "
          f"{t_one:.2f} s, ratio {t_base / t_one:.1f}x; largest |dP| {diff:.1e}", flush=True)


def measure(n: int, models: int, cap: int) -> dict[str, float]:
    X, Y32 = SyntheticPool(n, models, 768).whole()
    Y = Y32.astype(np.float64)
    del Y32
    ds = np.asarray([f"task{i * 10 // n}" for i in range(n)], dtype=object)
    pool_mib = (X.nbytes + Y.nbytes) / 2**20
    queried = query_mask(ds, n, cap, 0)
    t0 = time.perf_counter()
    knn_search(X, X[queried], 160)
    search = time.perf_counter() - t0
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    pred = PerInputPredictor(max_task_queries=cap).fit(X, Y, ds)
    fit = time.perf_counter() - t0
    peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {"pool_mib": pool_mib, "peak_mib": peak_mib, "fit_s": fit, "search_s": search,
            "scored": int(queried.sum()), "k": pred.k_}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000, 300_000])
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--cap", type=int, default=2000)
    ap.add_argument("--grid-queries", type=int, default=2000)
    args = ap.parse_args()
    if args.grid_queries:
        grid_speed(args.grid_queries, args.models)
    print(f"{'N':>9} {'scored':>7} {'pool MiB':>8} {'fit peak MiB':>12} {'peak/pool':>9} "
          f"{'fit s':>7} {'search s':>8} {'fit/search':>10}  k")
    for n in args.sizes:
        r = measure(n, args.models, args.cap)
        print(f"{n:>9,} {r['scored']:>7,} {r['pool_mib']:>8,.0f} {r['peak_mib']:>12,.0f} "
              f"{r['peak_mib'] / r['pool_mib']:>9.2f} {r['fit_s']:>7.1f} {r['search_s']:>8.1f} "
              f"{r['fit_s'] / r['search_s']:>10.1f}  {r['k']}", flush=True)


if __name__ == "__main__":
    main()
