"""The routed file: per prompt the chosen model, its predicted P and its cost, in parquet."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from benchroute.exceptions import BenchrouteError

COLUMNS = ("row", "model", "p", "cost")


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
                      "cost": cols["cost"][order].astype(np.float64)})
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BenchrouteError(f"{out}: cannot write the routed file ({exc.strerror or exc})") from exc
