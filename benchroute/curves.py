"""The cost–quality curve metrics as pure functions over arrays: RouteLLM's APGR and CPT
(quality against the share of calls to the strong model) and RouterBench's AIQ over the
non-decreasing upper convex hull of (cost, quality) points.

Like :mod:`benchroute.scoring`, nothing here imports the rest of the package (but the
keyword-only shim of :mod:`benchroute.deprecation`, of the same layer, and the exceptions);
the evaluation
harness that produces the curves is :mod:`benchroute.experiments.costs`.
"""

from __future__ import annotations

import numpy as np

from benchroute.deprecation import keywords_after
from benchroute.exceptions import BenchrouteError


def curve_points(x: object, y: object, names: tuple[str, str] = ("x", "y")
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A curve's points as two 1-D float arrays of one length, at least one point, all finite.
    Why: arrays of two lengths were cut to the shorter silently (an APGR of 0.375 from three
    qualities and two call shares), a NaN cost put the hull's points in hash order (AIQ 0.0 or
    NaN by run), and empty or 2-D input raised IndexError or TypeError (found by fuzzing)."""
    try:
        a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    except (TypeError, ValueError) as exc:
        raise BenchrouteError(f"{names[0]} and {names[1]} must be arrays of numbers ({exc})") \
            from None
    if a.ndim != 1 or b.shape != a.shape or not len(a):
        raise BenchrouteError(f"{names[0]} and {names[1]} must be 1-D arrays of one length, at "
                              f"least one point; got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise BenchrouteError(f"{names[0]} and {names[1]} must be finite (no NaN or infinity)")
    return a, b


def interp_at(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """y at x = ``at``, linear between the points (x need not be sorted)."""
    x, y = curve_points(x, y)
    order = np.argsort(x, kind="stable")
    return float(np.interp(at, x[order], y[order]))


def pgr(quality: np.ndarray | float, *, q_strong: float, q_weak: float) -> np.ndarray:
    """RouteLLM's performance gap recovered, (quality − q_weak) / (q_strong − q_weak): the share
    of the weak-to-strong gap a router closes. NaN where the two models are equally good (there
    is no gap to recover)."""
    q = np.asarray(quality, dtype=float)
    gap = float(q_strong) - float(q_weak)
    return (q - q_weak) / gap if gap != 0 else np.full(q.shape, np.nan)


@keywords_after(2)
def apgr(call: np.ndarray, quality: np.ndarray, *, q_strong: float, q_weak: float) -> float:
    """RouteLLM's APGR: the mean :func:`pgr` over the call% range, by the trapezoid rule (the area
    under quality vs call% normalised by the constant weak and strong areas over that range);
    NaN when the two models are equally good."""
    call, quality = curve_points(call, quality, ("call", "quality"))
    order = np.argsort(call, kind="stable")
    x = call[order]
    y = pgr(quality[order], q_strong=q_strong, q_weak=q_weak)
    span = float(x[-1] - x[0])
    return float(np.trapezoid(y, x)) / span if span > 0 else float("nan")


@keywords_after(2)
def cpt(call: np.ndarray, quality: np.ndarray, *, q_strong: float, q_weak: float,
        pgr_target: float) -> float:
    """Call% at which PGR first reaches ``pgr_target``, interpolated linearly between points."""
    call, quality = curve_points(call, quality, ("call", "quality"))
    order = np.argsort(call, kind="stable")
    x = call[order]
    gain = pgr(quality[order], q_strong=q_strong, q_weak=q_weak)
    for i in range(len(x)):
        if gain[i] >= pgr_target - 1e-12:
            if i == 0:
                return float(x[0])
            x0, x1, p0, p1 = x[i - 1], x[i], gain[i - 1], gain[i]
            if p1 == p0:
                return float(x1)
            # within the segment: a point reached only up to the 1e-12 slack would otherwise
            # extrapolate past its end
            return float(np.clip(x0 + (pgr_target - p0) * (x1 - x0) / (p1 - p0), x0, x1))
    return float("nan")


def upper_hull(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing upper convex hull of (cost, quality) points (RouterBench)."""
    cost, quality = curve_points(cost, quality, ("cost", "quality"))
    pts = sorted(set(zip(cost.tolist(), quality.tolist())))
    hull: list[tuple[float, float]] = []
    for p in pts:
        # keep only points that raise quality: past the best point the frontier is flat
        if hull and p[1] <= hull[-1][1]:
            continue
        if hull and p[0] == hull[-1][0]:
            hull.pop()  # same cost, higher quality
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:  # hull[-1] under the chord
                hull.pop()
            else:
                break
        hull.append(p)
    h = np.array(hull)
    return h[:, 0], h[:, 1]


def aiq(cost: np.ndarray, quality: np.ndarray, c_min: float, c_max: float) -> float:
    """RouterBench's AIQ: mean of the non-decreasing convex hull R̃(c) over [c_min, c_max].

    R̃ is flat after the hull's best point; below the router's cheapest point no cost is
    attainable and R̃ counts as 0 there.
    """
    if c_max <= c_min:
        return float("nan")
    hx, hy = upper_hull(cost, quality)
    a = max(c_min, float(hx[0]))
    if a >= c_max:
        return 0.0
    # R̃ is piecewise linear on [a, c_max] with breaks at the hull's points: trapezoids are exact
    x = np.unique(np.r_[a, hx[(hx > a) & (hx < c_max)], c_max])
    r = np.interp(x, hx, hy, right=float(hy[-1]))
    return float(np.trapezoid(r, x) / (c_max - c_min))
