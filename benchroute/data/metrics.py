"""What benchroute knows about benchmark metrics: their range and direction.

A metric's scale must come from a declaration, never from the values one run happens to have:
an exact-match run whose values are {0, 1} and a 1–5 rubric whose values are all 1 look alike
to a guess (the second would become all-correct), and an exact-match file with a stray 2 would
be read as a 1–5 rubric. This module holds the table of known HELM metrics and the rule that
turns a raw score into a label scale, with the source of the range recorded
(``"caller"``, ``"declared"``, ``"known"`` or ``"guessed"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from benchroute.exceptions import DataError

__all__ = ["LOWER_IS_BETTER", "MetricScale", "check_range", "guess_scale", "known_scale",
           "parse_range", "short_repr", "to_unit"]


@dataclass(frozen=True)
class MetricScale:
    """A metric's range and direction, and where that knowledge came from.

    ``lo``/``hi`` bound the raw values; ``to_unit`` maps them to [0, 1] with 1 the best, so that
    one ``threshold`` on [0, 1] works for every metric. ``source`` is recorded in
    ``LoadReport.scales``.
    """

    lo: float
    hi: float
    lower_is_better: bool = False
    source: str = "known"

    def describe(self) -> str:
        direction = ", lower is better" if self.lower_is_better else ""
        return f"[{self.lo:g}, {self.hi:g}]{direction} ({self.source})"


# Per-instance correctness metrics of HELM (as named in ``per_instance_stats.json``): 0/1
# indicators or fractions.
_UNIT_METRICS = frozenset({
    "exact_match", "quasi_exact_match", "prefix_exact_match", "quasi_prefix_exact_match",
    "quasi_leave_articles_exact_match", "exact_match_indicator", "final_number_exact_match",
    "math_equiv", "math_equiv_chain_of_thought", "chain_of_thought_correctness",
    "exact_set_match", "iou_set_match", "f1_set_match", "code_eval_acc", "pass",
    "ifeval_strict_accuracy", "omni_math_accuracy", "wildbench_score_rescaled", "safety_score",
    "air_score", "bbq_accuracy", "f1_score", "rouge_1", "rouge_2", "rouge_l", "bleu_1",
    "bleu_4", "chinese_rouge_1", "chinese_rouge_2", "chinese_bleu_1", "bertscore",
    "BERTScore-F", "BERTScore-P", "BERTScore-R", "harm_bench_score", "sst_score", "xst_score",
    "art_score", "anthropic_red_team_score", "toxic_frac",
})
# Rubric scores judged by LLMs: WildBench on 1–10, MedHELM's LLM-jury ``*_accuracy`` on 1–5.
_RUBRIC_METRICS: dict[str, tuple[float, float]] = {
    "wildbench_score": (1.0, 10.0),
    "aci_bench_accuracy": (1.0, 5.0),
    "medi_qa_accuracy": (1.0, 5.0),
    "medalign_accuracy": (1.0, 5.0),
    "med_dialog_accuracy": (1.0, 5.0),
    "medication_qa_accuracy": (1.0, 5.0),
    "mtsamples_replicate_accuracy": (1.0, 5.0),
    "mtsamples_procedures_accuracy": (1.0, 5.0),
}
# Lower is better; their range has no upper bound, so a caller's score_range is needed.
LOWER_IS_BETTER = frozenset(
    {"wer_score", "cer_score", "mer_score", "absolute_value_difference", "toxic_frac"}
)
# Suffixes of judge scores on [0, 1] (HELM's safety and judge metrics: ``<name>_score``).
_JUDGE_SUFFIX = "_score"


def known_scale(metric: str) -> MetricScale | None:
    """The range of a metric from the package's table, or ``None`` for an unknown metric.

    ``<name>_score`` metrics that are not in the table are LLM-judge scores on [0, 1] (HELM's
    convention for its safety and judge metrics); they are recorded as ``"known"`` too.
    """
    if metric in _RUBRIC_METRICS:
        lo, hi = _RUBRIC_METRICS[metric]
        return MetricScale(lo, hi)
    if metric in _UNIT_METRICS:
        return MetricScale(0.0, 1.0, lower_is_better=metric in LOWER_IS_BETTER)
    if metric in LOWER_IS_BETTER:
        return None  # direction known, range not: the caller must give one
    if metric.endswith(_JUDGE_SUFFIX):
        return MetricScale(0.0, 1.0)
    return None


def guess_scale(values: np.ndarray) -> MetricScale | None:
    """The narrowest of [0, 1], 1–5 and 1–10 that holds ``values``; ``None`` if none does.

    Only used when nothing declares the metric's range; the loader then warns that the scale
    was guessed, because a guess cannot tell {0, 1} indicators from a 1–5 rubric scored 1.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return MetricScale(0.0, 1.0, source="guessed")
    lo, hi = float(finite.min()), float(finite.max())
    for a, b in ((0.0, 1.0), (1.0, 5.0), (1.0, 10.0)):
        if lo >= a and hi <= b:
            return MetricScale(a, b, source="guessed")
    return None


def parse_range(value: object, what: str) -> tuple[float, float]:
    """A caller's or a schema's ``(lo, hi)``; the error names ``what`` and the bad value."""
    if isinstance(value, Mapping):
        value = (value.get("min"), value.get("max"))
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise DataError(f"{what} must be a (min, max) pair, got {short_repr(value)}")
    lo, hi = value
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise DataError(f"{what} must be a pair of numbers, got {short_repr(value)}")
    try:
        flo, fhi = float(lo), float(hi)
    except OverflowError as exc:
        raise DataError(f"{what} holds a number too large: {short_repr(value)}") from exc
    if not (math.isfinite(flo) and math.isfinite(fhi)) or flo >= fhi:
        raise DataError(f"{what} must be finite with min < max, got {short_repr(value)}")
    return flo, fhi


def check_range(values: np.ndarray, scale: MetricScale, metric: str) -> None:
    """Values outside the declared range mean a wrong metric or a wrong declaration."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return
    lo, hi = float(finite.min()), float(finite.max())
    if lo < scale.lo or hi > scale.hi:
        raise DataError(
            f"metric {metric!r} has values in [{lo:g}, {hi:g}], outside its range "
            f"{scale.describe()}; name another metric or pass score_range="
        )


def to_unit(values: np.ndarray, scale: MetricScale) -> np.ndarray:
    """Raw values on ``scale`` mapped to [0, 1] with 1 the best."""
    unit = (values - scale.lo) / (scale.hi - scale.lo)
    return 1.0 - unit if scale.lower_is_better else unit


def short_repr(value: object, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: a message must stay one readable line."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for str() (Python's 4300-digit limit)
        return f"<{type(value).__name__} too long to show>"
    return text if len(text) <= limit else f"{text[:limit - 12]}…({len(text)} chars)"
