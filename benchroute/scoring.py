"""The formulas of the method as pure functions over arrays: S1, S2, S3, the task distance u,
the predictor accuracy p, its kernel-smoothed estimate, the predictors' self-estimate of p and
the map from both to p̂ learnt on the reference pairs, the Beta–binomial update of p̂ by
few-shot labels, the fallback test against the best model on average, and the two rules every
choice goes through: :func:`argmax_ties` (the one argmax and its tie order) and
:func:`best_on_average` (the one definition of the best model on average).

Arrays are shaped (n inputs, M models), with optional leading batch axes where stated. Nothing
here searches an index or imports the rest of the package, so each formula can be checked line
by line against docs/method.md.
"""

from __future__ import annotations

import numpy as np

#: u of an input that has no neighbour at all: the largest cosine distance, "as far as can be".
FAR = 2.0
#: Weight of the pseudo-reference (p = 0.5) in p̂: a reference pair 3 bandwidths away.
PRIOR_WEIGHT = float(np.exp(-4.5))
#: Two scores closer than this are a tie (see :func:`argmax_ties`).
TIE_TOL = 1e-9


def argmax_ties(score: np.ndarray, cand: np.ndarray | None = None,
                prefer: int | np.ndarray | None = None, cost: np.ndarray | None = None,
                tol: float = TIE_TOL) -> np.ndarray:
    """The column with the highest score per row of ``score`` (..., M), among the columns
    ``cand`` (default all): the one argmax of the package.

    Columns within ``tol`` of the row's maximum are tied, and a tie is broken in this order:

    1. ``prefer`` (one column, or one per row), when it is among the tied: the best model on
       average in a selection, so that a near-tie never moves a choice away from it;
    2. the lowest ``cost`` (M,) or (..., M), when costs are given: the cheaper of two equally
       good models;
    3. the lowest column index (the first in ``cand`` order).

    A row whose scores are all -inf (nothing available) returns its preferred or first column.
    Returns column indices, shape ``score.shape[:-1]``.
    """
    score = np.asarray(score, dtype=np.float64)
    cols = np.arange(score.shape[-1]) if cand is None else np.asarray(cand, dtype=np.int64)
    sub = score[..., cols]
    tied = sub >= np.max(sub, axis=-1, keepdims=True) - tol
    key = np.zeros(sub.shape) if cost is None else \
        np.broadcast_to(np.asarray(cost, dtype=np.float64), score.shape)[..., cols].copy()
    if prefer is not None:
        pref = np.asarray(prefer)[..., None] if np.ndim(prefer) else prefer
        key = np.where(cols == pref, -np.inf, key)
    return cols[np.argmin(np.where(tied, key, np.inf), axis=-1)]


def task_means(Y: np.ndarray, datasets: np.ndarray) -> np.ndarray:
    """Per-task mean label (T tasks in sorted order, M models); NaN where a model has no result
    on a task. The table :func:`best_on_average` averages."""
    Y = np.asarray(Y, dtype=np.float64)
    ds = np.asarray(datasets)
    out = np.full((len(np.unique(ds)), Y.shape[1]), np.nan)
    for i, task in enumerate(np.unique(ds)):
        block = Y[ds == task]
        has = (~np.isnan(block)).sum(axis=0)
        out[i] = np.where(has > 0, np.nansum(block, axis=0) / np.maximum(has, 1), np.nan)
    return out


def model_means(task_accuracy: np.ndarray) -> np.ndarray:
    """Each model's accuracy on average: the mean over tasks of its per-task accuracy
    (T, M) → (M,), each task counting once whatever its size; NaN for a model without results."""
    acc = np.asarray(task_accuracy, dtype=np.float64)
    has = (~np.isnan(acc)).sum(axis=0)
    return np.where(has > 0, np.nansum(acc, axis=0) / np.maximum(has, 1), np.nan)


def best_on_average(task_accuracy: np.ndarray, cand: np.ndarray | None = None,
                    worst: bool = False) -> int:
    """The best model on average (BMA) among ``cand``: the highest :func:`model_means` of the
    per-task accuracies (T, M), ties by :func:`argmax_ties`; models without a result never
    win. ``worst`` gives the lowest instead (the default weak model of a pair)."""
    mean = model_means(task_accuracy)
    score = np.where(np.isnan(mean), -np.inf, -mean if worst else mean)
    return int(argmax_ties(score, cand))


def s1(g: np.ndarray) -> np.ndarray:
    """S1(m) = mean_i g_m(x_i)."""
    return np.asarray(g, dtype=float).mean(axis=0)


def s2(g: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """S2(m) = mean_i 1[g_m(x_i) > threshold]."""
    return predicted_right(g, threshold).mean(axis=0)


def s3(s2_scores: np.ndarray, p: np.ndarray) -> np.ndarray:
    """S3(m) = p·S2 + (1 − p)·(1 − S2): expected accuracy when ĝ_m is right with probability p."""
    return p * s2_scores + (1.0 - p) * (1.0 - s2_scores)


def mean_distance(distances: np.ndarray, n_neighbours: int = 19,
                  inputs: np.ndarray | None = None) -> np.ndarray:
    """u: mean over inputs (axis −2) of each input's mean cosine distance to its ``n_neighbours``
    nearest (axis −1).

    Missing neighbours (``inf``, the pool ran out) are skipped; an input with no neighbour at all
    counts as :data:`FAR` (2, the largest cosine distance), so an empty pool reads as far, never
    as close. ``inputs`` masks which inputs count (FAR when none does). Leading axes are batches
    (e.g. several few-shot draws).
    """
    d = np.asarray(distances, dtype=float)[..., :n_neighbours]
    finite = np.isfinite(d)
    n_fin = finite.sum(axis=-1)
    per_input = np.where(n_fin > 0, np.where(finite, d, 0.0).sum(axis=-1) / np.maximum(n_fin, 1),
                         FAR)
    ok = np.ones(per_input.shape, dtype=bool) if inputs is None else np.asarray(inputs, dtype=bool)
    n_ok = ok.sum(axis=-1)
    return np.where(n_ok > 0, (per_input * ok).sum(axis=-1) / np.maximum(n_ok, 1), FAR)


def predicted_right(g: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """ĝ = 1[g > threshold]: the binary prediction that the model is right. Strict, so a g of
    exactly the threshold (no evidence either way) predicts a failure."""
    return np.asarray(g, dtype=float) > threshold


def labelled_right(y: np.ndarray, threshold: float | np.ndarray = 0.5) -> np.ndarray:
    """1[y ≥ threshold]: a result counted as right, the one rule for every label (a continuous
    score at exactly the threshold is right, as loaders binarise scores); NaN is False here,
    and callers mask it as missing."""
    return np.asarray(y, dtype=float) >= threshold


def predictor_hits(g: np.ndarray, y: np.ndarray, threshold: float = 0.5
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per model, (number of inputs where ĝ == y, number of inputs with a label), over axis −2.

    Continuous labels are binarised at ``threshold`` too, so p stays the probability that the
    binary prediction is right.
    """
    y = np.asarray(y, dtype=float)
    has = ~np.isnan(y)
    hit = (predicted_right(g, threshold) == labelled_right(y, threshold)) & has
    return hit.sum(axis=-2), has.sum(axis=-2)


def predictor_accuracy(g: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """p(m) = mean(ĝ_m == y_m) over inputs (axis −2) with a label; NaN for a model with none."""
    hits, n = predictor_hits(g, y, threshold)
    return np.where(n > 0, hits / np.maximum(n, 1), np.nan)


def kernel_smooth(u: float | np.ndarray, ref_u: np.ndarray, ref_p: np.ndarray,
                  bandwidth: float = 0.09, prior: float = 0.5,
                  prior_weight: float = PRIOR_WEIGHT) -> np.ndarray:
    """p̂(m) = (Σ_i w_i p_i,m + w₀·prior) / (Σ_i w_i + w₀), w_i = exp(−(u − u_i)² / 2h²).

    A Nadaraya–Watson estimate with one pseudo-reference of value ``prior`` and weight
    ``prior_weight`` (w₀, by default the weight of a pair 3 bandwidths away). Where reference
    pairs are near u they dominate; where every pair is far (or there is none), p̂ tends to the
    prior instead of copying the nearest pair however far it is. Pairs with a NaN p for a model
    are left out for that model. With ``prior_weight=0`` this is the plain estimate, NaN where
    no weight is left. ``u`` a number gives (M,); an array of n distances gives (n, M).
    """
    us = np.atleast_1d(np.asarray(u, dtype=float))
    ref_u = np.asarray(ref_u, dtype=float)
    ref_p = np.asarray(ref_p, dtype=float)
    m = ref_p.shape[1] if ref_p.ndim == 2 else 0
    if len(ref_u) == 0:
        out = np.full((len(us), m), prior if prior_weight > 0 else np.nan)
    else:
        # scaled before squaring: h² overflowed past h = 1e154 and was 0 below 1e-162 (a
        # bandwidth of 1e300 raised OverflowError; found by fuzzing). Past the float range
        # the weights are their limits, 1 (every pair alike) or 0 (none near).
        with np.errstate(over="ignore", under="ignore"):
            w = np.exp(-0.5 * ((us[:, None] - ref_u[None, :]) / float(bandwidth)) ** 2)  # (n, R)
        den = w @ (~np.isnan(ref_p)).astype(float) + prior_weight
        num = w @ np.nan_to_num(ref_p) + prior_weight * prior
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(den > 0, num / den, np.nan)
    return out[0] if np.ndim(u) == 0 else out


def self_estimate(g: np.ndarray, q: np.ndarray, threshold: float = 0.5,
                  inputs: np.ndarray | None = None) -> np.ndarray:
    """e(m) = mean_i [q_m(x_i) if ĝ_m(x_i) = 1 else 1 − q_m(x_i)], over axis −2: the accuracy
    the binary predictor ĝ_m = 1[g_m > threshold] would have on the task's inputs if q_m(x) were
    the true chance that m is right on x.

    Needs no label of the task: q is the share of correct results among more neighbours than
    g averages (the ``n_neighbours`` that define u), so where the neighbours agree e is near 1
    and where they split e is near ½. The kernel p̂ only sees the task's distance u and is
    nearly the same for every task at that distance; e differs per task and per model.
    ``inputs`` (..., n) masks the inputs that count (NaN when none does); leading axes are
    batches, as in :func:`mean_distance`.
    """
    g = np.asarray(g, dtype=float)
    q = np.asarray(q, dtype=float)
    right = np.where(g > threshold, q, 1.0 - q)
    ok = np.ones(g.shape[:-1], dtype=bool) if inputs is None else np.asarray(inputs, dtype=bool)
    n_ok = ok.sum(axis=-1)[..., None]
    total = np.where(ok[..., None], right, 0.0).sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_ok > 0, total / np.maximum(n_ok, 1), np.nan)


def leave_task_out_kernel(ref_u: np.ndarray, ref_p: np.ndarray, ref_task: np.ndarray,
                          bandwidth: float = 0.09, prior: float = 0.5,
                          prior_weight: float = PRIOR_WEIGHT) -> np.ndarray:
    """The kernel estimate (:func:`kernel_smooth`) at each reference pair's own u from the
    pairs of the OTHER tasks only (R, M): what p̂ would have said of that task had it been new,
    the input of the map :func:`fit_p_map` learns."""
    ref_u = np.asarray(ref_u, dtype=float)
    ref_p = np.asarray(ref_p, dtype=float).reshape(len(ref_u), -1)
    task = np.asarray(ref_task)
    out = np.empty(ref_p.shape)
    for t in set(task.tolist()):
        own = task == t
        out[own] = kernel_smooth(ref_u[own], ref_u[~own], ref_p[~own], bandwidth, prior,
                                 prior_weight)
    return out


#: fewest reference tasks :func:`fit_p_map` learns from; below it p̂ is the kernel estimate
MIN_MAP_TASKS = 5


def fit_p_map(kernel: np.ndarray, e: np.ndarray, p: np.ndarray, task: np.ndarray,
              min_tasks: int = MIN_MAP_TASKS) -> np.ndarray | None:
    """Coefficients (c₀, c_k, c_e) of p ≈ c₀ + c_k·kernel + c_e·e by least squares over every
    reference pair and model with all three known (one map for all models), or None when fewer
    than ``min_tasks`` tasks have such rows or the design is singular (then p̂ stays the kernel
    estimate).

    ``kernel`` (R, M) must be each pair's estimate without its own task
    (:func:`leave_task_out_kernel`) and ``e`` (R, M) its self-estimate (:func:`self_estimate`):
    the map is learnt from what would have been known of each reference task had it been new,
    so it never sees the labels of the task it is later applied to.
    """
    k = np.asarray(kernel, dtype=float)
    e = np.asarray(e, dtype=float)
    p = np.asarray(p, dtype=float)
    ok = np.isfinite(k) & np.isfinite(e) & np.isfinite(p)
    rows_task = np.broadcast_to(np.asarray(task)[:, None], ok.shape)[ok]
    if len(set(rows_task.tolist())) < min_tasks:
        return None
    A = np.column_stack([np.ones(int(ok.sum())), k[ok], e[ok]])
    if np.linalg.matrix_rank(A) < A.shape[1]:
        return None
    coef, *_ = np.linalg.lstsq(A, p[ok], rcond=None)
    return np.asarray(coef, dtype=float)


def apply_p_map(coef: np.ndarray | None, kernel: np.ndarray, e: np.ndarray | None) -> np.ndarray:
    """p̂ = c₀ + c_k·kernel + c_e·e clipped to [0, 1]; the kernel estimate itself where there is
    no map or no self-estimate (NaN e, e.g. a model added from a few labels)."""
    kernel = np.asarray(kernel, dtype=float)
    if coef is None or e is None:
        return kernel
    e = np.asarray(e, dtype=float)
    mapped = np.clip(coef[0] + coef[1] * kernel + coef[2] * e, 0.0, 1.0)
    return np.where(np.isfinite(e) & np.isfinite(kernel), mapped, kernel)


def beta_binomial_mean(prior_mean: np.ndarray, strength: float, hits: np.ndarray,
                       n: np.ndarray) -> np.ndarray:
    """Posterior mean of p under a Beta(a·p̂, a·(1 − p̂)) prior after ``hits`` of ``n``:
    (a·p̂ + hits) / (a + n). With no observation it is p̂; with many it tends to hits / n."""
    prior_mean = np.asarray(prior_mean, dtype=float)
    hits = np.asarray(hits, dtype=float)
    n = np.asarray(n, dtype=float)
    den = strength + n
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (strength * prior_mean + hits) / np.where(den > 0, den, 1.0),
                        prior_mean)


def fallback_probability(
    chosen: int, bma: int, n_plus: np.ndarray, n_minus: np.ndarray, p: np.ndarray,
    draws: int = 1000, seed: int | np.random.Generator | None = 0, slack: float = 0.0,
) -> float:
    """P(count(chosen) > count(BMA) − slack) with count(m) ~ Binomial(n⁺_m, p_m) +
    Binomial(n⁻_m, 1 − p_m).

    n⁺ and n⁻ are the inputs predicted right and wrong; the count is then the number of inputs
    the model really gets right if each binary prediction is right with probability p. The η
    rule uses it with ``slack`` 0; ``max_quality_drop`` ε with ``slack`` ε·n (a cheaper model
    is as likely to lose at most ε as the chosen one is to beat the BMA).
    """
    rng = np.random.default_rng(seed)

    def count(m: int) -> np.ndarray:
        pm = float(np.clip(np.nan_to_num(p[m], nan=0.5), 0.0, 1.0))
        return (rng.binomial(int(n_plus[m]), pm, draws)
                + rng.binomial(int(n_minus[m]), 1.0 - pm, draws))
    return float(np.mean(count(chosen) > count(bma) - slack))
