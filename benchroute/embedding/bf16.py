"""all-mpnet-base-v2 in bfloat16 on the CPU's matrix units, used only where it was checked.

Many x86 CPUs multiply bfloat16 matrices in hardware: AMX tiles (``amx_bf16``, Intel since
Sapphire Rapids) or AVX-512 BF16 dot products (``avx512_bf16``, Intel Cooper Lake, AMD Zen 4).
Under ``torch.autocast`` the encoder's matrix products run there while layer norms, softmax and
pooling stay in float32, so the vectors move little; where the CPU lacks those instructions
torch emulates bfloat16 and is slower than float32, so this backend is refused there.

Before the first use on a machine the installed model is checked: the sample texts below are
encoded in float32 and under autocast, and the minimum cosine between the two must reach
:data:`MIN_COSINE` (the bar at which backends share a cache namespace). The result is stored in
a JSON sidecar keyed by the model's SHA-256, the CPU's bf16 units and the torch version, so it is
measured once per machine and software, and re-measured when any of them changes.

``@bf16`` asks for this backend by name. It is chosen without being asked only on a CPU with AMX
and after a passed check: on AVX-512 BF16 alone it was measured barely faster than float32 (see
docs/performance.md), not worth vectors that differ in the fifth decimal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchroute._persist import read_json_file, write_file_atomic
from benchroute.embedding.install import DEFAULT_MODEL, SAFETENSORS_SHA256, benchroute_home
from benchroute.embedding.names import DEFAULT_MAX_SEQ_LENGTH, shared_identifier
from benchroute.embedding.onnx import _CHECK_TEXTS as _ONNX_CHECK_TEXTS
from benchroute.embedding.onnx import SHARE_MIN_COSINE
from benchroute.embedding.sentence import SentenceTransformerEncoder
from benchroute.exceptions import BenchrouteError

logger = logging.getLogger(__name__)

#: /proc/cpuinfo flags of units that multiply bfloat16 in hardware
BF16_UNITS = ("amx_bf16", "avx512_bf16")
#: units on which the backend is chosen without being asked (after a passed check)
AUTO_UNITS = ("amx_bf16",)
#: the bar at which two backends share a cache namespace
MIN_COSINE = SHARE_MIN_COSINE
CHECK_FORMAT_VERSION = 1
CHECK_FILE = "bf16-check.json"

# The fixed sample the check encodes: the ONNX export's (short and long, truncated at 384 word
# pieces, accents and scripts, code, digits, one letter) and a few benchmark-like prompts.
CHECK_TEXTS = (
    *_ONNX_CHECK_TEXTS,
    "Translate to German: The weather is nice today, let's go for a walk in the park.",
    "A patient presents with fever, cough and shortness of breath for three days. "
    "Which investigation should be ordered first? A. Chest X-ray B. MRI C. ECG D. Biopsy",
    "SELECT name, COUNT(*) FROM orders JOIN users ON orders.user_id = users.id GROUP BY name;",
    "If a train travels 120 km in 1.5 hours, what is its average speed in m/s?",
)


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (Linux ``/proc/cpuinfo``); empty
    where they cannot be read, which makes every unit here count as absent."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_units(flags: frozenset[str] | None = None) -> list[str]:
    """The bfloat16 units of this CPU (or of ``flags``), in :data:`BF16_UNITS` order."""
    flags = cpu_flags() if flags is None else flags
    return [u for u in BF16_UNITS if u in flags]


def check_path(root: Path | None = None) -> Path:
    """Where check results are kept: beside the installed model's folder."""
    return (root or benchroute_home() / "models") / CHECK_FILE


def _check_key(units: Sequence[str]) -> str:
    from importlib import metadata

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "none"
    return f"{SAFETENSORS_SHA256}|{'+'.join(units)}|torch {torch_version}"


def stored_check(root: Path | None = None, units: Sequence[str] | None = None
                 ) -> dict[str, Any] | None:
    """The stored check result for this model, CPU units and torch (None if not measured)."""
    path = check_path(root)
    if not path.is_file():
        return None
    try:
        data = read_json_file(path, strict=True)
    except BenchrouteError as exc:
        raise BenchrouteError(f"{exc}; delete it to measure again") from exc
    if not isinstance(data, dict) or data.get("format_version") != CHECK_FORMAT_VERSION \
            or not isinstance(data.get("checks"), dict):
        raise BenchrouteError(f"{path}: expected {{'format_version': {CHECK_FORMAT_VERSION}, "
                              "'checks': {...}}; delete it to measure again")
    entry = data["checks"].get(_check_key(bf16_units() if units is None else units))
    if entry is None:
        return None
    cosine = entry.get("min_cosine") if isinstance(entry, dict) else None
    if not isinstance(cosine, (int, float)) or isinstance(cosine, bool) or not -1 <= cosine <= 1:
        raise BenchrouteError(f"{path}: field 'min_cosine' is {cosine!r:.60}, expected a number "
                              "in [-1, 1]; delete the file to measure again")
    return entry


def check_bf16(root: Path | None = None, force: bool = False) -> dict[str, Any]:
    """Measure (once) how far bfloat16 autocast moves the installed model's vectors.

    Returns the stored entry: ``min_cosine`` over :data:`CHECK_TEXTS`, ``passed``
    (``min_cosine >= MIN_COSINE``), ``units``, and the seconds each precision took on the
    sample. Raises a :class:`BenchrouteError` on a CPU without bfloat16 units: there it would
    measure torch's emulation.
    """
    units = bf16_units()
    if not units:
        raise BenchrouteError("this CPU has no bfloat16 units (none of "
                              f"{', '.join(BF16_UNITS)} in /proc/cpuinfo): torch would emulate "
                              "bfloat16, slower than float32; use the onnx or torch backend")
    if not force:
        entry = stored_check(root, units)
        if entry is not None:
            return entry
    fp32 = SentenceTransformerEncoder(DEFAULT_MODEL, device="cpu")
    texts = list(CHECK_TEXTS)
    fp32.encode(texts[:2])  # load before timing
    t0 = time.perf_counter()
    ref = fp32.encode(texts, batch_size=16)
    t_fp32 = time.perf_counter() - t0
    t0 = time.perf_counter()
    with autocast_bf16():
        low = fp32.encode(texts, batch_size=16)
    t_bf16 = time.perf_counter() - t0
    cosine = float(np.min(np.sum(unit(low) * ref, axis=1)))
    entry = {"min_cosine": cosine, "passed": cosine >= MIN_COSINE, "units": units,
             "texts": len(texts), "seconds_fp32": round(t_fp32, 3), "seconds_bf16": round(t_bf16, 3)}
    _store(root, _check_key(units), entry)
    logger.info("bf16 check on %s: min cosine %.6f to float32 (%s)", "+".join(units), cosine,
                "passed" if entry["passed"] else f"below {MIN_COSINE}, not used")
    return entry


def _store(root: Path | None, key: str, entry: dict[str, Any]) -> None:
    """Add one entry to the check file (temporary file + rename: never half-written)."""
    path = check_path(root)
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError, RecursionError):
        data = {}  # unreadable: stored_check said so; a fresh file replaces it
    old = data.get("checks") if isinstance(data, dict) else None
    checks: dict[str, Any] = dict(old) if isinstance(old, dict) else {}
    checks[key] = entry
    text = json.dumps({"format_version": CHECK_FORMAT_VERSION, "checks": checks}, indent=1)
    write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), "bf16 check")


def auto_bf16(root: Path | None = None) -> bool:
    """Whether the default backend is bf16 here: a CPU with AMX and a passed stored check that
    measured bf16 faster than float32. Why the speed too: CPU flags can claim units that torch
    does not use (``ONEDNN_MAX_CPU_ISA``, a build without them); emulated bf16 passed the
    cosine check at 7.8x float32's time and became the default (found by a review)."""
    units = bf16_units()
    if not any(u in units for u in AUTO_UNITS):
        return False
    try:
        entry = stored_check(root, units)
    except BenchrouteError as exc:
        logger.warning("%s; bf16 not chosen", exc)
        return False
    if not (entry and entry.get("passed")):
        return False
    fp32, low = entry.get("seconds_fp32"), entry.get("seconds_bf16")
    if not (_seconds(fp32) and _seconds(low) and float(low) < float(fp32)):  # type: ignore[arg-type]
        logger.info("bf16 not chosen: the check measured %r s against float32's %r s", low, fp32)
        return False
    return True


def _seconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0


@contextlib.contextmanager
def autocast_bf16() -> Iterator[None]:
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        yield


def unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.clip(np.linalg.norm(X, axis=1, keepdims=True), 1e-12, None)


class Bf16Encoder(SentenceTransformerEncoder):
    """sentence-transformers under bfloat16 autocast on the CPU; the vectors of the torch
    backend to cosine ≥ :data:`MIN_COSINE` (checked once per machine, see the module), so they
    share its cache namespace.

    Loading refuses a CPU without bfloat16 units and a model whose check failed.
    """

    backend = "bf16"

    def __init__(self, max_seq_length: int | None = None, root: Path | None = None) -> None:
        super().__init__(DEFAULT_MODEL, device="cpu", max_seq_length=max_seq_length)
        self.root = root
        self.identifier = shared_identifier(self.max_seq_length or DEFAULT_MAX_SEQ_LENGTH)
        self._checked = False

    def __repr__(self) -> str:
        return f"Bf16Encoder(max_seq_length={self.max_seq_length!r})"

    def _load_now(self) -> None:
        """The check, then the model, once for every thread (the check loads a float32 model
        and measures: threads that came first each did it; found by a review)."""
        if not self._checked:
            entry = check_bf16(self.root)
            if not entry.get("passed"):
                raise BenchrouteError(
                    f"the bf16 backend moved the installed model's vectors to min cosine "
                    f"{entry['min_cosine']:.6f} < {MIN_COSINE} from float32 (checked on "
                    f"{'+'.join(entry.get('units', []))}, stored in {check_path(self.root)}); "
                    "use the onnx or torch backend")
            self._checked = True
        super()._load_now()

    def encode(self, texts: Sequence[str], batch_size: int = 32,
               on_batch: Callable[[int], object] | None = None) -> np.ndarray:
        """(n, 768) float32 unit vectors in input order; ``on_batch(n_done)`` after each batch."""
        self._load()
        with autocast_bf16():
            out = super().encode(texts, batch_size=batch_size, on_batch=on_batch)
        return np.ascontiguousarray(unit(out))
