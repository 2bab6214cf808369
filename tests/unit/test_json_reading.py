"""One rule for reading JSON: every reader turns each way ``json.loads`` fails into its own error
class naming the document (before, the calibration and upstreams files, ``--metric`` objects and
the CLI's JSONL lines let deep nesting or a 5,000-digit integer escape as a traceback)."""

from __future__ import annotations

import json
import os

import pytest

from benchroute._persist import check_format_version, parse_json, read_json_file
from benchroute.data.options import parse_mapping_option
from benchroute.data.prices import load_prices
from benchroute.exceptions import BenchrouteError, DataError, FormatVersionError
from benchroute.serve.calibrate import load_calibration
from benchroute.serve.upstreams import load_upstreams

HOSTILE = {
    "broken": (b'{"a": ', r"invalid JSON at line 1 column \d: Expecting value"),
    "not-utf8": (b'{"a": "\xff"}', r"not UTF-8 text \(invalid start byte at byte 7\)"),
    "deep": (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, r"invalid JSON: nested too deeply to read"),
    "digits": (b'{"a": 1' + b"0" * 5000 + b"}", r"invalid JSON: an integer of more than 4,300 digits$"),
}
STRICT_ONLY = {name: (f'{{"a": {name}}}'.encode(), rf"invalid JSON: {name} is not a number JSON")
               for name in ("NaN", "Infinity", "-Infinity")}
STRICT_ONLY["1e999"] = (b'{"a": [1.5, -1e999]}', r"invalid JSON: -1e999 is beyond the range")


@pytest.mark.parametrize("doc, message", [*HOSTILE.values(), *STRICT_ONLY.values()],
                         ids=[*HOSTILE, *STRICT_ONLY])
def test_every_failure_is_the_callers_error_naming_the_document(doc, message):
    with pytest.raises(DataError, match=rf"^doc\.json: {message}"):
        parse_json(doc, "doc.json", DataError, strict=True)


def test_lenient_reading_keeps_what_other_tools_write():
    """Result files of other tools (HELM's stats) may hold NaN; only benchroute's own files are
    read strictly."""
    assert str(parse_json(b'{"a": NaN}', "x")["a"]) == "nan"
    assert parse_json(b'{"a": 1e999}', "x")["a"] == float("inf")
    assert parse_json("\ufeff[1]".encode(), "x") == [1]          # a byte-order mark is dropped


def test_a_jsonl_line_is_named_by_its_number():
    with pytest.raises(BenchrouteError, match=r"^f\.jsonl: line 3 is not valid JSON: Expecting"):
        parse_json('{"a": ', "f.jsonl", line=3)
    with pytest.raises(BenchrouteError, match=r"^f\.jsonl: line 3: invalid JSON: nested"):
        parse_json("[" * 100_000, "f.jsonl", line=3)


def test_files(tmp_path):
    with pytest.raises(BenchrouteError, match=r"a\.json: file not found"):
        read_json_file(tmp_path / "a.json")
    with pytest.raises(BenchrouteError, match=r"^make one$"):
        read_json_file(tmp_path / "a.json", missing="make one")
    with pytest.raises(BenchrouteError, match=r": is a folder, not a file"):
        read_json_file(tmp_path)


@pytest.mark.parametrize("meta, message", [
    ({}, None), ({"format_version": 3}, None),
    ({"format_version": 4}, r"x: field 'format_version': thing format 4 is newer than this "
                            r"benchroute reads \(3\); upgrade benchroute"),
    ({"format_version": 1}, r"thing format 1 is older than this benchroute reads \(2 to 3\)"),
    ({"format_version": True}, r"x: field 'format_version' is True, expected an integer >= 0"),
    ({"format_version": -1}, r"field 'format_version' is -1"),
    ({"format_version": "3"}, r"field 'format_version' is '3'"),
])
def test_format_versions(meta, message):
    if message is None:
        assert check_format_version(meta, "x", 3, "thing") == meta.get("format_version", 0)
        return
    with pytest.raises(BenchrouteError, match=message):
        check_format_version(meta, "x", 3, "thing", oldest=2)
    if "newer" in message or "older" in message:
        with pytest.raises(FormatVersionError):
            check_format_version(meta, "x", 3, "thing", oldest=2)


def test_a_required_version_may_not_be_missing():
    with pytest.raises(BenchrouteError, match=r"field 'format_version' is None"):
        check_format_version({}, "x", 3, "thing", required=True)


@pytest.mark.parametrize("case", HOSTILE)
@pytest.mark.parametrize("reader", ["calibration", "upstreams", "prices", "option"])
def test_each_reader_refuses_hostile_documents_by_name(tmp_path, reader, case):
    doc, message = HOSTILE[case]
    path = tmp_path / "file.json"
    path.write_bytes(doc)
    read = {"calibration": lambda: load_calibration(path, None),
            "upstreams": lambda: load_upstreams(path, {}),
            "prices": lambda: load_prices(path),
            "option": lambda: parse_mapping_option(doc.decode("utf-8", "replace"), "metric",
                                                   numeric=False)}[reader]
    where = r"--metric" if reader == "option" else r".*file\.json"
    if reader == "option" and case == "not-utf8":
        return  # a CLI value is text already
    with pytest.raises(BenchrouteError, match=rf"^{where}: {message}"):
        read()


def test_a_calibration_file_with_nan_is_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format_version": 1, "x": float("nan")}))
    with pytest.raises(BenchrouteError, match=r"c\.json: invalid JSON: NaN"):
        load_calibration(path, None)


@pytest.mark.parametrize("doc", ["models: " + "[" * 5000 + "]" * 5000,
                                 "models: {a: {base_url: 'http://127.0.0.1:9/v1', model: m, cost: 1"
                                 + "0" * 5000 + "}}"], ids=["deep", "digits"])
def test_yaml_upstreams_refuse_what_yaml_cannot_hold(tmp_path, doc):
    path = tmp_path / "up.yaml"
    path.write_text(doc)
    with pytest.raises(BenchrouteError, match=r"up\.yaml: invalid YAML"):
        load_upstreams(path, {})


def test_records_from_a_folder_or_a_broken_xz(tmp_path):
    from benchroute.data._io import read_json_records

    with pytest.raises(DataError, match=r": is a folder, not a file"):
        read_json_records(tmp_path)
    # a pretty-printed object (a table of columns) was "line 1 is not valid JSON"
    (tmp_path / "cols.json").write_text('{\n  "text": {"0": "a"},\n  "m1": {"0": 1}\n}\n')
    with pytest.raises(DataError, match=r"cols\.json: one JSON object \(keys \['text', 'm1'\]\), "
                                        r"not records"):
        read_json_records(tmp_path / "cols.json")
    (tmp_path / "r.jsonl.xz").write_bytes(b"\xfd7zXZ\x00junk")
    with pytest.raises(DataError, match=r"r\.jsonl\.xz: not a readable xz file"):
        read_json_records(tmp_path / "r.jsonl.xz")


# ---------------------------------------------------------------- the one atomic file writer
def test_atomic_writer_keeps_links_modes_and_long_names(tmp_path):
    """From a review: the temporary name must fit the 255 bytes of a file name, a link is
    followed (not replaced by a file), and a replaced file keeps its permission bits."""
    import os
    import stat

    from benchroute._persist import write_file_atomic

    def text(s):
        return lambda tmp: tmp.write_text(s)

    long = tmp_path / ("x" * 240 + ".json")
    write_file_atomic(long, text("a"), "thing")
    assert long.read_text() == "a"
    target, link = tmp_path / "target.json", tmp_path / "link.json"
    target.write_text("old")
    os.chmod(target, 0o600)
    link.symlink_to(target)
    assert write_file_atomic(link, text("new"), "thing") == link
    assert link.is_symlink() and target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(BenchrouteError, match=r"cannot write the thing \(File name too long\)"):
        write_file_atomic(tmp_path / ("y" * 300), text("a"), "thing")
    with pytest.raises(BenchrouteError, match="is a folder or no file name"):
        write_file_atomic(tmp_path, text("a"), "thing")
    with pytest.raises(ZeroDivisionError):
        write_file_atomic(tmp_path / "z.json", lambda tmp: (tmp.write_text("half"), 1 / 0), "z")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([long.name, "target.json",
                                                                 "link.json"])


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux's /sys")
def test_an_output_folder_that_takes_no_file_is_refused_before_the_work(tmp_path):
    """os.access says yes to root on /sys or a read-only mount: a whole Ray job ran, then its
    write failed (found by a review). A file is made there and removed first; nothing stays."""
    from benchroute._persist import check_output_path

    with pytest.raises(BenchrouteError, match=r"/sys/routed\.parquet: cannot write the routed "
                                              r"file \((Permission denied|Read-only)"):
        check_output_path("/sys/routed.parquet", "routed file")
    assert check_output_path(tmp_path / "ok.parquet") == tmp_path / "ok.parquet"
    assert list(tmp_path.iterdir()) == []


def test_atomic_writer_writes_through_a_pipe(tmp_path):
    """``--out /dev/stdout`` and the like: a device or a pipe is written through, never
    renamed over."""
    import os
    import threading

    from benchroute._persist import write_file_atomic

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    write_file_atomic(fifo, lambda p: p.write_text("through"), "thing")
    reader.join(timeout=10)
    assert got == ["through"] and fifo.is_fifo()


def test_atomic_writer_writes_dev_stdout_into_an_anonymous_pipe():
    """``--out /dev/stdout | cat``: the standard output is a pipe whose real path opens
    nothing ("No such file or directory" before); the name as given is written through."""
    import subprocess
    import sys

    code = ("from benchroute._persist import write_file_atomic; "
            "write_file_atomic('/dev/stdout', lambda p: p.write_text('piped'), 'thing')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout) == (0, "piped"), done.stderr
