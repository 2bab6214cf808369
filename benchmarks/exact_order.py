"""What re-scoring each query's candidates costs (``benchroute.index._exact_order``), which makes
a search's result independent of the batch it is in.

    python benchmarks/exact_order.py [--pool 20000] [--dim 768] [--queries 2000] [--k 160]

Times ``VectorIndex.search`` on a flat index of unit vectors, as it runs (FAISS's search of
k + 8 candidates, then one (k + 8) x d product per query), against FAISS's search of k alone
in the same run, best of three each, on one thread; and checks that the results of the whole
batch equal those of the queries searched in batches of 1, 7 and 256.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import timed

from benchroute.index import VectorIndex


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pool", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=2_000)
    ap.add_argument("--k", type=int, default=160)
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    x = unit(rng, args.pool, args.dim)
    q = unit(rng, args.queries, args.dim)
    idx = VectorIndex().add(x, ["t"] * args.pool)
    plain = min(timed(lambda: idx.index_.search(q, args.k))[1] for _ in range(3))
    (d_all, r_all), ours = min((timed(lambda: idx.search(q, args.k)) for _ in range(3)),
                               key=lambda t: t[1])
    same = all(np.array_equal(np.vstack([idx.search(q[a:a + size], args.k)[1]
                                         for a in range(0, len(q), size)]), r_all)
               for size in (1, 7, 256))
    print(f"pool {args.pool} x {args.dim}, {args.queries} queries, k = {args.k}, one thread")
    print(f"FAISS search alone:          {plain:.3f} s ({args.queries / plain:,.0f} queries/s)")
    print(f"search with exact order:     {ours:.3f} s ({args.queries / ours:,.0f} queries/s)")
    print(f"ratio (with / alone):        {ours / plain:.2f}x")
    print(f"same rows whatever the batch (1, 7, 256): {same}")


if __name__ == "__main__":
    main()
