"""Reading JSON: one rule for every JSON document benchroute reads, from the loaders' result files
to the saved routers' sidecars, the gateway's request bodies and the CLI's JSONL lines.

``json.loads`` fails in several ways on a hostile or damaged document, and only one of them is
a ``JSONDecodeError``: bytes that are not UTF-8, nesting deeper than the recursion limit
(``RecursionError``), integers over Python's 4,300-digit limit and, where strict JSON is asked
for, ``NaN``/``Infinity`` and numbers beyond a float's range (``ValueError``). Each is turned
here into the caller's error class, naming the document, so no reader ends in a traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import stat
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchroute.data.metrics import short_repr
from benchroute.exceptions import BenchrouteError, FormatVersionError

#: A SHA-256 digest as the saved files write it (weights, checksums, cache keys).
HEX64 = re.compile(r"[0-9a-f]{64}")


_LINE_END = re.compile(r"\r\n|\r|\n")


def text_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of a text file, lines ended by ``\n``, ``\r\n`` or a lone ``\r``
    (the line breaks :func:`benchroute.data.text.normalize_text` knows).

    Why not ``str.splitlines``: it also ends lines at U+2028, U+0085, form feeds and other
    separators, which a JSONL writer leaves raw inside strings (``ensure_ascii=False``) and a
    prompt may hold, so one record became two and the line numbers shifted."""
    return list(enumerate(_LINE_END.split(text), start=1))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, read in chunks (weights of 419 MB never sit in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number JSON allows (RFC 8259)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: valid JSON, but no float holds it
        raise ValueError(f"{text[:40]} is beyond the range of a float")
    return value


class _RepeatedKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(f"key {key!r:.80} appears twice in one object")
        out[key] = value
    return out


def finite_or_null(value: Any) -> Any:
    """``value`` with every non-finite float (at any depth of dicts, lists and tuples) as None:
    JSON has no NaN or infinity, so a record or a response holding one failed to encode."""
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    # a NumPy float scalar too (np.float32 is no float), read by its dtype: no NumPy import
    if isinstance(value, float) or (getattr(value, "shape", None) == ()
                                    and getattr(getattr(value, "dtype", None), "kind", "") == "f"):
        return float(value) if math.isfinite(value) else None
    return value


def parse_json(doc: str | bytes, where: str, error: type[Exception] = BenchrouteError,
               strict: bool = False, line: int | None = None, unique_keys: bool = False) -> Any:
    """One JSON document; every way it can fail is ``error`` with ``where`` in its message.

    ``strict`` refuses ``NaN`` and ``±Infinity``, which Python's parser takes by default, and
    numbers beyond a float's range (``1e999``, which it reads as infinity): the files
    benchroute writes never hold them, so one there means damage. Files of results made by
    other tools keep the lenient default. Bytes are UTF-8 (a byte-order mark is dropped).
    ``line``: the document is that line of a JSONL file named by ``where``. ``unique_keys``
    refuses a key given twice in one object, which Python's parser resolves silently to the
    last (a price file or upstreams file naming one model twice).
    """
    at = f"{where}: line {line}" if line is not None else where
    if isinstance(doc, bytes | bytearray):
        doc = decode_text(bytes(doc), at, error)
    hook = _unique_pairs if unique_keys else None
    try:
        if strict:
            return json.loads(doc, parse_constant=_no_constant, parse_float=_finite_float,
                              object_pairs_hook=hook)
        return json.loads(doc, object_pairs_hook=hook)
    except json.JSONDecodeError as exc:
        if line is not None:
            raise error(f"{at} is not valid JSON: {exc.msg}") from exc
        raise error(f"{at}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                    f"{exc.msg}") from exc
    except RecursionError as exc:
        raise error(f"{at}: invalid JSON: nested too deeply to read") from exc
    except ValueError as exc:  # an integer over 4,300 digits, or NaN where strict
        if "digits" in str(exc) and "int" in str(exc):  # Python's advice means nothing here
            raise error(f"{at}: invalid JSON: an integer of more than "
                        f"{getattr(sys, 'get_int_max_str_digits', lambda: 4300)():,} digits"
                        ) from exc
        raise error(f"{at}: invalid JSON: {str(exc):.120}") from exc


def decode_text(raw: bytes, where: str, error: type[Exception] = BenchrouteError) -> str:
    """UTF-8 text; a byte-order mark (editors on Windows write one) is not part of it."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def read_bytes_file(path: Path, error: type[Exception] = BenchrouteError,
                    missing: str | None = None) -> bytes:
    """A file's bytes; ``missing`` replaces "file not found" when it is absent."""
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise error(missing or f"{path}: file not found") from exc
    except IsADirectoryError as exc:
        raise error(f"{path}: is a folder, not a file") from exc
    except OSError as exc:
        raise error(f"{path}: unreadable ({exc.strerror})") from exc


def read_text_file(path: Path, error: type[Exception] = BenchrouteError,
                   missing: str | None = None) -> str:
    """A UTF-8 file's text."""
    return decode_text(read_bytes_file(path, error, missing), str(path), error)


def read_json_file(path: Path, error: type[Exception] = BenchrouteError, strict: bool = False,
                   missing: str | None = None) -> Any:
    """:func:`parse_json` of a file. ``strict``: a file benchroute wrote (a sidecar, a
    calibration), which never holds NaN, a number beyond a float or a key twice in one
    object; any of them there means damage or a hand edit, and the last of two values for
    one key was taken silently."""
    return parse_json(read_text_file(path, error, missing), str(path), error, strict,
                      unique_keys=strict)


def check_format_version(meta: dict[str, Any], where: str, supported: int, what: str,
                         error: type[BenchrouteError] = BenchrouteError, oldest: int = 0,
                         required: bool = False, remake: str = "make it again with this "
                         "benchroute") -> int:
    """A saved file's ``format_version``: an integer from ``oldest`` to ``supported`` (absent
    reads as 0, written before the field existed, unless ``required``); ``remake`` says what
    to do with a file too old to read."""
    version = meta.get("format_version", None if required else 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise error(f"{where}: field 'format_version' is {short_repr(version, 60)}, expected an integer "
                    f">= 0 (this benchroute writes {supported})")
    if version > supported:
        raise FormatVersionError(
            f"{where}: field 'format_version': {what} format {short_repr(version, 60)} is newer than this "
            f"benchroute reads ({supported}); upgrade benchroute")
    if version < oldest:
        raise FormatVersionError(
            f"{where}: field 'format_version': {what} format {version} is older than this "
            f"benchroute reads ({oldest} to {supported}); {remake}")
    return version


def read_versioned_json(path: Path, supported: int, what: str,
                        error: type[BenchrouteError] = BenchrouteError, oldest: int = 0,
                        required: bool = False,
                        remake: str = "make it again with this benchroute") -> dict[str, Any]:
    """The JSON object of a saved file's sidecar, strict, with its format version checked."""
    meta = read_json_file(path, error, strict=True,
                          missing=f"{path.parent}: not a saved benchroute {what} (no {path.name})")
    if not isinstance(meta, dict):
        raise error(f"{path}: expected a JSON object")
    check_format_version(meta, str(path), supported, what, error, oldest, required, remake)
    return meta


def check_output_path(path: str | os.PathLike[str], what: str = "file",
                      error: type[Exception] = BenchrouteError) -> Path:
    """Refuse an output path that cannot be written, before the work that fills it: a folder,
    no file name, or a parent that is a file or not writable. Why before: a long job (a Ray
    routing run) found out only when it came to write."""
    path = Path(path)
    try:
        if not path.name or path.is_dir():
            raise error(f"{str(path) or repr('')}: is a folder or no file name; expected a path "
                        f"for the {what}")
        if path.exists() and not path.is_file():
            return path  # a device or a pipe (/dev/stdout): written through, its folder no matter
        parent = Path(os.path.realpath(path)).parent  # a link's target is what is replaced
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent  # the folders that do not exist yet are made when writing
        if not parent.is_dir():
            raise error(f"{path}: cannot write the {what} ({parent} is not a folder)")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise error(f"{path}: cannot write the {what} ({parent} is not writable)")
        if parent == Path(os.path.realpath(path)).parent:
            # a file made and removed: os.access says yes to root on a read-only mount or
            # /sys, where the write after a whole Ray job then failed (found by a review)
            fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name[:50]}.", suffix=".probe")
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:  # a name too long, say
        raise error(f"{path}: cannot write the {what} ({exc.strerror or exc})") from exc
    return path


def write_file_atomic(path: str | os.PathLike[str], write: Callable[[Path], object],
                      what: str = "file", error: type[Exception] = BenchrouteError) -> Path:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it to ``path``: a
    reader never sees a half-written file, and a failed write leaves none. A folder, or a path
    with no file name (``''``), is refused before anything is written. A symbolic link is
    followed (the file it names is replaced, the link kept), a device or a pipe
    (``/dev/stdout``) is written through, and a replaced file keeps its permission bits."""
    given = path = check_output_path(path, what, error)
    try:
        if path.exists() and not path.is_file():  # a device or a pipe: no rename onto it; the
            write(path)  # name as given (/dev/stdout), since a pipe's real path opens nothing
            return given
        path = Path(os.path.realpath(path))
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
    except OSError as exc:
        raise error(f"{given}: cannot write the {what} ({exc.strerror or exc})") from exc
    # the name's first 200 bytes: the temporary name must fit the 255 a file name may have
    stem = path.name.encode("utf-8", "surrogatepass")[:200].decode("utf-8", "ignore")
    tmp = path.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise error(f"{given}: cannot write the {what} ({exc.strerror or exc})") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return given
