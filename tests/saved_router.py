"""Rewriting a saved router's files as a tool that edits them would: the change, then the
checksums and digest of router.json made to match, so that what a test meets on load is the
content check, not the signature."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchroute._persist import sha256_file
from benchroute.persistence import write_signed_meta


def rewrite_meta(folder: Path, change: Callable[[dict[str, Any]], object]) -> None:
    """Apply ``change`` to router.json's content and re-digest it."""
    path = Path(folder) / "router.json"
    meta = json.loads(path.read_text())
    change(meta)
    write_signed_meta(folder, meta)


def rewrite_pool(folder: Path, change: Callable[[dict[str, np.ndarray]], object]) -> None:
    """Apply ``change`` to pool.npz's arrays (a dict, changed in place), then re-sign."""
    folder = Path(folder)
    with np.load(folder / "pool.npz") as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(folder / "pool.npz", **arrays)  # type: ignore[arg-type]
    rewrite_meta(folder, lambda meta: meta["checksums"].__setitem__(
        "pool.npz", sha256_file(folder / "pool.npz")))
