"""How far can borrowing from the known models go? In-sample ceilings of the cold-start share
(docs/results.md, section 8).

    python scripts/cold_start_ceiling.py [--dataset routerdc] [--shared ../shared]

For each held-out model of the pool: the features a few-label estimator sees (the known models'
tuned kNN P, without each input's own labels, as in ``benchroute.experiments.cold_start``), and
a logistic regression (C = 1) fitted on **all** of the held-out model's labels and scored on the
same inputs. Its share of the full-data AUC lift, (AUC − 0.5) / (AUC_full − 0.5), is an
optimistic ceiling for any estimator built on these features: with n labels it can only do
worse. Feature sets: the mean known logit alone (what the estimator starts from), every known
model's logit, and those plus each known model's label mean over the input's 40 nearest other
inputs (local skill).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from run_cold_start import COLUMNS, ROOT, vectors
from sklearn.linear_model import LogisticRegression

from benchroute import load
from benchroute.data.pool import pool_labels
from benchroute.experiments.cold_start import PoolNeighbours, auc
from benchroute.stacking import logits
from benchroute.tuning import PerInputPredictor

LOCAL_K = 40


def local_means(nb: PoolNeighbours, Y: np.ndarray, k: int) -> np.ndarray:
    """Each known model's label mean over an input's k nearest other inputs, shrunk by one
    pseudo-success and one pseudo-failure (so that the logit is finite)."""
    lab = nb.labels(Y)[:, :k]
    return (np.nansum(lab, axis=1) + 1) / ((~np.isnan(lab)).sum(axis=1) + 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="routerdc")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = ap.parse_args()
    data = load(args.shared / "data" / args.dataset)
    pool = pool_labels(data, COLUMNS[args.dataset])
    X, found = vectors(args.shared, args.dataset, data.instances()["text"].tolist())
    Y, ds, models = pool.Y[found], pool.datasets[found], list(pool.models)
    tuned_all = PerInputPredictor(seed=0).fit(X, Y, ds)
    nb = PoolNeighbours.search(X, max(max(tuned_all.ks), tuned_all.k_))
    P_all = tuned_all.without_vectors().predict_from_neighbours(nb.distances, nb.labels(Y))
    print(f"{args.dataset}: {len(X):,} inputs, {len(models)} models; in-sample share of the "
          "full-data AUC lift")
    print(f"{'held-out model':<46} {'AUC_full':>8} {'mean logit':>10} {'all logits':>10} "
          f"{'+ local':>8}")
    rows = []
    for j, name in enumerate(models):
        known = [m for m in range(len(models)) if m != j]
        tuned = PerInputPredictor(seed=0).fit(X, Y[:, known], ds)
        Z = logits(tuned.without_vectors().predict_from_neighbours(nb.distances,
                                                                   nb.labels(Y[:, known])))
        L = logits(local_means(nb, Y[:, known], LOCAL_K))
        has = ~np.isnan(Y[:, j])
        y = Y[has, j] > 0.5
        full = auc(P_all[has, j], y)
        shares = []
        for feats in (Z.mean(axis=1, keepdims=True), Z, np.c_[Z, L]):
            clf = LogisticRegression(C=1.0, max_iter=3000).fit(feats[has], y)
            shares.append((auc(clf.predict_proba(feats[has])[:, 1], y) - 0.5) / (full - 0.5))
        rows.append(shares)
        print(f"{name:<46} {full:>8.3f} " + " ".join(f"{s:>10.3f}" for s in shares[:2])
              + f" {shares[2]:>8.3f}", flush=True)
    mean = np.mean(rows, axis=0)
    print(f"{'mean':<46} {'':>8} {mean[0]:>10.3f} {mean[1]:>10.3f} {mean[2]:>8.3f}")


if __name__ == "__main__":
    main()
