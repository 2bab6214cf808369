"""Cost-aware routing policies, each a function of P (n, M), costs c (n, M) or (M,) and one
parameter (definitions and measurements: docs/routing.md).

Every policy returns the chosen column per input, shape (n,), int. They are plain array functions
so that the same code serves the fitted router (``Router.route(texts, policy=...)``) and the
cross-fitted evaluation (:mod:`benchroute.experiments.costs`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from benchroute.exceptions import BenchrouteError

logger = logging.getLogger(__name__)


def _check(P: np.ndarray, c: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    P = np.atleast_2d(np.asarray(P, dtype=np.float64))
    if c is None:
        return P, np.zeros_like(P)
    c = np.asarray(c, dtype=np.float64)
    if c.ndim == 1:
        if len(c) != P.shape[1]:
            raise BenchrouteError(f"costs has {len(c)} entries for {P.shape[1]} models")
        c = np.broadcast_to(c, P.shape)
    if c.shape != P.shape:
        raise BenchrouteError(f"costs have shape {c.shape}, expected {P.shape} or ({P.shape[1]},)")
    if np.isnan(c).any() or (c < 0).any():
        raise BenchrouteError("costs must be finite and >= 0")
    return P, c


def _cheapest_where(ok: np.ndarray, c: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Per row, the cheapest column where ``ok`` (ties: lowest index); ``fallback`` if none."""
    cost = np.where(ok, c, np.inf)
    pick = np.argmin(cost, axis=1)
    return np.where(ok.any(axis=1), pick, fallback)


def best(P: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    """argmax_m P(m, x); ties go to the cheaper model."""
    P, c = _check(P, c)
    top = P.max(axis=1, keepdims=True) - 1e-12 <= P
    return _cheapest_where(top, c, np.argmax(P, axis=1))


def strong_weak_score(P: np.ndarray, strong: int, weak: int) -> np.ndarray:
    """RouteLLM's router score, the predicted win of strong over weak: P(S) − P(W)."""
    P = np.atleast_2d(np.asarray(P, dtype=np.float64))
    return P[:, strong] - P[:, weak]


def threshold(P: np.ndarray, c: np.ndarray | None = None, *, strong: int, weak: int,
              t: float) -> np.ndarray:
    """RouteLLM: call the strong model when P(S, x) − P(W, x) ≥ t, else the weak one."""
    score = strong_weak_score(P, strong, weak)
    return np.where(score >= t, strong, weak)


def smallest_sufficient(P: np.ndarray, c: np.ndarray | None = None, *, tau: float) -> np.ndarray:
    """The cheapest model with P ≥ τ; if none reaches τ, the one with the highest P."""
    P, c = _check(P, c)
    return _cheapest_where(tau <= P, c, best(P, c))


def cheapest_within(P: np.ndarray, c: np.ndarray | None = None, *, eps: float) -> np.ndarray:
    """The cheapest model whose P is within ε of the input's top P."""
    P, c = _check(P, c)
    return _cheapest_where(P.max(axis=1, keepdims=True) - eps - 1e-12 <= P, c, best(P, c))


def lagrangian(P: np.ndarray, c: np.ndarray | None = None, *, lam: float) -> np.ndarray:
    """argmax_m P(m, x) − λ c(m, x): the assignment on the upper frontier for price λ."""
    P, c = _check(P, c)
    return best(P - lam * c, c)


def budget(P: np.ndarray, c: np.ndarray | None = None, *, budget: float,
           iters: int = 60) -> np.ndarray:
    """Max predicted quality with mean cost ≤ ``budget`` (Lagrangian relaxation).

    Bisects the price λ of cost until the mean cost of argmax P − λc fits the budget; the
    answer is the per-input choice at the smallest λ that fits (the integer rounding of the
    relaxation may leave part of the budget unspent). A budget below the cheapest assignment
    returns the cheapest model per input.
    """
    P, c = _check(P, c)
    mean_cost = lambda pick: float(c[np.arange(len(c)), pick].mean())  # noqa: E731
    free = best(P, c)
    if mean_cost(free) <= budget:
        return free
    cheapest = _cheapest_where(np.ones_like(P, dtype=bool), c, free)
    spread = float(np.ptp(P)) if P.size else 0.0
    cmin = float(np.min(np.diff(np.unique(c)))) if len(np.unique(c)) > 1 else 1.0
    hi = max(spread, 1.0) / max(cmin, 1e-12) * 2.0
    if mean_cost(lagrangian(P, c, lam=hi)) > budget:
        return cheapest
    lo = 0.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if mean_cost(lagrangian(P, c, lam=mid)) <= budget:
            hi = mid
        else:
            lo = mid
    return lagrangian(P, c, lam=hi)


# ---------------------------------------------------------------------- Hybrid LLM
def hybrid_labels(q_small: np.ndarray, q_large: np.ndarray, rule: str = "det",
                  t: float = 0.0) -> np.ndarray:
    """Hybrid LLM's training labels for "the small model is good enough" (Ding et al., 2024).

    ``det``: 1[q_s ≥ q_l] from one response each. ``prob``: P[H ≥ 0] over repeated samples,
    for q_s, q_l the per-input success rates of independent 0/1 trials: 1 − q_l (1 − q_s) (only
    meaningful where the data has several trials per input). ``trans``: P[H ≥ −t] with one
    response each, i.e. 1[q_s − q_l ≥ −t], the gap relaxed by t.
    """
    qs = np.asarray(q_small, dtype=np.float64)
    ql = np.asarray(q_large, dtype=np.float64)
    if rule == "det":
        return (qs >= ql).astype(np.float64)
    if rule == "prob":
        return 1.0 - ql * (1.0 - qs)
    if rule == "trans":
        return (qs - ql >= -t - 1e-12).astype(np.float64)
    raise BenchrouteError(f"unknown Hybrid LLM label rule {rule!r}; choose 'det', 'prob' or 'trans'")


def label_spread(y: np.ndarray) -> float:
    """Mean pairwise absolute difference of labels (Hybrid LLM's criterion for t*)."""
    y = np.sort(np.asarray(y, dtype=np.float64))
    n = len(y)
    if n < 2:
        return 0.0
    i = np.arange(1, n + 1)
    return float(2.0 * np.sum((2 * i - n - 1) * y) / (n * (n - 1)))


def choose_t(q_small: np.ndarray, q_large: np.ndarray,
             grid: Sequence[float] | None = None) -> float:
    """The relaxation t* that maximises the spread of the r_trans labels on training data."""
    ts = np.linspace(0.0, 1.0, 21) if grid is None else np.asarray(grid, dtype=float)
    spreads = [label_spread(hybrid_labels(q_small, q_large, "trans", float(t))) for t in ts]
    return float(ts[int(np.argmax(spreads))])


def hybrid(score: np.ndarray, *, small: int, large: int, threshold: float) -> np.ndarray:
    """Send x to the small model when the router score ("small is good enough") ≥ threshold."""
    return np.where(np.asarray(score) >= threshold, small, large)


def pick_threshold(score: np.ndarray, q_small: np.ndarray, q_large: np.ndarray,
                   max_drop: float = 0.01, seed: int = 0) -> tuple[float, float, float]:
    """The largest cost advantage (share of inputs sent to the small model, those with the
    highest score first) whose quality drop relative to always-large is at most ``max_drop``
    (absolute, in quality units), on the data given (the validation set).

    Ties in the score are broken at random (seeded), so the answer is a share, i.e. a quantile
    threshold as in RouteLLM's evaluation, rather than a raw score that may split a block of
    tied inputs badly. Returns (score threshold, cost advantage, quality drop).
    """
    score = np.asarray(score, dtype=np.float64)
    qs, ql = np.asarray(q_small, float), np.asarray(q_large, float)
    n = len(score)
    order = np.lexsort((np.random.default_rng(seed).random(n), -score))
    # quality when the first j inputs in that order go to the small model, j = 0..n
    gain = np.r_[0.0, np.cumsum(qs[order] - ql[order])] / max(n, 1)
    ok = np.flatnonzero(-gain <= max_drop + 1e-12)
    j = int(ok.max())
    thr = float(score[order[j - 1]]) if j > 0 else float("inf")
    return thr, j / max(n, 1), float(-gain[j])


def top_share(score: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """Mask of the ``share`` of inputs with the highest score (ties broken at random, seeded)."""
    score = np.asarray(score, dtype=np.float64)
    order = np.lexsort((np.random.default_rng(seed).random(len(score)), -score))
    mask = np.zeros(len(score), dtype=bool)
    mask[order[:int(round(share * len(score)))]] = True
    return mask


# ---------------------------------------------------------------------- registry
Policy = Callable[..., np.ndarray]
POLICIES: dict[str, Policy] = {
    "best": best,
    "threshold": threshold,
    "smallest_sufficient": smallest_sufficient,
    "cheapest_within": cheapest_within,
    "budget": budget,
}


def apply_policy(name: str, P: np.ndarray, c: np.ndarray | None = None,
                 **params: Any) -> np.ndarray:
    """Run a policy by name; unknown names and parameters fail with the valid ones listed."""
    if name not in POLICIES:
        raise BenchrouteError(f"unknown policy {name!r}; choose one of {sorted(POLICIES)} "
                              "(Hybrid LLM needs a trained score: benchroute.experiments.costs)")
    import inspect

    fn = POLICIES[name]
    valid = [p for p, v in inspect.signature(fn).parameters.items()
             if v.kind == inspect.Parameter.KEYWORD_ONLY and p != "iters"]
    missing = [p for p in valid if p not in params]
    extra = [p for p in params if p not in valid]
    if extra or missing:
        raise BenchrouteError(f"policy {name!r} takes {valid}; got {sorted(params)}")
    return fn(P, c, **params)


def cost_vector(models: Sequence[str], costs: Mapping[str, float] | Sequence[float] | np.ndarray
                ) -> np.ndarray:
    """Per-model cost per call as an array in ``models`` order, from a mapping or a sequence."""
    if isinstance(costs, Mapping):
        missing = [m for m in models if m not in costs]
        if missing:
            raise BenchrouteError(f"no cost given for model(s) {missing}; costs name {sorted(costs)}")
        out = np.array([float(costs[m]) for m in models])
    else:
        out = np.asarray(costs, dtype=np.float64)
        if out.shape != (len(models),):
            raise BenchrouteError(f"costs has shape {out.shape}, expected ({len(models)},)")
    if np.isnan(out).any() or (out < 0).any():
        raise BenchrouteError(f"costs must be finite and >= 0, got {out.tolist()}")
    return out


def cheapest_within_selection(scores: pd.DataFrame, costs: Mapping[str, float],
                              max_quality_drop: float, column: str = "S3") -> str:
    """Task level: the cheapest model whose ``column`` score is within ε of the top one.

    ``scores`` is a :class:`~benchroute.router.Selection`'s table (index = model).
    """
    if max_quality_drop < 0:
        raise BenchrouteError(f"max_quality_drop == {max_quality_drop}, must be >= 0")
    if column not in scores.columns:
        raise BenchrouteError(f"scores has no column {column!r}; columns: {list(scores.columns)}")
    s = scores[column].astype(float)
    c = pd.Series(cost_vector(list(s.index), costs), index=s.index)
    ok = s >= s.max() - max_quality_drop - 1e-12
    cand = c[ok]
    cheapest = cand[cand == cand.min()].index
    return str(s.loc[cheapest].idxmax())


def choices_frame(P: np.ndarray, c: np.ndarray, pick: np.ndarray, models: Sequence[str],
                  ) -> pd.DataFrame:
    """Per input: the chosen model, its predicted P and its cost."""
    rows = np.arange(len(pick))
    P, c = _check(P, c)
    return pd.DataFrame({"model": [models[i] for i in pick], "p": P[rows, pick],
                         "cost": c[rows, pick]})


# ---------------------------------------------------------------------- router glue
# The router calls these through one-line hunks, so that its own code stays untouched.
def store_costs(data: Any) -> dict[str, float] | None:
    """Mean cost per call of each model from a store's ``cost`` column (None without one)."""
    frame = data.frame
    if "cost" not in frame.columns or frame["cost"].isna().all():
        return None
    return {str(m): float(v) for m, v in frame.groupby("model")["cost"].mean().dropna().items()}


def router_proba(router: Any, Q: np.ndarray) -> np.ndarray:
    """P(m, x) of a fitted router: its tuned per-input predictor when it has one, else g_m(x);
    models added from a few labels follow (see :mod:`benchroute.new_models`)."""
    from benchroute.inputs import check_vectors
    from benchroute.new_models import router_proba_all

    return router_proba_all(router, check_vectors(Q, "queries"))


def router_costs(router: Any, costs: Mapping[str, float] | Sequence[float] | None,
                 what: str) -> np.ndarray:
    """Per-model costs in ``router.models_`` order: the caller's, else those of the fit store."""
    costs = costs if costs is not None else getattr(router, "costs_", None)
    if costs is None:
        raise BenchrouteError(f"{what} needs costs: pass costs={{model: cost per call}} (a price "
                              "table times a typical token count, or a declared proxy), or fit on "
                              "a store with a 'cost' column")
    return cost_vector(router.models_, costs)


def route_with_policy(router: Any, Q: np.ndarray, policy: str, cand: np.ndarray,
                      costs: Mapping[str, float] | Sequence[float] | None = None,
                      **params: Any) -> pd.DataFrame:
    """``Router.route(texts, policy=...)``: per input the model, its predicted P and its cost.

    ``strong``/``weak`` (threshold) are model names. ``best`` needs no costs (cost 0 shown
    when none are known); every other policy does.
    """
    models = [router.models_[i] for i in cand]
    P = router_proba(router, Q)[:, cand]
    if policy == "best" and costs is None and getattr(router, "costs_", None) is None:
        c = np.zeros(len(cand))
    else:
        c = router_costs(router, costs, f"policy {policy!r}")[cand]
    for key in ("strong", "weak"):
        if key in params:
            if params[key] not in models:
                raise BenchrouteError(f"{key} model {params[key]!r} is not among {models}")
            params[key] = models.index(params[key])
    pick = apply_policy(policy, P, c, **params)
    return choices_frame(P, c, pick, models)


def cheaper_selection(selection: Any, costs: np.ndarray, models: Sequence[str],
                      max_quality_drop: float) -> Any:
    """``select_model(..., max_quality_drop=ε)``: the selection moved to the cheapest candidate
    whose score (the selection's method) is within ε of the top one."""
    import dataclasses

    table = selection.scores.copy()
    by_model = dict(zip(models, costs))
    model = cheapest_within_selection(table, by_model, max_quality_drop, selection.method)
    table["cost"] = [by_model[m] for m in table.index]
    table["chosen"] = table.index == model
    return dataclasses.replace(selection, model=model, scores=table)


def routing_state(router: Any) -> dict[str, Any]:
    """What a saved router keeps of the tuned predictor and the costs (JSON-ready)."""
    tuned = getattr(router, "per_input_", None)
    return {"per_input": None if tuned is None else tuned.describe(),
            "costs": getattr(router, "costs_", None)}


def restore_routing(router: Any, state: Mapping[str, Any] | None) -> None:
    """Inverse of :func:`routing_state`, rebuilding the tuned predictor on the router's pool."""
    from benchroute.tuning import PerInputPredictor

    state = state or {}
    router.costs_ = state.get("costs")
    if state.get("per_input"):
        router.per_input_ = PerInputPredictor.from_description(state["per_input"], None, router.Y_)
