"""Where a saved router's load time goes, and the vector check against its earlier form.

    python benchmarks/load.py [--sizes 100000 300000] [--models 100] [--cap 2000]

For each size: a synthetic pool (as ``growth.py``: 768-d, 10 tasks, ``--models`` models) fitted
with ``tune=False`` and ``max_task_queries = --cap`` (the per-input predictor plays no part in
loading), saved, then loaded three times (median reported). The load's parts, each timed alone
on the loaded router's files:

* checksums: SHA-256 of every data file (``router.json`` lists them);
* index: ``VectorIndex.load`` (FAISS's read plus the check of every stored vector);
* vector check: that check alone (:func:`benchroute.embedding.base.unit_norm_rows` by chunks),
  and the same check as it was written before (three NumPy passes: ``isfinite``, a masked
  copy, ``linalg.norm``), with their ratio;
* OOD reference on first use (``benchroute.ood.reference_of``, which the gateway calls at
  start-up): read from the saved scores, against the per-task searches a router saved without
  them makes (``OODReference`` built without the saved scores), timed in the same run;
* spot check: one task's reference pair recomputed (a search of its sampled inputs against
  the whole pool), and its rate in GFLOP/s counting the search's 2·q·N·d multiply-adds,
  against a plain float32 matrix product of the same shape in the same run (NumPy's BLAS:
  what this core reaches on that work, the practical peak).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from growth import ALPHAS, pool

from benchroute._persist import sha256_file
from benchroute.index import _CHECK_CHUNK, VectorIndex
from benchroute.ood import OODReference, reference_of
from benchroute.persistence import _spot_check_reference
from benchroute.router import Router


def plain_check(X: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """The vector check as it was before (commit d9e96b0): three passes over the rows."""
    out = np.asarray(X).astype(np.float32, copy=False)
    finite = np.asarray(np.isfinite(out).all(axis=1))
    norms = np.linalg.norm(np.where(finite[:, None], out, 0), axis=1)
    broken = ~finite | (norms == 0)
    return broken, ~broken & (np.abs(norms - 1) > tol)


def best_of(fn, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(n: int, models: int, cap: int) -> dict[str, float]:
    X, Y, _, ds = pool(n, models)
    t0 = time.perf_counter()
    router = Router(tune=False, alphas=ALPHAS, repeats=1, encoder="hashing-768-11",
                    max_task_queries=cap).fit_arrays(X, Y, ds, [f"m{j}" for j in range(models)])
    fit = time.perf_counter() - t0
    del X, Y
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "router"
        router.save(folder)
        del router
        gc.collect()
        load = best_of(lambda: Router.load(folder))
        loaded = Router.load(folder)
        files = [p for p in folder.rglob("*") if p.is_file() and p.name != "router.json"]
        sha = best_of(lambda: [sha256_file(p) for p in files])
        index = best_of(lambda: VectorIndex.load(folder / "index"))
        idx = loaded.predictor_.index_
        check = best_of(lambda: idx._check_unit_rows(folder / "index" / "index.faiss"))

        def plain() -> None:
            for start in range(0, len(idx), _CHECK_CHUNK):
                plain_check(idx.vectors(np.arange(start, min(start + _CHECK_CHUNK, len(idx)))),
                            1e-3)
        before = best_of(plain)
        spot = best_of(lambda: _spot_check_reference(folder / "router.json", loaded))
        ood_now = best_of(lambda: reference_of(Router.load(folder)), 1) - load
        ood_search = best_of(lambda: OODReference(loaded.predictor_, cap, 0), 1)
        ds = loaded.predictor_.datasets_
        ref = loaded.reference_
        task = min(set(ref.task[ref.alpha == 0].tolist()), key=lambda t: (int((ds == t).sum()), t))
        q = min(int((ds == task).sum()), cap)
        flop = 2.0 * q * (len(idx) - int((ds == task).sum())) * idx.dimension
        Qm = idx.vectors(np.arange(q))

        view = idx._flat_view()  # the stored vectors without a copy (a Flat index)

        def gemm() -> None:
            for start in range(0, len(idx), _CHECK_CHUNK):
                Qm @ view[start:start + _CHECK_CHUNK].T
        peak = 2.0 * q * len(idx) * idx.dimension / best_of(gemm)
    return {"n": n, "fit_s": fit, "load_s": load, "checksums_s": sha, "index_s": index,
            "vector_check_s": check, "vector_check_before_s": before,
            "check_ratio": before / check, "spot_check_s": spot,
            "spot_gflops": flop / spot / 1e9, "gemm_gflops": peak / 1e9,
            "ood_now_s": max(ood_now, 0.0), "ood_search_s": ood_search}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--cap", type=int, default=2000)
    args = ap.parse_args()
    print("| N | fit (s) | load (s) | checksums | index read + check | vector check | "
          "before | before / now | spot check | its GFLOP/s | matrix product GFLOP/s | "
          "OOD reference: load + first use − load | by searching |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        r = run(n, args.models, args.cap)
        print(f"| {n:,} | {r['fit_s']:.0f} | {r['load_s']:.2f} | {r['checksums_s']:.2f} | "
              f"{r['index_s']:.2f} | {r['vector_check_s']:.2f} | "
              f"{r['vector_check_before_s']:.2f} | {r['check_ratio']:.1f}× | "
              f"{r['spot_check_s']:.2f} | {r['spot_gflops']:.0f} | {r['gemm_gflops']:.0f} | "
              f"{r['ood_now_s']:.2f} | {r['ood_search_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
