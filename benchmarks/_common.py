"""Helpers shared by the benchmark scripts: where the shared data is, and a peak-memory reader."""

from __future__ import annotations

import os
import resource
from pathlib import Path

SHARED = Path(os.environ.get("BENCHROUTE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
