"""The Ray driver's peak memory when routing a prompt file: the file read into a list first
(how ``route --ray`` read it before 2026-12-05) against the file streamed into Ray's object
store a block at a time (:func:`benchroute.prompt_file.iter_prompt_file`, what it does now).

    python benchmarks/ray_driver_memory.py [--n 50000 200000] [--cpus 2]

A small synthetic pool with the hashing encoder (so the workers' cost is the routing, not an
encoder), prompts of about 100 bytes, a local Ray of ``--cpus`` CPUs started by each driver.
Each path runs in its own process (peak RSS is per process); printed per n: the driver's peak
resident memory of each path, its growth per prompt over the smallest n, their ratio, and
whether the two routed files are equal.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _pool(folder: Path) -> Path:
    """A saved router: 4 tasks x 40 inputs, 3 models, the hashing encoder."""
    from benchroute import Router, load

    rng = np.random.default_rng(0)
    words = ["cat", "tea", "rain", "sum", "proof", "verb", "atom", "tax", "song", "map"]
    rows = [{"dataset": f"t{t}", "text": f"task {t} " + " ".join(rng.choice(words, 6)) + f" {i}",
             **{f"m{m}": int(rng.random() < 0.3 + 0.2 * m) for m in range(3)}}
            for t in range(4) for i in range(40)]
    pd.DataFrame(rows).to_csv(folder / "pool.csv", index=False)
    router = Router(encoder="hashing-64-12", cache_dir=str(folder / "cache"))
    router.fit(load(folder / "pool.csv")).save(folder / "router")
    return folder / "router"


def _prompts(path: Path, n: int) -> None:
    rng = np.random.default_rng(1)
    words = np.array(["what", "is", "the", "sum", "of", "a", "cat", "proof", "verb", "tax"])
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(f"prompt {i}: " + " ".join(rng.choice(words, 16)) + "\n")


def _child(mode: str, file: str, router: str, out: str, cpus: int) -> None:
    import ray

    from benchroute.prompt_file import iter_prompt_file, read_prompt_file
    from benchroute.scale.ray_jobs import route_with_ray

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    texts = read_prompt_file(file) if mode == "list" else iter_prompt_file(file)
    report = route_with_ray(texts, out, router)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"RESULT {report.rows} {peak:.1f} {wall:.2f}")
    ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[50_000, 200_000])
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--child", nargs=4, metavar=("MODE", "FILE", "ROUTER", "OUT"))
    args = ap.parse_args()
    if args.child:
        _child(*args.child, cpus=args.cpus)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        router = _pool(folder)
        results: dict[tuple[int, str], tuple[float, float]] = {}
        print("| prompts | list: peak MiB (s) | stream: peak MiB (s) | stream / list | "
              "files equal |")
        print("|---|---|---|---|---|")
        for n in sorted(args.n):
            prompts = folder / f"p{n}.txt"
            _prompts(prompts, n)
            for mode in ("list", "stream"):
                run = subprocess.run([sys.executable, __file__, "--cpus", str(args.cpus),
                                      "--child", mode, str(prompts), str(router),
                                      str(folder / f"{mode}{n}.parquet")],
                                     capture_output=True, text=True, check=True)
                line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT"))
                rows, peak, wall = line.split()[1:]
                assert int(rows) == n, (rows, n)
                results[n, mode] = float(peak), float(wall)
            equal = pd.read_parquet(folder / f"list{n}.parquet").equals(
                pd.read_parquet(folder / f"stream{n}.parquet"))
            (pl, wl), (ps, ws) = results[n, "list"], results[n, "stream"]
            print(f"| {n:,} | {pl:,.0f} ({wl:.0f}) | {ps:,.0f} ({ws:.0f}) | {ps / pl:.2f} | "
                  f"{equal} |")
        ns = sorted(args.n)
        if len(ns) > 1:
            for mode in ("list", "stream"):
                grow = (results[ns[-1], mode][0] - results[ns[0], mode][0]) * 1024 / (ns[-1] - ns[0])
                print(f"{mode}: growth {grow:.2f} KB per prompt from {ns[0]:,} to {ns[-1]:,}")


if __name__ == "__main__":
    main()
