"""Loader options that may be one value or a per-dataset mapping, checked at the boundary.

A user who loads several benchmarks at once often needs one metric or threshold for most and
another for a few (a ROUGE dataset next to exact-match ones). Every table-like loader accepts
``metric``/``threshold`` as a single value or a ``{dataset: value}`` mapping and resolves it here,
so the rules (and the messages) are the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from benchroute._persist import parse_json
from benchroute.data.metrics import short_repr
from benchroute.data.store import LoadReport
from benchroute.exceptions import DataError

Threshold = float | Mapping[str, float]
Metric = str | Mapping[str, str]


def check_threshold(value: object, where: str = "threshold", unit: bool = True) -> float:
    """A threshold as a float; NaN, infinities, non-numbers and (``unit``) values outside (0, 1]
    are errors, because ``score >= t`` with such a ``t`` makes every label 0 or every label 1
    without a word."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataError(f"{where} must be a number, got {value!r}")
    t = float(value)
    if not math.isfinite(t):
        raise DataError(f"{where} must be a finite number, got {t!r}")
    if unit and not 0.0 < t <= 1.0:
        raise DataError(
            f"{where} must lie in (0, 1] (scores are on [0, 1]; t <= 0 marks every result correct "
            f"and t > 1 none), got {t:g}"
        )
    return t


def per_dataset(
    value: object, datasets: Iterable[str], name: str, default: object = None
) -> dict[str, object]:
    """``value`` for each dataset: a single value for all, or a mapping (datasets it does not
    name get ``default``). A mapping key that names no dataset is an error listing the datasets,
    since a typo would otherwise be ignored silently."""
    known = sorted({d for d in datasets if isinstance(d, str)})
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise DataError(f"{name}: unknown dataset(s) {unknown}; datasets are {known}")
        return {d: value.get(d, default) for d in known}
    return {d: value for d in known}


def thresholds_for(
    threshold: object, frame: pd.DataFrame, unit: bool = True, default: float | None = 0.5,
    known: Iterable[str] | None = None,
) -> pd.Series:
    """One checked threshold per row of ``frame`` (by its ``dataset``); NaN where none applies.
    ``known``: all datasets of the load, when ``frame`` holds only some of them."""
    if threshold is None:
        return pd.Series(np.nan, index=frame.index)
    names = frame["dataset"]
    table = per_dataset(threshold, list(names.unique()) + list(known or []), "threshold", default)
    checked = {d: (np.nan if t is None else check_threshold(t, f"threshold for {d!r}", unit))
               for d, t in table.items()}
    if not isinstance(threshold, Mapping):
        return pd.Series(next(iter(checked.values()), np.nan), index=frame.index, dtype=float)
    # map the few distinct names, not every row
    codes, uniques = pd.factorize(names)
    values = np.array([checked.get(u, np.nan) for u in uniques] + [np.nan], dtype=float)
    return pd.Series(values[codes], index=frame.index)


def parse_threshold_option(text: str) -> Threshold:
    """``--label-threshold``: a number, or per-dataset numbers (see :func:`parse_mapping_option`)."""
    value = parse_mapping_option(text, "label-threshold", numeric=True)
    return value if isinstance(value, dict) else float(value)  # type: ignore[arg-type]


def parse_metric_option(text: str) -> Metric:
    """``--metric``: a metric name, or per-dataset names (see :func:`parse_mapping_option`)."""
    value = parse_mapping_option(text, "metric", numeric=False)
    return value if isinstance(value, dict) else str(value)


def parse_mapping_option(text: str, what: str, numeric: bool) -> object:
    """A CLI value: a single value, a JSON object, or ``ds=value`` items separated by ``;`` (or by
    ``,`` when there is no ``;``). The value is what follows an item's last ``=``, so HELM names
    such as ``mmlu:subject=anatomy`` work; separate items with ``;`` when names contain commas.
    A dataset named twice is refused (the last value won silently)."""
    text = text.strip()
    if text.startswith("{"):
        obj = parse_json(text, f"--{what}", DataError, unique_keys=True)
        if not isinstance(obj, dict):
            raise DataError(f"--{what}: expected a JSON object")
        return {str(k): _cli_value(v, what, numeric, json_value=True) for k, v in obj.items()}
    if "=" not in text:
        return _cli_value(text, what, numeric)
    out: dict[str, object] = {}
    for item in text.split(";" if ";" in text else ","):
        if not item.strip():
            continue
        key, sep, val = item.rpartition("=")
        if not sep or not key.strip():
            raise DataError(f"--{what}: item {item!r} is not dataset=value")
        if key.strip() in out:
            raise DataError(f"--{what}: dataset {key.strip()!r:.80} is given twice")
        out[key.strip()] = _cli_value(val.strip(), what, numeric)
    return out


def _cli_value(value: object, what: str, numeric: bool, json_value: bool = False) -> object:
    """One value: text as given, or a number. In a JSON object a number must be a JSON number
    (true and "0.5" were read as 1.0 and 0.5) and a name a JSON string."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if json_value and not (number if numeric else isinstance(value, str)):
        raise DataError(f"--{what}: {short_repr(value, 60)} is not a "
                        f"{'number' if numeric else 'string'}")
    if not numeric:
        return str(value)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as exc:  # 10**400: past a float
        raise DataError(f"--{what}: {short_repr(value, 60)} is not a number") from exc


def record_metrics(report: LoadReport, frame: pd.DataFrame, metric_of: Mapping[str, str],
                   scale: Mapping[str, str]) -> None:
    """Fill ``report.metrics`` and ``report.scales`` for the datasets present in ``frame``."""
    for ds in sorted(frame["dataset"].astype(str).unique()):
        if ds in metric_of:
            report.metrics[ds] = metric_of[ds]
        if ds in scale:
            report.scales[ds] = scale[ds]
