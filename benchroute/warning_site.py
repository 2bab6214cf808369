"""Where a warning raised inside benchroute should point: at the user's line.

A fixed ``stacklevel`` counts frames from the function that warns; a decorator or another
public function in between moves the warning into the package (found by a review: the
keyword-only shim moved ``route``'s warnings into ``deprecation.py``, and under Python's
once-per-location filter a user then saw one warning per process instead of one per call site).
"""

from __future__ import annotations

import os
import sys
import types

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep  # .../benchroute/


def user_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the caller of this function that names the
    first frame outside benchroute."""
    frame: types.FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level
