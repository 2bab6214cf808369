"""A saved router's first selection, with the form-shift reference saved and without it.

    python benchmarks/first_select.py [--dataset routerdc] [--n 50] [--repeats 3]

A router (``tune=False``: the per-input predictor plays no part in a selection) is fitted on
the shared data (vectors from the embedding cache or the shared embeddings), saved, and each
repeat times, in the same run: ``Router.load`` then the first ``select_model`` of ``--n``
texts of the pool's smallest task, on the saved folder and on a copy whose pool.npz lacks the
form-shift arrays (a router saved before they were, which fingerprints the pool and searches
it once per task on its first selection). Printed: the save's time (which computes the
reference when no selection has), the median of each path and their ratio, and whether both
paths chose alike.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import SHARED

from benchroute import load
from benchroute.router import Router
from benchroute.shift import SAVED_ARRAYS


def without_shift(folder: Path, to: Path) -> None:
    """A copy of a saved router without the form-shift arrays, re-signed."""
    import json

    from benchroute._persist import sha256_file
    from benchroute.persistence import write_signed_meta

    shutil.copytree(folder, to)
    with np.load(to / "pool.npz") as z:
        arrays = {k: z[k] for k in z.files if k not in SAVED_ARRAYS}
    np.savez(to / "pool.npz", **arrays)
    meta = json.loads((to / "router.json").read_text())
    meta["checksums"]["pool.npz"] = sha256_file(to / "pool.npz")
    write_signed_meta(to, meta)


def first_select(folder: Path, texts: list[str]) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    router = Router.load(folder)
    t1 = time.perf_counter()
    model = router.select_model(texts).model
    return t1 - t0, time.perf_counter() - t1, model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="routerdc")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = load(SHARED / "data" / args.dataset)
    inst = data.instances()
    t0 = time.perf_counter()
    router = Router(tune=False).fit(data)
    fit_s = time.perf_counter() - t0
    small = inst["dataset"].value_counts().idxmin()
    texts = inst.loc[inst["dataset"] == small, "text"].head(args.n).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        router.save(Path(tmp) / "saved")
        save_s = time.perf_counter() - t0
        without_shift(Path(tmp) / "saved", Path(tmp) / "older")
        runs: dict[str, list[tuple[float, float, str]]] = {"saved": [], "older": []}
        for _ in range(args.repeats):
            for name in runs:
                runs[name].append(first_select(Path(tmp) / name, texts))
    print(f"{args.dataset}: {len(inst)} pool inputs, {inst['dataset'].nunique()} tasks; fit "
          f"{fit_s:.1f} s, save {save_s:.1f} s; first selection of {len(texts)} texts of "
          f"{small!r} after a load, median of {args.repeats}:")
    med = {}
    for name, rs in runs.items():
        load_s = statistics.median(r[0] for r in rs)
        sel_s = statistics.median(r[1] for r in rs)
        med[name] = load_s + sel_s
        print(f"  {name:6s}: load {load_s:6.2f} s + first select {sel_s:6.2f} s = "
              f"{med[name]:6.2f} s; model {rs[0][2]}")
    same = {r[2] for rs in runs.values() for r in rs}
    print(f"ratio older/saved: {med['older'] / med['saved']:.1f}x; same choice: {len(same) == 1}")


if __name__ == "__main__":
    main()
