"""Per-model kNN correctness predictors g_m(x): the mean label of model m over the k nearest pool
inputs of x (docs/method.md, "Formulas").

One neighbour search serves every model: the labels of the k nearest pool inputs are gathered
as an (n, k, M) tensor and averaged per model, ignoring neighbours without a label for that model.
:func:`knn_mean` is that average, the one implementation shared with the tuned per-input
predictor of :mod:`benchroute.tuning`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from benchroute.exceptions import BenchrouteError, NotFittedError
from benchroute.index import VectorIndex

_CHUNK = 4096
#: A neighbour this close (cosine distance) to a query is the query itself (or a duplicate).
#: Vectors are normalised to within 1e-6 of unit norm (``EXACT_NORM_TOL``), so an input's
#: distance to itself, 1 - |x|² plus float32 rounding, stays well below it.
SELF_DISTANCE = 1e-5
#: A pool input closer than this cosine distance (cosine similarity above 0.99) to a query is
#: the same question (whitespace, punctuation or a word changed): on RouterDC and RouteLLM the
#: pairs below it are such variants, while pairs at 0.02 already differ in what they ask
#: (docs/routing.md). Its label would leak into the prediction, so routing and selection
#: leave such neighbours out unless told to keep them.
NEAR_DUPLICATE = 0.01
#: neighbours searched beyond k so that left-out near-duplicates can be replaced
EXTRA_NEIGHBOURS = 4
#: how many near-copies of one query a second, wider search looks past (a query with more
#: keeps what lies within them; the search of a heavily copied text costs this much more)
MAX_COPIES = 1024


def kept_mask(dist: np.ndarray, rows: np.ndarray, past: float) -> np.ndarray:
    """The search results that count as neighbours: a row found at distance ``past`` or more
    (not the query itself or a near-copy of it)."""
    return (dist >= past) & np.isfinite(dist) & (rows >= 0)


def first_kept(dist: np.ndarray, rows: np.ndarray, ok: np.ndarray, K: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a search's ``dist``/``rows``, the first K columns where ``ok``, in order;
    inf / -1 past them: the neighbours kept when near-copies are left out."""
    pick = np.argsort(~ok, axis=1, kind="stable")[:, :K]
    hit = np.take_along_axis(ok, pick, axis=1)
    pad = K - pick.shape[1]
    d = np.where(hit, np.take_along_axis(dist, pick, axis=1), np.inf)
    r = np.where(hit, np.take_along_axis(rows, pick, axis=1), -1)
    if pad > 0:
        d = np.pad(d, ((0, 0), (0, pad)), constant_values=np.inf)
        r = np.pad(r, ((0, 0), (0, pad)), constant_values=-1)
    return d, r


def past_copies(search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                Q: np.ndarray, dist: np.ndarray, rows: np.ndarray, K: int, past: float,
                size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one rule for a query whose first search (``dist``, ``rows``) left it fewer than
    min(K, ``size``) neighbours at distance ``past`` or more although its list was full (it met
    more near-copies than the search's margin): searched again alone, up to
    :data:`MAX_COPIES` wider, by ``search(queries, width) -> (dist, rows)`` (the router's
    index, or a tuning fold's training rows). Only those queries pay for it. Returns their
    indices in ``Q`` and the wider search's (dist, rows); none when nothing is short or the
    search cannot widen (``size`` rows in all)."""
    ok = kept_mask(dist, rows, past)
    short = np.flatnonzero((ok.sum(axis=1) < min(K, size)) & (rows[:, -1] >= 0))
    wide = min(size, dist.shape[1] + MAX_COPIES)
    if not len(short) or wide <= dist.shape[1]:
        return short[:0], dist[:0], rows[:0]
    d2, r2 = search(np.ascontiguousarray(np.atleast_2d(Q), dtype=np.float32)[short], wide)
    return short, d2, r2


@dataclass(frozen=True)
class Neighbours:
    """The K nearest pool (or extra) inputs of each query.

    ``distances`` (n, K) are cosine distances, ascending, ``inf`` past the pool's end;
    ``labels`` (n, K, M) are the neighbours' labels, NaN where missing.
    """

    distances: np.ndarray
    labels: np.ndarray
    tasks: frozenset[str] | None = None  # pool tasks among these neighbours, when known
    rows: np.ndarray | None = None  # (n, K) pool rows (-1 past the end), from a pool search

    def __len__(self) -> int:
        return len(self.distances)

    def head(self, k: int) -> Neighbours:
        return Neighbours(self.distances[:, :k], self.labels[:, :k],
                          rows=None if self.rows is None else self.rows[:, :k])

    def take(self, rows: np.ndarray) -> Neighbours:
        return Neighbours(self.distances[rows], self.labels[rows], self.tasks,
                          None if self.rows is None else self.rows[rows])

    def beyond(self, within: float, K: int) -> tuple[Neighbours, np.ndarray]:
        """The first K neighbours at distance ``within`` or more (the query itself and its
        near-duplicates left out), padded with ``inf`` / NaN, and per query whether any was
        left out."""
        near = np.asarray(self.distances) < within
        d = np.where(near, np.inf, self.distances)
        order = np.argsort(d, axis=1, kind="stable")[:, :K]
        d = np.take_along_axis(d, order, axis=1)
        lab = np.take_along_axis(np.asarray(self.labels), order[:, :, None], axis=1)
        rows = None if self.rows is None else \
            np.where(np.isfinite(d), np.take_along_axis(self.rows, order, axis=1), -1)
        return (Neighbours(d, np.where(np.isfinite(d)[:, :, None], lab, np.nan), self.tasks,
                           rows), np.asarray(near.any(axis=1)))

    def merge(self, extra_dist: np.ndarray, extra_labels: np.ndarray, K: int) -> Neighbours:
        """The K nearest among these neighbours and extra points at distances ``extra_dist``
        (n, L) with labels ``extra_labels`` (L, M): how labelled inputs join the pool without
        touching the index."""
        dist = np.concatenate([self.distances, extra_dist], axis=1)
        labels = np.concatenate(
            [self.labels, np.broadcast_to(extra_labels, (len(dist), *extra_labels.shape))], axis=1)
        order = np.argsort(dist, axis=1, kind="stable")[:, :K]
        return Neighbours(np.take_along_axis(dist, order, axis=1),
                          np.take_along_axis(labels, order[:, :, None], axis=1), self.tasks)


#: Rows read at a time by :func:`column_means` over a subset of rows.
_MEAN_ROWS = 65_536


def column_means(Y: np.ndarray, empty: float = 0.5, rows: np.ndarray | None = None) -> np.ndarray:
    """Per-column mean over the non-NaN entries of ``rows`` (default: every row); ``empty``
    where a column has none. The rows are read a chunk at a time (NumPy's ``nansum`` copies
    what it sums), so the means of a large pool, or of most of it (a fold's training rows,
    the pool without a task), never copy its labels."""
    Y = np.asarray(Y)
    n = len(Y) if rows is None else len(rows)
    sums = np.zeros(Y.shape[1:], dtype=np.result_type(Y.dtype, np.float32))
    counts = np.zeros(Y.shape[1:], dtype=np.int64)
    for start in range(0, n, _MEAN_ROWS):
        part = (Y[start:start + _MEAN_ROWS] if rows is None
                else Y[np.asarray(rows)[start:start + _MEAN_ROWS]])
        sums += np.nansum(part, axis=0)
        counts += (~np.isnan(part)).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), empty)


def knn_mean(distances: np.ndarray, labels: np.ndarray, k: int, weights: str = "uniform",
             means: np.ndarray | float = 0.5, prior: float = 0.0
             ) -> tuple[np.ndarray, np.ndarray]:
    """The weighted kNN mean of each model's labels over the first k neighbours, shrunk toward
    ``means`` by ``prior`` pseudo-neighbours, and the "no neighbour" rule.

    Parameters
    ----------
    distances : ndarray (n, K)
        Cosine distances, ascending; ``inf`` past the pool's end (no neighbour).
    labels : ndarray (n, K, M)
        The neighbours' labels, NaN where a neighbour has no result for a model.
    k : int
        Neighbours used (the first k of K).
    weights : {"uniform", "distance"}
        "distance" weighs a neighbour by 1 / (distance + 1e-6), as scikit-learn does; with a
        ``prior`` the weights are rescaled to average 1 over the neighbours found, so the prior
        is a pseudo-count in units of neighbours for both weightings.
    means : ndarray (M,) or float
        Each model's mean label: the shrinkage target, and the value of a cell with no labelled
        neighbour and no prior.
    prior : float
        Pseudo-count a >= 0: P = (sum_i w_i y_im + a * mean_m) / (sum_i w_i + a).

    Returns
    -------
    P : ndarray (n, M)
    fallback : ndarray (n, M) bool
        Cells that had no labelled neighbour (their P is the model's mean).
    """
    return KNNSums(distances, labels, [k], weights).mean(k, means, prior)


class KNNSums:
    """The sums behind :func:`knn_mean` over the first k neighbours, for several k at once.

    Why: tuning scores every (k, weighting, prior) of a grid on the same neighbours; the sums
    for the largest k pass through the smaller ones, so one pass over the neighbours' labels
    per weighting serves the whole grid, instead of one pass per configuration. :func:`knn_mean`
    is this with a single k, so there is one rule.
    """

    def __init__(self, distances: np.ndarray, labels: np.ndarray, ks: Sequence[int],
                 weights: str = "uniform") -> None:
        if weights not in ("uniform", "distance"):
            raise BenchrouteError(f"weights == {weights!r}, must be 'uniform' or 'distance'")
        self.weights = weights
        K = max(ks)
        d = np.asarray(distances, dtype=np.float64)[:, :K]
        lab = np.asarray(labels)[:, :K, :]
        found = np.isfinite(d)
        raw = (np.where(found, 1.0 / (np.where(found, d, 1.0) + 1e-6), 0.0)
               if weights == "distance" else found.astype(np.float64))
        known = ~np.isnan(lab)
        w = raw[:, :, None] * known
        y = np.where(known, lab, 0.0)
        # per k: sum_i w_i y_im, sum_i w_i over labelled cells, neighbours found, sum_i w_i
        self.sums: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        num = den = n_found = w_all = 0.0
        prev = 0
        for k in sorted(set(int(k) for k in ks)):
            seg = slice(prev, min(k, d.shape[1]))
            num = num + np.einsum("nkm,nkm->nm", w[:, seg], y[:, seg])
            den = den + w[:, seg].sum(axis=1)
            n_found = n_found + found[:, seg].sum(axis=1, keepdims=True)
            w_all = w_all + raw[:, seg].sum(axis=1, keepdims=True)
            self.sums[k] = (np.asarray(num), np.asarray(den), np.asarray(n_found),
                            np.asarray(w_all))
            prev = seg.stop

    def mean(self, k: int, means: np.ndarray | float = 0.5, prior: float = 0.0
             ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`knn_mean` with the first k neighbours (k one of those given)."""
        num, den, n_found, w_all = self.sums[int(k)]
        if self.weights == "distance" and prior > 0:
            # weights rescaled to average 1 over the neighbours found
            scale = n_found / np.maximum(w_all, 1e-12)
            num, den = num * scale, den * scale
        target = np.broadcast_to(np.asarray(means, dtype=np.float64), den.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            # a weighted mean of labels in [0, 1] lies in [0, 1]; num and den are summed in
            # different orders, so it can land one rounding step outside (1.0000000000000002)
            P = np.clip((num + prior * target) / (den + prior), 0.0, 1.0)
        fallback = den <= 0
        return np.where(den + prior > 0, P, target), fallback


_T = TypeVar("_T")
_E = TypeVar("_E", bound="Estimator")


def set_checked_params(obj: _T, valid: list[str], params: Mapping[str, object]) -> _T:
    """scikit-learn's ``set_params``: set the named parameters, refusing unknown names."""
    for key, value in params.items():
        if key not in valid:
            raise ValueError(f"invalid parameter {key!r} for {type(obj).__name__}; "
                             f"valid parameters: {valid}")
        setattr(obj, key, value)
    return obj


def same_value(a: object, b: object) -> bool:
    """``a == b`` for parameters, arrays included (``alphas=np.array(...)``: == is elementwise,
    and its truth value ambiguous or its shapes unbroadcastable)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        x, y = np.asarray(a), np.asarray(b)
        return bool(x.shape == y.shape and np.array_equal(x, y))
    return bool(a == b)


class Estimator:
    """scikit-learn's estimator protocol without importing scikit-learn (it costs 0.7 s at
    import, and a first answer takes about 1 s): the parameters are ``__init__``'s, set by
    ``set_params`` (unknown names refused), shown by ``repr`` where they differ from the
    defaults, and ``check_is_fitted``, ``clone`` and the tags read them. ``_fitted_attribute``
    names what fit sets."""

    _fitted_attribute: str = ""

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self: _E, **params: object) -> _E:
        return set_checked_params(self, self._param_names(), params)

    def _changed_params(self) -> dict[str, object]:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
                    if p.default is not inspect.Parameter.empty}
        return {k: v for k, v in self.get_params().items()
                if not same_value(defaults.get(k, object()), v)}

    def __repr__(self) -> str:
        changed = self._changed_params()
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def __sklearn_is_fitted__(self) -> bool:
        return bool(self._fitted_attribute) and hasattr(self, self._fitted_attribute)

    def __sklearn_tags__(self) -> Any:
        """What scikit-learn's utilities ask of an estimator (they import it already)."""
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False))


def check_is_fitted(obj: object, attribute: str) -> None:
    if not hasattr(obj, attribute):
        raise NotFittedError(
            f"This {type(obj).__name__} instance is not fitted yet. Call 'fit' with appropriate "
            "arguments before using this estimator."
        )


class KNNCorrectnessPredictor(Estimator):
    """g_m(x) = mean label of model m over the k nearest pool inputs of x.

    Parameters
    ----------
    k : int
        Neighbours per prediction (the paper's 5).
    weights : {"uniform", "distance"}
        "distance" weights each neighbour by 1 / (cosine distance + 1e-6), as scikit-learn does.
    index_factory, nprobe, ef_search
        FAISS configuration of the pool index (see :class:`~benchroute.index.VectorIndex`).
    """

    def __init__(self, k: int = 5, weights: str = "uniform", index_factory: str = "Flat",
                 nprobe: int | None = None, ef_search: int | None = None) -> None:
        self.k = k
        self.weights = weights
        self.index_factory = index_factory
        self.nprobe = nprobe
        self.ef_search = ef_search

    _fitted_attribute = "index_"

    def _validate_params(self) -> None:
        if not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise BenchrouteError(f"k == {self.k}, must be >= 1")
        if self.weights not in ("uniform", "distance"):
            raise BenchrouteError(f"weights == {self.weights!r}, must be 'uniform' or 'distance'")

    def fit(self, X: np.ndarray, Y: np.ndarray, datasets: Iterable[str] | None = None,
            instance_ids: Iterable[str] | None = None) -> KNNCorrectnessPredictor:
        """Index the pool.

        Parameters
        ----------
        X : ndarray (N, d)
            Unit-norm embeddings of the benchmark inputs.
        Y : ndarray (N, M)
            Labels in [0, 1] (0/1 correctness, or a continuous quality); NaN = no result.
        datasets : sequence of str (N,), optional
            The benchmark task of each input, for leave-task-out searches.
        """
        self._validate_params()
        X = np.ascontiguousarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float32)
        if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
            raise BenchrouteError(f"X (N, d) and Y (N, M) must have the same N; got {X.shape}, {Y.shape}")
        if len(X) == 0:
            raise BenchrouteError("the pool is empty")
        ds = np.asarray(list(datasets) if datasets is not None else ["pool"] * len(X), dtype=object)
        index = VectorIndex(self.index_factory, self.nprobe, self.ef_search)
        index.add(X, ds, list(instance_ids) if instance_ids is not None else None)
        return self.attach(index, Y)

    def attach(self, index: VectorIndex, Y: np.ndarray) -> KNNCorrectnessPredictor:
        """Use an already built index (e.g. one read from disk) as the fitted pool."""
        self._validate_params()
        Y = np.asarray(Y, dtype=np.float32)
        if len(index) != len(Y):
            raise BenchrouteError(f"the index holds {len(index)} inputs but Y has {len(Y)} rows")
        self.index_ = index
        # one extra all-NaN row, so that FAISS's "no neighbour" row id -1 gathers missing labels
        self._padded = np.vstack([Y, np.full((1, Y.shape[1]), np.nan, np.float32)])
        self.labels_ = self._padded[:-1]
        self.datasets_ = index.datasets_
        # a model with no label at all gets an uninformative 0.5
        self.model_means_ = column_means(Y, 0.5)
        self.n_models_ = Y.shape[1]
        return self

    # ------------------------------------------------------------------ neighbours
    def neighbours(self, Q: np.ndarray, K: int, exclude_datasets: Iterable[str] | None = None
                   ) -> Neighbours:
        """K nearest pool inputs of each query, leaving out the excluded tasks. Labelled inputs
        of a new task are merged in by :class:`benchroute.task.TaskNeighbours`, so the pool
        index is never modified."""
        check_is_fitted(self, "index_")
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        if Q.ndim == 1:
            Q = Q[None, :]
        K = min(K, len(self.index_))
        excl = list(exclude_datasets) if exclude_datasets is not None else None
        dist, rows = self.index_.search(Q, K, exclude_datasets=excl)
        return self._gathered(dist, rows)

    def _gathered(self, dist: np.ndarray, rows: np.ndarray) -> Neighbours:
        found = rows[rows >= 0]
        return Neighbours(dist, self._padded[rows],
                          frozenset(self.datasets_[np.unique(found)].tolist()), rows)

    def neighbours_past(self, Q: np.ndarray, K: int, past: float,
                        exclude_datasets: Iterable[str] | None = None, width: int = 0
                        ) -> tuple[Neighbours, Neighbours, np.ndarray]:
        """The search of :meth:`neighbours` (``max(K + EXTRA_NEIGHBOURS, width)`` wide), each
        query's first K neighbours at distance ``past`` or more (the query itself and its
        near-copies left out; padded with ``inf`` / NaN where the pool has fewer), and per
        query whether any was left out.

        A query with more near-copies than the margin is searched again alone, up to
        :data:`MAX_COPIES` further, distances and rows only, so that it keeps K: a question
        copied 22 times in the pool kept 1 of its 19 neighbours (found by a review). Only
        those queries pay for it; the other rows of a batch are not widened."""
        found = self.neighbours(Q, max(K + EXTRA_NEIGHBOURS, width), exclude_datasets)
        kept, near = found.beyond(past, K)
        excl = list(exclude_datasets) if exclude_datasets is not None else None
        assert found.rows is not None  # neighbours() always gathers them
        short, dist, rows = past_copies(
            lambda q, w: self.index_.search(q, w, exclude_datasets=excl), Q, found.distances,
            found.rows, K, past, len(self.index_))
        if not len(short):
            return found, kept, near
        dist, rows = first_kept(dist, rows, kept_mask(dist, rows, past), kept.distances.shape[1])
        more = self._gathered(dist, rows)
        distances, labels = kept.distances.copy(), kept.labels.copy()
        distances[short], labels[short] = more.distances, more.labels
        kept_rows = None
        if kept.rows is not None:
            kept_rows = kept.rows.copy()
            kept_rows[short] = rows
        tasks = None if found.tasks is None or more.tasks is None else found.tasks | more.tasks
        return found, Neighbours(distances, labels, tasks, kept_rows), near

    def fallback_means(self, exclude_datasets: Iterable[str] | None = None) -> np.ndarray:
        """Each model's mean label over the pool without the excluded tasks (0.5 if none), so a
        held-out task's labels never leak in through the fallback."""
        check_is_fitted(self, "index_")
        if not exclude_datasets:
            return np.asarray(self.model_means_)
        return column_means(self.labels_, 0.5,
                            np.flatnonzero(~np.isin(self.datasets_, list(exclude_datasets))))

    def aggregate(self, nb: Neighbours, means: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """g (n, M) from the first k neighbours, and a mask of (input, model) cells that had no
        labelled neighbour and fell back to the model's mean label (``means``, default over the
        whole pool)."""
        return knn_mean(nb.distances, nb.labels, self.k, self.weights,
                        self.model_means_ if means is None else means)

    def predict_proba(self, Q: np.ndarray, exclude_datasets: Iterable[str] | None = None
                      ) -> np.ndarray:
        """g_m(x) for every query and model, shape (n, M)."""
        check_is_fitted(self, "index_")
        Q = np.asarray(Q, dtype=np.float32)
        if Q.ndim == 1:
            Q = Q[None, :]
        excl = list(exclude_datasets) if exclude_datasets is not None else None
        means = self.fallback_means(excl)
        parts = [self.aggregate(self.neighbours(Q[s:s + _CHUNK], self.k, excl), means)[0]
                 for s in range(0, len(Q), _CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, self.n_models_))
