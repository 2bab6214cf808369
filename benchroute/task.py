"""The pool neighbours of one task's inputs, searched once, and the selection for any split of
those inputs into scored and labelled ones.

A few-shot experiment draws many such splits of the same task; with the neighbours searched
once, each draw only merges its labelled inputs by brute force (no further index search). The
router's own ``select_embedded`` and ``predict_proba_embedded`` go through this class too, so
there is one path from neighbours to a decision.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from benchroute.data.metrics import short_repr
from benchroute.exceptions import BenchrouteError
from benchroute.inputs import (
    LabeledRecords,
    Texts,
    check_labels,
    check_vectors,
    parse_labeled,
    parse_texts,
)
from benchroute.memo import make_room
from benchroute.new_models import added_columns, extend_reference
from benchroute.predictors import (
    EXTRA_NEIGHBOURS,
    NEAR_DUPLICATE,
    SELF_DISTANCE,
    Neighbours,
    check_is_fitted,
)
from benchroute.reference import ReferencePairs, neighbour_rate, reference_pairs
from benchroute.routing import embed_queries
from benchroute.scoring import mean_distance, predictor_hits, self_estimate
from benchroute.selection import METHODS, Selection, select
from benchroute.shift import TaskForm
from benchroute.warning_site import user_stacklevel

if TYPE_CHECKING:
    from benchroute.router import Router

#: reference pairs kept per router for different sets of excluded tasks
_EXCLUDED_MEMO = 8


def check_excluded(router: Router, exclude_datasets: Sequence[str] | None) -> list[str]:
    """The pool tasks to leave out, sorted; unknown names and all tasks are refused. One name
    may be given as a string (``exclude_datasets="math"`` read as its letters before), and
    None leaves none out."""
    check_is_fitted(router, "predictor_")
    if exclude_datasets is None:  # none left out, as the default ()
        return []
    if not isinstance(exclude_datasets, str | Iterable):
        raise BenchrouteError(f"exclude_datasets: expected task names (strings), got "
                              f"{short_repr(exclude_datasets, 80)}")
    names = [exclude_datasets] if isinstance(exclude_datasets, str) else list(exclude_datasets)
    if not all(isinstance(t, str) for t in names):
        raise BenchrouteError(f"exclude_datasets: expected task names (strings), got "
                              f"{short_repr(names, 80)}")
    exclude = sorted(set(names))
    tasks = router.tasks_
    unknown = [t for t in exclude if t not in tasks]
    if unknown:
        raise BenchrouteError(f"exclude_datasets: unknown task(s) {unknown}; known tasks: "
                              f"{tasks[:10]}")
    if exclude and len(exclude) >= len(tasks):
        raise BenchrouteError(f"exclude_datasets names every task of the pool ({len(exclude)}); "
                              "leave at least one")
    return exclude


def _warn_added_on_excluded(router: Router, exclude: list[str]) -> None:
    """An added model is fitted on its labels, wherever they lie: leaving a task out does not
    refit it without the labels of that task's inputs (found by fuzzing: a model labelled on
    the left-out task alone became the best model on average of the others). Said, not
    hidden."""
    from benchroute.new_models import pool_labels_at

    for name, added in router.added_.items():
        rows, _ = pool_labels_at(router, added.X)
        inside = int(np.isin(router.datasets_[rows[rows >= 0]], exclude).sum())
        if inside:
            warnings.warn(f"added model {name!r}: {inside} of its {len(added.y)} labels are on "
                          f"inputs of the excluded task(s) {exclude[:5]}; its P and task "
                          "accuracies still use them (remove_model, or add it from labels "
                          "outside those tasks, for a clean leave-one-task-out)",
                          UserWarning, stacklevel=user_stacklevel())


def reference_without(router: Router, exclude_datasets: Sequence[str]) -> ReferencePairs:
    """The reference pairs of a router's pool without some tasks, equal to those of a router
    fitted without them (a task's pairs are recomputed only when they depended on an excluded
    task); the last few are kept on the router, keyed by every parameter they depend on, so
    ``set_params`` never meets a stale entry."""
    check_is_fitted(router, "reference_")
    tasks = tuple(check_excluded(router, exclude_datasets))  # "t1" is one task, not "t", "1"
    if not tasks:
        return router.reference_
    key = (tasks, tuple(router.alphas), router.repeats, router.seed, router.n_neighbours,
           router.threshold, router.max_task_queries)
    memo = router.__dict__.setdefault("_excluded", {})
    pairs = memo.get(key)
    if pairs is None:  # another thread may evict any entry: the value is returned, not re-read
        pairs = reference_pairs(
            router.predictor_, router.alphas, router.repeats, router.seed, router.n_neighbours,
            router.threshold, also_exclude=tasks, cache=router.reference_,
            max_queries=router.max_task_queries)
        make_room(memo, _EXCLUDED_MEMO)
        memo[key] = pairs
    return pairs


def task_vectors(router: Router, task_examples: Texts, labeled: LabeledRecords | None
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, list[str]]:
    """The vectors of a task's examples to score, and of its labelled inputs with their labels
    (None, None without any), then the texts of all of them (scored, then labelled). A
    labelled example is not scored as well, unless every example is labelled: then each is
    scored next to the others' labels, never its own."""
    texts = parse_texts(task_examples)
    lab_texts, lab_Y = parse_labeled(labeled, router.models_) if labeled is not None else ([], None)
    if lab_texts:
        labeled_set = set(lab_texts)
        texts = [t for t in texts if t not in labeled_set] or texts
    vectors = embed_queries(router, texts + lab_texts)
    if not lab_texts:
        return vectors, None, None, texts
    return vectors[:len(texts)], vectors[len(texts):], lab_Y, texts + lab_texts


def task_view(router: Router, Q: np.ndarray, labeled_X: np.ndarray | None,
              labeled_Y: np.ndarray | None, exclude_datasets: Sequence[str],
              keep_duplicates: bool = False, texts: Sequence[str] | None = None
              ) -> tuple[TaskNeighbours, int, int]:
    """One neighbour search for a task's queries and its labelled inputs together: the
    neighbours, then the number of queries n and of labelled inputs L (rows n … n + L − 1).
    ``texts``: the queries' texts, then the labelled inputs' (for the form-shift test)."""
    check_is_fitted(router, "predictor_")
    Q = check_vectors(Q, "queries")
    if len(Q) == 0:
        raise BenchrouteError("no inputs to score")
    if (labeled_X is None) != (labeled_Y is None):
        raise BenchrouteError("labeled_X and labeled_Y go together: give both or neither")
    LX = check_vectors(labeled_X, "labeled_X") if labeled_X is not None and len(labeled_X) \
        else np.zeros((0, Q.shape[1]), np.float32)
    if LX.shape[1] != Q.shape[1]:
        raise BenchrouteError(f"labeled_X holds {LX.shape[1]}-d vectors, the queries "
                              f"{Q.shape[1]}-d; embed both with the router's encoder")
    if labeled_Y is not None and len(labeled_Y) != len(LX):  # an empty labeled_X too
        raise BenchrouteError(f"labeled_X has {len(LX)} rows, labeled_Y {len(labeled_Y)}; "
                              "expected one label row per vector")
    if texts is not None:
        texts = parse_texts(list(texts), "texts")
    return (TaskNeighbours(router, np.vstack([Q, LX]), exclude_datasets, keep_duplicates,
                           texts), len(Q), len(LX))



class TaskNeighbours:
    """The K = max(k, n_neighbours) nearest pool inputs of each of a task's inputs X (n, d),
    with the pool tasks ``exclude_datasets`` left out (exactly, as in a router fitted without
    them). With the inputs' ``texts`` (n,), S3 also tests their form shift
    (:mod:`benchroute.shift`) when the router knows its pool's texts."""

    def __init__(self, router: Router, X: np.ndarray, exclude_datasets: Sequence[str] = (),
                 keep_duplicates: bool = False, texts: Sequence[str] | None = None) -> None:
        self.router = router
        self.X = check_vectors(X, "task inputs")
        self.exclude = check_excluded(router, exclude_datasets)
        if self.exclude and getattr(router, "added_", None):
            _warn_added_on_excluded(router, self.exclude)
        self.K = max(router.predictor_.k, router.n_neighbours)  # the fitted k (set_params: at the next fit)
        self.keep_duplicates = keep_duplicates
        # pool inputs that are near-copies of a task input would hand it its own label
        if keep_duplicates:
            found = router.predictor_.neighbours(self.X, self.K + EXTRA_NEIGHBOURS,
                                                 self.exclude or None)
            dropped, self.in_pool = found.beyond(NEAR_DUPLICATE, self.K)
        else:
            found, dropped, self.in_pool = router.predictor_.neighbours_past(
                self.X, self.K, NEAR_DUPLICATE, self.exclude or None)
        # the pool task of each input's nearest near-copy ("" for none), for the warning below
        self.copy_task = np.full(len(self.X), "", dtype=object)
        if found.rows is not None and found.rows.shape[1]:
            nearest = np.asarray(router.predictor_.datasets_)[np.maximum(found.rows[:, 0], 0)]
            self.copy_task = np.where(self.in_pool, nearest, self.copy_task)
        self.base = found.head(self.K) if keep_duplicates else dropped
        self.means = router.predictor_.fallback_means(self.exclude)
        if texts is not None and len(texts) != len(self.X):
            raise BenchrouteError(f"texts: {len(texts)} texts for {len(self.X)} task inputs; "
                                  "expected one text per input")
        # the form shift reads the same neighbours: with near-copies left out, those kept
        self.form = None if texts is None else TaskForm(
            router, self.X, texts, self.exclude, keep_duplicates,
            found if keep_duplicates else dropped)

    def __len__(self) -> int:
        return len(self.X)

    def _rows(self, rows: Iterable[int] | np.ndarray, what: str) -> np.ndarray:
        r = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, dtype=np.int64)
        if r.ndim != 1 or (len(r) and (r.min() < 0 or r.max() >= len(self.X))):
            raise BenchrouteError(f"{what}: row numbers must be in [0, {len(self.X)})")
        return r

    def _merged(self, rows: np.ndarray, lab: np.ndarray, labels: np.ndarray | None) -> Neighbours:
        nb = self.base.take(rows)
        if len(lab):
            d = 1.0 - (self.X[rows] @ self.X[lab].T).astype(np.float64)
            d[d < SELF_DISTANCE] = np.inf  # a labelled input that is the scored one: never its neighbour
            nb = nb.merge(d, labels, self.K)  # type: ignore[arg-type]
        return nb

    def _labels(self, lab: np.ndarray, labels: np.ndarray | None) -> np.ndarray | None:
        if not len(lab):
            return None
        if labels is None:
            raise BenchrouteError("labelled rows need labels: give one label row per labelled input")
        Y = check_labels(labels, "labeled_Y", len(self.router.models_))
        if len(Y) != len(lab):
            raise BenchrouteError(f"labeled_X has {len(lab)} rows, labeled_Y {len(Y)}; expected "
                                  "one label row per vector")
        # the pool's models only: an added model's P does not come from pool neighbours
        return Y[:, :self.router.predictor_.n_models_]

    def proba(self, rows: Iterable[int] | np.ndarray, labeled: Iterable[int] | np.ndarray = (),
              labels: np.ndarray | None = None) -> np.ndarray:
        """g (len(rows), M): the predictions for the inputs ``rows``, with the inputs
        ``labeled`` (labels (L, M)) joined to the pool."""
        r, lab = self._rows(rows, "rows"), self._rows(labeled, "labeled")
        nb = self._merged(r, lab, self._labels(lab, labels))
        g = self.router.predictor_.aggregate(nb, self.means)[0]
        return np.hstack([g, added_columns(self.router, self.X[r])])

    def labeled_hits(self, lab: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each predictor's (right predictions, labels) on the labelled inputs, each predicted
        leave-one-out from the pool and the other labelled inputs."""
        g = self.router.predictor_.aggregate(self._merged(lab, lab, labels), self.means)[0]
        return predictor_hits(g, labels, self.router.threshold)

    def _scored_candidates(self, cand: np.ndarray) -> np.ndarray:
        """The candidates with a result on some pool task left in: one without any has g = 0.5
        at every input, invented, and S1 chose it over models with results (found by a
        review). Left out with a warning; none left is an error."""
        acc = self.router.task_accuracy_
        kept = acc.loc[~acc.index.isin(self.exclude)]
        known = kept.notna().any(axis=0).to_numpy()
        none = [self.router.models_[i] for i in cand if not known[i]]
        if not none:
            return cand
        if len(none) == len(cand):
            raise BenchrouteError(f"no candidate has a result on the pool's tasks left in "
                                  f"({none}); nothing to score them by")
        warnings.warn(f"left out of the candidates: {none} (no result on the pool's tasks left "
                      "in, so no neighbour tells how they fare)", UserWarning,
                      stacklevel=user_stacklevel())
        return np.array([i for i in cand if known[i]])

    def select(self, rows: Iterable[int] | np.ndarray, labeled: Iterable[int] | np.ndarray = (),
               labels: np.ndarray | None = None, candidates: Iterable[str] | None = None,
               method: str = "S3", fallback: bool = True) -> Selection:
        """Choose a model for the inputs ``rows``; the inputs ``labeled`` (labels (L, M)) join
        the pool and update p̂ (see :func:`benchroute.selection.select`)."""
        router = self.router
        if method not in METHODS:
            raise BenchrouteError(f"unknown method {method!r}; choose one of {list(METHODS)}")
        r, lab = self._rows(rows, "rows"), self._rows(labeled, "labeled")
        if len(r) == 0:
            raise BenchrouteError("no inputs to score")
        cand = self._scored_candidates(router.candidate_indices(candidates))
        if method == "S3" and len(router.tasks_) - len(self.exclude) < 2:
            raise BenchrouteError("S3 needs a pool of at least two tasks (p̂ is learnt by "
                                  "leaving one task out); this pool has one. Use S1 or S2, or "
                                  "fit on more tasks")
        Y = self._labels(lab, labels)
        nb = self._merged(r, lab, Y)
        g = router.predictor_.aggregate(nb, self.means)[0]
        # label-free: the binary predictions against the share of correct results among the
        # n_neighbours nearest (the neighbours that define u), as the reference pass records it
        q = neighbour_rate(nb.distances, nb.labels, router.n_neighbours, router.threshold,
                           self.means)
        self_est = self_estimate(g, q, router.threshold)
        hits, n = self.labeled_hits(lab, Y) if Y is not None else (None, None)
        added = list(getattr(router, "added_", {}).values())
        if added:  # added models: P(new, x) and p̂ from their own fits (docs/method.md)
            g = np.hstack([g, added_columns(router, self.X[r])])
            self_est = np.r_[self_est, np.full(len(added), np.nan)]
            if hits is not None and n is not None:  # their predictors' hits on the labels
                full = check_labels(labels, "labeled_Y", len(router.models_))  # type: ignore[arg-type]
                h, c = predictor_hits(added_columns(router, self.X[lab]),
                                      full[:, router.predictor_.n_models_:], router.threshold)
                hits, n = np.r_[hits, h], np.r_[n, c]
        reference = extend_reference(reference_without(router, self.exclude), added,
                                     router.prior_strength)
        sel = select(g, float(mean_distance(nb.distances, router.n_neighbours)),
                     reference, router.models_, cand,
                     router.bma_index(cand, self.exclude), method, fallback, router.config(),
                     hits, n, len(lab),
                     None if self.form is None or method != "S3" else self.form.shift(r),
                     self_est)
        self._warn_task_in_pool(r)
        return dataclasses.replace(sel, n_in_pool=int(self.in_pool[r].sum()),
                                   duplicates_kept=self.keep_duplicates)

    def _warn_task_in_pool(self, r: np.ndarray) -> None:
        """Most inputs have a near-copy in one pool task: the task is a pool task. Its copies
        are left out of the neighbours, but its other inputs (and its reference pairs) still
        inform the choice; holding it out is what selecting for it as a new task means."""
        tasks, counts = np.unique(self.copy_task[r][self.in_pool[r]], return_counts=True)
        if not len(tasks) or 2 * counts.max() < len(r):
            return
        task = str(tasks[counts.argmax()])  # never an excluded one: those are not searched
        copies = "kept among" if self.keep_duplicates else "left out of"
        warnings.warn(f"{counts.max()} of the {len(r)} inputs are near-copies of inputs of the "
                      f"pool task {task!r}: the copies are {copies} their neighbours, and the "
                      "task's other inputs and its reference pairs still inform the choice; pass "
                      f"exclude_datasets=[{task!r}] to select as for a new task",
                      UserWarning, stacklevel=user_stacklevel())
