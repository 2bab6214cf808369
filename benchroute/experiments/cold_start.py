"""Cold start: how well does a model added from n labelled inputs predict, route and choose?

Each model of a pool is left out in turn. The others form the router (its tuned per-input
predictor fitted on them alone); the left-out model gets labels on n pool inputs, chosen at
random or by :func:`benchroute.new_models.probe_rows`, in seeded repeats, and
:class:`~benchroute.new_models.BorrowingPredictor` gives P(new, x) for every other input. On
those remaining inputs we measure

- the AUC (labels binarised at 0.5) and the Brier score of P(new, x), beside those of the
  *full-data* predictor: the tuned predictor fitted on every model's full results, as a router
  that had the model from the start would hold it;
- ``share``: (AUC − 0.5) / (AUC_full − 0.5), the share of the full-data AUC lift reached;
- routing: mean true quality of argmax_m P over the pool with the new model, against the same
  with the full-data P(new, x) and the pool without the new model;
- task-level choices (argmax of mean P over a task's remaining inputs, i.e. S1) that differ from
  those with the full-data P(new, x).

Every P at a pool input is computed without that input's own labels (its neighbours at
distance 0 are left out), as for a new input. Two simpler estimators run on the same draws for
comparison: ``"logistic"`` (logistic regression on the known models' logits, C = 1, the
reference run of the issue) and ``"own kNN"`` (the new model's own labels only).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchroute.experiments.bootstrap import interval, resample_rows
from benchroute.new_models import (
    BorrowingPredictor,
    deviation_penalty,
    logits,
    penalty_rows,
    probe_rows,
)
from benchroute.predictors import SELF_DISTANCE
from benchroute.scoring import argmax_ties, best_on_average, task_means
from benchroute.stacking import fit_soft_logistic, per_input_value
from benchroute.tuning import PerInputPredictor, knn_search

logger = logging.getLogger(__name__)

NS: tuple[int, ...] = (10, 25, 50, 100, 200, 400)
STRATEGIES: tuple[str, ...] = ("random", "spread", "disagree")
ESTIMATORS: tuple[str, ...] = ("borrowing", "logistic", "own kNN")
#: Extra neighbours searched so that an input and its duplicates can be left out.
_EXTRA = 4


@dataclass(frozen=True)
class PoolNeighbours:
    """Each pool input's nearest other pool inputs: cosine distances (N, K) and rows (N, K),
    ``inf`` / -1 where the input itself (or a duplicate) was left out."""

    distances: np.ndarray
    rows: np.ndarray

    @classmethod
    def search(cls, X: np.ndarray, K: int) -> PoolNeighbours:
        dist, rows = knn_search(X, X, K + _EXTRA)
        self_ = dist < SELF_DISTANCE
        dist = np.where(self_ | (rows < 0), np.inf, dist)
        order = np.argsort(dist, axis=1, kind="stable")[:, :K]
        dist = np.take_along_axis(dist, order, axis=1)
        rows = np.where(np.isfinite(dist), np.take_along_axis(rows, order, axis=1), -1)
        return cls(dist, rows)

    def labels(self, Y: np.ndarray) -> np.ndarray:
        """Labels (N, K, M) of the neighbours; NaN where there is none."""
        padded = np.vstack([np.asarray(Y, dtype=np.float64), np.full((1, Y.shape[1]), np.nan)])
        return padded[self.rows]


def auc(p: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve of scores ``p`` for binary ``y`` (ties count one half)."""
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(p)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def logistic_reference(F: np.ndarray, y: np.ndarray, Fq: np.ndarray) -> np.ndarray:
    """Logistic regression (C = 1) on the known models' logits; the label mean when the labels
    do not vary. Fractional labels enter as two weighted rows."""
    yb = y > 0.5
    if yb.all() or not yb.any():
        return np.full(len(Fq), float(y.mean()))
    return fit_soft_logistic(logits(F), y, 1.0).predict_proba(logits(Fq))[:, 1]


def own_knn(V: np.ndarray, y: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """The new model's own labels only: the borrowing predictor restricted to w = 0."""
    pred = BorrowingPredictor(mixes=(0.0,), min_labels=2)
    return pred.fit(np.zeros((len(y), 1)), V, y).predict_proba(np.zeros((len(Q), 1)), Q)


def _routing(P: np.ndarray, Y: np.ndarray, datasets: np.ndarray) -> float:
    """Routed quality by the tuning's rule (ties to the best model on average, as routing)."""
    prefer = best_on_average(task_means(Y, datasets))
    return float(np.nanmean(per_input_value(P, Y, "route", prefer)))


def _task_choices(P: np.ndarray, datasets: np.ndarray) -> pd.Series:
    """Per task, the model of the highest mean P (S1), by the package's argmax."""
    means = pd.DataFrame(P).groupby(np.asarray(datasets)).mean()
    return pd.Series(argmax_ties(means.to_numpy()), index=means.index)


def cold_start(X: np.ndarray, Y: np.ndarray, datasets: np.ndarray, models: Sequence[str],
               ns: Sequence[int] = NS, strategies: Sequence[str] = STRATEGIES,
               repeats: int = 5, held_out: Sequence[str] | None = None, seed: int = 0,
               estimators: Sequence[str] = ESTIMATORS) -> pd.DataFrame:
    """One row per (held-out model, strategy, n, repeat, estimator) with the metrics above.

    Parameters
    ----------
    X : ndarray (N, d)
        Unit vectors of the pool inputs.
    Y : ndarray (N, M)
        Labels in [0, 1] (NaN = no result).
    datasets : array (N,)
        Task of each input.
    held_out : model names to leave out (default: every model).
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float64)
    ds = np.asarray(datasets)
    models = list(models)
    tuned_all = PerInputPredictor(seed=seed).fit(X, Y, ds)
    K = max(max(tuned_all.ks), tuned_all.k_)
    nb = PoolNeighbours.search(X, K)
    P_all = tuned_all.without_vectors().predict_from_neighbours(nb.distances, nb.labels(Y))
    out = []
    for name in held_out if held_out is not None else models:
        j = models.index(name)
        known = [m for m in range(len(models)) if m != j]
        tuned = PerInputPredictor(seed=seed).fit(X, Y[:, known], ds)
        F = tuned.without_vectors().predict_from_neighbours(nb.distances, nb.labels(Y[:, known]))
        sample = penalty_rows(len(X), seed)
        prior = deviation_penalty(F[sample], Y[sample][:, known])  # as a router's add_model
        has = ~np.isnan(Y[:, j])
        logger.info("cold start %s: %d inputs with a result; tuned on the others: k = %d; "
                    "the known models' penalty λ₀ = %s", name, int(has.sum()), tuned.k_, prior)
        for strategy in strategies:
            for n in ns:
                for r in range(repeats):
                    rng_seed = [seed, j, n, r]
                    cand = np.flatnonzero(has)
                    lab = cand[probe_rows(X[cand], Y[cand][:, known], ds[cand], n,
                                          seed=int(np.random.default_rng(rng_seed).integers(2**31)),
                                          strategy=strategy)]
                    rest = np.setdiff1d(cand, lab)
                    y, yr = Y[lab, j], Y[rest, j]
                    full = P_all[rest, j]
                    auc_full = auc(full, yr > 0.5)
                    base = {"model": name, "strategy": strategy, "n": n, "repeat": r,
                            "auc_full": auc_full, "brier_full": float(np.mean((full - yr) ** 2))}
                    Pk = np.c_[F[rest]]
                    Yr = Y[rest][:, known + [j]]
                    route_full = _routing(np.c_[Pk, full], Yr, ds[rest])
                    route_without = _routing(Pk, Y[rest][:, known], ds[rest])
                    tasks_full = _task_choices(np.c_[Pk, full], ds[rest])
                    for est in estimators:
                        if est == "borrowing":
                            import warnings

                            with warnings.catch_warnings():
                                warnings.simplefilter("ignore", UserWarning)
                                pred = BorrowingPredictor(seed=r, prior_lambda=prior).fit(
                                    F[lab], X[lab], y, Y[lab][:, known])
                            p = pred.predict_proba(F[rest], X[rest])
                        elif est == "logistic":
                            p = logistic_reference(F[lab], y, F[rest])
                        else:
                            p = own_knn(X[lab], y, X[rest])
                        a = auc(p, yr > 0.5)
                        tasks = _task_choices(np.c_[Pk, p], ds[rest])
                        out.append({**base, "estimator": est, "auc": a,
                                    "brier": float(np.mean((p - yr) ** 2)),
                                    "share": (a - 0.5) / (auc_full - 0.5),
                                    "route": _routing(np.c_[Pk, p], Yr, ds[rest]),
                                    "route_full": route_full, "route_without": route_without,
                                    "tasks_changed": int((tasks != tasks_full).sum()),
                                    "tasks": len(tasks)})
    return pd.DataFrame(out)


def model_share(auc: np.ndarray, auc_full: np.ndarray) -> float:
    """A held-out model's share of the full-data AUC lift from its draws: (AUC − 0.5) /
    (AUC_full − 0.5) with both AUCs averaged over the draws first."""
    return float((np.mean(auc) - 0.5) / (np.mean(auc_full) - 0.5))


def summarise(results: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (strategy, estimator, n): the mean over held-out models of each model's share of the
    full-data AUC lift, (AUC − 0.5) / (AUC_full − 0.5) with both AUCs averaged over the model's
    repeats, with a 95% interval over a bootstrap of held-out models; the pooled share (mean
    lift over mean full lift); and the means of the other metrics. Models whose remaining
    labels are all equal (AUC undefined) are left out and counted in ``skipped``."""
    rng = np.random.default_rng(seed)
    rows = []
    cols = ["auc", "auc_full", "brier", "brier_full", "route", "route_full", "route_without",
            "tasks_changed", "tasks"]
    for (strategy, est, n), part in results.groupby(["strategy", "estimator", "n"]):
        per_model = part.groupby("model")[cols].mean().dropna(subset=["auc", "auc_full"])
        share = np.asarray([model_share(a, f) for a, f in
                            zip(per_model["auc"], per_model["auc_full"])])
        share_b = share[resample_rows(len(per_model), n_boot, rng)].mean(axis=1)
        row = {"strategy": strategy, "estimator": est, "n": n, "models": len(per_model),
               "skipped": int(part["model"].nunique() - len(per_model)), "draws": len(part),
               "share": float(share.mean())}
        row["share_lo"], row["share_hi"] = interval(share_b, point=float(share.mean()))
        row["share_pooled"] = float((per_model["auc"].mean() - 0.5)
                                    / (per_model["auc_full"].mean() - 0.5))
        row.update({c: float(per_model[c].mean()) for c in cols})
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(summary: pd.DataFrame, labels: dict[str, str] | None = None) -> str:
    """The summary as a markdown table, one row per n: the borrowing estimator's share of the
    full-data AUC lift [95% interval] and Brier score for each strategy, the two simpler
    estimators on random inputs, the AUCs, the Brier scores and routing accuracy (random
    inputs). ``labels`` renames strategies (e.g. those of an older run)."""
    labels = labels or {}
    s = summary.copy()
    s["strategy"] = s["strategy"].map(lambda v: labels.get(v, v))
    strategies = [v for v in ("random", "spread", "disagree") if v in set(s["strategy"])]

    def cell(strategy: str, est: str, n: int) -> pd.Series | None:
        hit = s[(s["strategy"] == strategy) & (s["estimator"] == est) & (s["n"] == n)]
        return hit.iloc[0] if len(hit) else None  # a run of some strategies or estimators

    head = ["n"] + [f"borrowing, {v}" for v in strategies] + [
        "logistic, random", "own kNN, random", "AUC: borrowing / full (random)",
        "Brier: borrowing / full (random)", "routing: without / with (random) / with full",
        "task choices changed (random)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sorted(set(s["n"])):
        row = [str(n)]
        for v in strategies:
            c = cell(v, "borrowing", n)
            row.append("—" if c is None else
                       f"{c['share']:.2f} [{c['share_lo']:.2f}, {c['share_hi']:.2f}]; "
                       f"Brier {c['brier']:.3f}")
        for est in ("logistic", "own kNN"):
            c = cell("random", est, n)
            row.append("—" if c is None else
                       f"{c['share']:.2f} [{c['share_lo']:.2f}, {c['share_hi']:.2f}]")
        c = cell("random", "borrowing", n)
        row += ["—"] * 4 if c is None else [
            f"{c['auc']:.3f} / {c['auc_full']:.3f}", f"{c['brier']:.4f} / {c['brier_full']:.4f}",
            f"{c['route_without']:.4f} / {c['route']:.4f} / {c['route_full']:.4f}",
            f"{c['tasks_changed']:.2f} of {c['tasks']:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
