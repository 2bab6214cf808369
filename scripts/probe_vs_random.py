"""Is the probe set at least as good as random inputs? The paired difference with an interval.

    python scripts/probe_vs_random.py [--results results/cold_start] [--strategy spread]
        [--resamples 2000]

Reads the per-draw rows that ``scripts/run_cold_start.py`` writes (``<data>_draws.csv.gz``) and,
for the borrowing estimator at each n, gives the mean share of the full-data AUC lift with the
probe strategy's inputs minus that with random inputs: per held-out model, (AUC − 0.5) /
(AUC_full − 0.5) with both AUCs averaged over its draws, then the mean over models (as
docs/results.md section 8's tables). The
95% interval resamples both levels (models, then each strategy's draws within a model), so it
says how far the difference could move with other models and other draws. Models whose
full-data AUC is undefined are left out, as in the tables. Written: ``probe_vs_random.csv``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from benchroute.experiments.bootstrap import interval
from benchroute.experiments.cold_start import model_share


def _share(rows: np.ndarray) -> float:
    """A model's share from its draws' (auc, auc_full) rows."""
    return model_share(rows[:, 0], rows[:, 1])


def difference(draws: pd.DataFrame, strategy: str, resamples: int, seed: int = 0
               ) -> pd.DataFrame:
    """One row per n: the mean difference and its 95% two-level bootstrap interval."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, part in draws.groupby("n"):
        per = {s: {m: g[["auc", "auc_full"]].to_numpy() for m, g in
                   part[part.strategy == s].dropna(subset=["auc", "auc_full"]).groupby("model")}
               for s in (strategy, "random")}
        models = sorted(set(per[strategy]) & set(per["random"]))
        point = np.mean([_share(per[strategy][m]) - _share(per["random"][m]) for m in models])
        boot = np.empty(resamples)
        for b in range(resamples):
            diffs = []
            for i in rng.choice(len(models), len(models)):
                a, r = per[strategy][models[i]], per["random"][models[i]]
                diffs.append(_share(a[rng.choice(len(a), len(a))])
                             - _share(r[rng.choice(len(r), len(r))]))
            boot[b] = np.mean(diffs)
        lo, hi = interval(boot, point=point)
        rows.append({"n": int(n), "models": len(models), "difference": point, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=Path("results/cold_start"))
    ap.add_argument("--strategy", default="spread")
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    out = []
    for path in sorted(args.results.glob("*_draws.csv.gz")):
        draws = pd.read_csv(path)
        draws = draws[draws.estimator == "borrowing"]
        table = difference(draws, args.strategy, args.resamples)
        table.insert(0, "data", path.name.removesuffix("_draws.csv.gz"))
        table.insert(1, "draws", int(draws.groupby(["model", "strategy", "n"]).size().max()))
        out.append(table)
        print(table.to_string(index=False, float_format=lambda v: f"{v:+.4f}"))
    pd.concat(out).to_csv(args.results / "probe_vs_random.csv", index=False)


if __name__ == "__main__":
    main()
