"""Per-input predictors and cost–quality routing on the shared data (docs/routing.md).

    python scripts/run_costs.py [--parts predictors costs] [--datasets alpaca routerdc routellm]
        [--shared ../shared] [--out results/routing]

Vectors come from the embedding cache ($BENCHROUTE_HOME/embeddings); nothing is encoded here.
Import or embed them first (docs/results.md says how, e.g. `benchroute embed DATA --import
NPZ`); inputs without a vector are left out and the tables say how many. Costs:
- RouteLLM: a price table (USD per million tokens, blended as in the RouteLLM paper) times a
  typical call of 500 tokens: a per-model proxy, declared in every table.
- RouterDC: parameter counts (billions) as a declared proxy.
- AlpacaEval: per input, the model's output length in characters / 4 (tokens generated), a
  declared proxy; prices are unknown for most of the 58 models.
"""

from __future__ import annotations

import argparse
import json
import logging
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchroute import BenchmarkData, load
from benchroute.embedding import EmbeddingCache, text_key
from benchroute.embedding.install import DEFAULT_ENCODER_ID
from benchroute.experiments import costs as cq
from benchroute.experiments.per_input import (
    compare_predictors,
    knn_fitter,
    logistic_fitter,
    mlp_fitter,
)
from benchroute.tuning import brier, reliability_table

ROOT = Path(__file__).resolve().parents[1]
ROUTELLM_PRICES = {"gpt-4-1106-preview": 24.7, "mistralai/Mixtral-8x7B-Instruct-v0.1": 0.24}
TYPICAL_TOKENS = 500
ROUTERDC_PARAMS_B = {"mistralai/Mistral-7B-v0.1": 7.24, "meta-math/MetaMath-Mistral-7B": 7.24,
                     "itpossible/Chinese-Mistral-7B-v0.1": 7.24,
                     "HuggingFaceH4/zephyr-7b-beta": 7.24,
                     "cognitivecomputations/dolphin-2.6-mistral-7b": 7.24,
                     "meta-llama/Meta-Llama-3-8B": 8.03,
                     "cognitivecomputations/dolphin-2.9-llama3-8b": 8.03}
log = logging.getLogger("run_costs")


# ---------------------------------------------------------------------- vectors
def lookup(data: BenchmarkData) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of data.instances() from the embedding cache; returns (X, found mask)."""
    cache = EmbeddingCache(None, DEFAULT_ENCODER_ID, 768)
    return cache.get_by_keys([text_key(t) for t in data.instances()["text"]])


def keep_found(data: BenchmarkData, X: np.ndarray, found: np.ndarray, what: str
               ) -> tuple[BenchmarkData, np.ndarray, str]:
    inst = data.instances()
    note = f"{int(found.sum())} of {len(found)} inputs embedded"
    if found.all():
        return data, X, note
    keep = inst.loc[found, ["dataset", "instance_id"]]
    frame = data.frame.merge(keep, on=["dataset", "instance_id"])
    sub = BenchmarkData(frame, source=f"{what}: inputs with vectors")
    log.warning("%s: %s; the rest are left out", what, note)
    order = sub.instances()[["dataset", "instance_id"]].merge(
        inst[["dataset", "instance_id"]].reset_index(), on=["dataset", "instance_id"])["index"]
    return sub, X[order.to_numpy()], note + " (rest left out)"


# ---------------------------------------------------------------------- datasets
def alpaca(shared: Path) -> dict[str, object]:
    folder = shared / "data" / "alpaca_eval"
    data = load(folder)
    X, found = lookup(data)
    data, X, note = keep_found(data, X, found, "alpaca_eval")
    prefs = pd.read_csv(folder / "alpaca_eval_preferences.csv.gz")
    prefs = prefs[prefs["annotator"] == "weighted_alpaca_eval_gpt4_turbo"]
    chars = prefs.pivot_table(index="instruction_idx", columns="model", values="output_2_chars")
    inst = data.instances()
    models = data.models
    C = chars.reindex(index=inst["instance_id"].astype(int), columns=models).to_numpy(float) / 4.0
    C = np.where(np.isnan(C), np.nanmean(C, axis=0), C)
    return {"name": "alpaca_eval", "data": data, "X": X, "column": "score", "costs": C,
            "cost_source": "proxy: output length in characters / 4 (tokens generated) per input",
            "note": note + "; quality = preference − 1 (AlpacaEval 2, continuous)"}


def routerdc(shared: Path) -> dict[str, object]:
    folder = shared / "data" / "routerdc"
    data = load(folder)
    X, found = lookup(data)
    data, X, note = keep_found(data, X, found, "routerdc")
    return {"name": "routerdc", "data": data, "X": X, "column": "correct",
            "costs": ROUTERDC_PARAMS_B, "cost_source": "proxy: parameter count (billions)",
            "note": note + "; quality = correct"}


def routerdc_gsm8k(shared: Path) -> dict[str, object]:
    """A strong/weak pair where the data has repeated trials: RouterDC's GSM8K score is the
    fraction of 10 sampled answers that are correct, so Hybrid LLM's r_prob applies."""
    ds = routerdc(shared)
    data = ds["data"]
    assert isinstance(data, BenchmarkData)
    inst = data.instances()
    keep = (inst["dataset"] == "gsm8k").to_numpy()
    strong, weak = "cognitivecomputations/dolphin-2.9-llama3-8b", "cognitivecomputations/dolphin-2.6-mistral-7b"
    ds.update(name="routerdc_gsm8k_pair", data=data.subset(["gsm8k"], [strong, weak]),
              X=np.asarray(ds["X"])[keep], column="score", strong=strong, weak=weak,
              rules=("det", "prob", "trans"),
              note=f"{int(keep.sum())} GSM8K questions; quality = success rate over 10 samples")
    return ds


def routellm(shared: Path, part: str) -> dict[str, object]:
    folder = shared / "data" / "routellm_evals"
    data = load(folder)
    keep = [d for d in data.datasets if (d == "gsm8k") == (part == "gsm8k")]
    data = data.subset(keep)
    X, found = lookup(data)
    data, X, note = keep_found(data, X, found, f"routellm_{part}")
    costs = {m: p * TYPICAL_TOKENS / 1e6 for m, p in ROUTELLM_PRICES.items()}
    return {"name": f"routellm_{part}", "data": data, "X": X, "column": "correct",
            "costs": costs, "strong": "gpt-4-1106-preview",
            "weak": "mistralai/Mixtral-8x7B-Instruct-v0.1",
            "cost_source": f"proxy: price table (USD/M tokens {ROUTELLM_PRICES}) x {TYPICAL_TOKENS} tokens",
            "note": note + "; quality = correct"}


# ---------------------------------------------------------------------- parts
def run_predictors(ds: dict[str, object], out: Path, only_knn: bool = False,
                   only: list[str] | None = None) -> pd.DataFrame:
    """The predictor comparison; ``only_knn`` (rows starting "kNN") or ``only`` (rows by name)
    reruns some rows and keeps the others from an earlier run's CSV in ``out``."""
    data = ds["data"]
    assert isinstance(data, BenchmarkData)
    A = cq.arrays(data, ds["X"], str(ds["column"]), ds["costs"])  # type: ignore[arg-type]
    route = {"objective": "route"}  # the rows measured before the default became Brier
    # the rows with random inner folds and method "auto" (grouped=False) were measured before
    # the task family (docs/routing.md 1.5) existed; rerun, they may choose it
    fitters = {"kNN k=5 (today's default)": knn_fitter(k=5, weights="uniform", prior=0.0,
                                                       calibration="none", method="knn"),
               # this row and the next measure what the isotonic map does: pinned, since the
               # default calibration ("auto") keeps the map only where CV says it helps
               "kNN tuned (random inner folds)": knn_fitter(grouped=False, method="knn",
                                                            calibration="isotonic", **route),
               "kNN tuned, not calibrated": knn_fitter(grouped=False, calibration="none",
                                                       method="knn", **route),
               "kNN tuned (inner folds grouped by task)": knn_fitter(method="knn", **route),
               "kNN tuned + cross-model stack (grouped)": knn_fitter(method="stack", **route),
               "kNN default: kNN, blend or stack by CV (grouped)": knn_fitter(**route),
               "kNN tuned, kNN, blend or stack by CV (random inner folds)":
                   knn_fitter(grouped=False, **route),
               "kNN tuned + logistic regression on the vectors, forced (grouped)":
                   knn_fitter(method="logistic", **route),
               "kNN, stack, logistic or a blend by CV, objective route (grouped)":
                   knn_fitter(**route),
               "kNN, stack, logistic or a blend by CV, objective route (random inner folds)":
                   knn_fitter(grouped=False, **route),
               "kNN default: kNN, stack, logistic or a blend by CV, objective Brier (grouped)":
                   knn_fitter(),
               'the router, tune_folds="random": kNN, stack, logistic, task stack or a blend by '
               'CV, objective Brier': knn_fitter(grouped=False),
               "logistic regression per model": logistic_fitter(),
               "MLP (128 hidden)": mlp_fitter()}
    old = out / f"predictors_{ds['name']}.csv"
    keep = old.is_file() and (only_knn or bool(only))
    if only:
        unknown = sorted(set(only) - set(fitters))
        if unknown:
            raise SystemExit(f"unknown predictors {unknown}; choose from {list(fitters)}")
        fitters = {k: v for k, v in fitters.items() if k in only}
    elif keep:  # keep the (slow) learned baselines of an earlier run
        fitters = {k: v for k, v in fitters.items() if k.startswith("kNN")}
    t = time.time()
    table = compare_predictors(A.X, A.Q, fitters, groups=A.datasets)
    table.insert(0, "data", ds["name"])
    if keep:
        prev = pd.read_csv(old)
        table = pd.concat([table, prev[~prev["predictor"].isin(list(fitters))]],
                          ignore_index=True)
    log.info("%s predictors done in %.0f s", ds["name"], time.time() - t)
    return table


def run_costs(ds: dict[str, object], out: Path, n_boot: int) -> pd.DataFrame:
    data = ds["data"]
    assert isinstance(data, BenchmarkData)
    A = cq.arrays(data, ds["X"], str(ds["column"]), ds["costs"],  # type: ignore[arg-type]
                  cost_source=str(ds["cost_source"]))
    pair = "strong" in ds
    s, w = cq.pair_indices(A, ds.get("strong"), ds.get("weak"), needed=pair)  # type: ignore[arg-type]
    policies = (["threshold", "hybrid", "smallest_sufficient", "cheapest_within", "budget", "best"]
                if pair else ["best", "smallest_sufficient", "cheapest_within", "budget"])
    t = time.time()
    rules = ds.get("rules", ("det", "trans"))
    run = cq.evaluate(A, policies, s, w, hybrid_rules=rules)  # type: ignore[arg-type]
    log.info("%s cost-quality done in %.0f s", ds["name"], time.time() - t)
    folder = out / str(ds["name"])
    folder.mkdir(parents=True, exist_ok=True)
    curve = cq.with_attrs(run)
    curve.to_csv(folder / "curve.csv", index=False, float_format="%.5f")
    metrics = cq.bootstrap_metrics(run, n_boot=n_boot)
    metrics.insert(0, "data", ds["name"])
    metrics["cost_source"] = run.cost_source
    metrics.to_csv(folder / "metrics.csv", index=False, float_format="%.4f")
    (folder / "info.json").write_text(json.dumps(
        {k: v for k, v in run.info.items() if k != "P"} | {"note": ds["note"],
                                                           "cost_source": run.cost_source},
        indent=1, default=str))
    plot(curve, folder / "cost_quality.png", str(ds["name"]), run.cost_source, pair)
    P = run.info["P"]
    rel = reliability_table(P, run.Q)
    rel.to_csv(folder / "reliability.csv", index=False, float_format="%.4f")
    plot_reliability(rel, folder / "reliability.png", f"{ds['name']}: Brier {brier(P, run.Q):.4f}")
    hv = cq.hybrid_at_validation(curve)
    if len(hv):
        hv.insert(0, "data", ds["name"])
        hv.to_csv(folder / "hybrid_validation.csv", index=False, float_format="%.4f")
    return metrics


def plot_reliability(rel: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], c="grey", ls=":", lw=1)
    ok = rel["n"] > 0
    ax.plot(rel.loc[ok, "mean_p"], rel.loc[ok, "mean_y"], marker="o")
    for _, r in rel[ok].iterrows():
        ax.annotate(str(int(r["n"])), (r["mean_p"], r["mean_y"]), fontsize=6)
    ax.set_xlabel("predicted P (cross-fitted, as routing gives it)")
    ax.set_ylabel("observed mean quality")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(curve: pd.DataFrame, path: Path, title: str, cost_source: str, pair: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if pair else 1, figsize=(12 if pair else 7, 5), squeeze=False)
    ax = axes[0, 0]
    singles = curve[curve["policy"].str.startswith("single:")]
    ax.scatter(singles["cost"], singles["quality"], c="grey", s=14, label="single models", zorder=3)
    hx, hy = cq.upper_hull(singles["cost"].to_numpy(), singles["quality"].to_numpy())
    ax.plot(hx, hy, c="grey", ls=":", lw=1, label="single models' hull")
    for name, g in curve.groupby("policy", sort=False):
        if str(name).startswith("single:") or str(name).endswith("@val"):
            continue
        g = g.sort_values("cost")
        ax.plot(g["cost"], g["quality"], marker=".", lw=1.2, label=str(name))
    ax.set_xlabel("\n".join(textwrap.wrap(f"mean cost per call ({cost_source})", 90)), fontsize=7)
    ax.set_ylabel("mean quality")
    ax.set_title(f"{title}: cost vs quality (cross-fitted)")
    ax.legend(fontsize=7)
    if pair:
        ax = axes[0, 1]
        for name, g in curve.groupby("policy", sort=False):
            if "share_strong" not in g or g["share_strong"].isna().all() or len(g) < 3 \
                    or str(name) in ("best",) or str(name).startswith("single:"):
                continue
            if str(name) in ("budget", "oracle"):
                continue
            g = g.sort_values("share_strong")
            ax.plot(g["share_strong"], g["quality"], marker=".", lw=1.2, label=str(name))
        ax.set_xlabel("share of calls to the strong model (call%)")
        ax.set_ylabel("mean quality")
        ax.set_title("quality vs call% (RouteLLM)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ci(r: pd.Series, col: str, fmt: str = "{:.3f}") -> str:
    v, lo, hi = r.get(col), r.get(f"{col}_lo"), r.get(f"{col}_hi")
    if v is None or pd.isna(v):
        return ""
    if lo is None or pd.isna(lo):
        return fmt.format(v)
    return f"{fmt.format(v)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def report(out: Path) -> str:
    """Markdown tables from the CSVs the other parts wrote."""
    lines = ["# Routing results (generated by scripts/run_costs.py --parts report)", ""]
    preds = sorted(out.glob("predictors_*.csv"))
    if preds:
        lines += ["## Per-input predictors: routed quality vs the best single model", "",
                  "| data | predictor | routed | best single | oracle | gain [95% CI] | "
                  "share of gap [95% CI] | Brier |", "|---|---|---|---|---|---|---|---|"]
        for f in preds:
            for _, r in pd.read_csv(f).iterrows():
                lines.append(f"| {r['data']} | {r['predictor']} | {r['routed']:.3f} | "
                             f"{r['best_single']:.3f} | {r['oracle']:.3f} | {_ci(r, 'gain')} | "
                             f"{_ci(r, 'gap_share')} | {r['brier']:.4f} |")
        lines.append("")
    for f in sorted(out.glob("*/metrics.csv")):
        m = pd.read_csv(f)
        name = f.parent.name
        curve = pd.read_csv(f.parent / "curve.csv")  # redraw: the plot depends on no fit
        plot(curve, f.parent / "cost_quality.png", name, str(m["cost_source"].iloc[0]),
             "share_strong" in curve.columns)
        lines += [f"## {name}", "", f"Costs: {m['cost_source'].iloc[0]}.", ""]
        if "APGR" in m.columns and m["APGR"].notna().any():
            lines += ["| policy | APGR | CPT50 | CPT80 | PGR@50 | AIQ | max quality |",
                      "|---|---|---|---|---|---|---|"]
            for _, r in m.iterrows():
                if pd.isna(r.get("APGR")) and r["policy"] not in ("best", "singles-hull"):
                    continue
                lines.append(f"| {r['policy']} | {_ci(r, 'APGR')} | {_ci(r, 'CPT50')} | "
                             f"{_ci(r, 'CPT80')} | {_ci(r, 'PGR@50')} | {_ci(r, 'AIQ', '{:.4f}')} | "
                             f"{_ci(r, 'max_quality')} |")
        else:
            lines += ["| policy | AIQ [95% CI] | max quality |", "|---|---|---|"]
            for _, r in m.iterrows():
                lines.append(f"| {r['policy']} | {_ci(r, 'AIQ', '{:.4f}')} | {_ci(r, 'max_quality')} |")
        hv = f.parent / "hybrid_validation.csv"
        if hv.is_file():
            h = pd.read_csv(hv)
            lines += ["", "Hybrid LLM at the threshold chosen on validation (quality-drop budget "
                      f"{h['budget'].iloc[0]:g}): " + "; ".join(
                          f"{r['policy']}: cost advantage {r['cost_advantage']:.3f}, quality drop "
                          f"{r['quality_drop']:+.4f}" for _, r in h.iterrows())]
        lines.append("")
    text = "\n".join(lines) + "\n"
    (out / "tables.md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="+", default=["predictors", "costs"])
    ap.add_argument("--datasets", nargs="+", default=["alpaca", "routerdc", "routellm_mmlu",
                                                        "routellm_gsm8k"])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "routing")
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--only-knn", action="store_true",
                    help="rerun only the kNN predictors; keep the learned baselines' rows")
    ap.add_argument("--predictors", nargs="+", default=None,
                    help="rerun only these predictor rows (by name); keep the others' rows")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.parts == ["report"]:
        print(report(args.out))
        return
    makers = {"alpaca": lambda: alpaca(args.shared), "routerdc": lambda: routerdc(args.shared),
              "routellm_mmlu": lambda: routellm(args.shared, "mmlu"),
              "routellm_gsm8k": lambda: routellm(args.shared, "gsm8k"),
              "routerdc_gsm8k": lambda: routerdc_gsm8k(args.shared)}
    for key in args.datasets:
        ds = makers[key]()
        log.info("%s: %s (%s)", key, ds["data"], ds["note"])
        if "predictors" in args.parts:
            t = run_predictors(ds, args.out, args.only_knn, args.predictors)
            t.to_csv(args.out / f"predictors_{ds['name']}.csv", index=False, float_format="%.4f")
            print(t.to_string())
        if "costs" in args.parts:
            m = run_costs(ds, args.out, args.boot)
            print(m.to_string())


if __name__ == "__main__":
    main()
