"""Prompt files read as a stream give what reading them whole gives (text_lines' line ends,
the suffix rule, byte offsets of bad UTF-8), at any chunk size."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import benchroute.prompt_file as pf
from benchroute._persist import text_lines
from benchroute.exceptions import DataError

pytestmark = pytest.mark.filterwarnings("ignore")


def _whole(raw: bytes) -> list[tuple[int, str]]:
    """The reading of the whole file: decode (a BOM is no text), then text_lines."""
    return text_lines(raw.decode("utf-8-sig"))


PIECES = st.lists(st.sampled_from(["a", "é", "漢", "\r", "\n", "\r\n", " ", "{", "\u2028",
                                   "\x0c", ""]), max_size=40)


@settings(max_examples=300, deadline=None)
@given(pieces=PIECES, chunk=st.integers(1, 7), bom=st.booleans())
def test_lines_equal_whole_reading_at_any_chunk_size(pieces: list[str], chunk: int,
                                                     bom: bool) -> None:
    raw = (b"\xef\xbb\xbf" if bom else b"") + "".join(pieces).encode()
    old, pf._CHUNK = pf._CHUNK, chunk
    try:
        lines = list(pf._lines(io.BytesIO(raw), "f"))
    finally:
        pf._CHUNK = old
    whole = _whole(raw)
    # the whole reading ends with the text after the last line end, blank or not
    assert [x for x in lines if x[1]] == [x for x in whole if x[1]]
    assert len(lines) in (len(whole), len(whole) - 1)


def test_crlf_split_across_chunks_is_one_line_end(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setattr(pf, "_CHUNK", 2)
    f = tmp_path / "p.txt"
    f.write_bytes(b"a\r\nb\rc\n\nd")
    assert pf.read_prompt_file(f) == ["a", "b", "c", "d"]


def test_bad_utf8_names_the_file_offset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pf, "_CHUNK", 3)
    f = tmp_path / "p.txt"
    f.write_bytes(b"\xef\xbb\xbfok\nfine\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"p\.txt: not UTF-8 text \(unexpected end of data "
                                        r"at byte 14\)"):
        pf.read_prompt_file(f)


def test_suffix_rule_and_json_errors(tmp_path: Path) -> None:
    txt = tmp_path / "p.txt"
    txt.write_text('{"text": "kept whole"}\nplain\n')
    assert pf.read_prompt_file(txt) == ['{"text": "kept whole"}', "plain"]
    log = tmp_path / "p.log"
    log.write_text('{"text": "from json"}\nplain\n')
    assert pf.read_prompt_file(log) == ["from json", "plain"]
    jl = tmp_path / "p.jsonl"
    for body, match in [('{"text": "a", "text": "b"}', "line 1"),
                        ("[1]", "line 1 is not a JSON object"),
                        ('\n{"t": 1}', "line 2 has no string field 'text'"),
                        ('{"text": " "}', "line 1: field 'text' is empty")]:
        jl.write_text(body)
        with pytest.raises(DataError, match=match):
            pf.read_prompt_file(jl)


def test_no_texts_and_not_a_file(tmp_path: Path) -> None:
    empty = tmp_path / "e.txt"
    empty.write_text("\n \r\n")
    with pytest.raises(DataError, match="no input texts"):
        pf.read_prompt_file(empty)
    with pytest.raises(DataError, match="no such file"):
        pf.read_prompt_file(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="is not a file"):
        pf.read_prompt_file(tmp_path)


def test_iteration_is_lazy(tmp_path: Path) -> None:
    """A stream hands out the texts before a bad line further on is read."""
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps({"text": f"q{i}"}) for i in range(3)) + "\nnot json\n")
    it = pf.iter_prompt_file(f)
    assert [next(it) for _ in range(3)] == ["q0", "q1", "q2"]
    with pytest.raises(DataError, match="line 4"):
        next(it)


def test_stdin_bytes_and_text_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    class Bytes:
        buffer = io.BytesIO(b"\xef\xbb\xbfone\r\ntwo")

    monkeypatch.setattr("sys.stdin", Bytes())
    assert pf.read_prompt_file("-") == ["one", "two"]
    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": "x"}\ny\n'))
    assert pf.read_prompt_file("-") == ["x", "y"]
    # a text stream's text is read as it was, a lone surrogate included (it was refused)
    monkeypatch.setattr("sys.stdin", io.StringIO("caf\ud800 ok\nplain\n"))
    assert pf.read_prompt_file("-") == ["caf\ud800 ok", "plain"]
