"""Names of the all-mpnet-base-v2 encoders and which backend serves each.

A name is ``<model>[@<backend>][@max<N>]``: ``model`` is ``all-mpnet-base-v2`` (or its
sentence-transformers id), ``backend`` one of :data:`BACKENDS`, ``N`` the word-piece cap (384 by
default). Without a backend the default one serves: ONNX Runtime when it is installed and the
graph is exported (or can be, torch being there), else sentence-transformers. Every encoder's
``identifier`` is itself such a name, so a saved router finds its encoder again.

Backends and their cache namespaces:

* ``torch`` — sentence-transformers; namespace ``sentence-transformers/all-mpnet-base-v2``.
* ``onnx`` — the same vectors on ONNX Runtime (no torch at encode time); shares torch's namespace
  when its export was checked to agree to cosine ≥ 0.9999, else ``all-mpnet-base-v2@onnx``.
* ``bf16`` — sentence-transformers under bfloat16 autocast on the CPU's matrix units (AMX,
  AVX-512 BF16); shares torch's namespace, used only after a check on this machine measured
  cosine ≥ 0.9999 to float32 (see :mod:`benchroute.embedding.bf16`). The default only on a CPU
  with AMX where that check passed.
* ``static`` — model2vec static token embeddings distilled from the same weights: two orders
  of magnitude faster, different vectors, a namespace of its own.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable

from benchroute.embedding.base import Encoder
from benchroute.embedding.install import DEFAULT_MODEL
from benchroute.embedding.names import (
    DEFAULT_MAX_SEQ_LENGTH,
    MAX_SEQ_LENGTH_LIMIT,
    MIN_SEQ_LENGTH,
    MODEL_NAMES,
    check_cap,
    own_identifier,
    shared_identifier,
)
from benchroute.exceptions import BenchrouteError

logger = logging.getLogger(__name__)

#: re-exported: the naming helpers live in :mod:`benchroute.embedding.names`, which imports no
#: backend, so the backends can use them without an import circle
__all__ = ["BACKENDS", "DEFAULT_MAX_SEQ_LENGTH", "MAX_SEQ_LENGTH_LIMIT", "MODEL_NAMES",
           "check_cap", "default_backend", "is_mpnet_name", "mpnet_encoder", "own_identifier",
           "parse_mpnet_suffix", "shared_identifier"]

def _torch(device: str | None, cap: int | None) -> Encoder:
    from benchroute.embedding.sentence import SentenceTransformerEncoder

    return SentenceTransformerEncoder(DEFAULT_MODEL, device=device, max_seq_length=cap)


def _onnx(device: str | None, cap: int | None) -> Encoder:
    from benchroute.embedding.onnx import OnnxEncoder

    return OnnxEncoder(max_seq_length=cap or DEFAULT_MAX_SEQ_LENGTH)


def _bf16(device: str | None, cap: int | None) -> Encoder:
    if device not in (None, "cpu"):
        raise BenchrouteError(f"the bf16 backend runs on the CPU's matrix units; device "
                              f"{device!r} was asked for: use the torch backend there")
    from benchroute.embedding.bf16 import Bf16Encoder

    return Bf16Encoder(max_seq_length=cap)


def _static(device: str | None, cap: int | None) -> Encoder:
    from benchroute.embedding.static import StaticEncoder

    return StaticEncoder(max_seq_length=cap or DEFAULT_MAX_SEQ_LENGTH)


#: backend name → factory(device, max_seq_length)
BACKENDS: dict[str, Callable[[str | None, int | None], Encoder]] = {
    "torch": _torch,
    "onnx": _onnx,
    "static": _static,
    "bf16": _bf16,
}


def default_backend(device: str | None = None) -> str:
    """``bf16`` on a CPU with AMX where its check passed (no accelerator asked for); else
    ``onnx`` when onnxruntime is installed and the graph is exported or exportable; else
    ``torch``. Decided without importing either."""
    if device not in (None, "cpu"):
        return "torch"
    from benchroute.embedding.bf16 import auto_bf16

    if importlib.util.find_spec("torch") is not None and auto_bf16():
        return "bf16"
    if importlib.util.find_spec("onnxruntime") is None:
        logger.info("onnxruntime is not installed: the torch backend (slower to start; "
                    "`pip install 'benchroute[onnx]'` for ONNX)")
        return "torch"
    from benchroute.embedding.onnx import read_export_info

    try:
        exported = read_export_info() is not None
    except BenchrouteError:
        exported = False
    if exported or (importlib.util.find_spec("torch") is not None and _weights_installed()):
        return "onnx"
    # nothing to export from: torch's identifier needs no weights, and loading it later fails
    # with the `benchroute model install` hint
    return "torch"


def _weights_installed() -> bool:
    from benchroute.embedding.install import installed_model
    from benchroute.exceptions import ModelNotInstalledError

    try:
        installed_model()
    except ModelNotInstalledError:
        return False
    return True


def is_mpnet_name(name: str) -> bool:
    return name.split("@", 1)[0] in MODEL_NAMES


def parse_mpnet_suffix(name: str) -> tuple[str | None, int | None]:
    """The backend and word-piece cap of a ``<model>[@<backend>][@max<N>]`` name (None where
    not given); anything else after ``@`` is a :class:`BenchrouteError`."""
    backend: str | None = None
    cap: int | None = None
    for part in name.split("@")[1:]:
        if part in BACKENDS and backend is None:
            backend = part
        elif re.fullmatch(r"max[0-9]+", part, re.ASCII) and cap is None:
            # ASCII digits only: "@max²" raised int()'s ValueError, "@max١٢" read as 12; past
            # nine digits the number is not read at all (Python's 4,300-digit limit)
            where = f"encoder name {name[:100]!r}: @{part[:20]}"
            if len(part) > 12:
                raise BenchrouteError(f"{where}: max_seq_length == {part[3:15]}…, must be in "
                                      f"[{MIN_SEQ_LENGTH}, {MAX_SEQ_LENGTH_LIMIT}]")
            cap = check_cap(int(part[3:]), where)
        else:
            raise BenchrouteError(
                f"encoder name {name!r}: unknown suffix @{part}; expected "
                f"{DEFAULT_MODEL}[@backend][@max<N>] with backend one of {sorted(BACKENDS)}")
    return backend, cap


def mpnet_encoder(name: str, device: str | None = None,
                  max_seq_length: int | None = None) -> Encoder:
    """The encoder a ``<model>[@<backend>][@max<N>]`` name stands for.

    ``max_seq_length`` given here overrides a cap in the name.
    """
    backend, cap = parse_mpnet_suffix(name)
    if max_seq_length is not None:
        cap = check_cap(max_seq_length, f"encoder {name!r:.100}")
    return BACKENDS[backend or default_backend(device)](device, cap)
