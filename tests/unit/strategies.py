"""Strategies the property-test files share (their settings come from the profile in
tests/conftest.py)."""

from __future__ import annotations

from hypothesis import strategies as st

#: a probability or a label in [0, 1], no subnormals (they only slow the search)
unit = st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False, allow_subnormal=False)
