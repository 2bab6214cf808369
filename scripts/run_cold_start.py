"""Cold start of a new model from n labelled inputs, on the shared data (docs/results.md, 8).

    python scripts/run_cold_start.py [--datasets routerdc alpaca_eval] [--repeats 5]
        [--max-models 12] [--shared ../shared] [--out results/cold_start]
        [--strategies spread disagree --estimators borrowing --replace]

``--replace`` reruns only the strategies and estimators named, on the same seeded draws, and
puts their rows in place of the same rows of the draws file already in ``--out`` (the other
rows, and the info's wall time of the first run, are kept); summary and table are then made
from the merged draws, and the info records the rerun's strategies and seconds.

Vectors are the shared all-mpnet-base-v2 files (../shared/embeddings), looked up by the
SHA-256 of each input's text; inputs without a vector are left out and the tables say how many.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchroute import load
from benchroute.data.pool import pool_labels
from benchroute.data.text import text_key
from benchroute.experiments.cold_start import (
    ESTIMATORS,
    NS,
    STRATEGIES,
    cold_start,
    markdown_table,
    summarise,
)

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {"routerdc": "correct", "alpaca_eval": "score", "routellm_evals": "correct",
           "helm_mmlu_llama3": "correct"}
log = logging.getLogger("run_cold_start")


def vectors(shared: Path, name: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Shared vectors of ``texts`` by text hash: (X for the found ones, found mask)."""
    with np.load(shared / "embeddings" / f"{name}.npz", allow_pickle=False) as z:
        row = {h: i for i, h in enumerate(z["sha256"].tolist())}
        E = z["embedding"]
    # the cache's key (the store's texts are normalised already, so it is the raw SHA-256 the
    # shared files use, and a lone surrogate gets a key instead of an error)
    idx = np.array([row.get(text_key(t), -1) for t in texts])
    found = idx >= 0
    X = E[idx[found]].astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True), found


def merged(out: Path, name: str, res: pd.DataFrame, info: dict) -> tuple[pd.DataFrame, dict]:
    """The existing draws of ``name`` with the rows of the rerun's (strategy, estimator) pairs
    replaced by ``res``; the rerun must cover the same models, n and repeats."""
    old = pd.read_csv(out / f"{name}_draws.csv.gz")
    old_info = json.loads((out / f"{name}_info.json").read_text())
    if old_info["held_out"] != info["held_out"] or old_info["repeats"] != info["repeats"] \
            or set(old["n"]) != set(res["n"]):
        raise SystemExit(f"{name}: the rerun's models, n or repeats differ from the draws in {out}")
    key = ["strategy", "estimator"]
    rerun = res[key].drop_duplicates()
    kept = old.merge(rerun, on=key, how="left", indicator=True)
    kept = kept[kept["_merge"] == "left_only"].drop(columns="_merge")
    info = {**old_info, "rerun": {"strategies": sorted(res["strategy"].unique().tolist()),
                                  "estimators": sorted(res["estimator"].unique().tolist()),
                                  "seconds": info["seconds"]}}
    return pd.concat([kept, res], ignore_index=True)[old.columns.tolist()], info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=["routerdc", "alpaca_eval"])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "cold_start")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-models", type=int, default=None,
                    help="hold out at most this many models (evenly spaced in the model list)")
    ap.add_argument("--ns", type=int, nargs="+", default=list(NS))
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS)
    ap.add_argument("--replace", action="store_true",
                    help="replace these strategies' and estimators' rows in the existing draws")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        t = time.time()
        data = load(args.shared / "data" / name)
        pool = pool_labels(data, COLUMNS[name])
        X, found = vectors(args.shared, name, data.instances()["text"].tolist())
        Y, ds = pool.Y[found], pool.datasets[found]
        held = pool.models
        if args.max_models and len(held) > args.max_models:
            held = [held[i] for i in np.linspace(0, len(held) - 1, args.max_models).astype(int)]
        res = cold_start(X, Y, ds, pool.models, ns=args.ns, repeats=args.repeats, held_out=held,
                         strategies=args.strategies, estimators=args.estimators)
        res.insert(0, "data", name)
        info = {"inputs": int(found.sum()), "of": int(len(found)), "models": len(pool.models),
                "held_out": held, "repeats": args.repeats, "column": COLUMNS[name],
                "seconds": round(time.time() - t)}
        if args.replace:
            res, info = merged(args.out, name, res, info)
        res.to_csv(args.out / f"{name}_draws.csv.gz", index=False, float_format="%.5f")
        table = summarise(res)
        table.insert(0, "data", name)
        table.to_csv(args.out / f"{name}_summary.csv", index=False, float_format="%.4f")
        (args.out / f"{name}_table.md").write_text(markdown_table(table) + "\n")
        (args.out / f"{name}_info.json").write_text(json.dumps(info, indent=1))
        log.info("%s done in %.0f s", name, time.time() - t)


if __name__ == "__main__":
    main()
