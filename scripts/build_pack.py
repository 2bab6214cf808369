"""Build the benchmark pack bundled in the package from the shared HELM MMLU Llama-3 runs.

    python scripts/build_pack.py [--shared ../shared]

Writes ``benchroute/packs/helm_mmlu_llama3.parquet`` (the canonical store) and
``helm_mmlu_llama3.embeddings.npz`` (sha256 + float16 all-mpnet-base-v2 vectors of its inputs,
taken from the shared precomputed embeddings), so that the default router never re-embeds its pool.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchroute import load
from benchroute.embedding.cache import text_key

PACKS = Path(__file__).resolve().parents[1] / "benchroute" / "packs"
NAME = "helm_mmlu_llama3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    args = parser.parse_args()
    data = load(args.shared / "data" / NAME)
    data.report.sources = [f"shared/data/{NAME}"]
    data.report.skipped = []
    data.save(PACKS / f"{NAME}.parquet")

    shared = np.load(args.shared / "embeddings" / f"{NAME}.npz")
    row = {str(k): i for i, k in enumerate(shared["sha256"])}
    texts = data.instances()["text"].unique()
    keys = [text_key(t) for t in texts]
    missing = [k for k in keys if k not in row]
    if missing:
        raise SystemExit(f"{len(missing)} pack texts have no shared embedding")
    emb = shared["embedding"][[row[k] for k in keys]].astype(np.float16)
    np.savez_compressed(PACKS / f"{NAME}.embeddings.npz", sha256=np.array(keys), embedding=emb)
    (PACKS / f"{NAME}.json").write_text(json.dumps({
        "name": NAME,
        "encoder": "sentence-transformers/all-mpnet-base-v2",
        "source": "villageFlower/test_helm@9f3ec71 benchmark_output/runs/v1 (Apache-2.0)",
        "datasets": len(data.datasets), "models": data.models, "instances": data.n_instances,
    }, indent=2) + "\n")
    print(f"wrote {NAME}: {data}, {len(keys)} embeddings")


if __name__ == "__main__":
    main()
