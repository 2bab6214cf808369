"""Cold start of a new model from n labelled inputs, on the shared data (docs/results.md, 8).

    python scripts/run_cold_start.py [--datasets routerdc alpaca_eval] [--repeats 5]
        [--max-models 12] [--shared ../shared] [--out results/cold_start]

Vectors are the shared all-mpnet-base-v2 files (../shared/embeddings), looked up by the
SHA-256 of each input's text; inputs without a vector are left out and the tables say how many.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from benchroute import load
from benchroute.data.pool import pool_labels
from benchroute.experiments.cold_start import NS, cold_start, markdown_table, summarise

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {"routerdc": "correct", "alpaca_eval": "score", "routellm_evals": "correct",
           "helm_mmlu_llama3": "correct"}
log = logging.getLogger("run_cold_start")


def vectors(shared: Path, name: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Shared vectors of ``texts`` by text hash: (X for the found ones, found mask)."""
    with np.load(shared / "embeddings" / f"{name}.npz", allow_pickle=False) as z:
        row = {h: i for i, h in enumerate(z["sha256"].tolist())}
        E = z["embedding"]
    idx = np.array([row.get(hashlib.sha256(t.encode("utf-8")).hexdigest(), -1) for t in texts])
    found = idx >= 0
    X = E[idx[found]].astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True), found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=["routerdc", "alpaca_eval"])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "cold_start")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-models", type=int, default=None,
                    help="hold out at most this many models (evenly spaced in the model list)")
    ap.add_argument("--ns", type=int, nargs="+", default=list(NS))
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
        res = cold_start(X, Y, ds, pool.models, ns=args.ns, repeats=args.repeats, held_out=held)
        res.insert(0, "data", name)
        res.to_csv(args.out / f"{name}_draws.csv.gz", index=False, float_format="%.5f")
        table = summarise(res)
        table.insert(0, "data", name)
        table.to_csv(args.out / f"{name}_summary.csv", index=False, float_format="%.4f")
        (args.out / f"{name}_table.md").write_text(markdown_table(table) + "\n")
        info = {"inputs": int(found.sum()), "of": int(len(found)), "models": len(pool.models),
                "held_out": held, "repeats": args.repeats, "column": COLUMNS[name],
                "seconds": round(time.time() - t)}
        (args.out / f"{name}_info.json").write_text(json.dumps(info, indent=1))
        log.info("%s done in %.0f s", name, time.time() - t)


if __name__ == "__main__":
    main()
