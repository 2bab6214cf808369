"""Per-input out-of-distribution score: is this input as far from the pool as inputs of a task
the pool has never seen?

The kNN predictor reads an input's k nearest pool inputs; when they are far, P(m, x) is an
average over unrelated questions. The score of an input is the mean cosine distance of those k
neighbours, s(x). The reference is the same score for every pool input with its own task left
out (a leave-one-task-out pass: each pool input scored as an input of a new task would be). The
conformal p-value

    p(x) = (1 + #{pool inputs i : s_i >= s(x)}) / (1 + n)

is then the share of new-task inputs at least as far from the pool as x: under exchangeability
with the pool's own tasks, P(p(x) <= a) <= a, so flagging p < a flags about a share a of
in-distribution inputs and more of those farther out. A pool of one task has no reference (its
inputs have no other task to be scored against): p is NaN and nothing is flagged.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from benchroute.exceptions import BenchrouteError
from benchroute.sampling import sample_key, task_queries
from benchroute.warning_site import user_stacklevel

logger = logging.getLogger(__name__)


def neighbour_score(distances: np.ndarray, k: int) -> np.ndarray:
    """s(x): the mean cosine distance of the first ``k`` neighbours (those found; NaN when the
    search found none)."""
    d = np.asarray(distances, dtype=np.float64)[:, :k]
    found = np.isfinite(d)
    with np.errstate(invalid="ignore"):
        return np.where(found.any(axis=1), np.where(found, d, 0.0).sum(axis=1)
                        / np.maximum(found.sum(axis=1), 1), np.nan)


def scored_rows(datasets: np.ndarray, max_queries: int | None = None, seed: int = 0
                ) -> dict[str, np.ndarray]:
    """The pool rows the reference scores, per task (each task's seeded sample; none for a
    pool of one task)."""
    datasets = np.asarray(datasets)
    tasks = sorted(set(datasets.tolist()))
    if len(tasks) < 2:
        return {}
    return {t: task_queries(np.flatnonzero(datasets == t), t, max_queries, seed) for t in tasks}


def pool_scores(predictor: Any, max_queries: int | None = None, seed: int = 0,
                known: np.ndarray | None = None) -> np.ndarray:
    """s_i of every pool row (index order) with the row's own task left out of the search; with
    ``max_queries``, of a seeded sample of at most that many rows per task (NaN for the others,
    which the p-values leave out): a task-balanced reference, in which a task larger than the
    cap counts as the cap. ``known``: scores a search already gave (the fit's reference pass,
    :func:`benchroute.reference.reference_pairs`); a task whose rows all have one is not
    searched again."""
    index, k = predictor.index_, predictor.k
    out = np.full(len(predictor.datasets_), np.nan)
    for task, rows in scored_rows(predictor.datasets_, max_queries, seed).items():
        if known is not None and np.isfinite(known[rows]).all():
            out[rows] = known[rows]
            continue
        dist, _ = index.search(index.vectors(rows), k, exclude_datasets=[task])
        out[rows] = neighbour_score(dist, k)
    return out


def p_values(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Conformal p-values of ``scores`` against the pool's leave-one-task-out scores."""
    ref = np.sort(np.asarray(reference, dtype=np.float64)[np.isfinite(reference)])
    s = np.asarray(scores, dtype=np.float64)
    if not len(ref):
        return np.full(s.shape, np.nan)
    at_least = len(ref) - np.searchsorted(ref, s, side="left")
    return np.where(np.isfinite(s), (1.0 + at_least) / (1.0 + len(ref)), np.nan)


def check_alpha(alpha: object, what: str = "ood_alpha") -> float:
    """A flagging level in (0, 1)."""
    from benchroute.inputs import is_real

    if not is_real(alpha) or not 0.0 < float(alpha) < 1.0:  # type: ignore[arg-type]
        raise BenchrouteError(f"{what} == {alpha!r:.40}, expected a number in (0, 1)")
    return float(alpha)  # type: ignore[arg-type]


class OODReference:
    """The pool's leave-one-task-out scores, computed once per fitted pool (from the fit's
    reference pass or a saved router when ``known`` gives them, else one search per
    task) and kept with the predictor they describe, so a router whose pool changes
    (``add_results``) gets a fresh reference."""

    def __init__(self, predictor: Any, max_queries: int | None = None, seed: int = 0,
                 known: np.ndarray | None = None) -> None:
        self.predictor = predictor
        self.sample = sample_key(max_queries, seed)
        self.scores = pool_scores(predictor, max_queries, seed, known)
        logger.debug("OOD reference: %d pool inputs scored", int(np.isfinite(self.scores).sum()))

    @property
    def empty(self) -> bool:
        """No pool input scored (a pool of one task): every p-value is NaN."""
        return not np.isfinite(self.scores).any()

    def p_values(self, Q: np.ndarray) -> np.ndarray:
        """p(x) of query vectors Q (n, d)."""
        return self.assess(Q)[0]

    def assess(self, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """p(x) of query vectors Q (n, d), and whether each has a near-duplicate in the pool
        (a pool input closer than :data:`~benchroute.predictors.NEAR_DUPLICATE`)."""
        dist, _ = self.predictor.index_.search(np.ascontiguousarray(Q, dtype=np.float32),
                                               self.predictor.k)
        return self.assess_distances(dist)

    def assess_distances(self, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`assess` from the distances (n, >= k) of each query's nearest pool inputs,
        ascending, when a search already found them."""
        from benchroute.predictors import NEAR_DUPLICATE

        k = self.predictor.k
        return p_values(neighbour_score(dist, k), self.scores), dist[:, 0] < NEAR_DUPLICATE


def reference_of(router: Any) -> OODReference:
    """The router's OOD reference, computed on first use for its current pool."""
    ref = getattr(router, "ood_reference_", None)
    if ref is None or ref.predictor is not router.predictor_ \
            or ref.sample != sample_key(router.max_task_queries, router.seed):
        ref = OODReference(router.predictor_, router.max_task_queries, router.seed)
        router.ood_reference_ = ref
    return ref


def warn_cannot_act(alpha: float) -> None:
    """Tell a caller who asked for the fallback that it cannot act (found by fuzzing: it did
    nothing, unsaid)."""
    warnings.warn(f"ood_alpha={alpha:g}: the pool has no out-of-distribution reference "
                  "(a pool of one task has no other task to score its inputs against), so "
                  "no input falls back", UserWarning, stacklevel=user_stacklevel())


def fall_back(pick: np.ndarray, ood_p: np.ndarray | None, alpha: float | None,
              default: int) -> tuple[np.ndarray, np.ndarray]:
    """The choices with inputs flagged (p < alpha) moved to ``default`` (a position in the
    same candidate list), and the flags. No alpha, or no reference (p NaN): nothing moves."""
    n = len(pick)
    if alpha is None or ood_p is None:
        return pick, np.zeros(n, dtype=bool)
    alpha = check_alpha(alpha)
    if n and np.isnan(np.asarray(ood_p, dtype=np.float64)).all():
        warn_cannot_act(alpha)
    flag = np.asarray(ood_p) < alpha
    out = np.array(pick, copy=True)
    out[flag] = default
    return out, flag
