"""Task scores S1/S2/S3, the task distance u, the kernel-smoothed predictor accuracy p̂, the
leave-one-task-out reference pass that feeds it, and the fallback to the best model on average.

Everything here is plain numpy over arrays shaped (n inputs, M models) so that the reference
implementation in the tests can be compared line by line with SPEC.md §2.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from benchroute.predictors import KNNCorrectnessPredictor, Neighbours

DEFAULT_ALPHAS: tuple[float, ...] = tuple(round(0.02 * i, 2) for i in range(15))  # 0 .. 0.28
FEW_SHOT_CAP = 50


def s1(g: np.ndarray) -> np.ndarray:
    """S1(m) = mean_i g_m(x_i)."""
    return np.asarray(g, dtype=float).mean(axis=0)


def s2(g: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """S2(m) = mean_i 1[g_m(x_i) > threshold]."""
    return (np.asarray(g) > threshold).mean(axis=0)


def s3(s2_scores: np.ndarray, p: np.ndarray) -> np.ndarray:
    """S3(m) = p·S2 + (1 − p)·(1 − S2): expected accuracy when ĝ_m is right with probability p."""
    return p * s2_scores + (1.0 - p) * (1.0 - s2_scores)


def task_distance(nb: Neighbours, n_neighbours: int = 19) -> float:
    """u = mean over inputs of the mean cosine distance to their ``n_neighbours`` nearest."""
    d = nb.distances[:, :n_neighbours]
    d = np.where(np.isfinite(d), d, np.nan)
    return float(np.nanmean(np.nanmean(d, axis=1)))


def predictor_accuracy(g: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Per model, mean(ĝ == y) over inputs with a label; NaN for a model with no label.

    Continuous labels are binarised at ``threshold`` too, so p stays the probability that the
    binary prediction is right.
    """
    y = np.asarray(y, dtype=float)
    has = ~np.isnan(y)
    hit = ((g > threshold) == (y >= threshold)) & has
    n = has.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hit.sum(axis=0) / np.maximum(n, 1), np.nan)


def kernel_smooth(u: float, ref_u: np.ndarray, ref_p: np.ndarray, bandwidth: float = 0.09
                  ) -> np.ndarray:
    """Nadaraya–Watson estimate p̂(m) = Σ_i w_i p_i,m / Σ_i w_i, w_i = exp(−(u − u_i)² / 2h²).

    Pairs with a NaN p for a model are left out for that model. If every weight underflows
    (u far from all references) the nearest reference's value is used.
    """
    ref_u = np.asarray(ref_u, dtype=float)
    ref_p = np.asarray(ref_p, dtype=float)
    if len(ref_u) == 0:
        return np.full(ref_p.shape[1] if ref_p.ndim == 2 else 0, np.nan)
    z = -((u - ref_u) ** 2) / (2.0 * bandwidth**2)
    has = ~np.isnan(ref_p)
    zm = np.where(has, z[:, None], -np.inf)
    top = zm.max(axis=0)
    # rescaled per model: the same ratios, without every weight underflowing to zero
    ww = np.where(has, np.exp(zm - np.where(np.isfinite(top), top, 0.0)), 0.0)
    den = ww.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ww * np.nan_to_num(ref_p)).sum(axis=0) / den, np.nan)


def fallback_probability(
    chosen: int, bma: int, n_plus: np.ndarray, n_minus: np.ndarray, p: np.ndarray,
    draws: int = 1000, seed: int | np.random.Generator | None = 0,
) -> float:
    """P(count(chosen) > count(BMA)) with count(m) ~ Binomial(n⁺_m, p_m) + Binomial(n⁻_m, 1 − p_m).

    n⁺ and n⁻ are the inputs predicted right and wrong; the count is then the number of inputs
    the model really gets right if each binary prediction is right with probability p.
    """
    rng = np.random.default_rng(seed)
    def count(m: int) -> np.ndarray:
        pm = float(np.clip(np.nan_to_num(p[m], nan=0.5), 0.0, 1.0))
        return (rng.binomial(int(n_plus[m]), pm, draws)
                + rng.binomial(int(n_minus[m]), 1.0 - pm, draws))
    return float(np.mean(count(chosen) > count(bma)))


@dataclass(frozen=True)
class ReferencePairs:
    """(u_i, p_i,m) pairs from the leave-one-task-out pass: one row per (task, α, repeat)."""

    u: np.ndarray        # (R,)
    p: np.ndarray        # (R, M)
    task: np.ndarray     # (R,) the held-out task of each pair
    alpha: np.ndarray    # (R,)

    def without(self, tasks: Iterable[str]) -> ReferencePairs:
        keep = ~np.isin(self.task, list(tasks))
        return ReferencePairs(self.u[keep], self.p[keep], self.task[keep], self.alpha[keep])


def few_shot_count(n: int, alpha: float, cap: int = FEW_SHOT_CAP) -> int:
    """α·n labelled inputs (floor), capped, leaving at least one input to score."""
    return int(min(np.floor(alpha * n), cap, max(n - 1, 0)))


def reference_pairs(
    predictor: KNNCorrectnessPredictor, X: np.ndarray, Y: np.ndarray, datasets: np.ndarray,
    tasks: Sequence[str] | None = None, alphas: Sequence[float] = (0.0,), repeats: int = 1,
    seed: int = 0, n_neighbours: int = 19, threshold: float = 0.5,
    also_exclude: Sequence[str] = (),
) -> ReferencePairs:
    """The leave-one-task-out pass of SPEC.md §2 over the pool's own tasks.

    For each task i: one index search of its inputs with task i (and ``also_exclude``) left out;
    then for each α and repeat, α·n_i random labelled inputs of task i join the pool by brute-force
    merging (they leave the test set), and (u_i, p_i,m) are recorded. α = 0 needs one repeat only.
    """
    rng = np.random.default_rng(seed)
    tasks = sorted(set(datasets.tolist()) - set(also_exclude)) if tasks is None else list(tasks)
    K = max(predictor.k, n_neighbours)
    us, ps, ts, als = [], [], [], []
    for task in tasks:
        rows = np.flatnonzero(datasets == task)
        if len(rows) < 2:
            continue
        Xt, Yt = X[rows], Y[rows]
        base = predictor.neighbours(Xt, K, exclude_datasets=[task, *also_exclude])
        means = predictor.fallback_means([task, *also_exclude])
        sims = None
        for alpha in alphas:
            n_lab = few_shot_count(len(rows), alpha)
            for _ in range(1 if n_lab == 0 else repeats):
                if n_lab == 0:
                    nb, test = base, np.arange(len(rows))
                else:
                    if sims is None:
                        sims = Xt @ Xt.T
                    lab = rng.choice(len(rows), n_lab, replace=False)
                    test = np.setdiff1d(np.arange(len(rows)), lab)
                    nb = base.take(test).merge(1.0 - sims[np.ix_(test, lab)], Yt[lab], K)
                g, _ = predictor.aggregate(nb, means)
                us.append(task_distance(nb, n_neighbours))
                ps.append(predictor_accuracy(g, Yt[test], threshold))
                ts.append(task)
                als.append(alpha)
    m = predictor.n_models_
    return ReferencePairs(np.asarray(us, dtype=float), np.asarray(ps, dtype=float).reshape(-1, m),
                          np.asarray(ts, dtype=object), np.asarray(als, dtype=float))

