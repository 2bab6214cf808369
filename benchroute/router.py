"""The router: model selection for a task (S1/S2/S3 with the BMA fallback) and per-input routing.

``Router`` follows scikit-learn's estimator contract: the constructor stores hyper-parameters,
``fit`` learns, fitted state ends in ``_``. Persistence is JSON + npz + FAISS's own index format,
with checksums so that a tampered or truncated router fails to load instead of misbehaving.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchroute._persist import read_versioned_json
from benchroute.data.store import BenchmarkData
from benchroute.exceptions import BenchrouteError, DataError
from benchroute.index import VectorIndex
from benchroute.policies import (
    cheaper_selection,
    restore_routing,
    route_with_policy,
    router_costs,
    router_proba,
    routing_state,
    store_costs,
)
from benchroute.predictors import KNNCorrectnessPredictor, Neighbours, check_is_fitted
from benchroute.scoring import (
    DEFAULT_ALPHAS,
    ReferencePairs,
    decide,
    kernel_smooth,
    predictor_accuracy,
    reference_pairs,
    s1,
    s2,
    s3,
    task_distance,
)

logger = logging.getLogger(__name__)

ROUTER_FORMAT_VERSION = 1
METHODS = ("S1", "S2", "S3")


@dataclass(frozen=True)
class Selection:
    """The model chosen for a task, with the evidence behind the choice.

    ``scores`` is indexed by model with columns ``S1, S2, S3, p_hat`` (and ``p_labeled``, the
    predictors' accuracy measured on the few-shot labels, when labels were given), ``bma`` (True
    for the best model on average) and ``chosen``.
    """

    model: str
    method: str
    scores: pd.DataFrame
    fell_back: bool
    task_distance: float
    bma: str
    n_examples: int
    n_labeled: int = 0
    win_probability: float | None = None

    def summary(self) -> str:
        why = ""
        if self.fell_back:
            why = (f" (fell back to the best model on average: P(beats it) = "
                   f"{self.win_probability:.2f} < eta)")
        elif self.model == self.bma:
            why = " (also the best model on average)"
        row = self.scores.loc[self.model]
        return (f"{self.model} by {self.method}{why}: S1 {row['S1']:.3f}, S2 {row['S2']:.3f}, "
                f"S3 {row['S3']:.3f}, p_hat {row['p_hat']:.3f}; u = {self.task_distance:.3f} over "
                f"{self.n_examples} inputs" + (f", {self.n_labeled} labelled" if self.n_labeled else ""))

    def __repr__(self) -> str:
        table = self.scores.drop(columns=["chosen"]).to_string(float_format=lambda v: f"{v:.3f}")
        return f"Selection: {self.summary()}\n{table}"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "method": self.method, "fell_back": self.fell_back,
                "task_distance": self.task_distance, "bma": self.bma,
                "n_examples": self.n_examples, "n_labeled": self.n_labeled,
                "win_probability": self.win_probability,
                "scores": json.loads(self.scores.to_json(orient="index"))}


class Router:
    """Select the best model for a new task, or route each input, from benchmark results.

    Parameters
    ----------
    k : int
        Neighbours of each kNN correctness predictor (5).
    n_neighbours : int
        Neighbours averaged in the task distance u (19).
    threshold : float
        ĝ = 1[g > threshold] (0.5).
    bandwidth : float
        Gaussian kernel bandwidth h of the p̂ smoother (0.09).
    eta : float
        Fall back to the best model on average when P(chosen beats it) < eta (0.6).
    n_draws : int
        Binomial draws of the fallback test (1000).
    alphas, repeats : sequence of float, int
        Few-shot fractions and random draws of the reference pass that feeds p̂.
    weights, index_factory, nprobe, ef_search
        Passed to :class:`~benchroute.predictors.KNNCorrectnessPredictor`.
    encoder : str or Encoder
        How new texts are embedded; must match the pool's embeddings.
    cache_dir : path, optional
        Embedding cache folder (default ``$BENCHROUTE_HOME/embeddings``).
    seed : int
        Seeds the reference pass and the fallback draws.
    tune : bool
        Also fit a :class:`~benchroute.tuning.PerInputPredictor` (k, weighting and shrinkage
        chosen by CV grouped by task, calibrated) and route with it (False).
    """

    def __init__(self, k: int = 5, n_neighbours: int = 19, threshold: float = 0.5,
                 bandwidth: float = 0.09, eta: float = 0.6, n_draws: int = 1000,
                 alphas: Sequence[float] = DEFAULT_ALPHAS, repeats: int = 3,
                 weights: str = "uniform", index_factory: str = "Flat",
                 nprobe: int | None = None, ef_search: int | None = None,
                 encoder: Any = "all-mpnet-base-v2", cache_dir: str | None = None,
                 seed: int = 0, tune: bool = False) -> None:
        self.k = k
        self.n_neighbours = n_neighbours
        self.threshold = threshold
        self.bandwidth = bandwidth
        self.eta = eta
        self.n_draws = n_draws
        self.alphas = alphas
        self.repeats = repeats
        self.weights = weights
        self.index_factory = index_factory
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.encoder = encoder
        self.cache_dir = cache_dir
        self.seed = seed
        self.tune = tune

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Router:
        valid = self._param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"invalid parameter {key!r} for Router; valid parameters: {valid}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = type(self)().get_params() if type(self) is Router else {}
        changed = {k: v for k, v in self.get_params().items() if defaults.get(k, object()) != v}
        return f"Router({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def _validate_params(self) -> None:
        checks = [
            (self.k >= 1, f"k == {self.k}, must be >= 1"),
            (self.n_neighbours >= 1, f"n_neighbours == {self.n_neighbours}, must be >= 1"),
            (0.0 <= self.threshold <= 1.0, f"threshold == {self.threshold}, must be in [0, 1]"),
            (self.bandwidth > 0, f"bandwidth == {self.bandwidth}, must be > 0"),
            (0.0 <= self.eta <= 1.0, f"eta == {self.eta}, must be in [0, 1]"),
            (self.n_draws >= 1, f"n_draws == {self.n_draws}, must be >= 1"),
            (self.repeats >= 1, f"repeats == {self.repeats}, must be >= 1"),
            (len(self.alphas) > 0 and all(0.0 <= a < 1.0 for a in self.alphas),
             f"alphas == {list(self.alphas)}, must be a non-empty list of fractions in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise BenchrouteError(message)

    # ------------------------------------------------------------------ fitting
    def _encoder(self) -> Any:
        """The encoder object, kept across calls so that its weights load once."""
        from benchroute.embedding import get_encoder

        held = getattr(self, "_held_encoder", None)
        if held is None or held[0] != self.encoder:
            held = (self.encoder, get_encoder(self.encoder))
            self._held_encoder = held
        return held[1]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts with the router's encoder, through the on-disk cache.

        The cache is opened once (reading its shard keys) and only refreshed on later calls.
        """
        from benchroute.embedding import EmbeddingCache

        enc = self._encoder()
        held = getattr(self, "_held_cache", None)
        if held is None or held[0] != (enc.identifier, self.cache_dir):
            held = ((enc.identifier, self.cache_dir), EmbeddingCache.for_encoder(enc, self.cache_dir))
            self._held_cache = held
        else:
            held[1].refresh()  # pick up shards other processes wrote meanwhile
        return held[1].embed(list(texts), enc)

    def fit(self, data: BenchmarkData, embeddings: np.ndarray | None = None) -> Router:
        """Fit the correctness predictors and the reference pairs of the p̂ smoother.

        Parameters
        ----------
        data : BenchmarkData
            The benchmark results; each dataset is one task.
        embeddings : ndarray (N, d), optional
            Vectors of ``data.instances()`` in that order; embedded through the cache if omitted.
        """
        self._validate_params()
        if not isinstance(data, BenchmarkData):
            raise BenchrouteError(f"fit expects a BenchmarkData, got {type(data).__name__}")
        pool = pool_arrays(data, embeddings, self.embed)
        X, Y, datasets = pool.X, pool.Y, pool.datasets
        self.predictor_ = self._new_predictor().fit(X, Y, datasets, pool.instance_ids)
        self.models_ = pool.models
        self.task_accuracy_ = data.dataset_accuracy().reindex(columns=self.models_)
        self.encoder_id_ = self._encoder().identifier  # weights load lazily: this is cheap
        self.reference_ = reference_pairs(
            self.predictor_, X, Y, datasets, alphas=self.alphas, repeats=self.repeats,
            seed=self.seed, n_neighbours=self.n_neighbours, threshold=self.threshold,
        )
        self.costs_ = store_costs(data)
        if self.tune:
            from benchroute.tuning import PerInputPredictor
            self.per_input_ = PerInputPredictor(seed=self.seed).fit(X, Y, datasets)
        logger.info("fitted router: %d inputs, %d models, %d tasks, %d reference pairs",
                    len(X), len(self.models_), len(self.tasks_), len(self.reference_.u))
        return self

    def _new_predictor(self) -> KNNCorrectnessPredictor:
        return KNNCorrectnessPredictor(self.k, self.weights, self.index_factory, self.nprobe,
                                       self.ef_search)

    # ------------------------------------------------------------------ fitted views
    # derived from the predictor rather than stored twice (the flat index holds the vectors)
    @property
    def X_(self) -> np.ndarray:
        check_is_fitted(self, "predictor_")
        return self.predictor_.index_.vectors()

    @property
    def Y_(self) -> np.ndarray:
        check_is_fitted(self, "predictor_")
        return self.predictor_.labels_

    @property
    def datasets_(self) -> np.ndarray:
        check_is_fitted(self, "predictor_")
        return self.predictor_.datasets_

    @property
    def tasks_(self) -> list[str]:
        return sorted(set(self.datasets_.tolist()))

    @property
    def model_accuracy_(self) -> pd.Series:
        check_is_fitted(self, "predictor_")
        return self.task_accuracy_.mean(axis=0)

    @property
    def bma_(self) -> str:
        return str(self.model_accuracy_.idxmax())

    def _candidate_idx(self, candidates: Iterable[str] | None) -> np.ndarray:
        if candidates is None:
            return np.arange(len(self.models_))
        names = [candidates] if isinstance(candidates, str) else list(candidates)
        unknown = [c for c in names if c not in self.models_]
        if unknown:
            raise BenchrouteError(f"unknown model(s) {unknown}; known models: {self.models_}")
        if not names:
            raise BenchrouteError("candidates is empty; name at least one model")
        return np.array(sorted({self.models_.index(c) for c in names}))

    def _bma_among(self, cand: np.ndarray, exclude: Sequence[str] = ()) -> int:
        acc = self.task_accuracy_.drop(index=[t for t in exclude if t in self.task_accuracy_.index])
        mean = acc.mean(axis=0).to_numpy()
        return int(cand[np.nanargmax(mean[cand])])

    def _texts(self, task_examples: Any, what: str = "task_examples") -> list[str]:
        if isinstance(task_examples, BenchmarkData):
            texts = task_examples.instances()["text"].tolist()
        elif isinstance(task_examples, str):
            texts = [task_examples]
        else:
            texts = list(task_examples)
        if not texts:
            raise BenchrouteError(f"{what} is empty; give at least one input text")
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise BenchrouteError(f"{what}[{bad}] is a {type(texts[bad]).__name__}, expected str")
        return texts

    def _labeled(self, labeled: Any) -> tuple[list[str], np.ndarray]:
        """Few-shot labels as (texts, Y (L, M)) from a DataFrame or records."""
        if isinstance(labeled, pd.DataFrame):
            if "labels" in labeled.columns:
                records = labeled.to_dict(orient="records")
            else:
                if "text" not in labeled.columns:
                    raise BenchrouteError("labeled DataFrame needs a 'text' column")
                records = [{"text": r["text"], "labels": {k: v for k, v in r.items() if k != "text"}}
                           for r in labeled.to_dict(orient="records")]
        else:
            records = list(labeled)
        texts, rows = [], []
        for i, rec in enumerate(records):
            if not isinstance(rec, Mapping) or not isinstance(rec.get("text"), str) \
                    or not isinstance(rec.get("labels"), Mapping):
                raise BenchrouteError(f"labeled[{i}] must be {{'text': str, 'labels': {{model: 0/1}}}}")
            unknown = [m for m in rec["labels"] if m not in self.models_]
            if unknown:
                raise BenchrouteError(f"labeled[{i}] names unknown model(s) {unknown}; known "
                                      f"models: {self.models_}")
            row = np.full(len(self.models_), np.nan, dtype=np.float32)
            for m, v in rec["labels"].items():
                if v is None or (isinstance(v, float) and np.isnan(v)):
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not 0 <= v <= 1:
                    raise BenchrouteError(f"labeled[{i}] label for {m!r} is {v!r}; expected a number in [0, 1]")
                row[self.models_.index(m)] = float(v)
            texts.append(rec["text"])
            rows.append(row)
        if not rows:
            return [], np.zeros((0, len(self.models_)), dtype=np.float32)
        return texts, np.vstack(rows)

    # ------------------------------------------------------------------ selection
    def select_model(self, task_examples: Any, labeled: Any = None,
                     candidates: Iterable[str] | None = None, method: str = "S3",
                     fallback: bool = True, exclude_datasets: Sequence[str] = (),
                     max_quality_drop: float | None = None, costs: Any = None) -> Selection:
        """Choose the best model for a task from its input texts.

        Parameters
        ----------
        task_examples : list of str or BenchmarkData
            The new task's inputs (no labels needed).
        labeled : DataFrame or list of records, optional
            A few labelled inputs of the task: ``{"text": ..., "labels": {model: 0/1}}`` records,
            or a DataFrame with ``text`` and one column per model. They join the kNN pool for
            this call only (the router is not changed) and leave the examples to score (if
            every example is labelled, all are scored, each next to its own label).
        candidates : list of str, optional
            Only these models may be chosen; BMA is then the best of them.
        method : {"S3", "S1", "S2"}
        fallback : bool
            Apply the η rule (S3 only).
        exclude_datasets : list of str
            Leave these benchmark tasks out of the pool and of the reference pairs (used by the
            leave-one-task-out experiments).
        max_quality_drop, costs : float, mapping, optional
            Pick the cheapest candidate whose score is within ε of the top (costs per call:
            ``costs`` or those of the fit store).
        """
        check_is_fitted(self, "predictor_")
        if method not in METHODS:
            raise BenchrouteError(f"unknown method {method!r}; choose one of {list(METHODS)}")
        texts = self._texts(task_examples)
        lab_texts, lab_Y = self._labeled(labeled) if labeled is not None else ([], None)
        if lab_texts:
            labeled_set = set(lab_texts)
            texts = [t for t in texts if t not in labeled_set] or texts
        vectors = self.embed(texts + lab_texts)
        Q, LX = vectors[:len(texts)], vectors[len(texts):]
        sel = self.select_embedded(Q, LX if lab_texts else None, lab_Y, candidates, method,
                                   fallback, exclude_datasets)
        if max_quality_drop is not None:
            sel = cheaper_selection(sel, router_costs(self, costs, "max_quality_drop"),
                                    self.models_, max_quality_drop)
        return sel

    def select_embedded(self, Q: np.ndarray, labeled_X: np.ndarray | None = None,
                        labeled_Y: np.ndarray | None = None,
                        candidates: Iterable[str] | None = None, method: str = "S3",
                        fallback: bool = True, exclude_datasets: Sequence[str] = ()) -> Selection:
        """:meth:`select_model` on embeddings you computed yourself: Q (n, d), labeled_X (L, d)."""
        check_is_fitted(self, "predictor_")
        if method not in METHODS:
            raise BenchrouteError(f"unknown method {method!r}; choose one of {list(METHODS)}")
        Q = np.atleast_2d(np.asarray(Q, dtype=np.float32))
        if len(Q) == 0:
            raise BenchrouteError("no inputs to score")
        cand = self._candidate_idx(candidates)
        exclude = list(exclude_datasets)
        K = max(self.k, self.n_neighbours)
        nb = self.predictor_.neighbours(Q, K, exclude or None, labeled_X, labeled_Y)
        g, _ = self.predictor_.aggregate(nb, self.predictor_.fallback_means(exclude))
        u = task_distance(nb, self.n_neighbours)
        ref = self.reference_.without(exclude) if exclude else self.reference_
        p_hat = np.nan_to_num(kernel_smooth(u, ref.u, ref.p, self.bandwidth), nan=0.5)
        S1, S2 = s1(g), s2(g, self.threshold)
        S3 = s3(S2, p_hat)
        table = pd.DataFrame({"S1": S1, "S2": S2, "S3": S3, "p_hat": p_hat}, index=self.models_)
        n_lab = 0 if labeled_X is None else len(labeled_X)
        if labeled_X is not None and labeled_Y is not None and n_lab:
            table["p_labeled"] = self._labeled_accuracy(labeled_X, labeled_Y, exclude)
        bma = self._bma_among(cand, exclude)
        chosen, fell_back, win_prob = decide(
            table[method].to_numpy(), cand, bma, g, p_hat if method == "S3" and fallback else None,
            self.threshold, self.eta, self.n_draws, self.seed)
        table["bma"] = [i == bma for i in range(len(self.models_))]
        table["chosen"] = [i == chosen for i in range(len(self.models_))]
        table = table.iloc[cand]
        table.index.name = "model"
        return Selection(model=self.models_[chosen], method=method, scores=table,
                         fell_back=fell_back, task_distance=u, bma=self.models_[bma],
                         n_examples=len(Q), n_labeled=n_lab, win_probability=win_prob)

    def _labeled_accuracy(self, LX: np.ndarray, LY: np.ndarray, exclude: Sequence[str]) -> np.ndarray:
        """Each predictor's accuracy on the labelled inputs, each predicted leave-one-out from the
        pool and the other labelled inputs."""
        K = max(self.k, self.n_neighbours)
        base = self.predictor_.neighbours(LX, K, list(exclude) or None)
        d = 1.0 - (LX @ LX.T).astype(np.float64)
        np.fill_diagonal(d, np.inf)
        nb: Neighbours = base.merge(d, LY, K)
        g, _ = self.predictor_.aggregate(nb, self.predictor_.fallback_means(exclude))
        return predictor_accuracy(g, LY, self.threshold)

    # ------------------------------------------------------------------ routing
    def predict_proba(self, texts: Any) -> pd.DataFrame:
        """g_m(x) for each input (rows) and model (columns)."""
        check_is_fitted(self, "predictor_")
        texts = self._texts(texts, "texts")
        g = router_proba(self, self.embed(texts))
        return pd.DataFrame(g, columns=self.models_)

    def route(self, texts: Any, candidates: Iterable[str] | None = None,
              policy: str | None = None, costs: Any = None, **policy_params: Any) -> Any:
        """The model with the highest g_m(x) for each input; ties go to the best model on average.

        With ``policy`` (benchroute.policies: best, threshold, smallest_sufficient,
        cheapest_within, budget) and its parameters, a DataFrame per input: model, p, cost.
        """
        check_is_fitted(self, "predictor_")
        texts = self._texts(texts, "texts")
        if policy is not None:
            return route_with_policy(self, self.embed(texts), policy,
                                     self._candidate_idx(candidates), costs, **policy_params)
        return self.route_embedded(self.embed(texts), candidates)

    def route_embedded(self, Q: np.ndarray, candidates: Iterable[str] | None = None) -> list[str]:
        check_is_fitted(self, "predictor_")
        cand = self._candidate_idx(candidates)
        g = router_proba(self, Q)[:, cand]
        bma_pos = int(np.flatnonzero(cand == self._bma_among(cand))[0])
        pick = np.argmax(g, axis=1)
        tie = np.isclose(g[:, bma_pos], g.max(axis=1))
        pick[tie] = bma_pos
        return [self.models_[cand[i]] for i in pick]

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the fitted router: ``router.json``, ``pool.npz``, ``index/`` (no pickle)."""
        check_is_fitted(self, "predictor_")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # the vectors and the row -> (dataset, instance) map live in the index and its sidecar
        np.savez(folder / "pool.npz", Y=self.Y_)
        self.predictor_.index_.encoder_id = self.encoder_id_
        self.predictor_.index_.save(folder / "index")
        ref = self.reference_
        params = self.get_params()
        params["alphas"] = list(params["alphas"])
        if not isinstance(params["encoder"], str):
            params["encoder"] = self.encoder_id_
        meta = {
            "format_version": ROUTER_FORMAT_VERSION,
            "params": params,
            "models": self.models_,
            "encoder": self.encoder_id_,
            "task_accuracy": json.loads(self.task_accuracy_.to_json(orient="split")),
            "reference": {"u": ref.u.tolist(), "p": [[None if np.isnan(v) else float(v) for v in row] for row in ref.p],
                          "task": [str(t) for t in ref.task], "alpha": ref.alpha.tolist()},
            "checksums": {name: _sha256(folder / name) for name in _DATA_FILES},
            "routing": routing_state(self),
        }
        tmp = folder / "router.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, folder / "router.json")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Router:
        folder = Path(folder)
        meta_path = folder / "router.json"
        meta = read_versioned_json(meta_path, ROUTER_FORMAT_VERSION, "router")
        for name, digest in meta.get("checksums", {}).items():
            path = folder / name
            if not path.is_file():
                raise BenchrouteError(f"{path}: missing from the saved router")
            if _sha256(path) != digest:
                raise BenchrouteError(f"{path}: checksum mismatch; the router files were "
                                      "modified or truncated after saving")
        if set(meta.get("checksums", {})) != set(_DATA_FILES):
            raise BenchrouteError(f"{meta_path}: checksums for {_DATA_FILES} are missing")
        try:
            router = cls(**meta["params"])
            with np.load(folder / "pool.npz", allow_pickle=False) as z:
                Y = z["Y"]
            router.models_ = list(meta["models"])
            if Y.ndim != 2 or Y.shape[1] != len(router.models_):
                raise BenchrouteError(f"{folder}: pool.npz labels have shape {Y.shape}, expected "
                                      f"(n, {len(router.models_)})")
            router.predictor_ = router._new_predictor().attach(VectorIndex.load(folder / "index"), Y)
            split = meta["task_accuracy"]
            router.task_accuracy_ = pd.DataFrame(split["data"], index=split["index"],
                                                 columns=split["columns"], dtype=float)
            router.encoder_id_ = meta["encoder"]
            r = meta["reference"]
            router.reference_ = ReferencePairs(
                np.asarray(r["u"], dtype=float),
                np.asarray([[np.nan if v is None else v for v in row] for row in r["p"]],
                           dtype=float).reshape(-1, len(router.models_)),
                np.asarray(r["task"], dtype=object), np.asarray(r["alpha"], dtype=float))
            restore_routing(router, meta.get("routing"))
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchrouteError(f"{folder}: malformed saved router ({exc!r})") from exc
        return router


_DATA_FILES = ("pool.npz", "index/index.faiss", "index/index.json")


@dataclass(frozen=True)
class Pool:
    """A store's inputs as arrays, rows in ``data.instances()`` order."""

    X: np.ndarray            # (N, d) float32 unit vectors
    Y: np.ndarray            # (N, M) float32 labels, NaN = no result
    datasets: np.ndarray     # (N,) object
    instance_ids: list[str]
    models: list[str]


def pool_arrays(data: BenchmarkData, embeddings: np.ndarray | None,
                embed: Any, column: str = "correct") -> Pool:
    """Vectors and labels of every input of ``data``; ``embed(texts)`` runs when no embeddings
    are given, and given ones are checked against the number of inputs."""
    inst = data.instances()
    mat = data.correctness_matrix(column=column)
    if list(mat.index) != list(zip(inst["dataset"], inst["instance_id"])):
        raise BenchrouteError("internal: correctness matrix and instances are misaligned")
    X = embed(inst["text"].tolist()) if embeddings is None else np.asarray(embeddings)
    if X.ndim != 2 or len(X) != len(inst):
        raise BenchrouteError(f"embeddings must have shape ({len(inst)}, d), got {X.shape}")
    return Pool(np.ascontiguousarray(X, dtype=np.float32), mat.to_numpy(dtype=np.float32),
                inst["dataset"].to_numpy(dtype=object), inst["instance_id"].tolist(),
                list(mat.columns))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------- default router
def default_router(pack: str | None = None, refit: bool = False) -> Router:
    """A router fitted on a bundled pack, built once and then loaded from
    ``$BENCHROUTE_HOME/routers``. The pack carries its pool's embeddings, so only the user's
    texts go through the encoder."""
    from benchroute import __version__
    from benchroute.embedding.install import benchroute_home
    from benchroute.packs import DEFAULT_PACK, pack_files

    name = pack or DEFAULT_PACK
    files = pack_files(name)
    digest = _sha256(files["data"])[:12]
    folder = benchroute_home() / "routers" / f"{name}-{digest}-v{__version__}"
    if not refit and (folder / "router.json").is_file():
        try:
            return Router.load(folder)
        except BenchrouteError as exc:
            logger.warning("rebuilding the default router: %s", exc)
    data = BenchmarkData.load(files["data"])
    router = Router().fit(data, embeddings=pack_embeddings(data, name))
    router.save(folder)
    return router


def pack_embeddings(data: BenchmarkData, pack: str) -> np.ndarray:
    """Vectors of ``data.instances()`` looked up by text hash in a pack's embeddings file."""
    from benchroute.embedding import text_key
    from benchroute.packs import pack_files

    with np.load(pack_files(pack)["embeddings"], allow_pickle=False) as z:
        row = {str(k): i for i, k in enumerate(z["sha256"].tolist())}
        emb = z["embedding"]
    keys = [text_key(t) for t in data.instances()["text"]]
    missing = sum(k not in row for k in keys)
    if missing:
        raise DataError(f"pack {pack!r}: {missing} inputs have no embedding in the pack")
    return emb[[row[k] for k in keys]].astype(np.float32)


def select_model(task_examples: Any, router: Router | None = None, **kwargs: Any) -> Selection:
    """Choose the best model for a task; with no router, one fitted on the bundled pack."""
    return (router or default_router()).select_model(task_examples, **kwargs)


def route(texts: Any, router: Router | None = None, **kwargs: Any) -> list[str]:
    """Route each input to a model; with no router, one fitted on the bundled pack."""
    return (router or default_router()).route(texts, **kwargs)
