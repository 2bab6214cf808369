"""The router's per-input P with the isotonic map always kept, against ``calibration="auto"``
(the default: kept where the tuning's cross-validation says it lowers the Brier score), on the
outer folds of the cost runs (docs/routing.md, section 1, "Calibration").

    python scripts/compare_calibration.py [--datasets routellm_gsm8k routellm_mmlu alpaca routerdc]
        [--shared ../shared] [--out results/routing/calibration.csv]

Both P come from the same routers' tuning (same folds, same choices) and differ only in the
map. Per data set: how many of the 5 routers kept the map under "auto", the outer-fold Brier
score, routed quality (argmax P, ties to the best model on average of the training folds) and,
for a strong/weak pair, the threshold policy's APGR, each with a paired 95% interval of
auto − isotonic over 200 resamples of inputs. Vectors come from the embedding cache, as in
``scripts/run_costs.py``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from per_input_ceiling import pair_apgr
from run_costs import ROOT, alpaca, routellm, routerdc

from benchroute.experiments import costs as cq
from benchroute.experiments.bootstrap import interval, resample_rows
from benchroute.experiments.crossfit import fold_bma
from benchroute.selection import route_rows
from benchroute.tuning import PerInputPredictor

log = logging.getLogger("compare_calibration")
N_BOOT = 200


def compare(ds: dict[str, object]) -> dict[str, object]:
    A = cq.arrays(ds["data"], ds["X"], str(ds["column"]), ds["costs"])  # type: ignore[arg-type]
    X, Y, g = A.X, A.Q, np.asarray(A.datasets)
    rows = np.arange(len(X))
    boots = resample_rows(len(X), N_BOOT, np.random.default_rng(0))
    pair = "strong" in ds
    if pair:
        strong, weak = (A.models.index(str(ds[r])) for r in ("strong", "weak"))
    per: dict[str, dict[str, object]] = {}
    fold = None
    for how in ("isotonic", "auto"):
        t = time.time()
        P, fold, fitted = cq.crossfit_proba(
            X, Y, folds=5, seed=0, groups=g,
            make=lambda how=how: PerInputPredictor(calibration=how))  # type: ignore[misc]
        single = fold_bma(Y, g, fold)
        sq = np.where(np.isnan(Y), np.nan, (P - np.nan_to_num(Y)) ** 2)
        per[how] = {"brier": np.nanmean(sq, axis=1),
                    "routed": Y[rows, route_rows(P, np.arange(Y.shape[1]), single,
                                                 available=~np.isnan(Y))],
                    "kept": sum(bool(p.tuning_ and p.tuning_.calibrated) for p in fitted)}
        if pair:
            per[how]["apgr"] = pair_apgr(P, Y, strong, weak, rows)
            per[how]["apgr_b"] = np.array([pair_apgr(P, Y, strong, weak, b) for b in boots])
        log.info("%s, calibration %s: %.0f s", ds["name"], how, time.time() - t)
    iso, auto = per["isotonic"], per["auto"]
    out: dict[str, object] = {"data": ds["name"], "inputs": len(X),
                              "auto_kept_map": f"{auto['kept']} of 5"}
    for m in ("brier", "routed"):
        a, i = np.asarray(auto[m]), np.asarray(iso[m])
        lo, hi = interval(np.nanmean((a - i)[boots], axis=1), point=float(np.nanmean(a - i)))
        out.update({f"{m}_isotonic": float(np.nanmean(i)), f"{m}_auto": float(np.nanmean(a)),
                    f"{m}_diff_lo": lo, f"{m}_diff_hi": hi})
    if pair:
        lo, hi = interval(np.asarray(auto["apgr_b"]) - np.asarray(iso["apgr_b"]),
                          point=float(auto["apgr"]) - float(iso["apgr"]))  # type: ignore[arg-type]
        out.update(apgr_isotonic=iso["apgr"], apgr_auto=auto["apgr"], apgr_diff_lo=lo,
                   apgr_diff_hi=hi)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+",
                    default=["routellm_gsm8k", "routellm_mmlu", "alpaca", "routerdc"])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "routing" / "calibration.csv")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    makers = {"alpaca": lambda: alpaca(args.shared), "routerdc": lambda: routerdc(args.shared),
              "routellm_mmlu": lambda: routellm(args.shared, "mmlu"),
              "routellm_gsm8k": lambda: routellm(args.shared, "gsm8k")}
    table = pd.DataFrame([compare(makers[k]()) for k in args.datasets])
    table.to_csv(args.out, index=False, float_format="%.4f")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
