"""Task scores S1/S2/S3, the task distance u, the kernel-smoothed predictor accuracy p̂, the
leave-one-task-out reference pass that feeds it, and the fallback to the best model on average.

Everything here is plain numpy over arrays shaped (n inputs, M models) so that the reference
implementation in the tests can be compared line by line with SPEC.md §2.
"""

from __future__ import annotations

import zlib
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


def mean_distance(distances: np.ndarray, n_neighbours: int = 19,
                  inputs: np.ndarray | None = None) -> np.ndarray:
    """Mean over inputs (axis −2) of each input's mean cosine distance to its ``n_neighbours``
    nearest (axis −1), skipping missing (infinite) neighbours; ``inputs`` masks which inputs
    count. Leading axes are batches (e.g. several few-shot draws)."""
    d = distances[..., :n_neighbours]
    finite = np.isfinite(d)
    per_input = np.where(finite, d, 0.0).sum(axis=-1) / np.maximum(finite.sum(axis=-1), 1)
    ok = finite.any(axis=-1) if inputs is None else finite.any(axis=-1) & inputs
    return (per_input * ok).sum(axis=-1) / np.maximum(ok.sum(axis=-1), 1)


def task_distance(nb: Neighbours, n_neighbours: int = 19) -> float:
    """u = mean over inputs of the mean cosine distance to their ``n_neighbours`` nearest."""
    return float(mean_distance(nb.distances, n_neighbours))


def predictor_accuracy(g: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Per model, mean(ĝ == y) over inputs (axis −2) with a label; NaN for a model with none.

    Continuous labels are binarised at ``threshold`` too, so p stays the probability that the
    binary prediction is right. Leading axes are batches.
    """
    y = np.asarray(y, dtype=float)
    has = ~np.isnan(y)
    hit = ((g > threshold) == (y >= threshold)) & has
    n = has.sum(axis=-2)
    return np.where(n > 0, hit.sum(axis=-2) / np.maximum(n, 1), np.nan)


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


def decide(
    score: np.ndarray, cand: np.ndarray, bma: int, g: np.ndarray, p: np.ndarray | None,
    threshold: float = 0.5, eta: float = 0.6, draws: int = 1000, seed: int = 0,
) -> tuple[int, bool, float | None]:
    """The model to choose: argmax of ``score`` among ``cand`` (ties to BMA), then, when ``p`` is
    given (S3), the η rule: fall back to BMA if P(chosen beats BMA) < eta.

    Returns (chosen index, fell back, win probability or None when no test was needed).
    """
    best = int(cand[np.argmax(score[cand])])
    if np.isclose(score[best], score[bma]):
        best = bma  # ties go to the best model on average
    if p is None or best == bma:
        return best, False, None
    n_plus = (g > threshold).sum(axis=0)
    win = fallback_probability(best, bma, n_plus, len(g) - n_plus, p, draws, seed)
    return (bma, True, win) if win < eta else (best, False, win)


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


def task_seed(seed: int, task: str) -> list[int]:
    """Seed of one task's draws: independent of which other tasks are in the pass, so a task's
    reference pairs can be reused across held-out targets."""
    return [seed, zlib.crc32(task.encode("utf-8"))]


@dataclass(frozen=True)
class TaskPairs:
    """One task's reference pairs, with what they depended on."""

    u: np.ndarray          # (R_i,)
    p: np.ndarray          # (R_i, M)
    alpha: np.ndarray      # (R_i,)
    touched: frozenset[str]  # tasks among the neighbours used
    used_fallback: bool    # whether any prediction fell back to the pool's mean label


def task_pairs(
    predictor: KNNCorrectnessPredictor, X: np.ndarray, Y: np.ndarray, datasets: np.ndarray,
    task: str, alphas: Sequence[float] = (0.0,), repeats: int = 1, seed: int = 0,
    n_neighbours: int = 19, threshold: float = 0.5, also_exclude: Sequence[str] = (),
    max_batch: int = 4_000_000,
) -> TaskPairs:
    """Reference pairs of one held-out task (see :func:`reference_pairs`).

    All (α, repeat) draws of the task are evaluated in one batch: each draw's labelled inputs are
    padded to the largest draw and merged with the pool's top K at once, which removes the
    per-draw Python overhead that dominates on small tasks. Large tasks go draw by draw
    (``max_batch`` bounds the batch's label tensor).
    """
    rng = np.random.default_rng(task_seed(seed, task))
    K = max(predictor.k, n_neighbours)
    rows = np.flatnonzero(datasets == task)
    n = len(rows)
    Xt, Yt = X[rows], Y[rows]
    excluded = [task, *also_exclude]
    base = predictor.neighbours(Xt, K, exclude_datasets=excluded)
    means = predictor.fallback_means(excluded)
    draws: list[tuple[float, np.ndarray]] = []
    for alpha in alphas:
        n_lab = few_shot_count(n, alpha)
        for _ in range(1 if n_lab == 0 else repeats):
            lab = rng.choice(n, n_lab, replace=False) if n_lab else np.zeros(0, dtype=np.int64)
            draws.append((float(alpha), lab))
    n_max = max(len(lab) for _, lab in draws)
    sims = Xt @ Xt.T if n_max else None
    m = Y.shape[1]
    per_batch = max(1, max_batch // max(1, n * (K + n_max) * m))
    us: list[float] = []
    ps: list[np.ndarray] = []
    fell = False
    for start in range(0, len(draws), per_batch):
        chunk = draws[start:start + per_batch]
        u, p, f = _pairs_batch(predictor, base, Yt, sims, chunk, means, K, n_neighbours, threshold)
        us.extend(u)
        ps.extend(p)
        fell = fell or f
    return TaskPairs(np.asarray(us, dtype=float), np.asarray(ps, dtype=float).reshape(-1, m),
                     np.asarray([a for a, _ in draws], dtype=float), frozenset(base.tasks or ()),
                     fell)


def _pairs_batch(predictor: KNNCorrectnessPredictor, base: Neighbours, Yt: np.ndarray,
                 sims: np.ndarray | None, draws: list[tuple[float, np.ndarray]],
                 means: np.ndarray, K: int, n_neighbours: int, threshold: float
                 ) -> tuple[list[float], list[np.ndarray], bool]:
    """(u, p) of several draws at once; inputs used as labels are masked out of the test set."""
    C, n = len(draws), len(base)
    Kb = base.distances.shape[1]  # fewer than K when the pool is small
    L = max(len(lab) for _, lab in draws)
    m = Yt.shape[1]
    test = np.ones((C, n), dtype=bool)
    if L:
        assert sims is not None
        ext_d = np.full((C, n, L), np.inf)
        ext_y = np.full((C, L, m), np.nan, dtype=np.float32)
        for c, (_, lab) in enumerate(draws):
            test[c, lab] = False
            ext_d[c, :, :len(lab)] = 1.0 - sims[:, lab]
            ext_y[c, :len(lab)] = Yt[lab]
        dist = np.concatenate([np.broadcast_to(base.distances, (C, n, Kb)), ext_d], axis=2)
        labels = np.concatenate([np.broadcast_to(base.labels, (C, n, Kb, m)),
                                 np.broadcast_to(ext_y[:, None], (C, n, L, m))], axis=2)
        order = np.argsort(dist, axis=2, kind="stable")[:, :, :K]
        dist = np.take_along_axis(dist, order, axis=2)
        labels = np.take_along_axis(labels, order[..., None], axis=2)
    else:
        dist = np.broadcast_to(base.distances, (C, n, Kb))
        labels = np.broadcast_to(base.labels, (C, n, Kb, m))
    Kc = dist.shape[2]
    nb = Neighbours(dist.reshape(C * n, Kc), labels.reshape(C * n, Kc, m))
    g, flag = predictor.aggregate(nb, means)
    g = g.reshape(C, n, m)
    u = mean_distance(dist, n_neighbours, inputs=test)
    p = predictor_accuracy(g, np.where(test[:, :, None], Yt[None], np.nan), threshold)
    fell = bool((flag.reshape(C, n, m) & test[:, :, None]).any())
    return u.tolist(), list(p), fell


def reference_pairs(
    predictor: KNNCorrectnessPredictor, X: np.ndarray, Y: np.ndarray, datasets: np.ndarray,
    tasks: Sequence[str] | None = None, alphas: Sequence[float] = (0.0,), repeats: int = 1,
    seed: int = 0, n_neighbours: int = 19, threshold: float = 0.5,
    also_exclude: Sequence[str] = (), cache: dict[str, TaskPairs] | None = None,
) -> ReferencePairs:
    """The leave-one-task-out pass of SPEC.md §2 over the pool's own tasks.

    For each task i: one index search of its inputs with task i (and ``also_exclude``) left out;
    then for each α and repeat, α·n_i random labelled inputs of task i join the pool by brute-force
    merging (they leave the test set), and (u_i, p_i,m) are recorded. α = 0 needs one repeat only.

    ``cache`` holds pairs computed without ``also_exclude``; a task's cached pairs are reused when
    none of its neighbours came from the excluded tasks and no prediction used the fallback mean
    (which depends on the pool), because the pairs are then provably the same.
    """
    tasks = sorted(set(datasets.tolist()) - set(also_exclude)) if tasks is None else list(tasks)
    parts: list[tuple[str, TaskPairs]] = []
    for task in tasks:
        if (datasets == task).sum() < 2:
            continue
        hit = cache.get(task) if cache is not None else None
        if hit is None or hit.used_fallback or hit.touched & set(also_exclude):
            hit = task_pairs(predictor, X, Y, datasets, task, alphas, repeats, seed,
                             n_neighbours, threshold, also_exclude)
        parts.append((task, hit))
    m = predictor.n_models_
    if not parts:
        return ReferencePairs(np.zeros(0), np.zeros((0, m)), np.zeros(0, dtype=object), np.zeros(0))
    return ReferencePairs(
        np.concatenate([tp.u for _, tp in parts]),
        np.concatenate([tp.p for _, tp in parts]).reshape(-1, m),
        np.concatenate([np.full(len(tp.u), t, dtype=object) for t, tp in parts]),
        np.concatenate([tp.alpha for _, tp in parts]),
    )
