"""Routing quality of the cheaper encoders against all-mpnet-base-v2 at 384 word pieces.

    nice python benchmarks/encoder_quality.py [--sets helm routerdc alpaca] [--cache DIR]

Encoders: mpnet at caps 384 (the reference: the shared vectors, the rest embedded through the
cache), 256 and 128 (only texts longer than the cap are embedded again: shorter ones give the
same vectors), and the static tier. Protocols, as scripts/run_experiments.py runs them:

* HELM MMLU (run 1): leave-one-subject-out, α = 0; accuracy of S1/S2/S3 with 95 % bootstrap
  intervals over tasks, and the share of held-out subjects whose S3 choice equals mpnet-384's;
* RouterDC capped at 500 inputs per task (run 2): the same (caps with ``--caps-on routerdc``);
* per-instance routing (run 6, k = 5) on AlpacaEval and capped RouterDC: mean quality of the
  routed model, with the oracle and the best single model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import SHARED

from benchroute import BenchmarkData, load
from benchroute.embedding import EmbeddingCache, get_encoder
from benchroute.experiments import leave_one_task_out, per_instance_routing, summarize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from run_experiments import cap_per_task  # noqa: E402  (the same cap as the results runs)

PARAMS = {"encoder": "hashing-8-12"}  # embeddings are passed in; the encoder is never called


def mpnet_vectors(texts: list[str], cache_dir: Path | None, npz: list[Path]) -> np.ndarray:
    """Reference vectors: precomputed files imported into the cache, the rest embedded (ONNX,
    verified equal to sentence-transformers)."""
    enc = get_encoder("all-mpnet-base-v2")
    cache = EmbeddingCache.for_encoder(enc, cache_dir)
    for f in npz:
        if f.is_file():
            cache.import_npz(f)
    return cache.embed(texts, enc, progress=True)


def capped_vectors(texts: list[str], base: np.ndarray, cap: int,
                   cache_dir: Path | None) -> tuple[np.ndarray, int]:
    from tokenizers import Tokenizer

    from benchroute.embedding.install import installed_model

    tok = Tokenizer.from_file(str(installed_model() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()  # tokenizer.json itself truncates at 128
    longer = [i for i, e in enumerate(tok.encode_batch(texts)) if len(e.ids) > cap]
    enc = get_encoder(f"all-mpnet-base-v2@max{cap}")
    out = base.copy()
    if longer:
        out[longer] = EmbeddingCache.for_encoder(enc, cache_dir).embed(
            [texts[i] for i in longer], enc, progress=True)
    return out, len(longer)


def with_caps(name: str, texts: list[str], ref: np.ndarray, caps_on: list[str],
              cache_dir: Path | None) -> dict[str, np.ndarray]:
    vecs = {"mpnet-384": ref}
    if name in caps_on:
        for cap in (256, 128):
            vecs[f"mpnet-{cap}"], n = capped_vectors(texts, ref, cap, cache_dir)
            print(f"{name}: {n} of {len(texts)} inputs are longer than {cap} word pieces")
    return vecs


def loto(data: BenchmarkData, vectors: dict[str, np.ndarray], name: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    ref_choice: pd.Series | None = None
    for label, X in vectors.items():
        res = leave_one_task_out(data, PARAMS, alphas=(0.0,), repeats=1, embeddings=X)
        table = summarize(res)
        choice = res[res["method"] == "S3"].set_index("task")["model"]
        if ref_choice is None:
            ref_choice = choice
        same = float((choice == ref_choice.reindex(choice.index)).mean())
        for method in ("S1", "S2", "S3", "BMA", "Oracle"):
            r = table[table["method"] == method].iloc[0]
            rows.append({"set": name, "encoder": label, "method": method,
                         "accuracy": r["accuracy"], "lo": r["acc_lo"], "hi": r["acc_hi"],
                         "S3 choice = mpnet-384": same if method == "S3" else np.nan})
    return rows


def per_instance(data: BenchmarkData, vectors: dict[str, np.ndarray], name: str,
                 column: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for label, X in vectors.items():
        t = per_instance_routing(data, column=column, embeddings=X,
                                 router_params={**PARAMS, "k": 5})
        a = t[t["dataset"] == "ALL"].iloc[0]
        rows.append({"set": name, "encoder": label, "routed": a["routed"],
                     "best_single": a["best_single"], "oracle": a["oracle"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="+", default=["helm", "routerdc", "alpaca"])
    ap.add_argument("--cache", type=Path, help="embedding cache (default $BENCHROUTE_HOME/embeddings)")
    ap.add_argument("--vectors", type=Path, nargs="*", default=[],
                    help="more precomputed mpnet files (sha256 + embedding) to import first")
    ap.add_argument("--routerdc-cap", type=int, default=500)
    ap.add_argument("--caps-on", nargs="*", default=["helm"], choices=["helm", "routerdc"],
                    help="sets measured at caps 256 and 128 too (RouterDC: 634 long inputs to "
                    "embed again)")
    args = ap.parse_args()
    static = get_encoder("all-mpnet-base-v2@static")
    loto_rows: list[dict[str, object]] = []
    inst_rows: list[dict[str, object]] = []
    emb = SHARED / "embeddings"
    if "helm" in args.sets:
        data = load(SHARED / "data" / "helm_mmlu_llama3")
        texts = data.instances()["text"].tolist()
        ref = mpnet_vectors(texts, args.cache, [emb / "helm_mmlu_llama3.npz", *args.vectors])
        vecs = with_caps("helm", texts, ref, args.caps_on, args.cache)
        t0 = time.perf_counter()
        vecs["static"] = static.encode(texts)
        print(f"helm: static encoder {len(texts) / (time.perf_counter() - t0):,.0f} texts/s")
        loto_rows += loto(data, vecs, "HELM MMLU (57 subjects)")
    if "routerdc" in args.sets:
        data = cap_per_task(load(SHARED / "data" / "routerdc"), args.routerdc_cap)
        texts = data.instances()["text"].tolist()
        ref = mpnet_vectors(texts, args.cache, [emb / "routerdc.npz", *args.vectors])
        vecs = with_caps("routerdc", texts, ref, args.caps_on, args.cache)
        vecs["static"] = static.encode(texts)
        loto_rows += loto(data, vecs, f"RouterDC (≤ {args.routerdc_cap}/task)")
        inst_rows += per_instance(data, {k: vecs[k] for k in ("mpnet-384", "static")}, f"RouterDC (≤ {args.routerdc_cap}/task)", "correct")
    if "alpaca" in args.sets:
        data = load(SHARED / "data" / "alpaca_eval")
        texts = data.instances()["text"].tolist()
        vecs = {"mpnet-384": mpnet_vectors(texts, args.cache, [emb / "alpaca_eval.npz", *args.vectors]),
                "static": static.encode(texts)}
        inst_rows += per_instance(data, vecs, "AlpacaEval", "score")
    pd.set_option("display.width", 200)
    if loto_rows:
        print(pd.DataFrame(loto_rows).to_markdown(index=False, floatfmt=".3f"))
    if inst_rows:
        print(pd.DataFrame(inst_rows).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
