"""The routed file: per prompt the chosen model, its predicted P, its cost and its OOD
p-value (with whether it fell back, and whether a near-duplicate is in the pool), in parquet."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchroute._persist import write_file_atomic
from benchroute.exceptions import BenchrouteError

COLUMNS = ("row", "model", "p", "cost", "ood_p", "ood_fallback", "in_pool")


def frame_columns(frame: Any) -> dict[str, np.ndarray]:
    """The routed file's columns (but ``row``) from a ``Router.route_table(..., policy=...)`` frame."""
    return {"model": frame["model"].to_numpy(dtype=object),
            "p": frame["p"].to_numpy(dtype=np.float64),
            "cost": frame["cost"].to_numpy(dtype=np.float64),
            "ood_p": frame["ood_p"].to_numpy(dtype=np.float64),
            "ood_fallback": frame["ood_fallback"].to_numpy(dtype=bool),
            "in_pool": frame["in_pool"].to_numpy(dtype=bool)}


def write_routed(parts: Iterable[Mapping[str, np.ndarray]], out: Path) -> None:
    """One parquet file from the routed batches, which come in input order (``row`` 0, 1, ...;
    Ray Data keeps the order it is given); written batch by batch to a temporary name and
    renamed, so a failed job leaves no partial file and no batch is held after it is written
    (the driver held every result, then two copies, to sort them: memory grew with the log)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("row", pa.int64()), ("model", pa.string()), ("p", pa.float64()),
                        ("cost", pa.float64()), ("ood_p", pa.float64()),
                        ("ood_fallback", pa.bool_()), ("in_pool", pa.bool_())])

    def write(tmp: Path) -> None:
        expected = 0
        with pq.ParquetWriter(tmp, schema) as writer:
            for part in parts:
                rows = np.asarray(part["row"], dtype=np.int64)
                if not np.array_equal(rows, np.arange(expected, expected + len(rows))):
                    raise BenchrouteError(f"routed batches out of order: rows from {expected} "
                                          f"expected, got {rows[:3].tolist()}...")
                expected += len(rows)
                writer.write_table(pa.table({
                    "row": rows,
                    "model": pa.array([str(m) for m in part["model"]], pa.string()),
                    "p": np.asarray(part["p"], dtype=np.float64),
                    "cost": np.asarray(part["cost"], dtype=np.float64),
                    "ood_p": np.asarray(part["ood_p"], dtype=np.float64),
                    "ood_fallback": np.asarray(part["ood_fallback"], dtype=bool),
                    "in_pool": np.asarray(part["in_pool"], dtype=bool)}, schema=schema))

    write_file_atomic(out, write, "routed file")
