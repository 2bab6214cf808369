"""Exact and approximate k-nearest-neighbour search for the correctness predictors.

    python benchmarks/knn.py [--pool 100000] [--queries 1000] [--k 19]

Pool: the shared all-mpnet-base-v2 embeddings (about 18k real inputs), repeated with small
Gaussian noise up to --pool rows and re-normalised. Compares benchroute's FAISS flat index with
scikit-learn ``NearestNeighbors(metric="cosine", algorithm="brute")`` and a numpy matmul +
argpartition, checks that the exact ones return identical neighbours, and reports recall@k of
IVF and HNSW against flat.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import SHARED, peak_rss_mb, timed

from benchroute.index import VectorIndex


def pool_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    real = np.concatenate([np.load(p)["embedding"].astype(np.float32)
                           for p in sorted((SHARED / "embeddings").glob("*.npz"))])
    x = real[rng.integers(0, len(real), n)] + rng.normal(scale=0.02, size=(n, real.shape[1])).astype(np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def numpy_knn(pool: np.ndarray, q: np.ndarray, k: int, block: int = 250) -> np.ndarray:
    out = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), block):
        sims = q[s:s + block] @ pool.T
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[s:s + block] = np.take_along_axis(part, order, axis=1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=19)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    pool = pool_vectors(args.pool, rng)
    queries = pool_vectors(args.queries, np.random.default_rng(1))
    labels = np.zeros(len(pool), dtype=object)
    mem0 = peak_rss_mb()
    print(f"pool {pool.shape} float32 = {pool.nbytes / 2**20:.0f} MiB, {args.queries} queries, k={args.k}")

    flat = VectorIndex().add(pool, labels)
    (_, flat_rows), t_flat = timed(lambda: flat.search(queries, args.k))
    np_rows, t_np = timed(lambda: numpy_knn(pool, queries, args.k))

    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=args.k, metric="cosine", algorithm="brute").fit(pool)
    (_, sk_rows), t_sk = timed(lambda: nn.kneighbors(queries))

    def same(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean([set(x) == set(y) for x, y in zip(a, b)]))

    print(f"{'method':<34}{'time s':>9}{'vs flat':>9}  neighbours")
    print(f"{'faiss IndexFlatIP (benchroute)':<34}{t_flat:>9.3f}{1.0:>9.2f}  reference")
    print(f"{'numpy matmul + argpartition':<34}{t_np:>9.3f}{t_np / t_flat:>9.2f}  "
          f"identical sets for {same(np_rows, flat_rows):.1%} of queries")
    print(f"{'sklearn brute cosine':<34}{t_sk:>9.3f}{t_sk / t_flat:>9.2f}  "
          f"identical sets for {same(sk_rows, flat_rows):.1%} of queries")

    for factory, kw in (("IVF1024,Flat", {"nprobe": 32}), ("HNSW32", {"ef_search": 128})):
        idx, t_build = timed(lambda f=factory, k=kw: VectorIndex(f, **k).add(pool, labels))
        (_, rows), t = timed(lambda i=idx: i.search(queries, args.k))
        recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(rows, flat_rows)])
        print(f"{factory + ' ' + str(kw):<34}{t:>9.3f}{t / t_flat:>9.2f}  recall@{args.k} "
              f"{recall:.4f} (build {t_build:.1f} s)")
    print(f"peak RSS {peak_rss_mb():.0f} MiB (after loading the pool: {mem0:.0f} MiB)")


if __name__ == "__main__":
    main()
