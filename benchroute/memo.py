"""Bounded memos that threads reading one router share."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

K = TypeVar("K")


def make_room(memo: MutableMapping[K, Any], limit: int,
              evictable: Callable[[K], bool] = lambda key: True) -> None:
    """Drop the oldest evictable entries until ``memo`` holds fewer than ``limit``.

    Why: threads routing with one router fill its memos together, so two may pick the same
    oldest key (the second ``pop`` raised ``KeyError``) or look for it while another inserts
    (``RuntimeError: dictionary changed size during iteration``); both were found by a review
    through ``select_model`` from 8 threads. An entry is only a saved computation, so losing
    such a race is harmless: the entry is gone either way, or the memo stays one over.
    """
    while len(memo) >= limit:
        try:
            key = next(k for k in memo if evictable(k))
        except (StopIteration, RuntimeError):  # nothing to drop, or changed meanwhile
            return
        memo.pop(key, None)
