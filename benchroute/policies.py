"""Cost-aware routing policies, each a function of P (n, M), costs c (n, M) or (M,) and one
parameter (definitions and measurements: docs/routing.md).

Every policy returns the chosen column per input, shape (n,), int. They are plain array functions
of P, costs and parameters, knowing nothing of a router, so that the same code serves the fitted
router (through :mod:`benchroute.routing`), the gateway and the cross-fitted evaluation
(:mod:`benchroute.experiments.costs`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from benchroute.data.metrics import short_repr
from benchroute.deprecation import keywords_after, rename_keys, renamed
from benchroute.exceptions import BenchrouteError
from benchroute.inputs import is_int, is_real
from benchroute.scoring import TIE_TOL, argmax_ties

logger = logging.getLogger(__name__)


def check_number(name: str, value: object, low: float | None = None) -> float:
    """A policy parameter or a cost: a finite real number (not a string, a bool or None), at
    least ``low`` when given."""
    if not is_real(value) or (low is not None and float(value) < low):  # type: ignore[arg-type]
        at_least = "" if low is None else f" >= {low:g}"
        raise BenchrouteError(f"{name} == {short_repr(value, 60)}, expected a finite "
                              f"number{at_least}")
    return float(value)  # type: ignore[arg-type]


def check_param(where: str, key: str, value: object) -> float:
    """A numeric policy parameter within :data:`PARAM_RANGES` (NaN and infinities refused)."""
    lo, hi = PARAM_RANGES[key]
    v = check_number(where, value)
    if not lo - RANGE_SLACK <= v <= hi + RANGE_SLACK:
        span = f"in [{lo:g}, {hi:g}]" if math.isfinite(hi) else f">= {lo:g}"
        raise BenchrouteError(f"{where} == {short_repr(value, 60)}, expected a finite number "
                              f"{span}")
    return v


def cost_array(c: object) -> np.ndarray:
    """Costs as float64; strings, None, nested or ragged lists and NaN, infinite or negative
    values are refused (each is a cost the caller did not mean)."""
    try:
        raw = np.asarray(c)
    except (TypeError, ValueError) as exc:  # ragged nesting
        raise BenchrouteError(f"costs must be an array of numbers, got {c!r:.100}") from exc
    if raw.dtype.kind not in "iuf":
        raise BenchrouteError(f"costs must be numbers, got {c!r:.100}")
    out = raw.astype(np.float64)
    if not np.isfinite(out).all() or (out < 0).any():
        raise BenchrouteError(f"costs must be finite and >= 0, got {c!r:.100}")
    return out


def _scores(P: object, name: str = "P") -> np.ndarray:
    """``P`` as a finite float64 (n, M) array (one row when 1-D). A NaN compares false with
    every number, so a NaN in P sent its row to whichever model the comparison left: refused,
    naming the first such cell, as strings and bools are."""
    try:
        raw = np.asarray(P)
    except (TypeError, ValueError) as exc:  # ragged nesting
        raise BenchrouteError(f"{name} must be an (n, M) array of numbers, got "
                              f"{short_repr(P, 60)}") from exc
    if raw.dtype.kind not in "iuf" or not 1 <= raw.ndim <= 2:
        raise BenchrouteError(f"{name} must be an (n, M) array of numbers, got "
                              f"{short_repr(P, 60)} (dtype {raw.dtype}, {raw.ndim}-D)")
    out = np.atleast_2d(raw.astype(np.float64))
    bad = ~np.isfinite(out)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise BenchrouteError(f"{name}[{i}, {j}] == {out[i, j]}: every value must be a finite "
                              f"number ({int(bad.sum())} are not)")
    return out


def _vector(name: str, v: object, n: int | None = None) -> np.ndarray:
    """A 1-D array of finite numbers (of length ``n`` when given): a score or a quality per
    input."""
    out = _scores(v, name)
    if np.asarray(v).ndim != 1 or (n is not None and out.shape[1] != n):
        raise BenchrouteError(f"{name} must be a 1-D array of numbers"
                              + ("" if n is None else f" of length {n}")
                              + f", got shape {np.asarray(v).shape}")
    return out[0]


def _column(name: str, v: object, n_models: int) -> int:
    """A model's column: an integer in [0, M) (a negative index counted from the end, or a
    bool, chose a model nobody named)."""
    if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)) \
            or not 0 <= int(v) < n_models:
        raise BenchrouteError(f"{name} == {short_repr(v, 60)}, expected a column index in "
                              f"[0, {n_models})")
    return int(v)


def _pair(n_models: int, strong: object, weak: object) -> tuple[int, int]:
    s, w = _column("strong", strong, n_models), _column("weak", weak, n_models)
    if s == w:
        raise BenchrouteError("strong and weak are the same model; the threshold policy "
                              "chooses between two different models")
    return s, w


def _check(P: object, c: object | None = None) -> tuple[np.ndarray, np.ndarray]:
    P = _scores(P)
    if c is None:
        return P, np.zeros_like(P)
    c = cost_array(c)
    if c.ndim == 1:
        if len(c) != P.shape[1]:
            raise BenchrouteError(f"costs has {len(c)} entries for {P.shape[1]} models")
        c = np.broadcast_to(c, P.shape)
    if c.shape != P.shape:
        raise BenchrouteError(f"costs have shape {c.shape}, expected {P.shape} or ({P.shape[1]},)")
    return P, c


def _cheapest_where(P: np.ndarray, ok: np.ndarray, c: np.ndarray, fallback: np.ndarray
                    ) -> np.ndarray:
    """Per row, the cheapest column where ``ok``; ``fallback`` if none. Among columns of the
    same cost the highest P wins (the package's argmax, ties to the lower column): a model no
    cheaper and predicted worse is never the choice."""
    cost = np.where(ok, c, np.inf)
    cheapest = ok & (cost <= cost.min(axis=1, keepdims=True))
    pick = argmax_ties(np.where(cheapest, P, -np.inf))
    return np.where(ok.any(axis=1), pick, fallback)


def best(P: np.ndarray, c: np.ndarray | None = None, *,
         prefer: int | np.ndarray | None = None, tol: float = TIE_TOL) -> np.ndarray:
    """argmax_m P(m, x) by the package's one argmax rule (:func:`benchroute.scoring.argmax_ties`):
    P within ``tol`` of the top is a tie, and a tie goes to ``prefer`` (a column, or one per
    row: ``Router.route`` passes the best model on average), then to the cheaper model, then
    the lower column."""
    P, c = _check(P, c)
    if prefer is not None and np.ndim(prefer) == 0:
        prefer = _column("prefer", prefer, P.shape[1])
    elif prefer is not None:
        pref = np.asarray(prefer)
        if pref.shape != (len(P),) or pref.dtype.kind not in "iu" \
                or not ((pref >= 0) & (pref < P.shape[1])).all():
            raise BenchrouteError(f"prefer must be a column index or one per row ({len(P)} "
                                  f"in [0, {P.shape[1]})), got {short_repr(prefer, 60)}")
    return argmax_ties(P, prefer=prefer, cost=c, tol=check_number("tol", tol, 0.0))


def strong_weak_score(P: np.ndarray, strong: int, weak: int) -> np.ndarray:
    """RouteLLM's router score, the predicted win of strong over weak: P(S) − P(W)."""
    P = _scores(P)
    strong, weak = _pair(P.shape[1], strong, weak)
    return P[:, strong] - P[:, weak]


def threshold(P: np.ndarray, c: np.ndarray | None = None, *, strong: int, weak: int,
              t: float) -> np.ndarray:
    """RouteLLM: call the strong model when P(S, x) − P(W, x) ≥ t, else the weak one."""
    score = strong_weak_score(P, strong, weak)
    return np.where(score >= check_param("t", "t", t), int(strong), int(weak))


def smallest_sufficient(P: np.ndarray, c: np.ndarray | None = None, *, tau: float) -> np.ndarray:
    """The cheapest model with P ≥ τ; if none reaches τ, the one with the highest P."""
    P, c = _check(P, c)
    return _cheapest_where(P, check_param("tau", "tau", tau) <= P, c, best(P, c))


def smallest_sufficient_shares(P: np.ndarray, c: np.ndarray | None, column: int
                                ) -> tuple[np.ndarray, np.ndarray]:
    """Every τ at which :func:`smallest_sufficient`'s share of rows sent to ``column`` can
    change, and that share: (taus ascending, shares).

    A row's choice changes only where τ passes one of its own P values: for τ in
    (v_(j-1), v_(j)] of the row's sorted values the models with P ≥ τ are those with
    P ≥ v_(j). So the choices at the n·M values, and above the largest (where none reaches τ
    and the highest P is chosen), give the share everywhere, exactly; a grid of τ misses
    options between its points.
    """
    P, c = _check(P, c)
    n, M = P.shape
    column = _column("column", column, M)
    if n == 0:
        return np.zeros(1), np.zeros(1)
    fallback = best(P, c)
    V = np.sort(P, axis=1)
    hits = np.empty((n, M + 1), dtype=np.int8)
    for j in range(M):  # τ = the row's j-th smallest value
        hits[:, j] = _cheapest_where(P, V[:, j:j + 1] <= P, c, fallback) == column
    hits[:, M] = fallback == column
    # passing above V[:, j], a row's indicator moves from hits[:, j] to hits[:, j + 1]
    at, step = V.ravel(), np.diff(hits, axis=1).ravel()
    order = np.argsort(at, kind="stable")
    passed = np.r_[0, np.cumsum(step[order])]
    taus = np.unique(np.r_[V.ravel(), np.nextafter(V.max(), np.inf)])
    count = hits[:, 0].sum() + passed[np.searchsorted(at[order], taus, side="left")]
    return taus, count / max(n, 1)


@renamed(eps="max_quality_drop")
def cheapest_within(P: np.ndarray, c: np.ndarray | None = None, *,
                    max_quality_drop: float) -> np.ndarray:
    """The cheapest model whose P is within ε = ``max_quality_drop`` of the input's top P."""
    P, c = _check(P, c)
    drop = check_param("max_quality_drop", "max_quality_drop", max_quality_drop)
    top = P.max(axis=1, keepdims=True)
    return _cheapest_where(P, top - drop - TIE_TOL <= P, c, best(P, c))


def lagrangian(P: np.ndarray, c: np.ndarray | None = None, *, lam: float) -> np.ndarray:
    """argmax_m P(m, x) − λ c(m, x): the assignment on the upper frontier for price λ."""
    P, c = _check(P, c)
    return _priced(P, c, check_param("lam", "lam", lam))


def _priced(P: np.ndarray, c: np.ndarray, lam: float) -> np.ndarray:
    """:func:`lagrangian` on checked arrays. The bisection of :func:`budget_price` calls it
    with prices up to ~1e300, where P − λc may be infinite: an order still, not an input."""
    with np.errstate(over="ignore", invalid="ignore"):
        return argmax_ties(P - lam * c, cost=c)


def budget_price(P: np.ndarray, c: np.ndarray | None = None, *, budget: float,
                 iters: int = 60) -> float:
    """The smallest price λ of cost at which argmax P − λc has mean cost ≤ ``budget``.

    0 when the free choice (argmax P) fits; ``inf`` when no price fits (the budget is below the
    cheapest assignment). Found by bisection, so a gateway can fix λ once on a sample of prompts
    and then decide each request alone with :func:`lagrangian`.
    """
    P, c = _check(P, c)
    budget = check_param("budget", "budget", budget)
    if not is_int(iters) or not 1 <= int(iters) <= 10_000:
        raise BenchrouteError(f"iters == {short_repr(iters, 60)}, expected an integer in "
                              "[1, 10000]")
    mean_cost = lambda pick: finite_mean(c[np.arange(len(c)), pick])  # noqa: E731
    if mean_cost(best(P, c)) <= budget:
        return 0.0
    spread = float(np.ptp(P)) if P.size else 0.0
    cmin = smallest_step(c)
    # scaled by the smallest cost step itself: a floor of 1e-12 made costs of about 1e-12
    # always take the cheapest assignment (the floor only keeps a subnormal step finite)
    hi = max(spread, 1.0) / max(cmin, np.finfo(float).tiny) * 2.0
    if mean_cost(_priced(P, c, hi)) > budget:
        return float("inf")
    # first on a log scale (the price may lie anywhere below hi: hi / 2⁶⁰, where a linear
    # bisection stops, was 1e27 for a price of 1 when a cost step was 1e-45), then linearly
    log_lo, log_hi = math.log2(hi) - 2200.0, math.log2(hi)  # 2^(log_lo) is 0 or next to it
    for _ in range(40):
        mid = 0.5 * (log_lo + log_hi)
        if mean_cost(_priced(P, c, 2.0 ** mid)) <= budget:
            log_hi = mid
        else:
            log_lo = mid
    lo, hi = 2.0 ** log_lo, 2.0 ** log_hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if mean_cost(_priced(P, c, mid)) <= budget:
            hi = mid
        else:
            lo = mid
    return hi


def budget(P: np.ndarray, c: np.ndarray | None = None, *, budget: float,
           iters: int = 60) -> np.ndarray:
    """Max predicted quality with mean cost ≤ ``budget`` (Lagrangian relaxation).

    The per-input choice at the smallest price λ that fits (:func:`budget_price`); the integer
    rounding of the relaxation may leave part of the budget unspent. A budget below the
    cheapest assignment returns the cheapest model per input.
    """
    P, c = _check(P, c)
    lam = budget_price(P, c, budget=budget, iters=iters)
    if np.isinf(lam):
        return _cheapest_where(P, np.ones_like(P, dtype=bool), c, best(P, c))
    return _priced(P, c, lam)


# ---------------------------------------------------------------------- Hybrid LLM
@renamed(q_small="q_weak", q_large="q_strong")
@keywords_after(0)
def hybrid_labels(*, q_weak: np.ndarray, q_strong: np.ndarray, rule: str = "det",
                  t: float = 0.0) -> np.ndarray:
    """Hybrid LLM's training labels for "the weak (small) model is good enough" (Ding et al.,
    2024), q_w and q_s the per-input qualities of the weak and the strong model.

    ``det``: 1[q_w ≥ q_s] from one response each. ``prob``: P[H ≥ 0] over repeated samples,
    for q_w, q_s the per-input success rates of independent 0/1 trials: 1 − q_s (1 − q_w) (only
    meaningful where the data has several trials per input). ``trans``: P[H ≥ −t] with one
    response each, i.e. 1[q_w − q_s ≥ −t], the gap relaxed by t.
    """
    qs = _vector("q_strong", q_strong)
    qw = _vector("q_weak", q_weak, len(qs))
    if rule == "det":
        return (qw >= qs).astype(np.float64)
    if rule == "prob":
        return 1.0 - qs * (1.0 - qw)
    if rule == "trans":
        return (qw - qs >= -check_param("t", "t", t) - 1e-12).astype(np.float64)
    raise BenchrouteError(f"unknown Hybrid LLM label rule {rule!r}; choose 'det', 'prob' or 'trans'")


def label_spread(y: np.ndarray) -> float:
    """Mean pairwise absolute difference of labels (Hybrid LLM's criterion for t*)."""
    y = np.sort(np.asarray(y, dtype=np.float64))
    n = len(y)
    if n < 2:
        return 0.0
    i = np.arange(1, n + 1)
    return float(2.0 * np.sum((2 * i - n - 1) * y) / (n * (n - 1)))


@renamed(q_small="q_weak", q_large="q_strong")
def choose_t(q_weak: np.ndarray, q_strong: np.ndarray,
             grid: Sequence[float] | None = None) -> float:
    """The relaxation t* that maximises the spread of the r_trans labels on training data."""
    ts = np.linspace(0.0, 1.0, 21) if grid is None else np.asarray(grid, dtype=float)
    spreads = [label_spread(hybrid_labels(q_weak=q_weak, q_strong=q_strong, rule="trans",
                                          t=float(t))) for t in ts]
    return float(ts[int(np.argmax(spreads))])


@renamed(small="weak", large="strong")
def hybrid(score: np.ndarray, *, weak: int, strong: int, threshold: float) -> np.ndarray:
    """Send x to the weak model when the router score ("weak is good enough") ≥ threshold
    (±inf: every input to one side, as :func:`pick_threshold` gives for none sent to weak)."""
    score = _vector("score", score)
    if not (is_int(weak) and is_int(strong) and min(weak, strong) >= 0 and weak != strong):
        raise BenchrouteError(f"weak == {short_repr(weak, 30)}, strong == "
                              f"{short_repr(strong, 30)}: expected two different column indices")
    if not isinstance(threshold, (int, float, np.integer, np.floating)) \
            or isinstance(threshold, (bool, np.bool_)) or np.isnan(threshold):
        raise BenchrouteError(f"threshold == {short_repr(threshold, 60)}, expected a number "
                              "(±inf allowed)")
    return np.where(score >= threshold, weak, strong)


@renamed(q_small="q_weak", q_large="q_strong", max_drop="max_quality_drop")
@keywords_after(1)
def pick_threshold(score: np.ndarray, *, q_weak: np.ndarray, q_strong: np.ndarray,
                   max_quality_drop: float = 0.01, seed: int = 0) -> tuple[float, float, float]:
    """The largest cost advantage (share of inputs sent to the weak model, those with the
    highest score first) whose quality drop relative to always-strong is at most
    ``max_quality_drop`` (absolute, in quality units), on the data given (the validation set).

    Ties in the score are broken at random (seeded), so the answer is a share, i.e. a quantile
    threshold as in RouteLLM's evaluation, rather than a raw score that may split a block of
    tied inputs badly. Returns (score threshold, cost advantage, quality drop).
    """
    score = _vector("score", score)
    n = len(score)
    qw, qs = _vector("q_weak", q_weak, n), _vector("q_strong", q_strong, n)
    max_quality_drop = check_param("max_quality_drop", "max_quality_drop", max_quality_drop)
    order = np.lexsort((np.random.default_rng(seed).random(n), -score))
    # quality when the first j inputs in that order go to the weak model, j = 0..n
    gain = np.r_[0.0, np.cumsum(qw[order] - qs[order])] / max(n, 1)
    ok = np.flatnonzero(-gain <= max_quality_drop + 1e-12)
    j = int(ok.max())
    thr = float(score[order[j - 1]]) if j > 0 else float("inf")
    return thr, j / max(n, 1), float(-gain[j])


def share_count(share: float, n: int) -> int:
    """How many of ``n`` inputs a share makes: the nearest whole number, halves up (the count
    whose share is closest to ``share``, the larger on a tie), the rule
    :func:`top_share` and the gateway's calibration (``threshold_for_share``) both follow."""
    # a half within float error (0.7 × 45 = 31.499999999999996) is a half
    return int(math.floor(share * n + 0.5 + 1e-9))


def finite_mean(values: np.ndarray) -> float:
    """The mean of finite values without overflow (0 for none): costs near a float's limit
    (1e308) summed to inf, so a budget curve's mean costs were inf and its budgets NaN."""
    v = np.asarray(values, dtype=np.float64)
    if not v.size:
        return 0.0
    with np.errstate(over="ignore"):
        plain = float(v.mean())
    if math.isfinite(plain):  # the usual case, bit for bit the plain mean
        return plain
    scale = float(np.max(np.abs(v)))
    return float(np.mean(v / scale) * scale)


def smallest_step(c: np.ndarray) -> float:
    """The smallest gap between two distinct costs (1 when all are equal): the scale of a price
    of cost that can change a choice."""
    u = np.unique(np.asarray(c, dtype=np.float64))
    return float(np.min(np.diff(u))) if len(u) > 1 else 1.0


def top_share(score: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """Mask of the ``share`` of inputs with the highest score (:func:`share_count` of them;
    ties broken at random, seeded)."""
    share = check_number("share", share, 0.0)
    if share > 1:
        raise BenchrouteError(f"share == {share!r}, expected a share in [0, 1]")
    score = _vector("score", score)
    order = np.lexsort((np.random.default_rng(seed).random(len(score)), -score))
    mask = np.zeros(len(score), dtype=bool)
    mask[order[:share_count(share, len(score))]] = True
    return mask


# ---------------------------------------------------------------------- registry
Policy = Callable[..., np.ndarray]
POLICIES: dict[str, Policy] = {
    "best": best,
    "threshold": threshold,
    "smallest_sufficient": smallest_sufficient,
    "cheapest_within": cheapest_within,
    "budget": budget,
    "lagrangian": lagrangian,
}


#: The range of each numeric policy parameter, one rule for the library, the command line and
#: the gateway's entry points (a tau of 70 meant for 0.70 is refused everywhere). ``t`` compares
#: P(S, x) − P(W, x) ∈ [−1, 1] and ``tau`` a probability; ε is a drop in P.
PARAM_RANGES: dict[str, tuple[float, float]] = {
    "t": (-1.0, 1.0), "tau": (0.0, 1.0), "max_quality_drop": (0.0, 1.0),
    "budget": (0.0, math.inf), "lam": (0.0, math.inf)}
#: Slack on the ranges' ends: a calibrated t that sends no input to the strong model lies one
#: rounding step above the highest score, 1.0 + 2⁻⁵² when that score is 1.
RANGE_SLACK = 1e-9
#: Old spellings of policy parameters, accepted for one release (routing, the gateway's
#: calibration files and ``--param``).
RENAMED_PARAMS = {"eps": "max_quality_drop"}


def get_policy(name: str) -> Policy:
    """The policy function of that name; an unknown name fails with the valid ones listed."""
    if not isinstance(name, str) or name not in POLICIES:
        raise BenchrouteError(f"unknown policy {name!r:.100}; choose one of {sorted(POLICIES)} "
                              "(Hybrid LLM needs a trained score: benchroute.experiments.costs)")
    return POLICIES[name]


#: Keyword arguments of policy functions that are not a user's policy parameters: a search's
#: iterations, and the tie-break the router passes to ``best``.
_INTERNAL_ARGS = ("iters", "prefer", "tol")


def _param_names(name: str) -> list[str]:
    import inspect

    return [p for p, v in inspect.signature(get_policy(name)).parameters.items()
            if v.kind == inspect.Parameter.KEYWORD_ONLY and p not in _INTERNAL_ARGS]


def canonical_params(name: str, params: Mapping[str, Any], stacklevel: int = 2) -> dict[str, Any]:
    """``params`` of policy ``name`` with old spellings (:data:`RENAMED_PARAMS`) renamed, a
    FutureWarning each; called once where parameters enter (``route_table``, ``apply_policy``,
    the gateway's policy), so the warning points at the caller. ``stacklevel`` counts from
    the function that calls this one (1: that function, 2: its caller)."""
    renames = {o: n for o, n in RENAMED_PARAMS.items() if n in _param_names(name)}
    return rename_keys(params, renames, f"policy {name!r}", stacklevel=stacklevel + 2)


def check_policy_params(name: str, params: Mapping[str, Any], n_models: int) -> dict[str, Any]:
    """The parameters of policy ``name`` checked: the names it takes, each number finite and in
    range, ``strong``/``weak`` two different column indices."""
    valid = _param_names(name)
    params = canonical_params(name, params)
    missing = [p for p in valid if p not in params]
    extra = [p for p in params if p not in valid]
    if extra or missing:
        what = "; ".join(part for part in (f"missing {missing}" if missing else "",
                                           f"unknown {sorted(extra)}" if extra else "") if part)
        raise BenchrouteError(f"policy {name!r} takes {valid}; got {sorted(params)} ({what})")
    where = f"policy {name!r}"
    out: dict[str, Any] = {}
    for key, value in params.items():
        out[key] = _column(f"{where}: {key}", value, n_models) if key in ("strong", "weak") \
            else check_param(f"{where}: {key}", key, value)
    if "strong" in out:
        try:
            _pair(n_models, out["strong"], out["weak"])
        except BenchrouteError as exc:
            raise BenchrouteError(f"{where}: {exc}") from None
    return out


def apply_policy(name: str, P: np.ndarray, c: np.ndarray | None = None,
                 **params: Any) -> np.ndarray:
    """Run a policy by name; unknown names and parameters fail with the valid ones listed,
    parameters out of range (NaN, a string, ε < 0, ...) with the value and what was expected."""
    fn = get_policy(name)
    params = canonical_params(name, params, stacklevel=2)
    P, c_checked = _check(P, c)
    return fn(P, None if c is None else c_checked,
                          **check_policy_params(name, params, P.shape[1]))


def costs_by_name(costs: Any) -> Any:
    """A pandas Series of costs as the mapping its labels make. Why: a Series is no
    ``Mapping``, so it was read by position, each price given to another model."""
    if isinstance(costs, pd.Series):
        twice = sorted({str(k) for k in costs.index[costs.index.duplicated()]})
        if twice:  # the last price of a model won silently (found by fuzzing)
            raise BenchrouteError(f"costs: the Series names {twice[:10]} more than once")
        return {str(k): v for k, v in costs.items()}
    return costs


def cost_vector(models: Sequence[str], costs: Mapping[str, float] | Sequence[float] | np.ndarray
                ) -> np.ndarray:
    """Per-model cost per call as an array in ``models`` order, from a mapping (a pandas Series
    counts as one: by its labels) or a sequence."""
    costs = costs_by_name(costs)
    if isinstance(costs, Mapping):
        # every cost given is checked, not only those read: a NaN for another model was
        # refused by the cost-free policies and passed by the cost-led ones (found by fuzzing)
        checked = {m: check_number(f"cost of {str(m)!r:.80}", c, 0.0) for m, c in costs.items()}
        missing = [m for m in models if m not in checked]
        if missing:
            raise BenchrouteError(f"no cost given for model(s) {missing}; costs name "
                                  f"{sorted(map(str, checked))[:20]}")
        return np.array([checked[m] for m in models])
    out = cost_array(costs)
    if out.shape != (len(models),):
        raise BenchrouteError(f"costs has shape {out.shape}, expected ({len(models)},)")
    return out


def cheapest_within_selection(scores: pd.DataFrame, costs: Mapping[str, float],
                              max_quality_drop: float, column: str = "S3",
                              reference: str | None = None,
                              allowed: pd.Series | None = None) -> str:
    """Task level: the cheapest model whose ``column`` score is within ε of ``reference``'s
    (default: of the top score); ties in cost go to the higher score.

    ``scores`` is a :class:`~benchroute.selection.Selection`'s table (index = model).
    ``allowed`` (bool, same index) says which models qualify instead of the score's bar: the
    η rule of :func:`benchroute.routing.cheaper_selection` for S3.
    """
    check_param("max_quality_drop", "max_quality_drop", max_quality_drop)
    if column not in scores.columns:
        raise BenchrouteError(f"scores has no column {column!r}; columns: {list(scores.columns)}")
    s = scores[column].astype(float)
    c = pd.Series(cost_vector(list(s.index), costs), index=s.index)
    bar = s.max() if reference is None else s.loc[reference]
    ok = s >= bar - max_quality_drop - TIE_TOL if allowed is None else allowed.astype(bool)
    cand = c[ok]
    cheapest = cand[cand == cand.min()].index
    return str(cheapest[int(argmax_ties(s.loc[cheapest].to_numpy()))])


def choices_frame(P: np.ndarray, c: np.ndarray, pick: np.ndarray, models: Sequence[str],
                  ) -> pd.DataFrame:
    """Per input: the chosen model, its predicted P and its cost."""
    rows = np.arange(len(pick))
    P, c = _check(P, c)
    return pd.DataFrame({"model": [models[i] for i in pick], "p": P[rows, pick],
                         "cost": c[rows, pick]})
