"""The router's hyper-parameters, their defaults, and the encoder and cache they name."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from benchroute.predictors import Estimator
from benchroute.reference import DEFAULT_ALPHAS
from benchroute.selection import SelectionConfig
from benchroute.warning_site import user_stacklevel

if TYPE_CHECKING:
    from benchroute.embedding import Encoder

_R = TypeVar("_R", bound="RouterParams")

# Held while a router builds the encoder it holds (cheap: the weights load on first encode,
# under the encoders' own lock), so that threads sharing a router share one encoder. Its own
# lock: a router built while another loads weights, for minutes when a model is distilled,
# waited for that load (found by a review).
_HELD_LOCK = threading.Lock()


def _fresh_held_lock() -> None:
    global _HELD_LOCK
    _HELD_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_held_lock)


class RouterParams(Estimator):
    """The router's hyper-parameters (scikit-learn's parameter protocol) and its encoder.

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
    prior_strength : float
        a of the Beta(a·p̂, a·(1 − p̂)) prior that few-shot labels update (50): the labels
        weigh as much as p̂ once a model has a of them.
    tune : bool
        Per-input routing (``route``, ``predict_proba``) through a
        :class:`~benchroute.tuning.PerInputPredictor`: k, distance weighting and shrinkage to
        each model's mean chosen by cross-validation grouped by task at fit time, then an
        isotonic calibration where the same cross-validation says it helps (True). False routes with the plain k-NN g_m(x) (the mean label of the k nearest pool
        inputs, docs/method.md). Task-level
        selection (S1/S2/S3) always uses g_m(x).
    tune_folds : {"task", "random"}
        How that cross-validation deals the pool into folds: whole tasks held out ("task", the
        default: the choices fit inputs of a new task, the setting of ``select_model``), or
        inputs at random ("random": they fit inputs like the pool's own tasks, and the
        predictor may then use a classifier of the pool task; docs/routing.md, section 1.5).
    tune_calibration : {"auto", "isotonic", "none"}
        Whether that predictor's P goes through an isotonic map pooled over models: "auto"
        (the default) keeps the map only where the same cross-validation says it lowers the
        per-input Brier score by more than one standard error, "isotonic" always, "none" never.
        The map is strictly increasing, so it changes the model argmax P picks only through
        near-ties; it changes P itself, so policies that compare P with a threshold move.
    max_task_queries : int, optional
        At most this many inputs of each task serve as queries in the fit's leave-task-out
        passes (the reference pairs of p̂, the tuned predictor's cross-validation and
        calibration, the OOD and form-shift references), drawn by ``seed`` from the task's
        name; the pool that they and routing search stays whole. None (the default) uses every
        input. Those passes cost the square of the pool's size; a cap makes them linear, for
        pools of hundreds of thousands of inputs and more (docs/method.md, "Reference pairs";
        measured in docs/performance.md, "Fitting large pools").
    """

    def __init__(self, k: int = 5, n_neighbours: int = 19, threshold: float = 0.5,
                 bandwidth: float = 0.09, eta: float = 0.6, n_draws: int = 1000,
                 alphas: Sequence[float] = DEFAULT_ALPHAS, repeats: int = 3,
                 weights: str = "uniform", index_factory: str = "Flat",
                 nprobe: int | None = None, ef_search: int | None = None,
                 encoder: str | Encoder = "all-mpnet-base-v2",
                 cache_dir: str | os.PathLike[str] | None = None, seed: int = 0,
                 prior_strength: float = 50.0, tune: bool = True,
                 max_task_queries: int | None = None, tune_folds: str = "task",
                 tune_calibration: str = "auto") -> None:
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
        self.prior_strength = prior_strength
        self.tune = tune
        self.max_task_queries = max_task_queries
        self.tune_folds = tune_folds
        self.tune_calibration = tune_calibration

    #: Caches of objects derived from the parameters (the loaded encoder, the open embedding
    #: cache, reference pairs without some tasks). They are neither parameters nor fitted state:
    #: each is keyed by the parameters it depends on, so a changed parameter never meets a stale
    #: entry, and copies and pickles leave them out (a copy builds its own on first use).
    _CACHES = ("_held_encoder", "_held_cache", "_excluded")

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k not in self._CACHES}

    # ------------------------------------------------------------------ parameters
    _fitted_attribute = "predictor_"

    def __repr__(self) -> str:
        """The parameters that differ from the defaults, then what a fitted (or loaded) router
        holds, since a loaded router's parameters are often all defaults."""
        text = super().__repr__()
        predictor = getattr(self, "predictor_", None)
        if predictor is None:
            return text
        tasks = len(set(predictor.datasets_.tolist()))
        return (f"{text} fitted on {len(predictor.labels_)} inputs, "
                f"{len(getattr(self, 'models_', []))} models, {tasks} tasks; encoder "
                f"{getattr(self, 'encoder_id_', None)!r}")

    def set_params(self: _R, **params: object) -> _R:
        """scikit-learn's ``set_params``; on a fitted router the values are checked at once, as
        ``fit`` checks them: ``select_model`` and ``route`` read η, the draws, the threshold
        and the seed as they are (``n_draws=0`` made the fallback's probability NaN, so it
        never fell back; ``eta='0.6'`` passed; found by a review). A refused value leaves
        every parameter as it was. Parameters the fitted pool is built with (``k``,
        ``weights``, ``index_factory``, ``tune``, ``tune_folds``, ``tune_calibration``) take
        effect at the next fit, with a warning: the fitted pool keeps its own until then, and
        ``save`` refuses the change (a larger ``k`` once searched more neighbours but
        aggregated the fitted number; found by fuzzing). Another ``encoder`` embeds at once,
        and a router refuses to route with one whose vectors are not its pool's."""
        import warnings

        from benchroute.inputs import check_router_params
        from benchroute.persistence import changed_since_fit

        fitted = "predictor_" in self.__dict__
        was = set(changed_since_fit(self)) if fitted else set()  # type: ignore[arg-type]
        before = self.get_params()
        done = False
        try:
            super().set_params(**params)  # an unknown name raises part way through
            if "predictor_" in self.__dict__:
                check_router_params(self.get_params(), "Router.set_params")
            done = True
        finally:
            if not done:
                super().set_params(**before)
        later = [n for n in changed_since_fit(self)  # type: ignore[arg-type]
                 if n not in was and n not in ("encoder", "seed")] if fitted else []
        if later:
            warnings.warn(f"Router.set_params: {', '.join(later)} changed on a fitted router "
                          "takes effect at the next fit; until then the router decides as "
                          "fitted, and save refuses the change", UserWarning,
                          stacklevel=user_stacklevel())
        return self

    def config(self) -> SelectionConfig:
        """The decision parameters, as :func:`benchroute.selection.select` takes them."""
        return SelectionConfig(float(self.threshold), float(self.bandwidth), float(self.eta),
                               int(self.n_draws), int(self.seed), float(self.prior_strength))

    # ------------------------------------------------------------------ encoding
    def embed(self, texts: str | Sequence[str]) -> np.ndarray:
        """Embed texts with the router's encoder, through the on-disk cache (opened once, then
        refreshed on later calls); the encoder's weights load once. One string is one text, as
        everywhere (it was embedded as its characters; found by fuzzing)."""
        from benchroute.embedding import EmbeddingCache
        from benchroute.embedding.base import as_texts

        texts = as_texts(texts)  # before the encoder loads: a dict or None is refused at once
        enc = self.held_encoder()
        cache = getattr(self, "_held_cache", None)
        if cache is None or cache[0] != (enc.identifier, self.cache_dir):
            cache = self._held_cache = ((enc.identifier, self.cache_dir),
                                        EmbeddingCache.for_encoder(enc, self.cache_dir))
        else:
            cache[1].refresh()  # pick up shards other processes wrote meanwhile
        return cache[1].embed(texts, enc)

    def held_encoder(self) -> Encoder:
        """The encoder ``encoder`` names, built once (its weights load on first use)."""
        from benchroute.embedding import get_encoder

        held = getattr(self, "_held_encoder", None)
        if held is None or held[0] != self.encoder:
            with _HELD_LOCK:  # threads sharing the router share one encoder, loaded once
                held = getattr(self, "_held_encoder", None)
                if held is None or held[0] != self.encoder:
                    held = self._held_encoder = (self.encoder, get_encoder(self.encoder))
        return held[1]

    def encoder_mismatch(self) -> str | None:
        """The encoder's name when its vectors do not compare with the pool's (``encoder`` set
        after the fit), else None. A name resolving to the pool's encoder (a model folder's
        relative path) fits, as does another backend of the same model
        (:func:`benchroute.inputs.same_vectors`)."""
        from benchroute.inputs import same_vectors

        enc = self.held_encoder()
        name = self.encoder if isinstance(self.encoder, str) else enc.identifier
        pool = getattr(self, "encoder_id_", enc.identifier)
        return None if enc.identifier == pool or same_vectors(name, pool) else name

    def encoder_identifier(self) -> str:
        from benchroute.embedding import get_encoder

        return get_encoder(self.encoder).identifier  # weights load lazily: this is cheap
