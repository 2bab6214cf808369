"""Fitting large pools: the fit's leave-task-out passes on a sample of each task's inputs
(``Router(max_task_queries=...)``) against the full passes, measured in the same run.

    python benchmarks/large_fit.py --real [--caps 200 500]          # RouterDC, quality
    python benchmarks/large_fit.py --sizes 30000 1000000 --models 100 --cap 2000

``--real``: the RouterDC pool (its inputs with a precomputed vector, 7 models, 10 tasks),
its inputs split at random 80/20. A router is fitted on the 80 % with every input scored
(the baseline) and with each cap; reported: fit time and its ratio to the baseline, what the
tuning chose, the mean and largest change of the reference pairs' p (α = 0, per task and
model) and of the kernel estimate of p at each task's own u (the smoother's input, before the
self-estimate's correction), and on the 20 %: the mean true quality of the routed
choice (``best`` on P) and the share of choices that differ from the baseline's.

``--sizes``: synthetic pools (768-d, 10 tasks in contiguous rows, labels as in
``large_pool.py``), fitted with the default parameters except ``max_task_queries = --cap`` and a
short reference α grid (0, 0.2; 1 repeat); pools up to ``--full-max`` are also fitted without
the cap, as the baseline. Reported: fit time split into the index, the reference pass and the
tuned predictor, peak resident memory of the process after each fit (it only grows: run the
sizes in ascending order), routing 1,000 prompts at once and one prompt at a time. With
``--mmap``, the capped router of each size is also saved and loaded back with and without
``mmap=True``: load time, anonymous resident memory the load added (mapped file pages are
shared and reclaimable, so not counted), routing one prompt at a time
(the first prompt apart: it faults in the pages it reads).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time

import numpy as np
from _common import peak_rss_mb
from growth import fit_parts, pool

from benchroute.policies import best
from benchroute.router import Router
from benchroute.routing import router_proba


def anon_mb() -> float:
    """Anonymous resident memory (what the process owns; mapped file pages are not in it: the
    kernel can drop them and read them again)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("RssAnon:")) / 1024


def one_at_a_time(router: Router, Q: np.ndarray) -> tuple[float, float]:
    """(ms of the first prompt, median ms of the others), one prompt per call."""
    times = []
    for q in Q:
        t1 = time.perf_counter()
        router.route_embedded(q[None, :])
        times.append(time.perf_counter() - t1)
    return times[0] * 1e3, statistics.median(times[1:]) * 1e3


def mmap_check(router: Router, Q: np.ndarray) -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        router.save(tmp)
        for mmap in (False, True):
            gc.collect()
            os.system(f"cat {tmp}/index/index.faiss > /dev/null")  # same page cache for both
            before = anon_mb()
            t0 = time.perf_counter()
            back = Router.load(tmp, mmap=mmap)
            load = time.perf_counter() - t0
            added = anon_mb() - before
            first, rest = one_at_a_time(back, Q)
            print(f"{'':>9} load mmap={mmap!s:<5}: {load:6.1f} s, +{added:7.0f} MiB anonymous; "
                  f"one prompt: first {first:.1f} ms, then {rest:.2f} ms; anonymous after "
                  f"{anon_mb() - before:7.0f} MiB", flush=True)
            del back


def chosen(router: Router) -> str:
    d = router.per_input_.describe() if router.per_input_ is not None else {}
    return f"k={d.get('k')} {d.get('weights')} prior={d.get('prior')} {d.get('method')}"


def real(caps: list[int]) -> None:
    from route import routerdc_with_vectors

    from benchroute.data.pool import pool_labels
    from benchroute.scoring import kernel_smooth

    data, X = routerdc_with_vectors()
    labels = pool_labels(data)
    Y, models, ds = labels.Y, list(labels.models), np.asarray(labels.datasets, dtype=object)
    rng = np.random.default_rng(0)
    test = rng.random(len(X)) < 0.2
    sizes = {t: int((ds[~test] == t).sum()) for t in sorted(set(ds))}
    print(f"RouterDC: {len(X)} inputs, {len(models)} models; fit on {int((~test).sum())}, "
          f"routed {int(test.sum())}; task sizes in the fit {min(sizes.values())}-{max(sizes.values())}")
    print(f"{'cap':>6} {'fit s':>7} {'ratio':>6} {'mean|dp|':>9} {'max|dp|':>8} {'max|dkernel|':>12} "
          f"{'routed quality':>14} {'choices chg':>11}  tuning")
    base: tuple[Router, float, np.ndarray, np.ndarray] | None = None
    for cap in [None, *caps]:
        gc.collect()
        t0 = time.perf_counter()
        r = Router(max_task_queries=cap, encoder="hashing-768-11").fit_arrays(
            X[~test], Y[~test], ds[~test], models)
        secs = time.perf_counter() - t0
        P = router_proba(r, X[test])
        pick = best(P)
        quality = float(np.nanmean(Y[test][np.arange(len(pick)), pick]))
        ref = r.reference_
        at0 = ref.alpha == 0
        p0 = ref.p[at0]
        u0 = ref.u[at0]
        p_hat = kernel_smooth(u0, ref.u, ref.p, r.bandwidth)
        if base is None:
            base = (r, secs, p0, p_hat)
            b_pick = pick
        dp = np.abs(p0 - base[2])
        print(f"{str(cap):>6} {secs:7.1f} {secs / base[1]:6.2f} {np.nanmean(dp):9.4f} "
              f"{np.nanmax(dp):8.4f} {np.nanmax(np.abs(p_hat - base[3])):12.4f} {quality:14.4f} "
              f"{np.mean(pick != b_pick):11.4f}  {chosen(r)}", flush=True)


def synthetic(sizes: list[int], n_models: int, cap: int, full_max: int, factory: str,
              nprobe: int | None, mmap: bool) -> None:
    print(f"synthetic pools, {n_models} models, 10 tasks, cap {cap} per task, index {factory}"
          f"{f' nprobe {nprobe}' if nprobe else ''}")
    print(f"{'N':>9} {'cap':>6} {'index s':>8} {'reference s':>11} {'tuning s':>9} {'total s':>8} "
          f"{'peak MiB':>9} {'batch ms/prompt':>15} {'one ms':>7}  tuning")
    for n in sizes:
        X, Y, Q, ds = pool(n, n_models)
        for c in ([None] if n <= full_max else []) + [cap]:
            parts, r = fit_parts(X, Y, ds, max_task_queries=c, index_factory=factory,
                                 nprobe=nprobe)
            t0 = time.perf_counter()
            r.route_embedded(Q[:1000])
            batch = (time.perf_counter() - t0) / 1000 * 1e3
            one = one_at_a_time(r, Q[1000:1101])[1]
            print(f"{n:>9} {str(c):>6} {parts['index']:8.1f} {parts['reference']:11.1f} "
                  f"{parts['tuning']:9.1f} {parts['total']:8.1f} {peak_rss_mb():9.0f} "
                  f"{batch:15.3f} {one:7.2f}  {chosen(r)}", flush=True)
            if mmap and c is not None:
                mmap_check(r, Q[2000:2101])
            del r
            gc.collect()
        del X, Y, Q


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--caps", type=int, nargs="+", default=[200, 500])
    ap.add_argument("--sizes", type=int, nargs="*", default=[])
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--cap", type=int, default=2000)
    ap.add_argument("--full-max", type=int, default=30_000)
    ap.add_argument("--factory", default="Flat")
    ap.add_argument("--nprobe", type=int, default=None)
    ap.add_argument("--mmap", action="store_true")
    args = ap.parse_args()
    if args.real:
        real(args.caps)
    if args.sizes:
        synthetic(args.sizes, args.models, args.cap, args.full_max, args.factory, args.nprobe,
                  args.mmap)


if __name__ == "__main__":
    main()
