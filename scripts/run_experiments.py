"""Runs 1-6 of docs/results.md on the real data in ../shared (results/<run>/...).

    python scripts/run_experiments.py [--runs 1 2 3 6] [--shared ../shared]

Every input must already be in the embedding cache ($BENCHROUTE_HOME/embeddings): import the
shared vectors and embed the rest first, e.g.
    benchroute embed ../shared/data/routerdc --import ../shared/embeddings/routerdc.npz
The script refuses to start a multi-hour encoding by accident.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from benchroute import BenchmarkData, load
from benchroute.embedding import EmbeddingCache, text_key
from benchroute.embedding.install import DEFAULT_ENCODER_ID
from benchroute.experiments import per_instance_routing
from benchroute.experiments.reproduce import run_protocol
from benchroute.reference import DEFAULT_ALPHAS

OUT = Path(__file__).resolve().parents[1] / "results"
# the library defaults; embeddings are passed in, so the encoder is never called
FIXED = {"encoder": "hashing-8-12"}


DROP_MISSING = False  # --drop-missing: leave out inputs without a cached vector (quick checks)


def cached(data: BenchmarkData) -> tuple[BenchmarkData, np.ndarray]:
    """``data`` and its inputs' vectors from the embedding cache."""
    cache = EmbeddingCache(None, DEFAULT_ENCODER_ID, 768)
    vecs, found = cache.get_by_keys([text_key(t) for t in data.instances()["text"]])
    if not found.all():
        if not DROP_MISSING:
            raise SystemExit(f"{int((~found).sum())} of {len(found)} inputs are not embedded yet; "
                             "run `benchroute embed` on this source first")
        keep = data.instances()[found]
        data = BenchmarkData(data.frame.merge(keep[["dataset", "instance_id"]],
                                              on=["dataset", "instance_id"]))
        return cached(data)
    return data, vecs


def cap_per_task(data: BenchmarkData, cap: int, seed: int = 0) -> BenchmarkData:
    """At most ``cap`` inputs per dataset, drawn without replacement with a fixed seed
    (``cap`` 0: all of them)."""
    if cap <= 0:
        return data
    inst = data.instances()
    rng = np.random.default_rng(seed)
    parts = []
    for _, grp in inst.groupby("dataset", sort=True):
        pick = np.sort(rng.choice(len(grp), min(cap, len(grp)), replace=False))
        parts.append(grp.iloc[pick])
    keep = pd.concat(parts)
    frame = data.frame.merge(keep[["dataset", "instance_id"]], on=["dataset", "instance_id"])
    return BenchmarkData(frame, source=f"{data.report.sources} capped at {cap} per dataset")


def routerdc_capped(shared: Path, cap: int) -> BenchmarkData:
    return cap_per_task(load(shared / "data" / "routerdc"), cap)


def routellm_mmlu_subsample(shared: Path, per_subject: int, gsm8k: bool = True) -> BenchmarkData:
    """RouteLLM's 57 MMLU subjects (and GSM8K as a 58th task), up to ``per_subject`` questions
    per task (0: all)."""
    data = load(shared / "data" / "routellm_evals")
    keep = [d for d in data.datasets if d.startswith("mmlu_") or (gsm8k and d == "gsm8k")]
    return cap_per_task(data.subset(keep), per_subject)


def main() -> None:
    global DROP_MISSING, OUT
    ap = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--runs", type=int, nargs="+", default=[1, 2, 3, 6])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--per-subject", type=int, default=0, help="RouteLLM inputs per task (0: all)")
    ap.add_argument("--routerdc-cap", type=int, default=0, help="RouterDC inputs per task (0: all)")
    ap.add_argument("--export", type=Path, help="only write the capped stores (parquet) here, "
                    "for `benchroute embed`, and stop")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", type=Path, default=OUT, help="results folder")
    ap.add_argument("--drop-missing", action="store_true",
                    help="leave out inputs with no cached vector instead of stopping (quick checks)")
    args = ap.parse_args()
    DROP_MISSING, OUT = args.drop_missing, args.out
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.export:
        args.export.mkdir(parents=True, exist_ok=True)
        routerdc_capped(args.shared, args.routerdc_cap).save(args.export / "routerdc_capped.parquet")
        routellm_mmlu_subsample(args.shared, args.per_subject).save(args.export / "routellm_mmlu.parquet")
        return
    if 1 in args.runs:
        data, X = cached(load(args.shared / "data" / "helm_mmlu_llama3"))
        run_protocol(data, "helm_mmlu_llama3", OUT, alphas=DEFAULT_ALPHAS, repeats=args.repeats,
                     embeddings=X, router_params=FIXED)
    if 2 in args.runs:
        data, X = cached(routerdc_capped(args.shared, args.routerdc_cap))
        run_protocol(data, "routerdc", OUT, alphas=DEFAULT_ALPHAS, repeats=args.repeats,
                     embeddings=X, router_params=FIXED)
    if 3 in args.runs:
        data, X = cached(routellm_mmlu_subsample(args.shared, args.per_subject))
        run_protocol(data, "routellm", OUT, alphas=(0.0,), repeats=1,
                     embeddings=X, router_params=FIXED)
    if 6 in args.runs:
        tables = []
        alpaca, X_alpaca = cached(load(args.shared / "data" / "alpaca_eval"))
        rdc, X_rdc = cached(routerdc_capped(args.shared, args.routerdc_cap))
        rl, X_rl = cached(routellm_mmlu_subsample(args.shared, args.per_subject))
        mmlu = [d for d in rl.datasets if d.startswith("mmlu_")]
        inst = rl.instances()
        sources = [
            ("alpaca_eval (score = preference - 1)", alpaca, X_alpaca, "score"),
            # RouterDC's multiple-choice score is a confidence, so route on correctness
            ("routerdc (correct)", rdc, X_rdc, "correct"),
            ("routellm mmlu (correct)", rl.subset(mmlu), X_rl[inst["dataset"].isin(mmlu).to_numpy()],
             "correct"),
            ("routellm gsm8k (correct)", rl.subset(["gsm8k"]),
             X_rl[(inst["dataset"] == "gsm8k").to_numpy()], "correct"),
        ]
        # the default router (k, weighting and shrinkage tuned by CV, then its calibration) against the
        # plain k = 5 kNN predictor g_m(x) (docs/method.md); embeddings given, so the encoder is never called
        configs = [("tuned (default)", {"encoder": "hashing-8-12"}),
                   ("k = 5, untuned", {"k": 5, "tune": False, "encoder": "hashing-8-12"})]
        for source, data, X, column in sources:
            for name, params in configs:
                t = per_instance_routing(data, column=column, embeddings=X, router_params=params)
                tables.append(t.assign(source=source, router=name))
        out = pd.concat(tables, ignore_index=True)
        (OUT / "per_instance").mkdir(parents=True, exist_ok=True)
        out.to_csv(OUT / "per_instance" / "table.csv", index=False, float_format="%.4f")
        cols = ["source", "router", "dataset", "n", "models", "routed", "best_single",
                "best_single_hindsight", "oracle", "random", "calls_routed", "calls_rank_all"]
        (OUT / "per_instance" / "table.md").write_text(
            out[cols].to_markdown(index=False, floatfmt=".3f") + "\n")
        print(out[cols].to_string())


if __name__ == "__main__":
    main()
