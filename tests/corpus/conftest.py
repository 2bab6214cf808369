"""The corpus of bad inputs: one helper that runs a case, names its outcome and asserts it.

Outcomes, from worst to best:

* ``crash``: an exception that is not a :class:`BenchrouteError` (a traceback for the user), or
  an error that only came after trying to allocate gigabytes (``bad_alloc``);
* ``wrong``: the call returned, but not what the case expects (a silent wrong result);
* ``error``: a :class:`BenchrouteError` (its message must match the case's pattern, which names
  the file and the field);
* ``skip``: the call returned and reported what it skipped (the case's ``check`` says so);
* ``right``: the call returned the right result (the case's ``check`` says so).

With ``BENCHROUTE_CORPUS_LOG=<file>`` every case appends ``{"case", "area", "expected", "got",
"as_expected"}`` as one JSON line (``scripts/corpus_counts.py`` tabulates them), which is how
docs/reliability.md's before/after counts were made.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import sys
from collections.abc import Callable
from typing import Any

import pytest

from benchroute.exceptions import BenchrouteError

OUTCOMES = ("crash", "wrong", "error", "skip", "right")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "new_api: the case calls an API this corpus added (left "
                            "out when counting the code before it, with -m 'not new_api')")


def classify(fn: Callable[[], Any], expected: str, match: str | None,
             check: Callable[[Any], bool] | None) -> tuple[str, str]:
    """(outcome, detail) of calling ``fn``; growing the peak memory by a GiB is a crash."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    try:
        result = fn()
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
        if grew > 1 << 20:
            return "crash", f"allocated {grew / (1 << 20):.1f} GiB"
    except BenchrouteError as exc:
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
        if grew > 1 << 20:
            return "crash", f"error after allocating {grew / (1 << 20):.1f} GiB: {exc}"
        msg = str(exc)
        if "bad_alloc" in msg or isinstance(exc.__cause__, MemoryError):
            return "crash", f"error after a huge allocation: {msg}"
        if match is not None and not re.search(match, msg):
            return "error", f"BenchrouteError not matching {match!r}: {msg}"
        return "error", msg
    except Exception as exc:  # noqa: BLE001 (classifying is the point)
        return "crash", f"{type(exc).__name__}: {exc}"
    if expected == "error":
        return "wrong", f"returned {result!r:.200} instead of raising"
    if check is not None and not check(result):
        return "wrong", f"check failed on {result!r:.200}"
    return expected, ""


@pytest.fixture
def corpus(request: pytest.FixtureRequest) -> Callable[..., bool]:
    """``assert corpus(area, expected, fn, match=None, check=None)``: run one case, fail with the
    detail when its outcome is not ``expected``, and return True when it is."""

    def run(area: str, expected: str, fn: Callable[[], Any], match: str | None = None,
            check: Callable[[Any], bool] | None = None) -> bool:
        assert expected in OUTCOMES[2:], expected
        got, detail = classify(fn, expected, match, check)
        log = os.environ.get("BENCHROUTE_CORPUS_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"case": request.node.nodeid, "area": area,
                                     "expected": expected, "got": got,
                                     "as_expected": got == expected and "not matching" not in detail}
                                    ) + "\n")
        assert got == expected, detail
        if expected == "error" and match is not None:
            assert re.search(match, detail), detail
        return True

    return run


class CliError(BenchrouteError):
    """What a CLI user saw: one error line (raised so that :func:`classify` files it as an error)."""


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
            ) -> Callable[..., Callable[[], str]]:
    """``run_cli(argv, stdin=None)``: a case function running ``benchroute.cli.main``.

    Exit 0 returns the standard output; one ``benchroute: error:`` line and a non-zero exit
    raises :class:`CliError`; a traceback, an internal error or anything else fails (a crash).
    """
    from benchroute.cli import main

    def make(argv: list[str], stdin: bytes | None = None) -> Callable[[], str]:
        def run() -> str:
            if stdin is not None:
                monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
            code = main(argv)
            out, err = capsys.readouterr()
            if "Traceback" in err or "internal error" in err:
                raise AssertionError(f"traceback or internal error shown: {err}")
            if code != 0:
                lines = err.strip().splitlines()
                if len(lines) != 1 or not lines[0].startswith("benchroute: error: "):
                    raise AssertionError(f"exit {code} without one error line: {err!r}")
                raise CliError(lines[0])
            return out
        return run

    return make
