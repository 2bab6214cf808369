"""Old names kept for one release: a call that uses one still works and warns with the new name.

The public vocabulary is one name per idea (``max_quality_drop`` for the tolerated quality
loss, ``strong``/``weak`` for the two models of a pair); the spellings it replaced pass through
here, so they can be removed in one place when the release after next drops them.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import ParamSpec, TypeVar

from benchroute.exceptions import BenchrouteError
from benchroute.warning_site import user_stacklevel

_P = ParamSpec("_P")
_R = TypeVar("_R")
_V = TypeVar("_V")


def rename_keys(params: Mapping[str, _V], old_to_new: Mapping[str, str], where: str,
                stacklevel: int = 3) -> dict[str, _V]:
    """``params`` with each old name replaced by its new one (a FutureWarning each); an old
    and a new name for the same parameter together are refused rather than one silently won."""
    out = dict(params)
    for old, new in old_to_new.items():
        if old not in out:
            continue
        if new in out:
            raise BenchrouteError(f"{where}: {old!r} is the old name of {new!r}; give only "
                                  f"{new!r}")
        warnings.warn(f"{where}: {old!r} is deprecated and will be removed; call it {new!r}",
                      FutureWarning, stacklevel=stacklevel)
        out[new] = out.pop(old)
    return out


def renamed(**old_to_new: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """A decorator accepting the old keyword names of a function's parameters; the signature
    shown (``inspect.signature``, help) is the new one."""

    def wrap(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            new = rename_keys(kwargs, old_to_new, fn.__name__, stacklevel=user_stacklevel() + 1)
            return fn(*args, **new)  # type: ignore[arg-type]

        return call

    return wrap


def keywords_after(n: int) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """A decorator for a function whose parameters after the first ``n`` (``self`` counts)
    became keyword-only: a call that still passes them by position works, in the old order,
    and warns with their names. Why: sibling functions took their options in different orders
    (``route(texts, candidates, policy)`` against ``route_table(texts, policy, candidates=)``,
    ``apgr(..., q_strong, q_weak)`` against ``hybrid_labels(q_weak, q_strong)``), so a
    positional call could silently swap two arguments."""

    def wrap(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        import inspect

        names = [p.name for p in inspect.signature(fn).parameters.values()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

        @functools.wraps(fn)
        def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if len(args) > n:
                extra = names[n:len(args)]
                if len(extra) < len(args) - n:
                    raise TypeError(f"{fn.__name__}() takes at most {len(names)} arguments "
                                    f"({len(args)} given)")
                twice = [k for k in extra if k in kwargs]
                if twice:
                    raise TypeError(f"{fn.__name__}() got multiple values for {twice}")
                warnings.warn(f"{fn.__name__}: pass {', '.join(extra)} by name "
                              f"({extra[0]}=...); by position is deprecated and will be removed",
                              FutureWarning, stacklevel=user_stacklevel())
                kwargs.update(zip(extra, args[n:]))
                args = args[:n]  # type: ignore[assignment]
            return fn(*args, **kwargs)

        return call

    return wrap
