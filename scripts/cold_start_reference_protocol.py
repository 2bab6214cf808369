"""Which protocol gives the reference figures quoted for the cold-start feature?

The figures quoted when the feature was proposed (logistic regression on the known models' P,
random inputs: RouterDC 0.86 of the full-data AUC lift at n = 25 and 0.99 at n = 100,
AlpacaEval 0.27 / 0.79 / 0.96 at n = 25 / 100 / 200) are above what docs/results.md section 8
measures for that estimator. This runs it, and the borrowing estimator, on two protocols that
differ in one thing: whether the known models' kNN P at a pool input includes that input's
own labels (its neighbour at distance 0, as a router asked about one of its own inputs finds
it). The full-data reference leaves them out in both. P is a plain kNN: the uniform mean of the
k nearest pool inputs' labels (k = 50 by default), clipped to [0.01, 0.99].

    python scripts/cold_start_reference_protocol.py --datasets routerdc alpaca_eval

Writes results/cold_start/reference_protocol.csv (one row per dataset, k, protocol, n and
estimator: the mean share over held-out models and its median).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_cold_start import COLUMNS, vectors  # noqa: E402

from benchroute import load  # noqa: E402
from benchroute.data.pool import pool_labels  # noqa: E402
from benchroute.experiments.cold_start import auc, logistic_reference  # noqa: E402
from benchroute.new_models import (  # noqa: E402
    BorrowingPredictor,
    deviation_penalty,
    penalty_rows,
    probe_rows,
)
from benchroute.predictors import SELF_DISTANCE  # noqa: E402
from benchroute.tuning import knn_search  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def plain_knn(dist: np.ndarray, rows: np.ndarray, Y: np.ndarray, k: int, own: bool) -> np.ndarray:
    """Uniform mean of the k nearest inputs' labels; ``own`` keeps an input's own row (and
    copies at distance 0) among them."""
    d = dist if own else np.where(dist < SELF_DISTANCE, np.inf, dist)
    nearest = np.take_along_axis(rows, np.argsort(d, axis=1, kind="stable")[:, :k], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a neighbour set without a label
        return np.clip(np.nanmean(Y[nearest], axis=1), 0.01, 0.99)


def shares(X: np.ndarray, Y: np.ndarray, ds: np.ndarray, P: np.ndarray, P_ref: np.ndarray,
           held: list[int], n: int, repeats: int, estimators: list[str]
           ) -> dict[str, list[float]]:
    """Per estimator, the share of the full-data AUC lift of each held-out model (mean AUC over
    the seeded random draws of experiments.cold_start)."""
    M = Y.shape[1]
    out: dict[str, list[float]] = {e: [] for e in estimators}
    for j in held:
        known = [m for m in range(M) if m != j]
        cand = np.flatnonzero(~np.isnan(Y[:, j]))
        F = P[:, known]
        sample = penalty_rows(len(X), 0)
        lam = deviation_penalty(F[sample], Y[sample][:, known])
        got: dict[str, list[float]] = {e: [] for e in estimators}
        full = []
        for r in range(repeats):
            seed = int(np.random.default_rng([0, j, n, r]).integers(2**31))
            lab = cand[probe_rows(X[cand], Y[cand][:, known], ds[cand], n, seed=seed,
                                  strategy="random")]
            rest = np.setdiff1d(cand, lab)
            yr = Y[rest, j] > 0.5
            full.append(auc(P_ref[rest, j], yr))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if "logistic" in got:
                    got["logistic"].append(auc(logistic_reference(F[lab], Y[lab, j], F[rest]), yr))
                if "borrowing" in got:
                    pred = BorrowingPredictor(seed=r, prior_lambda=lam).fit(
                        F[lab], X[lab], Y[lab, j], Y[lab][:, known])
                    got["borrowing"].append(auc(pred.predict_proba(F[rest], X[rest]), yr))
        if np.isnan(np.mean(full)):  # a model whose labels never vary (AlpacaEval's reference)
            continue
        for e in estimators:
            out[e].append((np.mean(got[e]) - 0.5) / (np.mean(full) - 0.5))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--datasets", nargs="+", default=["routerdc", "alpaca_eval"])
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--ns", type=int, nargs="+", default=[25, 100])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--max-models", type=int, default=12)
    ap.add_argument("--estimators", nargs="+", default=["logistic", "borrowing"],
                    choices=["logistic", "borrowing"])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "cold_start" /
                    "reference_protocol.csv")
    args = ap.parse_args()
    rows = []
    for name in args.datasets:
        data = load(args.shared / "data" / name)
        pool = pool_labels(data, COLUMNS[name])
        X, found = vectors(args.shared, name, data.instances()["text"].tolist())
        Y, ds = pool.Y[found], pool.datasets[found]
        X = np.ascontiguousarray(X, dtype=np.float32)
        M = Y.shape[1]
        held = list(range(M)) if args.max_models >= M else \
            list(np.linspace(0, M - 1, args.max_models).astype(int))
        dist, nb = knn_search(X, X, args.k + 20)
        P_ref = plain_knn(dist, nb, Y, args.k, own=False)
        for own in (False, True):
            P = plain_knn(dist, nb, Y, args.k, own=own)
            for n in args.ns:
                res = shares(X, Y, ds, P, P_ref, held, n, args.repeats, args.estimators)
                for e, v in res.items():
                    rows.append({"dataset": name, "k": args.k, "own_labels_in_features": own,
                                 "n": n, "estimator": e, "share": float(np.mean(v)),
                                 "median": float(np.median(v)), "models": len(v),
                                 "repeats": args.repeats})
                    print(f"{name} own labels in features={own} n={n} {e}: share "
                          f"{np.mean(v):.3f} (median {np.median(v):.3f}, {len(v)} models)",
                          flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
