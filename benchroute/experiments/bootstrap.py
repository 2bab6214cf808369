"""Percentile bootstrap intervals: one rule for every interval the experiments print.

Each experiment resamples its own unit (inputs, whole tasks, held-out models and then the draws
within a model), so the resampling stays with the experiment; what they share is how rows are
drawn and how an interval is read off the replicates. That reading was written in six places
with two rules for a replicate where the statistic is undefined (a PGR whose resample ties the
strong and weak model, a gap share whose resample has no gap): pandas' quantile left such
replicates out, NumPy's made the whole interval NaN. Here they are left out everywhere, so an
interval is conditional on the statistic being defined, and one undefined replicate in 2,000
no longer hides the other 1,999. A statistic undefined on the data itself keeps a NaN
interval (``point``).

SciPy's ``scipy.stats.bootstrap`` resamples observations of one level only; the experiments
need whole tasks, and models then draws within a model, so they draw their own rows.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["LEVEL", "resample_rows", "interval"]

LEVEL = 0.95


def resample_rows(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) row indices drawn with replacement: one bootstrap resample per row."""
    return rng.integers(0, n, size=(n_boot, n))


def interval(replicates: ArrayLike, level: float = LEVEL, *,
             point: float | None = None) -> tuple[float, float]:
    """The percentile interval holding ``level`` of the replicates (linear interpolation, as
    NumPy's and pandas' defaults). Replicates where the statistic is undefined (NaN, or ±inf
    from a zero denominator) are left out; none defined gives (nan, nan). With ``point``, the
    statistic on the data itself, a NaN point gives (nan, nan) too: a missing value in the data
    (a task without a BMA row) is not made defined by the resamples that happen to miss it."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1); got {level!r}")
    r = np.asarray(replicates, dtype=float).ravel()
    r = r[np.isfinite(r)]
    if not len(r) or (point is not None and np.isnan(point)):
        return float("nan"), float("nan")
    tail = round(50.0 * (1.0 - level), 12)  # 2.5, not 2.500000000000002
    lo, hi = np.percentile(r, [tail, 100.0 - tail])
    return float(lo), float(hi)
