"""Fetching HELM runs from a server that is not trusted (a handler on 127.0.0.1): hostile names,
malformed release files and failing responses. Each case asserts its outcome."""

from __future__ import annotations

import contextlib
import json

import pytest

from benchroute.experiments.fetch import fetch_helm_runs, release_runs
from tests.http_fake import FakeRelease, serving

with contextlib.suppress(ImportError):  # the code before this corpus (its counts in docs/reliability.md)
    from benchroute.experiments.fetch import safe_component

AREA = "fetch"


@pytest.fixture(scope="module")
def _running():
    handler = type("H", (FakeRelease,), {})
    with serving(handler, "/out") as base:
        yield base, handler


@pytest.fixture
def server(_running):
    base, handler = _running
    handler.release, handler.status, handler.body, handler.length = b"{}", 200, b"[]", True
    return base, handler


BAD_NAMES = ["../x", "../../etc", "/etc", "/", "", ".", "..", "a/b", "a\\b", "..\\..\\x", "C:x",
             "c:", "nul\x00byte", "tab\tname", "new\nline", "\x7f", " lead", "trail ", "x" * 256,
             "lone \ud800 surrogate", 5, None, ["a"]]
GOOD_NAMES = ["mmlu:subject=anatomy,method=multiple_choice_joint,model=meta_llama-3-8b",
              "v1.0.0", "inner spaces ok", "ünïcödé", "a..b", "...", "x" * 255, "-dash"]


@pytest.mark.new_api
@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_unsafe_name(corpus, name):
    assert corpus(AREA, "error", lambda: safe_component(name, "run name"),
           match=r"run name .* expected a (single folder name|string)")


@pytest.mark.new_api
@pytest.mark.parametrize("name", GOOD_NAMES, ids=lambda n: repr(n)[:40])
def test_safe_name(corpus, name):
    assert corpus(AREA, "right", lambda: safe_component(name, "run name"), check=lambda r: r == name)


@pytest.mark.parametrize("runs", [
    {"../../escaped": "v1"}, {"ok": "../../escaped"}, {"ok": "/abs/path"}, {"ok": ""},
    {"": "v1"}, {"ok": 3},
], ids=repr)
def test_hostile_mapping_writes_nothing(corpus, server, tmp_path, runs):
    base, handler = server
    handler.release = json.dumps(runs).encode()
    dest = tmp_path / "box" / "dl"

    def run():
        return fetch_helm_runs(base, release_runs(base, "r1"), dest, progress=False)

    assert corpus(AREA, "error", run, match=r"(run name|suite of run|has suite) .*expected a")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "box" / "escaped").exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("body, pattern", [
    (b"not json", r"runs_to_run_suites\.json: invalid JSON"),
    (b"[1, 2]", r"runs_to_run_suites\.json: expected a JSON object"),
    (b'"a string"', r"runs_to_run_suites\.json: expected a JSON object"),
    (b'{"run": {"nested": 1}}', r"runs_to_run_suites\.json: run 'run' has suite \{'nested': 1\}, expected a string"),
    (b'{"run": null}', r"run 'run' has suite None, expected a string"),
], ids=["not-json", "list", "string", "nested", "null"])
def test_malformed_release(corpus, server, body, pattern):
    base, handler = server
    handler.release = body
    assert corpus(AREA, "error", lambda: release_runs(base, "r1"), match=pattern)


@pytest.mark.parametrize("status, pattern", [(500, r"HTTP 500"), (403, r"HTTP 403"), (404, r"not found")])
def test_server_failure(corpus, server, status, pattern):
    base, handler = server
    handler.status = status
    assert corpus(AREA, "error", lambda: release_runs(base, "r1"), match=r"runs_to_run_suites\.json.*" + pattern)


def test_nothing_listening(corpus):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    assert corpus(AREA, "error", lambda: release_runs(f"http://127.0.0.1:{port}/out", "r1", timeout=5),
           match=r"GET http://127\.0\.0\.1:\d+/out/releases/r1/runs_to_run_suites\.json failed")


@pytest.mark.parametrize("runs", [["a", "b"], "a string", 7], ids=repr)
def test_runs_not_a_mapping(corpus, tmp_path, runs):
    assert corpus(AREA, "error", lambda: fetch_helm_runs("http://127.0.0.1:9/x", runs, tmp_path, progress=False),
           match=r"runs must map run name -> suite")


@pytest.mark.parametrize("base", ["ftp://x", "file:///etc", "127.0.0.1", ""])
def test_bad_base_url(corpus, tmp_path, base):
    assert corpus(AREA, "error", lambda: fetch_helm_runs(base, {}, tmp_path, progress=False),
           match=r"base URL must start with http:// or https://")


@pytest.mark.parametrize("content, pattern", [
    (b"[1, 2]", r"runs\.json: expected a JSON dict"),
    (b"{broken", r"runs\.json: invalid JSON"),
    (b"\xff\xfe\x00", r"runs\.json: not UTF-8"),
    (b'{"../../escaped": "v1"}', r"run name '\.\./\.\./escaped' contains '/'"),
], ids=["list", "broken", "not-utf8", "traversal"])
def test_cli_runs_file(corpus, run_cli, tmp_path, content, pattern):
    runs = tmp_path / "runs.json"
    runs.write_bytes(content)
    argv = ["-q", "reproduce", str(tmp_path / "src"), "--fetch", "http://127.0.0.1:9/x",
            "--runs", str(runs), "--out", str(tmp_path / "res")]
    run = run_cli(argv)
    assert corpus(AREA, "error", run, match=pattern)
    assert not (tmp_path / "escaped").exists()


@pytest.mark.new_api
@pytest.mark.parametrize("length", [True, False], ids=["content-length", "no-length"])
def test_oversized_file_refused(corpus, server, tmp_path, length):
    base, handler = server
    handler.body, handler.length = b"[" + b"0," * 5000 + b"0]", length
    dest = tmp_path / "dl"
    assert corpus(AREA, "error", lambda: fetch_helm_runs(base, {"run1": "v1"}, dest, progress=False,
                                                  max_file_bytes=1000),
           match=r"GET http://127\.0\.0\.1:\d+/out/runs/v1/run1/run_spec\.json: the body is larger "
                 r"than 1000 bytes")
    assert [p for p in dest.rglob("*") if p.is_file()] == []


@pytest.mark.new_api
def test_file_within_limit(corpus, server, tmp_path):
    base, handler = server
    dest = tmp_path / "dl"
    assert corpus(AREA, "right", lambda: fetch_helm_runs(base, {"run1": "v1"}, dest, progress=False,
                                                  max_file_bytes=1000),
           check=lambda c: c == {"downloaded": 3, "skipped": 0, "missing": 0}
           and (dest / "runs" / "v1" / "run1" / "run_spec.json").read_bytes() == b"[]")
