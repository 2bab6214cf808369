"""The routed file: per prompt the chosen model, its predicted P, its cost and its OOD
p-value (with whether it fell back, and whether a near-duplicate is in the pool), in parquet."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchroute._persist import write_file_atomic

COLUMNS = ("row", "model", "p", "cost", "ood_p", "ood_fallback", "in_pool")


def frame_columns(frame: Any) -> dict[str, np.ndarray]:
    """The routed file's columns (but ``row``) from a ``Router.route_table(..., policy=...)`` frame."""
    return {"model": frame["model"].to_numpy(dtype=object),
            "p": frame["p"].to_numpy(dtype=np.float64),
            "cost": frame["cost"].to_numpy(dtype=np.float64),
            "ood_p": frame["ood_p"].to_numpy(dtype=np.float64),
            "ood_fallback": frame["ood_fallback"].to_numpy(dtype=bool),
            "in_pool": frame["in_pool"].to_numpy(dtype=bool)}


def write_routed(parts: Sequence[Mapping[str, np.ndarray]], out: Path) -> None:
    """One parquet file from the routed batches, rows sorted by ``row``; written to a
    temporary name and renamed, so a failed job leaves no partial file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {c: np.concatenate([np.asarray(p[c]) for p in parts]) if parts else np.zeros(0)
            for c in COLUMNS}
    order = np.argsort(cols["row"], kind="stable")
    table = pa.table({"row": cols["row"][order].astype(np.int64),
                      "model": pa.array([str(m) for m in cols["model"][order]], pa.string()),
                      "p": cols["p"][order].astype(np.float64),
                      "cost": cols["cost"][order].astype(np.float64),
                      "ood_p": cols["ood_p"][order].astype(np.float64),
                      "ood_fallback": cols["ood_fallback"][order].astype(bool),
                      "in_pool": cols["in_pool"][order].astype(bool)})
    write_file_atomic(out, lambda tmp: pq.write_table(table, tmp), "routed file")
