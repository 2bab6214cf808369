"""Optional extras: one message for a missing one, naming the extra to install."""

from __future__ import annotations

import importlib

from benchroute.exceptions import BenchrouteError


def require_extra(extra: str, *modules: str) -> None:
    """Import ``modules`` or raise a BenchrouteError saying which extra brings them."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise BenchrouteError(f"this needs the '{extra}' extra ({exc.name or name} is "
                                  f"missing): pip install 'benchroute[{extra}]'") from None
