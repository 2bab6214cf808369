"""Text identity and common-prefix stripping."""

from __future__ import annotations

import hashlib

from benchroute.data.text import common_prefix, normalize_text, strip_common_prefix, text_key


def test_normalize_line_endings_and_outer_whitespace() -> None:
    assert normalize_text("  a\r\nb\rc \n") == "a\nb\nc"
    assert text_key("a\r\nb\n") == text_key("a\nb") == hashlib.sha256(b"a\nb").hexdigest()


def test_prefix_ends_on_line_boundary() -> None:
    texts = ["Intro\nQ: one\nA: 1\nQ: two", "Intro\nQ: one\nA: 1\nQ: three"]
    assert common_prefix(texts) == "Intro\nQ: one\nA: 1\n"
    assert strip_common_prefix(texts) == ["Q: two", "Q: three"]


def test_prefix_never_empties_a_text() -> None:
    # the first text is entirely shared: the cut is the last newline before its end
    texts = ["Intro\nQ: a", "Intro\nQ: a\nmore"]
    assert strip_common_prefix(texts) == ["Q: a", "Q: a\nmore"]


def test_no_prefix_cases() -> None:
    assert common_prefix(["only one\ntext"]) == ""
    assert common_prefix(["abc", "abd"]) == ""  # shared part has no line boundary
    assert strip_common_prefix(["x\r\n", "y"]) == ["x", "y"]
