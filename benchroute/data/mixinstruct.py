"""Loader for MixInstruct-style files: one item per instruction with scored model candidates."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from benchroute.data._io import read_json_records
from benchroute.data.store import BenchmarkData, LoadReport, binarize
from benchroute.exceptions import DataError


def load_mixinstruct(
    path: str | os.PathLike[str], metric: str = "bertscore", threshold: float | None = None
) -> BenchmarkData:
    """Load a MixInstruct JSON or JSONL file (SPEC.md §5).

    ``dataset`` is the ``id`` prefix before the first ``/``; ``text`` is the instruction and the
    input joined by a newline (the instruction alone when the input is empty); ``score`` is
    ``candidates[].scores[metric]``.

    ``correct``: with a ``threshold``, the score binarised at it. Without one, the score min–max
    rescaled to [0, 1] within each dataset, which keeps the per-instance ranking of models (what
    argmax routing needs) while putting every metric, BARTScore's negative log-likelihoods
    included, on the [0, 1] scale the store requires. A dataset whose scores are all equal gets
    0.5.
    """
    path = Path(path)
    report = LoadReport(sources=[str(path)])
    rows = []
    for i, item in enumerate(read_json_records(path)):
        where = f"{path}: item {i}"
        iid = item.get("id")
        if not isinstance(iid, str) or not iid:
            raise DataError(f"{where}: field 'id' must be a non-empty string, got {iid!r}")
        instruction, extra = item.get("instruction", ""), item.get("input", "")
        if not isinstance(instruction, str) or not isinstance(extra, str):
            raise DataError(f"{where} ({iid}): fields 'instruction' and 'input' must be strings")
        text = f"{instruction}\n{extra}" if extra.strip() else instruction
        candidates = item.get("candidates")
        if not isinstance(candidates, list):
            raise DataError(f"{where} ({iid}): field 'candidates' must be a list")
        for j, cand in enumerate(candidates):
            scores = cand.get("scores") if isinstance(cand, dict) else None
            model = cand.get("model") if isinstance(cand, dict) else None
            if not isinstance(model, str) or not isinstance(scores, dict):
                raise DataError(f"{where} ({iid}): candidate {j} needs 'model' and 'scores'")
            if metric not in scores:
                report.count("candidates_without_metric")
                continue
            value = scores[metric]
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise DataError(
                    f"{where} ({iid}): candidate {j} scores.{metric} is {value!r}, not a number"
                )
            rows.append({
                "dataset": iid.split("/", 1)[0],
                "instance_id": iid,
                "text": text,
                "model": model,
                "score": np.nan if value is None else float(value),
                "metric": metric,
            })
    if not rows:
        raise DataError(f"{path}: no candidate has a {metric!r} score")
    frame = pd.DataFrame(rows)
    if threshold is not None:
        frame["correct"] = binarize(frame["score"], threshold)
    else:
        grouped = frame.groupby("dataset")["score"]
        lo, hi = grouped.transform("min"), grouped.transform("max")
        span = (hi - lo).where(hi > lo)
        frame["correct"] = ((frame["score"] - lo) / span).fillna(0.5).where(frame["score"].notna())
        report.notes.append(f"correct = {metric} min-max rescaled per dataset")
    return BenchmarkData(frame, report=report, source=str(path))
