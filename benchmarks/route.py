"""Routing and selection throughput of a fitted router, and its memory.

    python benchmarks/route.py [--queries 10000] [--task 1000]

1. RouterDC pool (the inputs whose all-mpnet-base-v2 vectors are in shared/embeddings: 16,384
   distinct questions of 20,565), 7 models: ``route`` decisions per second for --queries inputs
   (embeddings given), against a baseline of one scikit-learn ``KNeighborsRegressor`` per model
   (a search per model, the straightforward way) measured in the same run;
   ``select_model`` on a --task-input task.
2. Scale target: 100k pooled inputs x 100 models (synthetic vectors and labels), ms per routed
   input (target < 1 ms).
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile

import numpy as np
from _common import SHARED, peak_rss_mb, timed

from benchroute import load_table
from benchroute.data.store import BenchmarkData
from benchroute.embedding import text_key
from benchroute.router import Router


def routerdc_with_vectors() -> tuple[BenchmarkData, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(SHARED / "data" / "routerdc" / "routerdc_split2_model7.tar.xz") as tar:
            tar.extractall(tmp, filter="data")
        data = load_table(tmp, preset="routerdc")
    z = np.load(SHARED / "embeddings" / "routerdc.npz")
    row = {str(k): i for i, k in enumerate(z["sha256"].tolist())}
    inst = data.instances()
    keys = inst["text"].map(text_key)
    has = keys.isin(row).to_numpy()
    keep = inst[has]
    frame = data.frame.merge(keep[["dataset", "instance_id"]], on=["dataset", "instance_id"])
    data = BenchmarkData(frame)
    vecs = z["embedding"][[row[k] for k in data.instances()["text"].map(text_key)]].astype(np.float32)
    return data, vecs


def noisy(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    q = x[rng.integers(0, len(x), n)] + rng.normal(scale=0.05, size=(n, x.shape[1])).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--task", type=int, default=1000)
    ap.add_argument("--scale-pool", type=int, default=100_000)
    ap.add_argument("--scale-models", type=int, default=100)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    data, X = routerdc_with_vectors()
    rss0 = peak_rss_mb()
    router, t_fit = timed(lambda: Router(alphas=(0.0,), encoder="hashing-8-12").fit(data, embeddings=X))
    Q = noisy(X, args.queries, rng)
    print(f"RouterDC pool: {len(X):,} inputs x {len(router.models_)} models ({len(router.tasks_)} tasks); "
          f"fit {t_fit:.1f} s (alpha = 0 reference pass)")
    routed, t_route = timed(lambda: router.route_embedded(Q))

    from sklearn.neighbors import KNeighborsRegressor

    def baseline() -> np.ndarray:
        g = np.empty((len(Q), router.Y_.shape[1]))
        for m in range(router.Y_.shape[1]):
            has = ~np.isnan(router.Y_[:, m])
            knn = KNeighborsRegressor(n_neighbors=5, metric="cosine", algorithm="brute")
            g[:, m] = knn.fit(router.pool_vectors()[has], router.Y_[has, m]).predict(Q)
        return g

    g_base, t_base = timed(baseline)
    g_ours = router.predictor_.predict_proba(Q)
    agree = np.mean(np.abs(g_ours - g_base) < 1e-6)
    print(f"route {len(Q):,} inputs: {t_route:.2f} s = {len(Q) / t_route:,.0f} decisions/s "
          f"({1000 * t_route / len(Q):.3f} ms/input)")
    print(f"baseline, one sklearn KNeighborsRegressor per model: {t_base:.2f} s; "
          f"ratio benchroute/baseline {t_route / t_base:.3f}; same g for {agree:.2%} of cells")

    task = noisy(X[data.instances()["dataset"].to_numpy() == "mmlu"], args.task, rng)
    sel, t_sel = timed(lambda: router.select_embedded(task))
    print(f"select_model on a {args.task}-input task: {1000 * t_sel:.0f} ms -> {sel.model}")
    mem = router.Y_.nbytes + len(router.predictor_.index_) * router.predictor_.index_.dimension * 4
    print(f"fitted router arrays: {mem / 2**20:.0f} MiB (flat index vectors + labels); "
          f"peak RSS {peak_rss_mb():.0f} MiB (before fit {rss0:.0f} MiB)")

    # scale target
    n, m = args.scale_pool, args.scale_models
    Xs = noisy(X, n, rng)
    Ys = (rng.random((n, m)) < rng.uniform(0.2, 0.9, m)).astype(np.float32)
    Ys[rng.random((n, m)) < 0.1] = np.nan
    from benchroute.predictors import KNNCorrectnessPredictor

    pred, t_fit2 = timed(lambda: KNNCorrectnessPredictor(k=5).fit(Xs, Ys))
    Qs = noisy(X, 2000, rng)
    _, t2 = timed(lambda: pred.predict_proba(Qs))
    print(f"scale: {n:,} pooled x {m} models, flat index: {1000 * t2 / len(Qs):.3f} ms per input "
          f"(target < 1 ms); index build {t_fit2:.1f} s")
    hn, t_fit3 = timed(lambda: KNNCorrectnessPredictor(k=5, index_factory="HNSW32", ef_search=64).fit(Xs, Ys))
    _, t3 = timed(lambda: hn.predict_proba(Qs))
    print(f"scale: same with HNSW32 (efSearch 64): {1000 * t3 / len(Qs):.3f} ms per input; build {t_fit3:.1f} s")
    print(f"peak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
