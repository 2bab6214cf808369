"""Exceptions raised by benchroute.

The library raises these and never prints or exits; only the CLI turns them into messages and
exit codes. Every message names the file, the field, the bad value and what was expected.
"""

from __future__ import annotations


class BenchrouteError(Exception):
    """Base class of every error benchroute raises on purpose."""


class DataError(BenchrouteError, ValueError):
    """Benchmark results that cannot be read or are inconsistent."""


class ModelNotInstalledError(BenchrouteError):
    """The sentence encoder's weights are not on this machine."""


class CacheError(BenchrouteError):
    """The embedding cache is corrupt or was written by an incompatible version."""


class FormatVersionError(BenchrouteError):
    """A saved store or router was written by a newer, incompatible benchroute."""


class NotFittedError(BenchrouteError, AttributeError):
    """An estimator was used before ``fit``."""
