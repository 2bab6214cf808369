"""Small readers shared by the loaders, so that every bad file gives the same kind of message."""

from __future__ import annotations

import json
import lzma
from pathlib import Path
from typing import Any

from benchroute.exceptions import DataError


def read_json(path: Path, expect: type | None = None) -> Any:
    """Parse one JSON document; the error names the file, the position and the expected type."""
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    if expect is not None and not isinstance(obj, expect):
        raise DataError(
            f"{path}: expected a JSON {expect.__name__}, got {type(obj).__name__}"
        )
    return obj


def read_json_records(path: Path) -> list[dict[str, Any]]:
    """A JSON list of objects, or JSONL (one object per line); ``.xz`` files are decompressed."""
    opener = lzma.open if path.suffix == ".xz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (UnicodeDecodeError, lzma.LZMAError) as exc:
        raise DataError(f"{path}: cannot read as text ({exc})") from exc
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    stripped = text.lstrip()
    records: list[Any]
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from exc
    else:
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {lineno} is not valid JSON: {exc.msg}") from exc
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {i} is a {type(rec).__name__}, expected an object")
    return records
