"""Loader for MixInstruct-style files: one item per instruction with scored model candidates."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from benchroute.data._io import read_json_records
from benchroute.data.options import Metric, Threshold, per_dataset, thresholds_for
from benchroute.data.store import BenchmarkData, LoadReport, binarize, resolve_repeated
from benchroute.data.text import is_blank
from benchroute.exceptions import DataError


def load_mixinstruct(
    path: str | os.PathLike[str],
    metric: Metric = "bertscore",
    threshold: Threshold | None = None,
    strict: bool = False,
) -> BenchmarkData:
    """Load a MixInstruct JSON or JSONL file (LLM-Blender's MixInstruct: instructions answered by
    several open LLMs, each answer scored against a reference by BERTScore, BARTScore, BLEURT, ...).

    ``dataset`` is the ``id`` prefix before the first ``/``; ``text`` is the non-empty parts of
    ``instruction`` and ``input`` joined by a newline (no leading newline when the instruction is
    empty); an item with neither is skipped and reported. ``score`` is
    ``candidates[].scores[metric]``; ``metric`` may be a ``{dataset: metric}`` mapping (datasets it
    does not name use ``"bertscore"``). ``scores.cost``, when present, becomes ``cost``.

    ``correct``: with a ``threshold`` (a finite number, or a ``{dataset: threshold}`` mapping),
    the score binarised at it. Without one, the score min–max rescaled to [0, 1] within each
    dataset, which keeps the per-instance ranking of models (what argmax routing needs) while
    putting every metric, BARTScore's negative log-likelihoods included, on the [0, 1] scale the
    store requires. A dataset whose scores are all equal gets 0.5. Infinite scores would stretch
    that rescaling over a whole dataset, so those candidates are skipped and reported. An id
    repeated with another text is skipped and reported (an error with ``strict=True``).
    """
    path = Path(path)
    report = LoadReport(sources=[str(path)])
    rows = []
    present: dict[str, set[str]] = {}
    empty_items: list[str] = []
    infinite: list[str] = []
    items = read_json_records(path, lambda n: report.count("lone_surrogates_replaced", n))
    if not items:
        raise DataError(f"{path}: no items (an empty JSON list)")
    for i, item in enumerate(items):
        where = f"{path}: item {i}"
        iid = item.get("id")
        if not isinstance(iid, str) or not iid:
            raise DataError(f"{where}: field 'id' must be a non-empty string, got {iid!r}")
        instruction, extra = item.get("instruction") or "", item.get("input") or ""
        if not isinstance(instruction, str) or not isinstance(extra, str):
            raise DataError(f"{where} ({iid}): fields 'instruction' and 'input' must be strings")
        # a part is text by the one rule (is_blank): an invisible part ('\u200b') joined the text,
        # and an item of invisible parts alone rescaled its dataset's scores before the store
        # dropped it
        text = "\n".join(part for part in (instruction, extra) if not is_blank(part))
        candidates = item.get("candidates")
        if not isinstance(candidates, list):
            raise DataError(f"{where} ({iid}): field 'candidates' must be a list")
        if not text:
            empty_items.append(iid)
            continue
        ds = iid.split("/", 1)[0]
        name = metric if isinstance(metric, str) else str(metric.get(ds, DEFAULT_METRIC))
        for j, cand in enumerate(candidates):
            scores = cand.get("scores") if isinstance(cand, dict) else None
            model = cand.get("model") if isinstance(cand, dict) else None
            if not isinstance(model, str) or not isinstance(scores, dict):
                raise DataError(f"{where} ({iid}): candidate {j} needs 'model' and 'scores'")
            present.setdefault(ds, set()).update(str(k) for k in scores)
            if name not in scores:
                report.count("candidates_without_metric")
                continue
            value = _number(scores[name], f"{where} ({iid}): candidate {j} scores.{name}")
            if np.isinf(value):
                infinite.append(f"{iid} {model}={value}")
                continue
            cost = _number(scores.get("cost"), f"{where} ({iid}): candidate {j} scores.cost")
            if cost < 0:
                raise DataError(f"{where} ({iid}): candidate {j} scores.cost is {cost}, not >= 0")
            rows.append({"dataset": ds, "instance_id": iid, "text": text, "model": model,
                         "score": value, "metric": name, "cost": cost})
    _report_skips(report, path, empty_items, "empty_text_skipped",
                  "neither 'instruction' nor 'input' has text")
    _report_skips(report, path, infinite, "non_finite_score_skipped",
                  "infinite score (would stretch the per-dataset rescaling)")
    if not isinstance(metric, str):
        per_dataset(metric, present, "metric")
        for ds, wanted in metric.items():
            if ds in present and wanted not in present[ds]:
                raise DataError(f"{path}: no candidate of dataset {ds!r} has a {wanted!r} score; "
                                f"metrics present: {sorted(present[ds])}")
    if not rows:
        found = sorted(set().union(*present.values())) if present else []
        raise DataError(f"{path}: no candidate has a {metric!r} score; metrics present: {found}")
    frame = resolve_repeated(pd.DataFrame(rows), report, str(path), strict)
    if frame["cost"].isna().all():
        frame = frame.drop(columns="cost")
    cut = thresholds_for(threshold, frame, unit=False, default=None)
    grouped = frame.groupby("dataset")["score"]
    lo, hi = grouped.transform("min"), grouped.transform("max")
    span = (hi - lo).where(hi > lo)
    rescaled = ((frame["score"] - lo) / span).fillna(0.5).where(frame["score"].notna())
    binary = pd.Series(binarize(frame["score"], cut.fillna(0.0).to_numpy()), index=frame.index)
    frame["correct"] = binary.where(cut.notna(), rescaled)
    for name_ds, part in frame.groupby("dataset", sort=True):
        report.metrics[str(name_ds)] = str(part["metric"].iloc[0])
        report.scales[str(name_ds)] = "caller" if cut[part.index].notna().all() else "guessed"
    rescaled_ds = sorted(d for d, s in report.scales.items() if s == "guessed")
    if rescaled_ds:
        report.notes.append(f"correct = score min-max rescaled per dataset for {rescaled_ds}")
    return BenchmarkData(frame, report=report, source=str(path), strict=strict)


DEFAULT_METRIC = "bertscore"


def _number(value: object, where: str) -> float:
    """A JSON score as a float (None → NaN); strings, booleans and objects are errors."""
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where} is {value!r}, not a number")
    try:
        return float(value)
    except OverflowError as exc:
        raise DataError(f"{where} is an integer too large for a score") from exc


def _report_skips(report: LoadReport, path: Path, what: list[str], key: str, why: str) -> None:
    if what:
        report.count(key, len(what))
        examples = ", ".join(what[:3]) + (" ..." if len(what) > 3 else "")
        report.skipped.append((f"{path}: {len(what)} item(s): {examples}", why))
        report.warn(f"{path}: skipped {len(what)} item(s) with {why}, e.g. {examples}")
