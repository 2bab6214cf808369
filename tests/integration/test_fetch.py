"""Fetching HELM runs over HTTP, against a local server on 127.0.0.1 serving a fixture tree."""

from __future__ import annotations

import functools
import http.server
import json
import shutil

import pytest

from benchroute import load_helm
from benchroute.exceptions import BenchrouteError
from benchroute.experiments.fetch import fetch_helm_runs, release_runs
from tests.http_fake import FakeRelease, serving


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(helm_fixtures_dir, tmp_path):
    """benchmark_output/{runs/fake-v1/..., releases/r1/runs_to_run_suites.json} on loopback."""
    root = tmp_path / "www" / "benchmark_output"
    suite = helm_fixtures_dir / "fake-v1_benchmark_output" / "runs" / "fake-v1"
    shutil.copytree(suite, root / "runs" / "fake-v1")
    for run in (root / "runs" / "fake-v1").iterdir():  # like the public bucket: no scenario_state
        if run.is_dir():
            (run / "scenario_state.json").unlink(missing_ok=True)
    runs = {p.name: "fake-v1" for p in (root / "runs" / "fake-v1").iterdir() if (p / "run_spec.json").is_file()}
    (root / "releases" / "r1").mkdir(parents=True)
    (root / "releases" / "r1" / "runs_to_run_suites.json").write_text(json.dumps(runs))
    with serving(functools.partial(_Quiet, directory=str(tmp_path / "www"))) as base:
        yield base, runs


def test_fetch_release_then_load(server, helm_fixtures_dir, tmp_path):
    base, runs = server
    assert release_runs(base, "r1") == runs
    counts = fetch_helm_runs(base, runs, tmp_path / "dl", progress=False)
    assert counts == {"downloaded": 3 * len(runs), "skipped": 0, "missing": 0}
    fetched = load_helm(tmp_path / "dl")
    local = load_helm(helm_fixtures_dir / "fake-v1_benchmark_output")
    assert fetched.frame.sort_values(["model", "instance_id"]).reset_index(drop=True)[
        ["instance_id", "model", "correct", "text"]].equals(
        local.frame.sort_values(["model", "instance_id"]).reset_index(drop=True)[
            ["instance_id", "model", "correct", "text"]])
    # resumable: a second pass downloads nothing; a lost file is fetched again
    assert fetch_helm_runs(base, runs, tmp_path / "dl", progress=False)["downloaded"] == 0
    victim = next((tmp_path / "dl" / "runs" / "fake-v1").iterdir()) / "per_instance_stats.json"
    victim.unlink()
    (victim.parent / "per_instance_stats.json.part").write_text("half")
    again = fetch_helm_runs(base, runs, tmp_path / "dl", progress=False)
    assert again["downloaded"] == 1 and victim.is_file()


def test_fetch_errors(server, tmp_path):
    base, _ = server
    with pytest.raises(BenchrouteError, match="not found"):
        release_runs(base, "nope")
    with pytest.raises(BenchrouteError, match="must start with http"):
        release_runs("ftp://x", "r1")
    counts = fetch_helm_runs(base, {"no_such_run": "fake-v1"}, tmp_path / "dl", progress=False)
    assert counts["missing"] == 3


@pytest.fixture(scope="module")
def hostile():
    handler = type("H", (FakeRelease,), {})
    with serving(handler) as base:
        yield base, handler


def _files_outside(root, dest):
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and dest not in p.parents)


@pytest.mark.parametrize("run, suite", [
    ("../../escaped", "v1"), ("ok_run", "../../escaped"), ("ABS", "v1"), ("ok_run", "ABS"),
    ("..", "v1"), (".", "v1"), ("", "v1"), ("ok_run", ""), ("a/b", "v1"), ("a\\..\\..\\b", "v1"),
    ("C:escape", "v1"), ("nul\x00byte", "v1"), ("ok_run", "v1/../../.."),
])
def test_fetch_refuses_hostile_names_from_the_server(hostile, tmp_path, run, suite):
    base, handler = hostile
    target = tmp_path / "outside"
    run, suite = (str(target) if x == "ABS" else x for x in (run, suite))
    handler.release = json.dumps({"good_run": "v1", run: suite}).encode()
    dest = tmp_path / "box" / "dl"
    runs = release_runs(base, "r1")  # the mapping arrives as the server sent it
    with pytest.raises(BenchrouteError, match="expected a single folder name"):
        fetch_helm_runs(base, runs, dest, progress=False)
    assert not target.exists()
    assert _files_outside(tmp_path, dest) == []
    assert not dest.exists()  # names are checked before anything is written
