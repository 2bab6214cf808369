"""What strip_common_prefix does for few-shot prompts (docs/data.md, "The text that gets embedded").

HELM stores each request's full prompt (instructions + 5 worked examples + the question) in
``scenario_state.json``. Embedded as is, all-mpnet-base-v2 reads only its first 384 word pieces,
so the question is cut off and the inputs of one subject collapse to nearly one vector. This
script builds three versions of the HELM MMLU store (question only, as ``load_helm`` embeds; the
5-shot prompt of one deployment; that prompt after ``strip_common_prefix`` per subject) and
reports truncation, distinct vectors and routing accuracy for each.

    python scripts/measure_prefix.py [--shared ../shared] [--import VECTORS.npz ...]

Every text must be in the embedding cache (``benchroute embed``/``--import``); on 2 CPU cores the
3,400 prompts take about 25 minutes to embed, on a GPU under a minute.
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchroute import BenchmarkData, load
from benchroute.data.text import normalize_text, strip_common_prefix
from benchroute.embedding import EmbeddingCache, text_key
from benchroute.embedding.install import DEFAULT_ENCODER_ID, installed_model
from benchroute.experiments import leave_one_task_out, per_instance_routing

DEPLOYMENT = "model=together_Llama-3-70b-chat-hf"


def request_prompts(archive: Path) -> dict[tuple[str, str], str]:
    """(dataset, instance_id) -> normalised request prompt of one deployment's unperturbed runs."""
    out: dict[tuple[str, str], str] = {}
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
        for state in sorted(Path(tmp).glob(f"runs/v1/mmlu:*{DEPLOYMENT}*/scenario_state.json")):
            run = state.parent.name
            dataset = run.split(",model=")[0]
            for rs in json.loads(state.read_text())["request_states"]:
                if not rs["instance"].get("perturbation"):
                    out[(dataset, rs["instance"]["id"])] = normalize_text(rs["request"]["prompt"])
    return out


def with_texts(data: BenchmarkData, texts: dict[tuple[str, str], str]) -> BenchmarkData:
    frame = data.frame.copy()
    frame["text"] = [texts[(d, i)] for d, i in zip(frame["dataset"], frame["instance_id"])]
    return BenchmarkData(frame, source="HELM MMLU with request prompts")


def word_pieces(texts: list[str]) -> np.ndarray:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(installed_model() / "tokenizer.json"))
    tok.no_truncation()  # the file carries truncation and padding settings; count the real length
    tok.no_padding()
    return np.array([len(e.ids) for e in tok.encode_batch(texts)])


def measure(data: BenchmarkData, cache: EmbeddingCache) -> dict[str, float]:
    inst = data.instances()
    texts = inst["text"].tolist()
    E, found = cache.get_by_keys([text_key(t) for t in texts])
    if not found.all():
        raise SystemExit(f"{int((~found).sum())} texts are not in the cache; embed them first")
    ds = inst["dataset"].to_numpy()
    near_dup = 0
    for d in np.unique(ds):
        S = E[ds == d] @ E[ds == d].T
        np.fill_diagonal(S, -1.0)
        near_dup += int((S.max(axis=1) >= 0.999).sum())
    n_tok = word_pieces(texts)
    res = leave_one_task_out(data, embeddings=E, alphas=(0.0,), repeats=1)
    routed = per_instance_routing(data, column="correct", embeddings=E)
    total = routed[routed["dataset"] == "ALL"].iloc[0]
    s3 = res[res["method"] == "S3"]
    return {
        "inputs": len(texts), "truncated (>384 word pieces)": int((n_tok > 384).sum()),
        "median word pieces": int(np.median(n_tok)),
        "distinct vectors": len(np.unique(np.round(E, 3), axis=0)),
        "with a near-duplicate in its subject (cos >= 0.999)": near_dup,
        "S3 accuracy (α = 0)": float(s3["accuracy"].mean()),
        "S1 accuracy": float(res.loc[res["method"] == "S1", "accuracy"].mean()),
        "predictor accuracy": float(s3["predictor_accuracy"].mean()),
        "per-input routed": float(total["routed"]), "best single": float(total["best_single"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--import", dest="imports", type=Path, nargs="*", default=[],
                    help="vectors (sha256 + embedding npz) to import into the cache first")
    args = ap.parse_args()
    cache = EmbeddingCache(None, DEFAULT_ENCODER_ID, 768)
    for path in args.imports:
        cache.import_npz(path)
    folder = args.shared / "data" / "helm_mmlu_llama3"
    data = load(folder)
    prompts = request_prompts(folder / "helm_mmlu_llama3_runs.tar.xz")
    data = data.subset(datasets=sorted({d for d, _ in prompts}))
    stripped: dict[tuple[str, str], str] = {}
    for dataset in sorted({d for d, _ in prompts}):
        keys = [k for k in prompts if k[0] == dataset]
        stripped.update(zip(keys, strip_common_prefix([prompts[k] for k in keys])))
    rows = {
        "question only (load_helm)": measure(data, cache),
        "5-shot prompt": measure(with_texts(data, prompts), cache),
        "5-shot prompt, strip_common_prefix": measure(with_texts(data, stripped), cache),
    }
    print(pd.DataFrame(rows).T.to_markdown(floatfmt=".4g"))


if __name__ == "__main__":
    main()
