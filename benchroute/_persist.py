"""Reading the JSON sidecars of saved stores, indexes, routers and caches, with one set of
messages for missing, malformed and too-new files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from benchroute.exceptions import BenchrouteError, FormatVersionError

#: A SHA-256 digest as the saved files write it (weights, checksums, cache keys).
HEX64 = re.compile(r"[0-9a-f]{64}")


def read_versioned_json(path: Path, supported: int, what: str,
                        error: type[BenchrouteError] = BenchrouteError) -> dict[str, Any]:
    """The JSON object at ``path``; refuses files written by a newer format than ``supported``."""
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise error(f"{path.parent}: not a saved benchroute {what} (no {path.name})") from exc
    except json.JSONDecodeError as exc:
        raise error(f"{path}: invalid JSON ({exc.msg})") from exc
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:  # ValueError: a 5,000-digit int
        raise error(f"{path}: not a JSON file ({type(exc).__name__}: {str(exc):.100})") from exc
    if not isinstance(meta, dict):
        raise error(f"{path}: expected a JSON object")
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise error(f"{path}: field 'format_version' is {version!r:.60}, expected an integer "
                    ">= 0 (0: written before the field existed)")
    if version > supported:
        raise FormatVersionError(
            f"{path}: field 'format_version': {what} format {version} is newer than this "
            f"benchroute reads ({supported}); upgrade benchroute")
    return meta
