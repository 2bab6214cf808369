"""The pool neighbours of one task's inputs, searched once, and the selection for any split of
those inputs into scored and labelled ones.

A few-shot experiment draws many such splits of the same task; with the neighbours searched
once, each draw only merges its labelled inputs by brute force (no further index search). The
router's own ``select_embedded`` and ``predict_proba_embedded`` go through this class too, so
there is one path from neighbours to a decision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from benchroute.exceptions import BenchrouteError
from benchroute.inputs import check_labels, check_vectors
from benchroute.new_models import added_columns, extend_reference

# a labelled input within SELF_DISTANCE of a scored one is the same input: never its neighbour
from benchroute.predictors import EXTRA_NEIGHBOURS, NEAR_DUPLICATE, SELF_DISTANCE, Neighbours
from benchroute.scoring import mean_distance, predictor_hits
from benchroute.selection import METHODS, Selection, select

if TYPE_CHECKING:
    from benchroute.router import Router



class TaskNeighbours:
    """The K = max(k, n_neighbours) nearest pool inputs of each of a task's inputs X (n, d),
    with the pool tasks ``exclude_datasets`` left out (exactly, as in a router fitted without
    them)."""

    def __init__(self, router: Router, X: np.ndarray, exclude_datasets: Sequence[str] = (),
                 keep_duplicates: bool = False) -> None:
        self.router = router
        self.X = check_vectors(X, "task inputs")
        self.exclude = router.check_excluded(exclude_datasets)
        self.K = max(router.k, router.n_neighbours)
        self.keep_duplicates = keep_duplicates
        found = router.predictor_.neighbours(self.X, self.K + EXTRA_NEIGHBOURS, self.exclude or None)
        # pool inputs that are near-copies of a task input would hand it its own label
        dropped, self.in_pool = found.beyond(NEAR_DUPLICATE, self.K)
        self.base = found.head(self.K) if keep_duplicates else dropped
        self.means = router.predictor_.fallback_means(self.exclude)

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
            d[d < SELF_DISTANCE] = np.inf
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
        cand = router.candidate_indices(candidates)
        if method == "S3" and len(router.tasks_) - len(self.exclude) < 2:
            raise BenchrouteError("S3 needs a pool of at least two tasks (p̂ is learnt by "
                                  "leaving one task out); this pool has one. Use S1 or S2, or "
                                  "fit on more tasks")
        Y = self._labels(lab, labels)
        nb = self._merged(r, lab, Y)
        g = router.predictor_.aggregate(nb, self.means)[0]
        hits, n = self.labeled_hits(lab, Y) if Y is not None else (None, None)
        added = list(getattr(router, "added_", {}).values())
        if added:  # added models: P(new, x) and p̂ from their own fits (docs/method.md)
            g = np.hstack([g, added_columns(router, self.X[r])])
            if hits is not None and n is not None:
                hits, n = np.r_[hits, np.zeros(len(added))], np.r_[n, np.zeros(len(added))]
        reference = extend_reference(router.reference_without(self.exclude), added,
                                     router.prior_strength)
        sel = select(g, float(mean_distance(nb.distances, router.n_neighbours)),
                     reference, router.models_, cand,
                     router.bma_index(cand, self.exclude), method, fallback, router.config(),
                     hits, n, len(lab))
        return dataclasses.replace(sel, n_in_pool=int(self.in_pool[r].sum()),
                                   duplicates_kept=self.keep_duplicates)
