"""Per-input OOD fallback on held-out tasks (docs/results.md, section "Per-input OOD").

    python scripts/run_ood.py [--datasets helm_mmlu_llama3 routerdc routellm_evals]
        [--shared ../shared] [--out results/ood]

Leave one task out on each dataset: the held-out task's inputs routed by argmax g_m(x) from the
other tasks, each input's OOD p-value against the other tasks, and the fallback to the best
model on average for p < a. Vectors are the shared all-mpnet-base-v2 files, looked up by the
SHA-256 of each input's text (inputs without one are left out and counted). RouteLLM is used as
its 57 MMLU subjects plus GSM8K as a 58th task.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from benchroute import load
from benchroute.data.pool import pool_labels
from benchroute.experiments.ood import decile_table, fallback_table, held_out_ood
from scripts.run_cold_start import COLUMNS, vectors

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("run_ood")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+",
                    default=["helm_mmlu_llama3", "routerdc", "routellm_evals"])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "ood")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        t0 = time.time()
        data = load(args.shared / "data" / name)
        if name == "routellm_evals":
            data = data.subset([d for d in data.datasets if d.startswith("mmlu_") or d == "gsm8k"])
        pool = pool_labels(data, COLUMNS[name])
        X, found = vectors(args.shared, name, data.instances()["text"].tolist())
        per_input, info = held_out_ood(X, pool.Y[found], pool.datasets[found])
        per_input.to_csv(args.out / f"{name}_inputs.csv.gz", index=False, float_format="%.5f")
        fb, dec = fallback_table(per_input), decile_table(per_input)
        fb.to_csv(args.out / f"{name}_fallback.csv", index=False, float_format="%.4f")
        dec.to_csv(args.out / f"{name}_deciles.csv", index=False, float_format="%.4f")
        (args.out / f"{name}_tables.md").write_text(
            fb.to_markdown(index=False, floatfmt=".3f") + "\n\n"
            + dec.to_markdown(index=False, floatfmt=".3f") + "\n")
        info.update(inputs=int(found.sum()), of=int(len(found)), models=len(pool.models),
                    tasks=int(per_input["task"].nunique()), seconds=round(time.time() - t0))
        (args.out / f"{name}_info.json").write_text(json.dumps(info, indent=1))
        log.info("%s: %s\n%s\n%s", name, info, fb.to_string(), dec.to_string())


if __name__ == "__main__":
    main()
