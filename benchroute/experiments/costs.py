"""Cost–quality evaluation of the routing policies, cross-fitted (definitions:
docs/routing.md, which also holds the results).

Inputs are split into seeded folds; each fold's P(m, x) comes from a router fitted on the other
folds only (:func:`benchroute.experiments.crossfit.routing_router`: its index and its tuned
per-input predictor, tuning CV grouped by task, as ``Router.route`` computes P), so no input is
scored by a router that saw it. Each
policy is then swept over its parameter; every operating point is the per-input choice, kept so
that metrics can be bootstrapped over inputs without refitting.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from benchroute import policies as pol
from benchroute.curves import aiq, apgr, cpt, interp_at, pgr, upper_hull
from benchroute.data.store import BenchmarkData
from benchroute.deprecation import renamed
from benchroute.exceptions import BenchrouteError
from benchroute.experiments.bootstrap import interval
from benchroute.experiments.crossfit import crossfit_router_proba, fold_bma, routing_router
from benchroute.inputs import is_real
from benchroute.router import Router
from benchroute.routing import router_proba
from benchroute.scoring import best_on_average, task_means
from benchroute.tuning import PerInputPredictor, fold_ids
from benchroute.warning_site import user_stacklevel

logger = logging.getLogger(__name__)

__all__ = ["Arrays", "CostQuality", "aiq", "apgr", "arrays", "bootstrap_metrics", "cost_quality",
           "cpt", "crossfit_proba", "evaluate", "hybrid_at_validation", "pair_indices",
           "ranked_calls", "routing_metrics", "sweep", "upper_hull", "with_attrs"]

PAIR_POLICIES = ("threshold", "hybrid")
POOL_POLICIES = ("best", "smallest_sufficient", "cheapest_within", "budget")
CALL_LEVELS = tuple(np.round(np.linspace(0, 1, 11), 2))


# ---------------------------------------------------------------------- arrays
@dataclass(frozen=True)
class Arrays:
    """Everything the evaluation needs, rows in ``data.instances()`` order."""

    X: np.ndarray
    Q: np.ndarray          # (n, M) quality in [0, 1]
    C: np.ndarray          # (n, M) cost per call
    models: list[str]
    datasets: np.ndarray
    cost_source: str
    dropped: int = 0       # inputs left out because some model has no result


def arrays(data: BenchmarkData, embeddings: np.ndarray, column: str = "correct",
           costs: Mapping[str, float] | np.ndarray | None = None,
           cost_source: str | None = None) -> Arrays:
    """Quality, cost and vectors of ``data``.

    Costs: the store's ``cost`` column when ``costs`` is None (every cell must have one), else a
    per-model mapping (cost per call) or an (n, M) array the caller computed. ``cost_source``
    says what the numbers are (e.g. "parameter count (proxy)"); it travels with the results.
    """
    from benchroute.data.pool import pool_arrays
    from benchroute.router import Router

    # vectors through the default encoder and the on-disk cache when none are given
    pool = pool_arrays(data, embeddings, Router().embed, column=column)
    Q = pool.Y.astype(np.float64)
    if np.nanmin(Q) < 0 or np.nanmax(Q) > 1:
        raise BenchrouteError(f"column {column!r} must lie in [0, 1] to be a quality")
    keep = ~np.isnan(Q).any(axis=1)
    if not keep.all():
        # every policy must be able to call every model, so an input needs all results
        logger.warning("%d of %d inputs lack a %r for some model and are left out",
                       int((~keep).sum()), len(Q), column)
    if not keep.any():
        raise BenchrouteError(f"no input has a {column!r} for every model")
    costs = pol.costs_by_name(costs)  # a Series is read by its labels, as everywhere
    if costs is None:
        if "cost" not in data.frame.columns or data.frame["cost"].isna().any():
            raise BenchrouteError("the store has no complete 'cost' column; pass costs= (a "
                                  "per-model mapping of cost per call, or an (n, M) array)")
        C = data.correctness_matrix(column="cost").reindex(columns=pool.models).to_numpy(float)
        source = cost_source or "store (cost column)"
    elif isinstance(costs, Mapping):
        C = np.broadcast_to(pol.cost_vector(pool.models, costs), Q.shape).copy()
        source = cost_source or "caller (per-model cost per call)"
    else:
        try:
            C = np.asarray(costs)
        except (TypeError, ValueError):  # ragged nesting: the policies' message says so
            C = pol.cost_array(costs)
        if C.shape != Q.shape:
            raise BenchrouteError(f"costs array has shape {C.shape}, expected {Q.shape}")
        source = cost_source or "caller (per-input costs)"
    try:  # the policies' one rule for costs, on the inputs evaluated
        C = pol.cost_array(C[keep])
    except BenchrouteError as exc:
        raise BenchrouteError(f"costs of the {int(keep.sum())} inputs evaluated, every "
                              f"(input, model): {exc}") from None
    return Arrays(pool.X[keep], Q[keep], C, pool.models, pool.datasets[keep], source,
                  int((~keep).sum()))


def crossfit_proba(X: np.ndarray, Y: np.ndarray, folds: int = 5, seed: int = 0,
                   make: Callable[[], PerInputPredictor] | None = None,
                   groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray,
                                                              list[PerInputPredictor]]:
    """Out-of-fold P (n, M): each fold predicted by a router fitted on the others, the P a
    user's router gives (:func:`benchroute.experiments.crossfit.crossfit_router_proba`).

    ``make`` builds the router's per-input predictor (default: the router's own tuned one).
    Returns P, the fold of each row and the fitted per-input predictors (their chosen values).
    ``groups`` are the inputs' tasks, used by each router (its tuning CV holds tasks out), not
    for the outer folds.
    """
    fold, _ = fold_ids(len(X), None, folds, seed)
    P = np.empty(Y.shape, dtype=np.float64)
    fitted = []
    for f in range(fold.max() + 1):
        te, tr = fold == f, fold != f
        P[te], router = crossfit_router_proba(X, Y, tr, te, groups,
                                              None if make is None else make())
        fitted.append(_tuned(router))
    return P, fold, fitted


def _tuned(router: Router) -> PerInputPredictor:
    """The per-input predictor of a router :func:`routing_router` fitted (it always has one)."""
    if router.per_input_ is None:
        raise BenchrouteError("internal: a routing router without its per-input predictor")
    return router.per_input_


# ---------------------------------------------------------------------- sweeps
@dataclass(frozen=True)
class CostQuality:
    """A cross-fitted cost–quality evaluation.

    ``curve``: one row per (policy, operating point) with ``param``, ``cost``, ``quality``,
    ``share_strong`` (pairs) and ``share:<model>`` columns. ``choices`` (points, n) holds each
    point's per-input model index, in ``curve`` row order, for bootstrapping.
    """

    curve: pd.DataFrame
    choices: np.ndarray = field(repr=False)
    Q: np.ndarray = field(repr=False)
    C: np.ndarray = field(repr=False)
    models: list[str]
    strong: int | None
    weak: int | None
    cost_source: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def singles(self) -> pd.DataFrame:
        return pd.DataFrame({"model": self.models, "cost": self.C.mean(axis=0),
                             "quality": self.Q.mean(axis=0)})

    def cost_range(self) -> tuple[float, float]:
        c = self.C.mean(axis=0)
        return float(c.min()), float(c.max())


def ranked_calls(score: np.ndarray, levels: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """For each call% level, a mask calling the strong model on the top ``level`` share of
    inputs by score: RouteLLM's thresholds at score quantiles, ties broken at random (seeded)."""
    return [pol.top_share(score, lv, seed) for lv in levels]


def _point(policy: str, param: float, pick: np.ndarray, Q: np.ndarray, C: np.ndarray,
           models: Sequence[str], strong: int | None) -> dict[str, Any]:
    rows = np.arange(len(pick))
    row: dict[str, Any] = {"policy": policy, "param": float(param),
                           "cost": pol.finite_mean(C[rows, pick]),
                           "quality": float(Q[rows, pick].mean())}
    if strong is not None:
        row["share_strong"] = float((pick == strong).mean())
    shares = np.bincount(pick, minlength=len(models)) / len(pick)
    row.update({f"share:{m}": float(s) for m, s in zip(models, shares)})
    return row


def sweep(policy: str, P: np.ndarray, Q: np.ndarray, C: np.ndarray, models: Sequence[str],
          strong: int | None = None, weak: int | None = None, score: np.ndarray | None = None,
          seed: int = 0, prefer: np.ndarray | None = None
          ) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Operating points of one policy: its parameter swept over a fixed grid.

    ``prefer`` (one column per row): the best model on average that ``best`` gives a tie to,
    as ``Router.route`` does (:func:`evaluate` passes each fold's).

    Pair policies (``threshold``, ``hybrid``, ``random``, ``oracle``) step the share of calls to
    the strong model over 0, 0.1, ..., 1 (RouteLLM's quantile thresholds); ``hybrid`` needs the
    cross-fitted "weak is good enough" ``score``. Pool policies sweep τ, ε or the budget.
    """
    rows: list[dict[str, Any]] = []
    picks: list[np.ndarray] = []

    def add(param: float, pick: np.ndarray, name: str = policy) -> None:
        rows.append(_point(name, param, pick, Q, C, models, strong))
        picks.append(pick.astype(np.int64))

    n = len(Q)
    if policy in ("threshold", "hybrid", "random", "oracle-pair"):
        if strong is None or weak is None:
            raise BenchrouteError(f"policy {policy!r} needs a strong and a weak model")
        if policy == "threshold":
            s = pol.strong_weak_score(P, strong, weak)
        elif policy == "hybrid":
            if score is None:
                raise BenchrouteError("policy 'hybrid' needs the router score")
            s = -np.asarray(score, dtype=np.float64)
        elif policy == "random":
            s = np.zeros(n)
        else:
            s = Q[:, strong] - Q[:, weak]
        for lv, call in zip(CALL_LEVELS, ranked_calls(s, CALL_LEVELS, seed)):
            add(lv, np.where(call, strong, weak))
    elif policy == "best":
        add(np.nan, pol.best(P, C, prefer=prefer))
    elif policy == "smallest_sufficient":
        for tau in np.round(np.linspace(0, 1, 21), 3):
            add(tau, pol.smallest_sufficient(P, C, tau=float(tau)))
        add(1.01, pol.best(P, C))  # τ above every P: none reaches it, the highest P
    elif policy == "cheapest_within":
        for eps in (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0):
            add(eps, pol.cheapest_within(P, C, max_quality_drop=eps))
    elif policy in ("budget", "oracle"):
        target = Q if policy == "oracle" else P
        lo = pol.finite_mean(np.min(C, axis=1))
        hi = pol.finite_mean(C[np.arange(n), pol.best(target, C)])
        for b in np.linspace(lo, hi, 15):
            add(b, pol.budget(target, C, budget=float(b)))
    else:
        raise BenchrouteError(f"unknown policy {policy!r}; choose one of "
                              f"{sorted(PAIR_POLICIES + POOL_POLICIES)}")
    return rows, picks


def _hybrid_score(A: Arrays, fold: np.ndarray, weak: int, strong: int, rule: str, folds: int,
                  seed: int, max_quality_drop: float, make: Callable[[], PerInputPredictor] | None
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Cross-fitted "weak is good enough" score, and per fold the validation-chosen choice."""
    score = np.empty(len(A.Q))
    chosen = np.empty(len(A.Q), dtype=np.int64)
    ts = []
    for f in range(fold.max() + 1):
        te, tr = fold == f, fold != f
        qw, qs = A.Q[tr, weak], A.Q[tr, strong]
        t = pol.choose_t(qw, qs) if rule == "trans" else 0.0
        ts.append(t)
        y = pol.hybrid_labels(q_weak=qw, q_strong=qs, rule=rule, t=t)[:, None]
        # the score is the P of a router fitted on the label "weak is good enough"
        router = routing_router(A.X[tr], y, A.datasets[tr], predictor=None if make is None else make())
        pred = _tuned(router)
        score[te] = router_proba(router, A.X[te])[:, 0]
        # the share is chosen on the training folds' own cross-fitted scores (validation)
        val = _validation_proba(pred, A.X[tr], y, folds, seed, make, A.datasets[tr])
        chosen[te] = _validated_choice(val[:, 0], qw, qs, score[te], weak, strong, max_quality_drop, seed)
    return score, chosen, {"rule": rule, "t": ts}


def _validation_proba(pred: PerInputPredictor, X: np.ndarray, Y: np.ndarray, folds: int,
                      seed: int, make: Callable[[], PerInputPredictor] | None,
                      groups: np.ndarray | None = None) -> np.ndarray:
    """The training folds' own cross-fitted P: the tuned predictor's out-of-fold P, or, for a
    fixed uncalibrated predictor (which fits without cross-validation and keeps none), a
    cross-fit of the same predictor over the training folds."""
    oof = getattr(pred, "oof_", None)
    if oof is not None and len(oof) == len(X):  # fewer rows: a capped sample
        return oof
    return crossfit_proba(X, Y, folds, seed, make, groups)[0]


def _validated_choice(score_val: np.ndarray, qw_val: np.ndarray, qs_val: np.ndarray,
                      score_test: np.ndarray, weak: int, strong: int, max_quality_drop: float,
                      seed: int) -> np.ndarray:
    """Per test input, weak or strong at the cost advantage chosen on validation data (the
    largest share sent to the weak model within the quality-drop budget), applied as a share
    of the test inputs ranked by score."""
    _, share, _ = pol.pick_threshold(score_val, q_weak=qw_val, q_strong=qs_val,
                                     max_quality_drop=max_quality_drop, seed=seed)
    return np.where(pol.top_share(score_test, share, seed), weak, strong)


@renamed(max_drop="max_quality_drop")
def evaluate(A: Arrays, policies: Sequence[str], strong: int | None = None,
             weak: int | None = None, folds: int = 5, seed: int = 0,
             make: Callable[[], PerInputPredictor] | None = None, hybrid_rules: Sequence[str] = ("det", "trans"),
             max_quality_drop: float = 0.01, P: np.ndarray | None = None) -> CostQuality:
    """Cross-fit P once, then sweep each policy, plus the random and oracle baselines."""
    if P is None:
        P, fold, fitted = crossfit_proba(A.X, A.Q, folds, seed, make, A.datasets)
        info: dict[str, Any] = {"predictors": [p.describe() | {"calibration": None} for p in fitted]}
    else:
        fold, _ = fold_ids(len(A.X), None, folds, seed)
        info, fitted = {}, []
    rows: list[dict[str, Any]] = []
    picks: list[np.ndarray] = []
    pair = strong is not None and weak is not None
    todo = list(policies) + (["random", "oracle-pair"] if pair else []) + ["oracle"]
    bma = fold_bma(A.Q, np.asarray(A.datasets), fold)  # each row's router's best model on average, for best's ties
    for name in todo:
        if name == "hybrid":
            assert strong is not None and weak is not None
            for rule in hybrid_rules:
                score, chosen, hinfo = _hybrid_score(A, fold, weak, strong, rule, folds, seed,
                                                     max_quality_drop, make)
                r, p = sweep("hybrid", P, A.Q, A.C, A.models, strong, weak, score, seed)
                for row in r:
                    row["policy"] = f"hybrid-{rule}"
                rows += r
                picks += p
                rows.append(_point(f"hybrid-{rule}@val", max_quality_drop, chosen, A.Q, A.C, A.models, strong))
                picks.append(chosen)
                info[f"hybrid-{rule}"] = hinfo
            continue
        r, p = sweep(name, P, A.Q, A.C, A.models, strong, weak, seed=seed, prefer=bma)
        rows += r
        picks += p
        if name == "threshold" and strong is not None and weak is not None and fitted:
            chosen = np.empty(len(A.Q), dtype=np.int64)
            for f, pred in enumerate(fitted):
                te, tr = fold == f, fold != f
                oof = _validation_proba(pred, A.X[tr], A.Q[tr], folds, seed, make, A.datasets[tr])
                val = -pol.strong_weak_score(oof, strong, weak)  # high = weak suffices
                chosen[te] = _validated_choice(val, A.Q[tr, weak], A.Q[tr, strong],
                                               -pol.strong_weak_score(P[te], strong, weak),
                                               weak, strong, max_quality_drop, seed)
            rows.append(_point("threshold@val", max_quality_drop, chosen, A.Q, A.C, A.models, strong))
            picks.append(chosen)
    for m, name in enumerate(A.models):
        rows.append(_point(f"single:{name}", np.nan, np.full(len(A.Q), m), A.Q, A.C, A.models, strong))
        picks.append(np.full(len(A.Q), m, dtype=np.int64))
    curve = pd.DataFrame(rows)
    return CostQuality(curve, np.vstack(picks), A.Q, A.C, list(A.models), strong, weak,
                       A.cost_source, info | {"P": P})


def cost_quality(data: BenchmarkData, strong: str | None = None, weak: str | None = None,
                 policy: str = "threshold", folds: int = 5, embeddings: np.ndarray | None = None,
                 *, costs: Mapping[str, float] | np.ndarray | None = None,
                 column: str = "correct", seed: int = 0,
                 predictor: Callable[[], PerInputPredictor] | None = None) -> pd.DataFrame:
    """The cost–quality curve of one policy, cross-fitted; one row per operating point.

    Parameters
    ----------
    data : BenchmarkData
    strong, weak : str, optional
        The pair for ``threshold`` / ``hybrid`` (default: the most and the least accurate
        models); the curve then has ``share_strong`` and the random and oracle pair baselines.
    policy : {"threshold", "hybrid", "best", "smallest_sufficient", "cheapest_within", "budget"}
    folds : int
    embeddings : ndarray (N, d)
        Vectors of ``data.instances()`` (required: this never runs the encoder).
    costs : mapping or ndarray, optional
        See :func:`arrays`; default the store's ``cost`` column.
    predictor : callable, optional
        Makes the (unfitted) predictor of each fold; default a tuned :class:`PerInputPredictor`.

    Returns
    -------
    DataFrame with ``policy, param, cost, quality, share_strong, share:<model>``; the baselines'
    rows are named ``random``, ``oracle-pair``, ``oracle`` and ``single:<model>``. ``attrs``
    carries ``q_strong``, ``q_weak``, ``c_min``, ``c_max`` and ``cost_source`` for
    :func:`routing_metrics`.
    """
    if embeddings is None:
        raise BenchrouteError("cost_quality needs the inputs' embeddings (embeddings=...)")
    A = arrays(data, embeddings, column, costs)
    s, w = pair_indices(A, strong, weak, needed=policy in PAIR_POLICIES)
    run = evaluate(A, [policy], s, w, folds, seed, predictor)
    return with_attrs(run)


def pair_indices(A: Arrays, strong: str | None, weak: str | None, needed: bool
                 ) -> tuple[int | None, int | None]:
    """Column indices of the strong/weak pair (defaults: the best and the worst model on
    average, :func:`benchroute.scoring.best_on_average`: each task counts once)."""
    for name in (strong, weak):
        if name is not None and name not in A.models:
            raise BenchrouteError(f"unknown model {name!r}; known models: {A.models}")
    if strong is None and weak is None and not needed and len(A.models) > 2:
        return None, None
    acc = task_means(A.Q, A.datasets)
    s = A.models.index(strong) if strong else best_on_average(acc)
    w = A.models.index(weak) if weak else best_on_average(acc, worst=True)
    if s == w:
        raise BenchrouteError(f"strong and weak are the same model {A.models[s]!r}")
    return s, w


def with_attrs(run: CostQuality) -> pd.DataFrame:
    curve = run.curve.copy()
    c_min, c_max = run.cost_range()
    curve.attrs.update(c_min=c_min, c_max=c_max, cost_source=run.cost_source)
    if run.strong is not None and run.weak is not None:
        q = run.Q.mean(axis=0)
        curve.attrs.update(q_strong=float(q[run.strong]), q_weak=float(q[run.weak]),
                           strong=run.models[run.strong], weak=run.models[run.weak])
    return curve


# ---------------------------------------------------------------------- metrics
def _metric_levels(levels: object) -> list[float]:
    """Call shares in [0, 1] whose ``PGR@<percent>`` columns are distinct: two levels of one
    rounded percent wrote one column, the last value winning (found by fuzzing)."""
    if not isinstance(levels, Sequence | np.ndarray) or isinstance(levels, str) \
            or not all(is_real(v) and 0.0 <= float(v) <= 1.0 for v in levels):
        raise BenchrouteError(f"levels == {levels!r:.60}; expected call shares in [0, 1]")
    out = [float(v) for v in levels]
    labels = [int(round(v * 100)) for v in out]
    if len(set(labels)) != len(labels):
        raise BenchrouteError(f"levels {out} round to the same percent (PGR@<percent>); give "
                              "each percent once")
    return out


def routing_metrics(curve: pd.DataFrame, q_strong: float | None = None,
                    q_weak: float | None = None, c_min: float | None = None,
                    c_max: float | None = None, levels: Sequence[float] = (0.2, 0.5, 0.8)
                    ) -> pd.DataFrame:
    """Per policy in ``curve``: PGR at call% ``levels``, APGR, CPT50, CPT80 (strong/weak
    curves, RouteLLM's definitions) and AIQ (every curve, RouterBench's definition).

    The constants default to ``curve.attrs`` (as :func:`cost_quality` sets them). The analytic
    random router (PGR = call%, APGR = 0.5) is added as ``random-analytic`` for pairs. For a
    curve with ``share_strong``, ``q_strong`` and ``q_weak`` are both known or both absent: PGR
    is the share of their gap a router recovers (NaN, with a warning, when they tie).
    """
    if not isinstance(curve, pd.DataFrame):
        raise BenchrouteError(f"curve is a {type(curve).__name__}; expected the DataFrame "
                              "cost_quality gives")
    missing = [c for c in ("policy", "cost", "quality") if c not in curve.columns]
    if missing:
        raise BenchrouteError(f"curve lacks column(s) {missing}; it has {list(curve.columns)[:10]}")
    if curve["policy"].isna().any():  # groupby dropped those rows without a word
        raise BenchrouteError("curve: a row has no policy name")
    for col in ("cost", "quality") + (("share_strong",) if "share_strong" in curve.columns else ()):
        if not pd.api.types.is_numeric_dtype(curve[col]) or pd.api.types.is_bool_dtype(curve[col]):
            raise BenchrouteError(f"curve column {col!r} must hold numbers, got {curve[col].dtype}")
    a = curve.attrs
    given = [n for n, v in (("q_strong", q_strong), ("q_weak", q_weak)) if v is not None]
    q_strong, q_weak, c_min, c_max = (
        None if v is None else pol.check_number(name, v) for name, v in (
            ("q_strong", a.get("q_strong") if q_strong is None else q_strong),
            ("q_weak", a.get("q_weak") if q_weak is None else q_weak),
            ("c_min", a.get("c_min") if c_min is None else c_min),
            ("c_max", a.get("c_max") if c_max is None else c_max)))
    if c_min is not None and c_max is not None and c_min > c_max:  # equal: AIQ NaN, as before
        raise BenchrouteError(f"c_min == {c_min:g} and c_max == {c_max:g}: AIQ averages over "
                              "[c_min, c_max], so c_min <= c_max")
    _check_pair(curve, q_strong, q_weak, given)
    return _metrics_table(curve, q_strong, q_weak, c_min, c_max, _metric_levels(levels))


def _check_pair(curve: pd.DataFrame, q_strong: float | None, q_weak: float | None,
                given: list[str]) -> None:
    """The pair's qualities, where PGR would read them: both or neither, and a finite gap. A tie
    made every PGR, APGR and CPT NaN without a word (now a warning: a real pair can tie, and
    the curve's AIQ still stands), a gap past a float's range made them 0, one quality alone
    and qualities for a curve without ``share_strong`` were ignored (found by fuzzing). A
    curve's quality outside [q_weak, q_strong] stays a use: a router can beat the strong
    model."""
    if (q_strong is None) != (q_weak is None):
        have, lack = ("q_strong", "q_weak") if q_weak is None else ("q_weak", "q_strong")
        raise BenchrouteError(f"{have} is given but not {lack} (nor in curve.attrs): PGR, APGR "
                              "and CPT need both qualities of the pair")
    if given and "share_strong" not in curve.columns:
        raise BenchrouteError(f"{' and '.join(given)} given, but the curve has no share_strong "
                              "column: PGR, APGR and CPT read the share of calls to the strong "
                              "model (a strong/weak curve of cost_quality)")
    if q_strong is None or q_weak is None or "share_strong" not in curve.columns:
        return
    if not math.isfinite(q_strong - q_weak):
        raise BenchrouteError(f"q_strong == {q_strong:g} and q_weak == {q_weak:g}: PGR divides "
                              "by their gap, which is past a float's range")
    if q_strong == q_weak:  # a real pair can tie: the curve and its AIQ still mean something
        warnings.warn(f"q_strong == q_weak == {q_strong:g}: the two models are equally good, "
                      "so PGR, APGR and CPT (shares of their gap) are NaN; AIQ and max_quality "
                      "stand", UserWarning, stacklevel=user_stacklevel())


def _metrics_table(curve: pd.DataFrame, q_strong: float | None, q_weak: float | None,
                   c_min: float | None, c_max: float | None, levels: list[float]) -> pd.DataFrame:
    """:func:`routing_metrics` on arguments it checked, without the checks: a bootstrap
    resample whose pair ties gives NaN (left out of the interval) without a warning for each
    of hundreds of resamples."""
    pair = q_strong is not None and q_weak is not None and "share_strong" in curve.columns
    rows = []
    for name, g in curve.groupby("policy", sort=False):
        if str(name).startswith("single:") or str(name).endswith("@val"):
            continue  # single models: see singles-hull; validation points: hybrid_at_validation
        row: dict[str, Any] = {"policy": name, "points": len(g)}
        # a pool policy's rows beside a pair's have no share of strong calls (NaN): no pair
        # metrics for it, as before the curve functions refused non-finite points
        finite = np.isfinite(g["quality"].to_numpy(dtype=float)).all()
        if pair and len(g) > 1 and finite \
                and np.isfinite(g["share_strong"].to_numpy(dtype=float)).all():
            assert q_strong is not None and q_weak is not None
            x, y = g["share_strong"].to_numpy(), g["quality"].to_numpy()
            for lv in levels:
                row[f"PGR@{int(round(lv * 100))}"] = float(
                    pgr(interp_at(x, y, lv), q_strong=q_strong, q_weak=q_weak))
            row["APGR"] = apgr(x, y, q_strong=q_strong, q_weak=q_weak)
            row["CPT50"] = cpt(x, y, q_strong=q_strong, q_weak=q_weak, pgr_target=0.5)
            row["CPT80"] = cpt(x, y, q_strong=q_strong, q_weak=q_weak, pgr_target=0.8)
        if c_min is not None and c_max is not None:  # NaN where a cost is unknown or inf
            row["AIQ"] = aiq(g["cost"].to_numpy(), g["quality"].to_numpy(), c_min, c_max) \
                if finite and np.isfinite(g["cost"].to_numpy(dtype=float)).all() else np.nan
        row["max_quality"] = float(g["quality"].max())
        rows.append(row)
    if pair:
        rand = {"policy": "random-analytic", "points": 0, "APGR": 0.5, "CPT50": 0.5, "CPT80": 0.8}
        rand.update({f"PGR@{int(round(lv * 100))}": float(lv) for lv in levels})
        rows.append(rand)
    singles = curve[curve["policy"].astype(str).str.startswith("single:")]
    if len(singles) and c_min is not None and c_max is not None:
        rows.append({"policy": "singles-hull", "points": len(singles),
                     "AIQ": aiq(singles["cost"].to_numpy(), singles["quality"].to_numpy(), c_min, c_max),
                     "max_quality": float(singles["quality"].max())})
    return pd.DataFrame(rows)


def hybrid_at_validation(curve: pd.DataFrame) -> pd.DataFrame:
    """Hybrid LLM's report: at the threshold chosen on validation (largest cost advantage within
    the quality-drop budget), the cost advantage (share of calls to the weak model) and the
    quality drop relative to always calling the strong one, on the test inputs."""
    q_strong = curve.attrs.get("q_strong")
    if "share_strong" not in curve.columns:
        return pd.DataFrame(columns=["policy", "budget", "cost_advantage", "quality", "quality_drop"])
    val = curve[curve["policy"].astype(str).str.endswith("@val")]
    return pd.DataFrame({"policy": val["policy"].to_numpy(), "budget": val["param"].to_numpy(),
                         "cost_advantage": 1.0 - val["share_strong"].to_numpy(),
                         "quality": val["quality"].to_numpy(),
                         "quality_drop": (q_strong - val["quality"]).to_numpy()
                         if q_strong is not None else np.nan})


def bootstrap_metrics(run: CostQuality, n_boot: int = 200, seed: int = 0,
                      levels: Sequence[float] = (0.2, 0.5, 0.8)) -> pd.DataFrame:
    """Percentile 95% intervals of :func:`routing_metrics` over a bootstrap of inputs (choices
    fixed, so the predictors are not refit): columns ``<metric>_lo`` and ``<metric>_hi``."""
    rng = np.random.default_rng(seed)
    n = len(run.Q)
    levels = _metric_levels(levels)
    base = routing_metrics(with_attrs(run), levels=levels)
    reps = []
    rows_idx = np.arange(n)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        Qb, Cb = run.Q[idx], run.C[idx]
        ch = run.choices[:, idx]
        curve = run.curve.copy()
        curve["quality"] = Qb[rows_idx[None, :], ch].mean(axis=1)
        curve["cost"] = Cb[rows_idx[None, :], ch].mean(axis=1)
        if run.strong is not None:
            curve["share_strong"] = (ch == run.strong).mean(axis=1)
        sub = CostQuality(curve, ch, Qb, Cb, run.models, run.strong, run.weak, run.cost_source)
        a = with_attrs(sub).attrs
        reps.append(_metrics_table(curve, a.get("q_strong"), a.get("q_weak"), a.get("c_min"),
                                   a.get("c_max"), levels).set_index("policy"))
    stacked = pd.concat(reps, keys=range(n_boot))
    metrics = [c for c in base.columns if c not in ("policy", "points")]
    points = base.set_index("policy")
    bounds = {}
    for policy, part in stacked.groupby(level=1):
        ends = {m: interval(part[m], point=points.at[policy, m]) for m in metrics}
        bounds[policy] = {**{f"{m}_lo": lo for m, (lo, _) in ends.items()},
                          **{f"{m}_hi": hi for m, (_, hi) in ends.items()}}
    return points.join(pd.DataFrame.from_dict(bounds, orient="index")).reset_index()
