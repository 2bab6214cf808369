"""Task-level format shift: do a task's inputs differ in *form* from their pool neighbours?

The kNN predictors and p̂ read a task through its nearest pool inputs. When those share the
task's topic but not its format (free-form arithmetic problems whose nearest inputs are
multiple-choice mathematics questions), every score reads the neighbours' strengths and the
vector distance u does not notice. This module measures the format gap from the texts alone.

Each input x has a form fingerprint f(x) of :data:`FEATURES` (length, lines, digits, lettered
answer options, how the prompt ends, code and other markers): cheap, deterministic, no model.
A task with inputs x_1 … x_n and, for each, its ``n_neighbours`` nearest pool inputs N(x_i)
(near-duplicates left out, as in selection) has the standardised mean difference

    D = (1/n) Σ_i (f(x_i) − mean_{j ∈ N(x_i)} f(j)) / σ,     T = sqrt(mean over features of D²)

with σ the per-feature standard deviation over the pool (1 where a feature is constant). The
reference is T of every pool task scored with that task left out (the leave-one-task-out pass
of the reference pairs, one search per task), and the conformal p-value

    p = (1 + #{pool tasks j : T_j >= T}) / (1 + number of pool tasks)

is the share of the pool's own new tasks at least as far off in form. S3 falls back to the best
model on average when p < :data:`SHIFT_ALPHA` (fixed in advance, not tuned on any result:
under exchangeability with the pool's tasks it moves at most that share of in-distribution
tasks). With 1/SHIFT_ALPHA − 1 pool tasks or fewer p cannot fall below the level and nothing
moves. Excluded pool tasks are left out exactly: a pool task's T is recomputed when one of its
neighbours came from an excluded task.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchroute.data.text import normalize_text
from benchroute.memo import make_room
from benchroute.predictors import EXTRA_NEIGHBOURS, NEAR_DUPLICATE
from benchroute.sampling import sample_key, task_queries

logger = logging.getLogger(__name__)

__all__ = ["FEATURES", "SAVED_ARRAYS", "SHIFT_ALPHA", "FormShift", "ShiftReference",
           "fingerprints", "reference_of", "task_shift"]

#: the conformal level below which S3 falls back (a false-alarm rate fixed in advance)
SHIFT_ALPHA = 0.05
FEATURES = ("log_chars", "log_lines", "digit_share", "lettered_options", "ends_question",
            "ends_colon", "code", "non_ascii_share", "math_symbol_share")
#: the arrays :meth:`ShiftReference.arrays` gives a saved router's pool.npz
SAVED_ARRAYS = ("shift_features", "shift_tasks", "shift_raw", "shift_touched")
#: pool tasks' shift references kept per router for different sets of excluded tasks
_MEMO = 8
#: draws of a pool task's inputs, of a smaller task's size, in its reference (each task
#: counts once in the p-value, as the share of its draws at least as far off)
DRAWS = 20

# [^\S\n]: blanks within the line; \s* would run over every blank line after each line start
# (quadratic in a run of blank lines) and counts the same matches
_OPTION = re.compile(r"^[^\S\n]*\(?[A-Ja-j][.):]\s", re.M)
_CODE = re.compile(r"(\bdef |\breturn\b|\bimport |#include|\bfunction\b|```|=>|[{}]|;\s*$)",
                   re.M)
_MATH = frozenset("$\\^=+*/<>")


def fingerprint(text: str) -> list[float]:
    """f(x) of one text, in the order of :data:`FEATURES`, after the normalisation the stores
    apply (line ends, surrounding whitespace), so a query and a pool input compare alike."""
    text = normalize_text(text)
    n = max(len(text), 1)
    end = text.rstrip()
    return [float(np.log1p(len(text))), float(np.log1p(text.count("\n") + 1)),
            sum(c.isdigit() for c in text) / n, float(len(_OPTION.findall(text)) >= 2),
            float(end.endswith("?")), float(end.endswith(":")), float(bool(_CODE.search(text))),
            sum(ord(c) > 127 for c in text) / n, sum(c in _MATH for c in text) / n]


def fingerprints(texts: Sequence[str]) -> np.ndarray:
    """f(x) of each text: (n, len(FEATURES)) float64."""
    return np.asarray([fingerprint(t) for t in texts], dtype=np.float64).reshape(-1, len(FEATURES))


@dataclass(frozen=True)
class FormShift:
    """A task's format shift against its pool neighbours.

    ``statistic`` is T; ``p_value`` its conformal p-value against the ``n_reference`` pool
    tasks (NaN with fewer than two pool tasks); ``difference`` the standardised mean
    difference D per feature (task minus neighbours); the fallback fires when
    ``p_value < alpha``.
    """

    statistic: float
    p_value: float
    alpha: float
    n_reference: int
    difference: dict[str, float]

    @property
    def fired(self) -> bool:
        return bool(self.p_value < self.alpha)

    def largest(self) -> str:
        """The feature that differs most, with its signed standardised difference."""
        name = max(self.difference, key=lambda f: abs(self.difference[f]))
        return f"{name} {self.difference[name]:+.2f} sd"

    def to_dict(self) -> dict[str, object]:
        return {"statistic": self.statistic, "p_value": self.p_value, "alpha": self.alpha,
                "n_reference": self.n_reference, "fired": self.fired,
                "difference": dict(self.difference)}


def _neighbour_means(F: np.ndarray, dist: np.ndarray, rows: np.ndarray, K: int,
                     keep_duplicates: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the mean fingerprint of its first K usable neighbours (found, and not a
    near-duplicate unless kept), and the pool rows used (-1 where none)."""
    ok = (rows >= 0) & np.isfinite(dist)
    if not keep_duplicates:
        ok &= dist >= NEAR_DUPLICATE
    ok &= np.cumsum(ok, axis=1) <= K
    w = ok.astype(np.float64)
    means = np.einsum("nk,nkf->nf", w, F[np.where(ok, rows, 0)]) / np.maximum(w.sum(1), 1)[:, None]
    return means, np.where(ok, rows, -1)


def _search(predictor: Any, Q: np.ndarray, K: int, exclude: Sequence[str]
            ) -> tuple[np.ndarray, np.ndarray]:
    return predictor.index_.search(np.ascontiguousarray(Q, dtype=np.float32),
                                   K + EXTRA_NEIGHBOURS, exclude_datasets=list(exclude) or None)


def statistic(D: np.ndarray) -> float:
    """T from the standardised mean difference D (features,)."""
    return float(np.sqrt(np.mean(np.square(D))))


class ShiftReference:
    """The pool's fingerprints and each pool task's mean difference to its neighbours with the
    task left out, computed once per fitted pool (or brought by a saved router, ``saved``); :meth:`statistics` gives the reference T's
    with more tasks left out, recomputing only the tasks whose neighbours those tasks touched."""

    def __init__(self, predictor: Any, texts: Sequence[str], n_neighbours: int,
                 max_queries: int | None = None, seed: int = 0,
                 saved: Mapping[str, np.ndarray] | None = None) -> None:
        self.predictor = predictor
        self.queries = (max_queries, seed)  # each task's mean over a seeded sample of its inputs
        self.n_texts = len(texts)
        self.K = n_neighbours
        self.datasets = np.asarray(predictor.datasets_)
        self._memo: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
        # per pool task, its sampled inputs' differences (rows × features): the reference of a
        # task smaller than it (:meth:`reference_draws`); a saved router's are searched again
        # on first use (they are not saved)
        self._inputs: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
        self._size_of: dict[str, int] | None = None
        self._draws: dict[tuple[tuple[str, ...], int], list[np.ndarray]] = {}
        if saved is None:
            self.F = fingerprints(texts)
            self.raw, self.touched = self._pass(())
            logger.debug("form-shift reference: %d pool tasks", len(self.raw))
        else:  # what :meth:`arrays` saved, checked by the loader: no fingerprint, no search
            self.F = np.asarray(saved["shift_features"], dtype=np.float64)
            tasks = [str(t) for t in saved["shift_tasks"]]
            touched = np.asarray(saved["shift_touched"], dtype=bool)
            self.raw = {t: np.asarray(d, dtype=np.float64)
                        for t, d in zip(tasks, saved["shift_raw"])}
            self.touched = {t: frozenset(u for u, hit in zip(tasks, row) if hit)
                            for t, row in zip(tasks, touched)}

    def arrays(self) -> dict[str, np.ndarray]:
        """The reference as arrays for a saved router's pool.npz (``shift_features`` (N, F),
        ``shift_tasks`` (T,), ``shift_raw`` (T, F), ``shift_touched`` (T, T): which tasks each
        task's neighbours came from), so a load neither fingerprints nor searches the pool."""
        tasks = sorted(self.raw)
        raw = np.asarray([self.raw[t] for t in tasks], dtype=np.float64)
        touched = np.asarray([[u in self.touched[t] for u in tasks] for t in tasks], dtype=bool)
        return dict(zip(SAVED_ARRAYS, (self.F, np.asarray(tasks, dtype=str),
                                       raw.reshape(len(tasks), len(FEATURES)),
                                       touched.reshape(len(tasks), len(tasks)))))

    def fits(self, router: Any) -> bool:
        """Whether this is the reference of ``router``'s current pool and parameters: the
        fingerprints and neighbours depend on the texts and the index, not on the labels, so
        a changed model set (remove_model, a model added on every row) keeps it."""
        texts = getattr(router, "texts_", None)
        index = router.predictor_.index_
        return (texts is not None and self.predictor.index_ is index
                and self.n_texts == len(texts) == len(index) and router.n_neighbours == self.K
                and self.sample == sample_key(router.max_task_queries, router.seed))

    @property
    def sample(self) -> tuple[int, int] | None:
        return sample_key(*self.queries)

    def task_difference(self, task: str, exclude: Sequence[str] = ()
                        ) -> tuple[np.ndarray, frozenset[str], np.ndarray]:
        """A pool task's mean difference to its neighbours with it and ``exclude`` left out,
        the tasks those neighbours came from, and the pool rows whose fingerprints it read
        (the task's sampled inputs and their neighbours)."""
        diffs, touched, read = self.task_inputs(task, exclude)
        return diffs.mean(axis=0), touched, read

    def task_inputs(self, task: str, exclude: Sequence[str] = ()
                    ) -> tuple[np.ndarray, frozenset[str], np.ndarray]:
        """:meth:`task_difference` before the mean: each sampled input's difference (rows ×
        features)."""
        rows = task_queries(np.flatnonzero(self.datasets == task), task, *self.queries)
        dist, nb = _search(self.predictor, self.predictor.index_.vectors(rows), self.K,
                           [task, *exclude])
        means, used = _neighbour_means(self.F, dist, nb, self.K)
        found = used[used >= 0]
        touched = frozenset(self.datasets[found].tolist())
        diffs = self.F[rows] - means
        key = tuple(sorted(set(exclude)))
        if key in self._inputs or not key:
            self._inputs.setdefault(key, {})[task] = diffs
        return diffs, touched, np.union1d(rows, found)

    def _pass(self, exclude: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, frozenset[str]]]:
        tasks = sorted(set(self.datasets.tolist()) - set(exclude))
        raw: dict[str, np.ndarray] = {}
        touched: dict[str, frozenset[str]] = {}
        if len(tasks) < 2:
            return raw, touched
        for task in tasks:
            raw[task], touched[task], _ = self.task_difference(task, exclude)
        return raw, touched

    def scale(self, exclude: Sequence[str] = ()) -> np.ndarray:
        """σ: the per-feature standard deviation over the pool without ``exclude``."""
        keep = ~np.isin(self.datasets, list(exclude)) if exclude else slice(None)
        sd = self.F[keep].std(axis=0)
        return np.where(sd > 1e-6, sd, 1.0)  # a constant feature: raw units

    def statistics(self, exclude: Sequence[str] = ()) -> np.ndarray:
        """T_j of every pool task not in ``exclude``, each scored with itself and ``exclude``
        left out (equal to the reference of a router fitted without ``exclude``)."""
        key = tuple(sorted(set(exclude)))
        raw = self._memo.get(key)
        if raw is None:
            left = set(key)
            tasks = sorted(set(self.raw) - left)
            raw = {t: (self.task_difference(t, key)[0] if self.touched[t] & left else self.raw[t])
                   for t in tasks} if len(tasks) >= 2 else {}
            make_room(self._memo, _MEMO)
            self._memo[key] = raw
        sd = self.scale(key)
        return np.asarray([statistic(d / sd) for d in raw.values()], dtype=np.float64)

    def reference_draws(self, n: int, exclude: Sequence[str] = ()) -> list[np.ndarray]:
        """The reference T's at a task size of ``n``, one array per pool task not in
        ``exclude``: the task's own T when it has ``n`` sampled inputs or fewer, else T of
        :data:`DRAWS` seeded draws of ``n`` of its inputs. Why: T is a mean over the task's
        inputs, far noisier over 1 input than over 20, and tested against whole tasks a task
        of one short question fell back in 14% of the pack's subjects (5% at 5 inputs and
        more; found by a review)."""
        key = tuple(sorted(set(exclude)))
        tasks = sorted(set(self.raw) - set(key))
        if len(tasks) < 2:
            return []
        memo = self._draws.get((key, n))  # the same for every task of that size
        if memo is not None:
            return memo
        sd = self.scale(key)
        if key not in self._inputs:
            make_room(self._inputs, _MEMO + 1, evictable=bool)  # the pool's own (key ()) stays
        inputs = self._inputs.setdefault(key, {})  # before: a recomputed task fills it
        full = self.statistics(key)
        out = []
        for task, whole in zip(tasks, full):
            size = self._sizes().get(task, 0)
            if size <= n:
                out.append(np.array([whole]))
                continue
            diffs = inputs.get(task)
            if diffs is None:  # a saved router's, or a task touched by ``exclude``
                if self.touched[task] & set(key):
                    diffs = self.task_inputs(task, key)[0]
                else:  # as without exclusions: searched once, kept for every key
                    diffs = self._inputs.get((), {}).get(task)
                    if diffs is None:
                        diffs = self.task_inputs(task)[0]
                inputs[task] = diffs
            rng = np.random.default_rng([self.queries[1], zlib.crc32(task.encode()), n])
            picks = np.argsort(rng.random((DRAWS, len(diffs))), axis=1)[:, :n]
            out.append(np.sqrt(np.mean(np.square(diffs[picks].mean(axis=1) / sd), axis=1)))
        make_room(self._draws, 4 * _MEMO)
        self._draws[key, n] = out
        return out

    def _sizes(self) -> dict[str, int]:
        """Sampled inputs per pool task (what its reference is a mean over)."""
        if self._size_of is None:
            self._size_of = {t: len(task_queries(np.flatnonzero(self.datasets == t), t,
                                                 *self.queries)) for t in self.raw}
        return self._size_of


def reference_of(router: Any) -> ShiftReference | None:
    """The router's form-shift reference, computed on first use for its current pool; None
    when the router has no pool texts (fitted on arrays)."""
    texts = getattr(router, "texts_", None)
    if texts is None:
        return None
    ref = getattr(router, "shift_reference_", None)
    if ref is None or not ref.fits(router):
        ref = ShiftReference(router.predictor_, texts, router.n_neighbours,
                             router.max_task_queries, router.seed)
        router.shift_reference_ = ref
    return ref


def task_shift(reference: ShiftReference, F: np.ndarray, means: np.ndarray,
               exclude: Sequence[str] = (), alpha: float = SHIFT_ALPHA) -> FormShift:
    """The :class:`FormShift` of a task from its inputs' fingerprints F (n, features) and the
    mean fingerprints of their pool neighbours (n, features)."""
    sd = reference.scale(exclude)
    D = (np.asarray(F) - np.asarray(means)).mean(axis=0) / sd
    T = statistic(D)
    ref = reference.reference_draws(len(F), exclude)
    # each pool task counts once: the share of its draws at least as far off
    p = (1.0 + sum(float((d >= T).mean()) for d in ref)) / (1.0 + len(ref)) \
        if len(ref) >= 2 else float("nan")
    return FormShift(T, p, alpha, len(ref), {f: float(v) for f, v in zip(FEATURES, D)})


class TaskForm:
    """A task's inputs' fingerprints and their neighbours' mean fingerprints, searched once
    (lazily) for every split of the task into scored and labelled inputs."""

    def __init__(self, router: Any, X: np.ndarray, texts: Sequence[str],
                 exclude: Sequence[str], keep_duplicates: bool = False,
                 found: Any = None) -> None:
        self.router, self.X, self.exclude = router, X, list(exclude)
        self.F = fingerprints(texts)
        self.keep_duplicates = keep_duplicates
        # the task's own search (Neighbours with rows), reused when wide enough: without
        # near-copies, its neighbours with them left out (every one of which counts)
        self.found = found
        self._means: np.ndarray | None = None

    def shift(self, rows: np.ndarray) -> FormShift | None:
        """The task's form shift over the inputs ``rows``; None without pool texts."""
        ref = reference_of(self.router)
        if ref is None:
            return None
        if self._means is None:
            width = ref.K + EXTRA_NEIGHBOURS
            found = self.found
            wide_enough = width if self.keep_duplicates else ref.K
            if found is not None and found.rows is not None \
                    and found.rows.shape[1] >= wide_enough:
                dist, nb = found.distances[:, :width], found.rows[:, :width]  # no second search
            else:
                dist, nb = _search(self.router.predictor_, self.X, ref.K, self.exclude)
            self._means = _neighbour_means(ref.F, dist, nb, ref.K, self.keep_duplicates)[0]
        return task_shift(ref, self.F[rows], self._means[rows], self.exclude)
