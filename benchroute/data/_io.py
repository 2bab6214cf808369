"""Small readers shared by the loaders, so that every bad file gives the same kind of message."""

from __future__ import annotations

import csv
import logging
import lzma
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from benchroute._persist import (
    decode_text,
    parse_json,
    read_bytes_file,
    read_json_file,
    text_lines,
)
from benchroute.data.metrics import short_repr
from benchroute.exceptions import DataError

logger = logging.getLogger(__name__)


def read_json(path: Path, expect: type | None = None) -> Any:
    """Parse one JSON document; the error names the file, the position and the expected type."""
    obj = read_json_file(path, DataError)
    if expect is not None and not isinstance(obj, expect):
        raise DataError(
            f"{path}: expected a JSON {expect.__name__}, got {type(obj).__name__}"
        )
    return obj


def csv_rows(lines: Iterable[str], where: str, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(line number, row) of CSV text. A field may be as long as the text (the csv module's
    default cap of 128 KiB is lifted: long prompts are normal inputs); a malformed line is a
    DataError."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, 2**31 - 1))
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as exc:
        raise DataError(f"{where}: line {reader.line_num}: unreadable CSV ({exc})") from exc
    finally:
        csv.field_size_limit(old)


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def replace_lone_surrogates(obj: Any) -> tuple[Any, int]:
    """``obj`` with lone surrogates (from JSON escapes such as ``\\ud800``) in its strings
    replaced by U+FFFD, and how many strings changed. UTF-8 cannot encode them, so pandas' string
    columns, parquet and tokenizers would fail on them later, far from the file."""
    if isinstance(obj, str):
        fixed = _SURROGATE.sub("\ufffd", obj)
        return fixed, int(fixed != obj)
    if isinstance(obj, list):
        n = 0
        for i, v in enumerate(obj):
            obj[i], k = replace_lone_surrogates(v)
            n += k
        return obj, n
    if isinstance(obj, dict):
        n = 0
        for key in list(obj):
            obj[key], k = replace_lone_surrogates(obj[key])
            n += k
        return obj, n
    return obj, 0


def _one_document(path: Path, text: str) -> None:
    """Say what a file that is no JSONL but one JSON object is (a pretty-printed object, a
    table of columns): "line 1 is not valid JSON" misled (found by fuzzing)."""
    if sum(1 for line in text.splitlines() if line.strip()) < 2:
        return  # one line: its own error says it
    try:
        whole = parse_json(text, str(path), DataError)
    except DataError:
        return
    if isinstance(whole, dict):
        raise DataError(f"{path}: one JSON object (keys {short_repr(list(whole)[:5], 80)}), not "
                        "records: give a list of objects ([{...}, ...]) or JSONL, one object "
                        "per line")


def read_json_records(
    path: Path, on_surrogates: Callable[[int], None] | None = None, unique_keys: bool = False
) -> list[dict[str, Any]]:
    """A JSON list of objects, or JSONL (one object per line); ``.xz`` files are decompressed.

    A UTF-8 byte-order mark is dropped (editors on Windows write one); an empty list gives ``[]``
    and the caller says what that means for its format. Nesting deeper than Python's recursion
    limit is an error, not a crash. ``unique_keys``: a key twice in one object is an error (the
    records a user writes for benchroute: the last of two labels won silently), where files of
    other tools keep Python's reading.
    """
    raw = read_bytes_file(path, DataError)
    if path.suffix == ".xz":
        try:
            raw = lzma.decompress(raw)
        except (lzma.LZMAError, EOFError) as exc:
            raise DataError(f"{path}: not a readable xz file ({exc})") from exc
    text = decode_text(raw, str(path), DataError)
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    stripped = text.lstrip()
    records: list[Any]
    if stripped.startswith("["):
        records = parse_json(text, str(path), DataError, unique_keys=unique_keys)
    else:
        try:
            numbered = [(lineno, parse_json(line, str(path), DataError, line=lineno,
                                            unique_keys=unique_keys))
                        for lineno, line in text_lines(text) if line.strip()]
        except DataError:
            _one_document(path, text)
            raise
        records = [rec for _, rec in numbered]
        for lineno, rec in numbered:
            if not isinstance(rec, dict):
                raise DataError(f"{path}: line {lineno} is a {type(rec).__name__}, expected an "
                                "object")
    for i, rec in enumerate(records):  # counted from 1, as the command line's messages count
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {i + 1} is a {type(rec).__name__}, expected an "
                            "object")
    if _SURROGATE_ESCAPE.search(text):
        records, n = replace_lone_surrogates(records)
        if n:
            logger.warning("%s: replaced lone surrogates in %d strings", path, n)
            if on_surrogates is not None:
                on_surrogates(n)
    return records
