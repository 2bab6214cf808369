"""Reading ``.npz`` files that may be hostile: every array's shape, type and size come from its
zip and ``.npy`` headers and are checked before a byte of it is decompressed.

A few MB of deflated zeros can declare gigabytes; ``np.load`` allocates what the header says.
Here each member must hold exactly the bytes its header declares, may not expand more than
:data:`MAX_RATIO` times its compressed size (above :data:`RATIO_FLOOR`), and must have the
shape the caller expects (a dimension the caller knows from a sidecar, or one shared by the
arrays). Errors are ``ValueError`` naming the field; callers turn them into their own error.
"""

from __future__ import annotations

import math
import os
import tokenize
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

#: how much more than its compressed size one member may hold; real embeddings and labels
#: deflate by less than 6 times (hex keys), zeros by a thousand
MAX_RATIO = 64
#: members up to this size are never refused for their compression ratio
RATIO_FLOOR = 16 << 20

#: an expected shape: one entry per dimension, an int that must match, None for any size or a
#: name that must take the same value in every array naming it
Shape = tuple[int | str | None, ...]


def read_npz(path: str | os.PathLike[str], shapes: Mapping[str, Shape],
             kinds: Mapping[str, str] | None = None, load: Sequence[str] | None = None
             ) -> dict[str, np.ndarray]:
    """The arrays ``shapes`` names (only those in ``load`` when given), each checked from its
    headers first (see the module).

    ``kinds`` optionally gives each array's allowed dtype kinds (``"f"``, ``"iu"``, ``"U"``);
    object arrays are always refused. Raises ``ValueError``, ``KeyError`` (a missing array),
    ``OSError`` or ``zipfile.BadZipFile``; what the zip and ``.npy`` readers raise for damaged
    bytes besides those (an unknown compression method, a broken deflate stream, a header that
    does not parse) becomes a ``ValueError``, so a caller's one ``except`` covers every file.
    """
    try:
        return _read_npz(path, shapes, kinds, load)
    except (NotImplementedError, zlib.error, tokenize.TokenError, SyntaxError) as exc:
        raise ValueError(f"damaged bytes ({type(exc).__name__}: {exc})") from exc


def _read_npz(path: str | os.PathLike[str], shapes: Mapping[str, Shape],
              kinds: Mapping[str, str] | None, load: Sequence[str] | None
              ) -> dict[str, np.ndarray]:
    headers = npz_headers(path, shapes)
    sizes: dict[str, int] = {}
    for name, (shape, dtype) in headers.items():
        want = shapes[name]
        ok = len(shape) == len(want)
        for got, w in zip(shape, want) if ok else ():
            if isinstance(w, str):
                w = sizes.setdefault(w, got)
            ok = ok and (w is None or got == w)
        ok = ok and not (kinds and name in kinds and dtype.kind not in kinds[name])
        if not ok:
            shown = ", ".join(str(sizes.get(w, w)) if isinstance(w, str) else "d" if w is None
                              else str(w) for w in want)
            kind = f" of kind {kinds[name]!r}" if kinds and name in kinds else ""
            raise ValueError(f"field {name!r} has shape {shape} and type {dtype}, expected "
                             f"({shown}){kind}")
    with np.load(path, allow_pickle=False) as z:
        return {name: z[name] for name in (shapes if load is None else load)}


def npz_headers(path: str | os.PathLike[str], names: Mapping[str, object] | Sequence[str]
                ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each named array, from the headers alone, with the size checks."""
    out = {}
    with zipfile.ZipFile(Path(path)) as zf:
        for name in names:
            try:
                info = zf.getinfo(f"{name}.npy")
            except KeyError:
                raise KeyError(f"no array {name!r} in the file") from None
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f"field {name!r}: .npy format {version} is not read")
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                    else np.lib.format.read_array_header_2_0
                shape, _fortran, dtype = read(fh)
                header = fh.tell()
            if dtype.hasobject:
                raise ValueError(f"field {name!r} holds Python objects; only plain arrays are read")
            nbytes = math.prod(shape) * dtype.itemsize
            if header + nbytes != info.file_size:
                raise ValueError(f"field {name!r} declares shape {shape} of {dtype} ({nbytes:,} "
                                 f"bytes) but its member holds {info.file_size - header:,}")
            if info.file_size > max(MAX_RATIO * info.compress_size, RATIO_FLOOR):
                raise ValueError(f"field {name!r} expands from {info.compress_size:,} to "
                                 f"{info.file_size:,} bytes (more than {MAX_RATIO} times); "
                                 "refused as a decompression bomb")
            out[name] = (tuple(int(s) for s in shape), dtype)
    return out
