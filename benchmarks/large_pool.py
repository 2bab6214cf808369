"""Approximate indexes on large synthetic pools: recall, change in P(m, x), in routed choices
and in routed quality against exact search, memory per input, time to route one input.

    python benchmarks/large_pool.py [--sizes 100000 1000000] [--models 100] [--queries 1000]
                                    [--ks 5 20 50]
    python benchmarks/large_pool.py --sizes 5000000 --queries 500   # streamed, see below

A pool of N unit vectors (768-d) drawn around C cluster centres (C = N / 100), each model's
label on an input a Bernoulli draw of that model's skill on the input's cluster, 10 % of the
labels missing; queries are fresh draws around the same centres, so each query's true quality
per model (its cluster's skill) is known. For every index configuration the kNN correctness
predictor (uniform weights, for each k of ``--ks``; k = 5 is the router's g_m(x), larger k is
what the tuned per-input predictor picks on real pools) is compared with the exact flat index
built in the same run:

* recall@K: the share of the exact K = max(ks) nearest neighbours the index returns;
* max |ΔP|, mean |ΔP|: the largest and the mean change of P over all queries and models
  (P is a mean of at most k labels: one neighbour swapped moves it by up to 1/k);
* routed changed: the share of queries whose top model (``policies.best`` on P) changes;
* quality lost: mean true skill of the exact index's choice minus that of this index's choice
  (what the changed choices cost; the exact choice is itself not the oracle's);
* B/input: resident memory the fitted predictor added (``/proc/self/statm`` before and after
  building), per input: rough, since memory freed by the previous index is reused;
* ms/input: one query at a time (the latency of routing one input), median over 200 queries.

Pools larger than ``--stream-above`` (2M) do not fit in memory as float32 vectors next to their
index on a 24 GiB machine: they are generated chunk by chunk (each chunk from its own seed, so
every pass sees the same pool), added to a FAISS index that stores float16 codes (``SQfp16``,
or inverted lists of them; ``--configs`` names others, an inverted file trained on the first
100k rows), and the exact neighbours are found by streaming the chunks once;
P is computed from the neighbours' labels exactly as the router's kNN does.

The labels are float32 (N, M) with NaN for missing, as the router stores them.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Iterator

import numpy as np

from benchroute.policies import best
from benchroute.predictors import KNNCorrectnessPredictor, knn_mean

CONFIGS_SMALL = [("Flat", None, None), ("SQfp16", None, None), ("IVF1024,Flat", 16, None),
                 ("IVF1024,Flat", 64, None), ("HNSW32", None, 64), ("HNSW32", None, 128)]
# HNSW32 over 1M inputs builds for tens of minutes on two shared cores: left out there
CONFIGS_LARGE = [("Flat", None, None), ("SQfp16", None, None), ("IVF1024,Flat", 16, None),
                 ("IVF1024,Flat", 64, None)]
# streamed pools: float16 codes only (float32 would not fit beside the labels)
CONFIGS_STREAM = [("SQfp16", None), ("IVF1024,SQfp16", 16), ("IVF1024,SQfp16", 64)]
CHUNK = 100_000
NOISE = 0.04


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class SyntheticPool:
    """The pool's centres and skills, and chunks of its inputs drawn from per-chunk seeds."""

    def __init__(self, n: int, n_models: int, d: int, seed: int = 0) -> None:
        self.n, self.n_models, self.d, self.seed = n, n_models, d, seed
        rng = np.random.default_rng([seed, 0])
        self.n_clusters = max(10, n // 100)
        c = rng.normal(size=(self.n_clusters, d)).astype(np.float32)
        self.centres = c / np.linalg.norm(c, axis=1, keepdims=True)
        self.skill = rng.beta(2, 2, size=(self.n_clusters, n_models)).astype(np.float32)

    def _draw(self, rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        cl = rng.integers(0, self.n_clusters, size=m)
        x = self.centres[cl] + NOISE * rng.normal(size=(m, self.d)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True), cl

    def chunks(self, labels: bool = True) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """(first row, vectors, labels) of each chunk of CHUNK rows."""
        for i, start in enumerate(range(0, self.n, CHUNK)):
            rng = np.random.default_rng([self.seed, 1, i])
            X, cl = self._draw(rng, min(CHUNK, self.n - start))
            Y = None
            if labels:
                sk = self.skill[cl]
                Y = (rng.random(sk.shape, dtype=np.float32) < sk).astype(np.float32)
                Y[rng.random(sk.shape) < 0.1] = np.nan
            yield start, X, Y

    def queries(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """m fresh inputs and their true quality per model (their cluster's skill)."""
        X, cl = self._draw(np.random.default_rng([self.seed, 2]), m)
        return X, self.skill[cl]

    def whole(self) -> tuple[np.ndarray, np.ndarray]:
        X = np.empty((self.n, self.d), np.float32)
        Y = np.empty((self.n, self.n_models), np.float32)
        for start, x, y in self.chunks():
            X[start:start + len(x)], Y[start:start + len(x)] = x, y
        return X, Y


def synthetic_pool(n: int, n_models: int, d: int, n_queries: int, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectors (N, d), labels (N, M) and fresh queries of a pool held in memory."""
    pool = SyntheticPool(n, n_models, d, seed)
    X, Y = pool.whole()
    return X, Y, pool.queries(n_queries)[0]


def per_k(dist: np.ndarray, labels: np.ndarray, ks: list[int], means: np.ndarray
          ) -> dict[int, np.ndarray]:
    return {k: knn_mean(dist, labels, k, "uniform", means)[0] for k in ks}


def compare(n: int, name: str, knob: str, build: float, rows: np.ndarray, ref_rows: np.ndarray,
            P: dict[int, np.ndarray], ref_P: dict[int, np.ndarray], truth: np.ndarray,
            added: float, ms: float) -> None:
    K = ref_rows.shape[1]
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(rows, ref_rows)])
    for k in P:
        pick, ref_pick = best(P[k]), best(ref_P[k])
        idx = np.arange(len(pick))
        lost = float(np.mean(truth[idx, ref_pick] - truth[idx, pick]))
        print(f"{n:>9} {name:<16} {knob:>6} {k:>4} {build:8.1f} {recall:9.4f} "
              f"{np.max(np.abs(P[k] - ref_P[k])):8.3f} {np.mean(np.abs(P[k] - ref_P[k])):9.5f} "
              f"{np.mean(pick != ref_pick):10.4f} {lost:+9.5f} {added / n:8.0f} {ms:9.2f}",
              flush=True)


def parse_configs(specs: list[str]) -> list[tuple[str, int | None, int | None]]:
    """``Flat``, ``IVF1024,Flat:np16``, ``HNSW32:ef128``: the exact index always comes first."""
    out: list[tuple[str, int | None, int | None]] = [("Flat", None, None)]
    for spec in specs:
        factory, _, knob = spec.partition(":")
        out.append((factory, int(knob[2:]) if knob.startswith("np") else None,
                    int(knob[2:]) if knob.startswith("ef") else None))
    return out


def in_memory(pool: SyntheticPool, ks: list[int], n_queries: int,
              configs: list[tuple[str, int | None, int | None]] | None = None) -> None:
    X, Y = pool.whole()
    Q, truth = pool.queries(n_queries)
    datasets = np.full(pool.n, "pool", dtype=object)
    K = max(ks)
    ref: tuple[np.ndarray, dict[int, np.ndarray]] | None = None
    if configs is None:
        configs = CONFIGS_SMALL if pool.n <= 200_000 else CONFIGS_LARGE
    pred: KNNCorrectnessPredictor | None = None
    for factory, nprobe, ef in configs:
        if pred is not None and pred.index_factory == factory:  # a search knob: no rebuild
            pred.index_.nprobe, pred.index_.ef_search = nprobe, ef
        else:
            pred = None
            gc.collect()
            before = rss_bytes()
            t0 = time.perf_counter()
            pred = KNNCorrectnessPredictor(5, index_factory=factory, nprobe=nprobe,
                                           ef_search=ef).fit(X, Y, datasets)
            build = time.perf_counter() - t0
            added = rss_bytes() - before
        nb = pred.neighbours(Q, K)
        P = per_k(nb.distances, nb.labels, ks, pred.model_means_)
        assert nb.rows is not None
        if ref is None:
            ref = (nb.rows, P)
        times = []
        for q in Q[:200]:
            t1 = time.perf_counter()
            pred.predict_proba(q[None, :])
            times.append(time.perf_counter() - t1)
        knob = f"np{nprobe}" if nprobe else (f"ef{ef}" if ef else "")
        compare(pool.n, factory, knob, build, nb.rows, ref[0], P, ref[1], truth, added,
                statistics.median(times) * 1e3)
        del nb
    print(f"{pool.n:>9} labels float32 (N, M): {Y.nbytes / pool.n:.0f} B/input; vectors "
          f"float32: {X.nbytes / pool.n:.0f} B/input", flush=True)


def exact_stream(pool: SyntheticPool, Q: np.ndarray, K: int) -> np.ndarray:
    """The exact K nearest rows of each query, one chunk of the pool at a time (each chunk's
    top K merged in FAISS's result heap)."""
    import faiss

    heap = faiss.ResultHeap(len(Q), K, keep_max=True)
    for start, x, _ in pool.chunks(labels=False):
        sims, rows = faiss.knn(Q, x, min(K, len(x)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(sims, rows + start)
    heap.finalize()
    return heap.I


def streamed(pool: SyntheticPool, ks: list[int], n_queries: int,
             configs: list[tuple[str, int | None]] | None = None) -> None:
    import faiss

    Q, truth = pool.queries(n_queries)
    K = max(ks)
    Y = np.empty((pool.n, pool.n_models), np.float32)
    t0 = time.perf_counter()
    for start, _, y in pool.chunks():
        assert y is not None
        Y[start:start + len(y)] = y
    means = np.nanmean(Y, axis=0)
    padded_nan = np.full((1, pool.n_models), np.nan, np.float32)

    def proba(rows: np.ndarray) -> dict[int, np.ndarray]:
        labels = np.where((rows >= 0)[..., None], Y[np.maximum(rows, 0)], padded_nan)
        dist = np.where(rows >= 0, 0.0, np.inf)  # uniform weights: only "found" matters
        return per_k(dist, labels, ks, means)

    ref_rows = exact_stream(pool, Q, K)
    print(f"{pool.n:>9} labels and exact neighbours by streaming: {time.perf_counter() - t0:.0f} s",
          flush=True)
    ref_P = proba(ref_rows)
    compare(pool.n, "exact (streamed)", "", 0.0, ref_rows, ref_rows, ref_P, ref_P, truth, 0, np.nan)
    built: dict[str, object] = {}
    for factory, nprobe in (CONFIGS_STREAM if configs is None else configs):
        if factory not in built:
            built.clear()
            gc.collect()
            before = rss_bytes()
            t0 = time.perf_counter()
            index = faiss.index_factory(pool.d, factory, faiss.METRIC_INNER_PRODUCT)
            if not index.is_trained:  # train on the first chunks (100k rows: 97 per list)
                index.train(next(pool.chunks(labels=False))[1])
            for _, x, _ in pool.chunks(labels=False):
                index.add(x)
            built[factory] = (index, time.perf_counter() - t0, rss_bytes() - before)
        index, build, added = built[factory]  # type: ignore[misc]
        if nprobe:
            faiss.extract_index_ivf(index).nprobe = nprobe
        _, rows = index.search(Q, K)
        times = []
        for q in Q[:20]:
            t1 = time.perf_counter()
            index.search(q[None, :], 5)
            times.append(time.perf_counter() - t1)
        compare(pool.n, factory, f"np{nprobe}" if nprobe else "", build, rows, ref_rows,
                proba(rows), ref_P, truth, added, statistics.median(times) * 1e3)
    print(f"{pool.n:>9} labels float32 (N, M): {Y.nbytes / pool.n:.0f} B/input", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--ks", type=int, nargs="+", default=[5, 20, 50])
    ap.add_argument("--stream-above", type=int, default=2_000_000)
    ap.add_argument("--configs", nargs="*", default=None,
                    help="indexes besides the exact one, e.g. HNSW32:ef128 'IVF4096,Flat:np32'")
    args = ap.parse_args()
    ks = sorted(set(args.ks))
    print(f"{args.models} models, {args.dim}-d, {args.queries} queries, k in {ks}")
    print(f"{'N':>9} {'index':<16} {'knob':>6} {'k':>4} {'build s':>8} {'recall@K':>9} "
          f"{'max|dP|':>8} {'mean|dP|':>9} {'routed chg':>10} {'qual lost':>9} {'B/input':>8} "
          f"{'ms/input':>9}")
    for n in args.sizes:
        pool = SyntheticPool(n, args.models, args.dim)
        if n > args.stream_above:
            streamed(pool, ks, args.queries, None if args.configs is None else
                     [(f, npr) for f, npr, _ in parse_configs(args.configs)[1:]])
        else:
            in_memory(pool, ks, args.queries,
                      None if args.configs is None else parse_configs(args.configs))
        gc.collect()


if __name__ == "__main__":
    main()
