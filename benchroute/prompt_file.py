"""Files of input texts (prompt logs): one text per line, or JSONL lines with a ``text`` field.

Read as a stream of lines, so that a log of millions of prompts can go to a Ray cluster block
by block without ever being held whole (:func:`benchroute.scale.ray_jobs.route_with_ray`);
:func:`read_prompt_file` is the same reading into a list for everything local.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from benchroute._persist import parse_json
from benchroute.data.text import is_blank
from benchroute.exceptions import DataError

#: Suffixes whose every line is JSON, and those whose every line is plain text; elsewhere
#: (standard input, other names) a line starting with ``{`` is JSON.
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
TEXT_SUFFIXES = (".txt", ".text")

# the line ends of benchroute._persist.text_lines, as bytes: ASCII, so never inside a UTF-8
# sequence, and a file can be cut into lines before it is decoded
_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20


def _lines(fh: BinaryIO, where: str, errors: str = "strict") -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 stream read a chunk at a time; a byte-order mark at the
    start is not part of the text. A non-UTF-8 line names the byte's offset in the file."""
    head = fh.read(len(_BOM))
    buf, offset = (bytearray(), len(_BOM)) if head == _BOM else (bytearray(head), 0)
    lineno, scan, eof = 0, 0, False
    while not eof:
        chunk = fh.read(_CHUNK)
        eof = not chunk
        buf += chunk
        start = 0
        # only the new bytes are searched (and a held "\r"): a line of many chunks stays linear
        for end in _LINE_END.finditer(buf, scan):
            if not eof and end.group() == b"\r" and end.end() == len(buf):
                break  # a "\r" at the chunk's end may be the first half of "\r\n"
            lineno += 1
            yield lineno, _decode(bytes(buf[start:end.start()]), where, offset + start, errors)
            start = end.end()
        offset += start
        del buf[:start]
        scan = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
    if buf or lineno == 0:
        yield lineno + 1, _decode(bytes(buf), where, offset, errors)


def _decode(raw: bytes, where: str, offset: int, errors: str = "strict") -> str:
    try:
        return raw.decode("utf-8", errors)
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text ({exc.reason} at byte "
                        f"{offset + exc.start})") from exc


def iter_prompt_file(path: str | Path) -> Iterator[str]:
    """The input texts of ``path`` (``-``: standard input), one at a time.

    A ``.txt`` file is plain lines and a ``.jsonl``/``.ndjson``/``.json`` file JSONL, whatever a
    line starts with; elsewhere a line starting with ``{`` is JSON. Why by the suffix: in a
    plain prompt log a prompt starting with ``{`` was refused as invalid JSON, and one that was
    a JSON object holding a ``text`` field was replaced by that field (found by a review).
    Blank lines are skipped; a file without a text is refused when the stream ends."""
    stdin = str(path) == "-"
    p = Path("<stdin>") if stdin else Path(path)
    if not stdin and not p.is_file():
        raise DataError(f"{p}: no such file" if not p.exists() else f"{p}: is not a file")
    suffix = "" if stdin else p.suffix.lower()
    # a stdin replaced by a text stream holds text already, lone surrogates included
    errors = "strict"
    try:
        if stdin:
            fh, errors = _stdin()
        else:
            fh = open(p, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise DataError(f"{p}: unreadable ({exc.strerror})") from exc
    count = 0
    try:
        for lineno, line in _lines(fh, str(p), errors):
            if is_blank(line):
                continue
            count += 1
            if suffix in JSONL_SUFFIXES or (suffix not in TEXT_SUFFIXES
                                            and line.lstrip().startswith("{")):
                yield _json_text(line, p, lineno)
            else:
                yield line
    finally:
        if not stdin:
            fh.close()
    if not count:
        raise DataError(f"{p}: no input texts (the file is empty or holds only blank lines)")


def _stdin() -> tuple[BinaryIO, str]:
    """Standard input as bytes, and how to decode them: strictly, unless a replaced stdin is
    a text stream only, whose text is re-read as it was (lone surrogates included)."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is not None:
        return stream, "strict"
    return io.BytesIO(sys.stdin.read().encode("utf-8", "surrogatepass")), "surrogatepass"


def _json_text(line: str, p: Path, lineno: int) -> str:
    obj = parse_json(line, str(p), DataError, line=lineno, unique_keys=True)
    if not isinstance(obj, dict):
        raise DataError(f"{p}: line {lineno} is not a JSON object (a JSONL file of prompts has "
                        "one object with a 'text' field per line)")
    text = obj.get("text")
    if not isinstance(text, str):
        raise DataError(f"{p}: line {lineno} has no string field 'text'")
    if is_blank(text):
        raise DataError(f"{p}: line {lineno}: field 'text' is empty or only whitespace and "
                        "invisible characters")
    return text


def read_prompt_file(path: str | Path) -> list[str]:
    """Every input text of ``path`` (``-``: standard input), as :func:`iter_prompt_file`
    reads them."""
    return list(iter_prompt_file(path))
