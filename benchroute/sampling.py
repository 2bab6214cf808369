"""Which pool inputs serve as queries in the fit's leave-task-out passes, and the seeds of
per-task draws.

Why: the reference pass that feeds p̂ (whose searches also give the OOD reference), the tuned
predictor's cross-validation and the form-shift reference each search the pool once per pool
input, so their cost grows with the square of the pool (hours at a million inputs on a small
machine), while what they estimate (a task's mean distance and predictor accuracy, the best k
and prior, the distribution of neighbour distances, a task's mean fingerprint difference) are
means that a seeded sample of each task's inputs estimates as well, to within its sampling
error. The pool that these
queries search, and that routing searches, stays whole.

A task's sample depends only on the seed, the task's name and its rows, never on the other
tasks, so appending results (``Router.add_results``) keeps the samples of the tasks it does not
touch, as a full refit would.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

#: seed stream of the query sample, apart from the few-shot draws of the reference pass
_SAMPLE_STREAM = 7


def task_seed(seed: int, task: str, *more: int) -> list[int]:
    """Seed of one task's draws, from the task's NAME: independent of which other tasks are in
    the pass and of the task's position in any list."""
    return [seed, zlib.crc32(task.encode("utf-8", "surrogatepass")), *more]


def sample_key(cap: int | None, seed: int) -> tuple[int, int] | None:
    """What a sample depends on: (cap, seed), or None when every input is used (the seed then
    plays no part). Results computed on a sample record it, and a cache is reused only under
    the same key."""
    return None if cap is None else (int(cap), int(seed))


def task_queries(rows: np.ndarray, task: str, cap: int | None, seed: int) -> np.ndarray:
    """The rows (ascending) of one task that serve as queries: all of them, or ``cap`` drawn
    without replacement by a seed from the task's name when the task has more."""
    rows = np.asarray(rows, dtype=np.int64)
    if cap is None or len(rows) <= cap:
        return rows
    rng = np.random.default_rng(task_seed(seed, str(task), _SAMPLE_STREAM))
    return np.sort(rng.choice(rows, int(cap), replace=False))


def query_mask(groups: Sequence[Any] | np.ndarray | None, n: int, cap: int | None,
               seed: int) -> np.ndarray:
    """(n,) bool: the inputs that serve as queries, at most ``cap`` per task (``groups``; one
    task when None)."""
    keep = np.zeros(n, dtype=bool)
    if cap is None:
        keep[:] = True
        return keep
    g = np.full(n, "", dtype=object) if groups is None else np.asarray(groups, dtype=object)
    for task in sorted(set(g.tolist()), key=str):
        keep[task_queries(np.flatnonzero(g == task), str(task), cap, seed)] = True
    return keep


def is_cap(cap: object) -> bool:
    """None, or an integer >= 2 (a task's sample must leave an input to score next to one
    labelled input)."""
    return cap is None or (not isinstance(cap, bool) and isinstance(cap, (int, np.integer))
                           and int(cap) >= 2)
