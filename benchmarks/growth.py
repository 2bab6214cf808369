"""How cost grows: embedding, fitting (index, reference pass, tuning) and routing as the pool,
the number of models and the number of prompts grow.

    python benchmarks/growth.py [--sizes 1000 10000 100000] [--models 2 10 100 1000]
                                [--prompts 100 1000 10000] [--plot results/growth/growth.png]
    python benchmarks/growth.py --cap 2000 --sizes 10000 100000 1000000 --models --prompts
                                --no-embed --plot results/growth/growth_capped.png

Synthetic pools (768-d unit vectors around N/100 cluster centres, 10 tasks, labels Bernoulli
draws of each model's skill on a cluster, 10 % missing; as in ``large_pool.py``), default
router parameters except the reference pass's α grid (0, 0.2; 1 repeat) so that the largest
pools finish on two cores. Measured in one run:

* fit, split into its parts: the exact index (``KNNCorrectnessPredictor.fit``), the
  leave-one-task-out reference pass (``Router(tune=False).fit_arrays`` minus the index), the
  tuned per-input predictor (``tune=True`` minus ``tune=False``);
* routing: ``route_embedded`` on 1,000 prompts at once, ms per prompt;
* embedding: the default encoder's texts/s on 32 RouterDC questions, measured here, times N:
  per-text work does not depend on the pool, and the cache embeds an input once.

Pool sizes vary at 10 models, model counts at N = 10,000, prompt counts at N = 10,000 and 10
models. ``--cap Q`` fits the pool-size axis with ``max_task_queries = Q`` (each task's Q
sampled inputs scored in the leave-one-task-out passes: what makes a 1M-input fit possible).
Prints a table and, with ``--plot``, draws seconds against each axis measured (log-log).
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import numpy as np
from _common import SHARED
from large_pool import synthetic_pool

from benchroute.predictors import KNNCorrectnessPredictor
from benchroute.router import Router

ALPHAS = (0.0, 0.2)


def pool(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, Y, Q = synthetic_pool(n, m, 768, 10_000, seed)
    # tasks: contiguous blocks of rows, as stores lay them out
    datasets = np.asarray([f"task{i * 10 // n}" for i in range(n)], dtype=object)
    return X, Y, Q, datasets


def fit_parts(X: np.ndarray, Y: np.ndarray, ds: np.ndarray, **params: object
              ) -> tuple[dict[str, float], Router]:
    """The seconds of a fit's parts (the index alone, then the reference pass and the tuning as
    differences of an untuned and a tuned fit) and the tuned router; ``params`` are router
    parameters beside the short α grid (an index factory, a query cap, ...)."""
    models = [f"m{j}" for j in range(Y.shape[1])]
    params = {"alphas": ALPHAS, "repeats": 1, "encoder": "hashing-768-11", **params}
    t0 = time.perf_counter()
    KNNCorrectnessPredictor(index_factory=str(params.get("index_factory", "Flat")),
                            nprobe=params.get("nprobe")).fit(X, Y, ds)  # type: ignore[arg-type]
    index = time.perf_counter() - t0
    gc.collect()  # each fit's index freed before the next is built
    t0 = time.perf_counter()
    Router(tune=False, **params).fit_arrays(X, Y, ds, models)  # type: ignore[arg-type]
    untuned = time.perf_counter() - t0
    gc.collect()
    t0 = time.perf_counter()
    router = Router(**params).fit_arrays(X, Y, ds, models)  # type: ignore[arg-type]
    tuned = time.perf_counter() - t0
    return {"index": index, "reference": max(untuned - index, 0.0),
            "tuning": max(tuned - untuned, 0.0), "total": tuned}, router


def route_ms(router: Router, Q: np.ndarray) -> float:
    t0 = time.perf_counter()
    router.route_embedded(Q)
    return (time.perf_counter() - t0) / len(Q) * 1e3


def embed_rate() -> float:
    from benchroute import load
    from benchroute.embedding import get_encoder

    texts = load(SHARED / "data" / "routerdc").instances()["text"].drop_duplicates().tolist()
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), size=34, replace=False)]
    enc = get_encoder()
    enc.encode(sample[:2])  # load
    t0 = time.perf_counter()
    enc.encode(sample[2:])
    return 32 / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--models", type=int, nargs="*", default=[2, 10, 100, 1000])
    ap.add_argument("--prompts", type=int, nargs="*", default=[100, 1000, 10_000])
    ap.add_argument("--cap", type=int, default=None,
                    help="max_task_queries for the pool-size axis (default: every input)")
    ap.add_argument("--no-embed", action="store_true", help="skip the encoder measurement")
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    rows: list[tuple[str, int, dict[str, float]]] = []
    rate = None if args.no_embed else embed_rate()
    if rate:
        print(f"embedding: {rate:.2f} texts/s (default encoder, 32 RouterDC questions)")
    print(f"{'axis':<8} {'value':>8} {'embed s':>9} {'index s':>8} {'reference s':>12} "
          f"{'tuning s':>9} {'route ms/prompt':>16}", flush=True)

    def report(axis: str, value: int, n: int, parts: dict[str, float]) -> None:
        parts["embed"] = n / rate if rate else float("nan")
        rows.append((axis, value, parts))
        print(f"{axis:<8} {value:>8} {parts['embed']:9.0f} {parts['index']:8.2f} "
              f"{parts['reference']:12.2f} {parts['tuning']:9.2f} {parts['route']:16.3f}", flush=True)

    capped = {} if args.cap is None else {"max_task_queries": args.cap}
    for n in args.sizes:
        X, Y, Q, ds = pool(n, 10)
        parts, router = fit_parts(X, Y, ds, **capped)
        parts["route"] = route_ms(router, Q[:1000])
        report("pool", n, n, parts)
        del X, Y, Q, ds, router
        gc.collect()
    for m in args.models:
        X, Y, Q, ds = pool(10_000, m)
        parts, router = fit_parts(X, Y, ds)
        parts["route"] = route_ms(router, Q[:1000])
        report("models", m, 10_000, parts)
    if args.prompts:
        X, Y, Q, ds = pool(10_000, 10)
        parts, router = fit_parts(X, Y, ds)
    for r in args.prompts:
        t0 = time.perf_counter()
        router.route_embedded(Q[:r])
        total = time.perf_counter() - t0
        print(f"prompts  {r:>8} routed in {total:.3f} s ({total / r * 1e3:.3f} ms/prompt; "
              f"embedding them: {r / rate if rate else float('nan'):.0f} s)", flush=True)
        rows.append(("prompts", r, {"route_total": total, "embed": r / rate if rate else np.nan}))
    if args.plot:
        plot(rows, args.plot, args.cap)


def plot(rows: list[tuple[str, int, dict[str, float]]], out: Path, cap: int | None = None
         ) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"pool": "pooled inputs N (10 models)" + ("" if cap is None else
                                                        f", max_task_queries = {cap}"),
              "models": "models M (N = 10,000)", "prompts": "prompts routed (N = 10,000, 10 models)"}
    present = [a for a in labels if any(r[0] == a for r in rows)]
    fig, axes = plt.subplots(1, len(present), figsize=(max(5.6, 4.4 * len(present)), 4),
                             squeeze=False)
    for ax, axis in zip(axes[0], present):
        xlabel = labels[axis]
        sel = [(v, p) for a, v, p in rows if a == axis]
        xs = [v for v, _ in sel]
        keys = ("route_total", "embed") if axis == "prompts" else \
            ("embed", "index", "reference", "tuning")
        for key in keys:
            ys = [p.get(key, np.nan) for _, p in sel]
            if np.isfinite(ys).any():
                ax.loglog(xs, ys, "o-", label=key)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
