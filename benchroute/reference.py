"""The leave-one-task-out reference pass that feeds p̂: (u_i, p_i,m) pairs over the pool's tasks.

For each task i: one index search of its inputs with task i (and any excluded tasks) left out;
then for each few-shot fraction α and repeat, α·n_i random labelled inputs of task i join the
pool by a brute-force merge (they leave the test set), and (u_i, p_i,m) is recorded, with the
predictors' label-free self-estimate e_i,m (:func:`benchroute.scoring.self_estimate`) from which
:meth:`ReferencePairs.p_map` learns how to correct the kernel estimate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from benchroute.ood import neighbour_score
from benchroute.predictors import KNNCorrectnessPredictor, Neighbours, knn_mean
from benchroute.sampling import sample_key, task_queries, task_seed
from benchroute.scoring import (
    fit_p_map,
    labelled_right,
    leave_task_out_kernel,
    mean_distance,
    predictor_accuracy,
    self_estimate,
)

DEFAULT_ALPHAS: tuple[float, ...] = tuple(round(0.02 * i, 2) for i in range(15))  # 0 .. 0.28
FEW_SHOT_CAP = 50


@dataclass(frozen=True)
class TaskPairs:
    """One task's reference pairs, with what they depended on."""

    u: np.ndarray          # (R_i,)
    p: np.ndarray          # (R_i, M)
    alpha: np.ndarray      # (R_i,)
    touched: frozenset[str]  # tasks among the neighbours used
    used_fallback: bool    # whether any prediction fell back to the pool's mean label
    e: np.ndarray | None = None  # (R_i, M) self-estimates; None when not known
    #: the pool rows the task was scored on, and their OOD scores s_i from the same search
    #: (:func:`benchroute.ood.neighbour_score`); None for pairs read from a cache or a file
    rows: np.ndarray | None = None
    ood: np.ndarray | None = None


@dataclass(frozen=True)
class PairParams:
    """The parameters a task's pairs depend on besides the pool (the fitted predictor's k and
    weighting are part of the predictor). Cached pairs are reused only under equal ones, so
    ``set_params`` after a fit never mixes pairs of the old parameters with the new."""

    alphas: tuple[float, ...]
    repeats: int
    seed: int
    n_neighbours: int
    threshold: float

    @classmethod
    def of(cls, alphas: Iterable[float], repeats: int, seed: int, n_neighbours: int,
           threshold: float) -> PairParams:
        return cls(tuple(float(a) for a in alphas), int(repeats), int(seed), int(n_neighbours),
                   float(threshold))

    def to_dict(self) -> dict[str, object]:
        return {"alphas": list(self.alphas), "repeats": self.repeats, "seed": self.seed,
                "n_neighbours": self.n_neighbours, "threshold": self.threshold}


@dataclass(frozen=True)
class ReferencePairs:
    """(u_i, p_i,m) pairs: one row per (task, α, repeat), and per task what its pairs depended on
    (``touched``: the tasks among its neighbours; ``fallback``: tasks whose predictions used the
    pool's mean label), which tells when a task's pairs stay exact with another task left out."""

    u: np.ndarray        # (R,)
    p: np.ndarray        # (R, M)
    task: np.ndarray     # (R,) the held-out task of each pair
    alpha: np.ndarray    # (R,)
    touched: Mapping[str, frozenset[str]] = field(default_factory=dict)
    fallback: frozenset[str] = frozenset()
    #: (R, M) the predictors' self-estimate of p on each pair's scored inputs
    #: (:func:`~benchroute.scoring.self_estimate`); None for pairs saved before it existed,
    #: and then p̂ is the kernel estimate alone
    e: np.ndarray | None = None
    #: (max_queries, seed) when each task's pairs were computed on a sample of its inputs
    #: (:func:`benchroute.sampling.task_queries`); None when on every input
    sample: tuple[int, int] | None = None
    #: the parameters the pairs were computed with; None when unknown (never reused as a cache)
    params: PairParams | None = None

    @property
    def tasks(self) -> list[str]:
        return sorted(set(self.task.tolist()))

    def part(self, task: str) -> TaskPairs:
        rows = self.task == task
        return TaskPairs(self.u[rows], self.p[rows], self.alpha[rows],
                         self.touched.get(task, frozenset()), task in self.fallback,
                         None if self.e is None else self.e[rows])

    def columns(self, keep: Sequence[int] | np.ndarray) -> ReferencePairs:
        """The same pairs for some models only (columns ``keep`` of p and e)."""
        return ReferencePairs(self.u, self.p[:, keep], self.task, self.alpha, self.touched,
                              self.fallback, None if self.e is None else self.e[:, keep],
                              self.sample, self.params)

    def p_map(self, bandwidth: float) -> np.ndarray | None:
        """The map from (kernel estimate, self-estimate) to p̂ learnt on these pairs
        (:func:`~benchroute.scoring.fit_p_map`, each pair's kernel estimate from the other
        tasks' pairs), or None when it cannot be learnt (no self-estimates, too few tasks).

        A deterministic function of the pairs, so the pairs of a pool without some tasks
        (:func:`reference_pairs` with ``also_exclude``) give the map of a router fitted without
        them. Computed once per bandwidth and kept on the object.
        """
        if self.e is None or len(self.u) == 0:
            return None
        memo: dict[float, np.ndarray | None] = self.__dict__.setdefault("_p_map", {})
        h = float(bandwidth)
        if h not in memo:
            kernel = leave_task_out_kernel(self.u, self.p, self.task, h)
            memo[h] = fit_p_map(kernel, self.e, self.p, self.task)
        return memo[h]

    @classmethod
    def from_parts(cls, parts: Sequence[tuple[str, TaskPairs]], n_models: int,
                   sample: tuple[int, int] | None = None, params: PairParams | None = None
                   ) -> ReferencePairs:
        if not parts:
            return cls(np.zeros(0), np.zeros((0, n_models)), np.zeros(0, dtype=object), np.zeros(0),
                       e=np.zeros((0, n_models)), sample=sample, params=params)
        es = [tp.e for _, tp in parts]
        return cls(
            np.concatenate([tp.u for _, tp in parts]),
            np.concatenate([tp.p for _, tp in parts]).reshape(-1, n_models),
            np.concatenate([np.full(len(tp.u), t, dtype=object) for t, tp in parts]),
            np.concatenate([tp.alpha for _, tp in parts]),
            {t: tp.touched for t, tp in parts},
            frozenset(t for t, tp in parts if tp.used_fallback),
            None if any(e is None for e in es)
            else np.concatenate([e for e in es if e is not None]).reshape(-1, n_models),
            sample, params,
        )


def few_shot_count(n: int, alpha: float, cap: int = FEW_SHOT_CAP) -> int:
    """α·n labelled inputs (floor), capped, leaving at least one input to score."""
    return int(min(np.floor(alpha * n), cap, max(n - 1, 0)))


def alpha_key(alpha: float) -> int:
    """An integer for α in seeds (α to 1e-6), so a draw depends on α's value, not its position."""
    return int(round(float(alpha) * 1_000_000))


def task_pairs(
    predictor: KNNCorrectnessPredictor, task: str, alphas: Sequence[float] = (0.0,),
    repeats: int = 1, seed: int = 0, n_neighbours: int = 19, threshold: float = 0.5,
    also_exclude: Sequence[str] = (), max_batch: int = 4_000_000,
    max_queries: int | None = None,
) -> TaskPairs:
    """Reference pairs of one held-out task of the predictor's pool (see :func:`reference_pairs`).

    All (α, repeat) draws of the task are evaluated in one batch: each draw's labelled inputs are
    padded to the largest draw and merged with the pool's top K at once. Large tasks go draw by
    draw (``max_batch`` bounds the batch's label tensor). With ``max_queries``, a task of more
    inputs is represented by a seeded sample of them (:func:`benchroute.sampling.task_queries`).
    """
    rng = np.random.default_rng(task_seed(seed, task))
    K = max(predictor.k, n_neighbours)
    rows = task_queries(np.flatnonzero(predictor.datasets_ == task), task, max_queries, seed)
    n = len(rows)
    Xt, Yt = predictor.index_.vectors(rows), predictor.labels_[rows]
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
    m = Yt.shape[1]
    per_batch = max(1, max_batch // max(1, n * (K + n_max) * m))
    us: list[float] = []
    ps: list[np.ndarray] = []
    es: list[np.ndarray] = []
    fell = False
    for start in range(0, len(draws), per_batch):
        chunk = draws[start:start + per_batch]
        u, p, e, f = _pairs_batch(predictor, base, Yt, sims, chunk, means, K, n_neighbours,
                                  threshold)
        us.extend(u)
        ps.extend(p)
        es.extend(e)
        fell = fell or f
    return TaskPairs(np.asarray(us, dtype=float), np.asarray(ps, dtype=float).reshape(-1, m),
                     np.asarray([a for a, _ in draws], dtype=float), frozenset(base.tasks or ()),
                     fell, np.asarray(es, dtype=float).reshape(-1, m), rows,
                     neighbour_score(base.distances, predictor.k))


def neighbour_rate(distances: np.ndarray, labels: np.ndarray, n_neighbours: int,
                   threshold: float, means: np.ndarray) -> np.ndarray:
    """q (n, M): the share of each model's results ≥ ``threshold`` among an input's
    ``n_neighbours`` nearest pool inputs (those that define u), ``means`` where none has a
    result. The chance of success that :func:`~benchroute.scoring.self_estimate` compares the
    binary prediction with: averaged over more neighbours than g (k = 5), it is less noisy."""
    lab = np.asarray(labels, dtype=float)
    binary = np.where(np.isnan(lab), np.nan, labelled_right(lab, threshold).astype(float))
    return knn_mean(distances, binary, n_neighbours, "uniform", means)[0]


def _pairs_batch(predictor: KNNCorrectnessPredictor, base: Neighbours, Yt: np.ndarray,
                 sims: np.ndarray | None, draws: list[tuple[float, np.ndarray]],
                 means: np.ndarray, K: int, n_neighbours: int, threshold: float
                 ) -> tuple[list[float], list[np.ndarray], list[np.ndarray], bool]:
    """(u, p, e) of several draws at once; inputs used as labels are masked out of the test
    set."""
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
    q = neighbour_rate(nb.distances, nb.labels, n_neighbours, threshold, means).reshape(C, n, m)
    e = self_estimate(g, q, threshold, inputs=test)
    fell = bool((flag.reshape(C, n, m) & test[:, :, None]).any())
    return u.tolist(), list(p), list(e), fell


def reference_pairs(
    predictor: KNNCorrectnessPredictor, alphas: Sequence[float] = (0.0,), repeats: int = 1,
    seed: int = 0, n_neighbours: int = 19, threshold: float = 0.5,
    also_exclude: Iterable[str] = (), cache: ReferencePairs | None = None,
    max_queries: int | None = None, ood_out: np.ndarray | None = None,
) -> ReferencePairs:
    """The leave-one-task-out pass over the tasks of a fitted predictor's pool.

    Tasks in ``also_exclude`` are left out of the pass and of every search. A task with fewer
    than two inputs, or with no other task left to be its pool, gives no pairs.

    ``cache`` holds pairs computed without ``also_exclude`` (e.g. the router's own); a task's
    cached pairs are reused when they were computed with the same parameters and sample, none
    of their neighbours came from the excluded tasks and no prediction used the fallback mean
    (which depends on the pool), because the pairs are then provably the same as those of a
    pool fitted without the excluded tasks.

    ``max_queries``: at most this many inputs of each task are scored (a seeded sample; None:
    all), which makes the pass linear instead of quadratic in the pool's size.

    ``ood_out`` (one entry per pool row) receives the OOD score of each row a task's search
    scored: the same leave-one-task-out search is the OOD reference's
    (:func:`benchroute.ood.pool_scores`), so a fit searches once for both.
    """
    excluded = set(also_exclude)
    ds = predictor.datasets_
    tasks = sorted(set(ds.tolist()) - excluded)
    params = PairParams.of(alphas, repeats, seed, n_neighbours, threshold)
    usable = cache is not None and cache.params == params \
        and cache.sample == sample_key(max_queries, seed)
    parts: list[tuple[str, TaskPairs]] = []
    for task in tasks:
        if (ds == task).sum() < 2 or len(tasks) < 2:
            continue
        hit = cache.part(task) if usable and cache is not None and task in cache.touched \
            else None
        if hit is None or hit.used_fallback or hit.touched & excluded:
            hit = task_pairs(predictor, task, alphas, repeats, seed, n_neighbours, threshold,
                             sorted(excluded), max_queries=max_queries)
        if ood_out is not None and hit.rows is not None and hit.ood is not None:
            ood_out[hit.rows] = hit.ood
        parts.append((task, hit))
    return ReferencePairs.from_parts(parts, predictor.n_models_, sample_key(max_queries, seed),
                                     params)
