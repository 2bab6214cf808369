"""Corpus of hostile and broken HELM files (issue 9's crash classes).

Each case damages one field of one run. Outcomes are exact:
- ``skip``: alone, the run is a ``DataError`` naming the file and the field; beside a good run,
  the bad run is a reported skip with that reason and the good run still loads;
- ``ok``: the load gives the right result (checked by the case's own assertion).
Never a traceback from json, pandas or a ``.get`` on a non-dict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchroute import BenchmarkData, DataError, load_helm
from tests.helm_builder import stat, write_run, write_schema

HUGE = int("9" * 400)
GOOD_SCORES = {"id1": {"exact_match": 1.0}, "id2": {"exact_match": 0.0}}


def _edit(path: Path, change: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _stats(change: Callable[[list[Any]], Any]) -> Callable[[Path], None]:
    return lambda run: _edit(run / "per_instance_stats.json", change)


def _state(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda run: _edit(run / "scenario_state.json", change)


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    target = obj
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return obj


def _raw(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes(data)


BAD_VALUES = {"null": None, "string": "abc", "huge_int": HUGE, "negative": -1, "float": 1.5,
              "bool": True, "list": [], "object": {}}

# (mutation, file, reason regex) for cases that must skip the run.
SKIP: dict[str, tuple[Callable[[Path], None], str, str]] = {}
# (mutation, check on the loaded store) for cases that must load right.
OK: dict[str, tuple[Callable[[Path], None], Callable[[BenchmarkData], None]]] = {}

for label, value in BAD_VALUES.items():
    if not isinstance(value, str):  # a string is a valid id and stat name: see OK
        SKIP[f"instance_id {label}"] = (
            _stats(lambda s, v=value: _set(s, (0, "instance_id"), v)),
            "per_instance_stats.json", r"entry 0 has no string 'instance_id'")
    if value is not None:
        SKIP[f"train_trial_index {label}"] = (
            _stats(lambda s, v=value: _set(s, (0, "train_trial_index"), v)),
            "per_instance_stats.json",
            r"entry 0 field 'train_trial_index' must be an integer in \[0, 1000000\)")
    if not isinstance(value, dict) and value is not None:
        SKIP[f"stats perturbation {label}"] = (
            _stats(lambda s, v=value: _set(s, (0, "perturbation"), v)),
            "per_instance_stats.json", r"entry 0 field 'perturbation' must be an object")
        SKIP[f"state instance {label}"] = (
            _state(lambda s, v=value: _set(s, ("request_states", 0, "instance"), v)),
            "scenario_state.json", r"request_states\[0\] field 'instance' must be an object")
        SKIP[f"state instance perturbation {label}"] = (
            _state(lambda s, v=value: _set(s, ("request_states", 0, "instance", "perturbation"),
                                           v)),
            "scenario_state.json", r"request_states\[0\] field 'perturbation' must be an object")
        SKIP[f"state result {label}"] = (
            _state(lambda s, v=value: _set(s, ("request_states", 0, "result"), v)),
            "scenario_state.json", r"request_states\[0\] field 'result' must be an object")
        SKIP[f"state request_states item {label}"] = (
            _state(lambda s, v=value: _set(s, ("request_states", 0), v)),
            "scenario_state.json", r"request_states\[0\] field 'request_states\[\]' must be an "
                                   "object")
    if not isinstance(value, list):
        SKIP[f"stats field {label}"] = (
            _stats(lambda s, v=value: _set(s, (0, "stats"), v)),
            "per_instance_stats.json", r"entry 0 field 'stats' is not a list")
        SKIP[f"completions {label}"] = (
            _state(lambda s, v=value: _set(s, ("request_states", 0, "result", "completions"), v)),
            "scenario_state.json", r"request_states\[0\] field 'result.completions' must be a list")
        SKIP[f"request_states {label}"] = (
            _state(lambda s, v=value: _set(s, ("request_states",), v)),
            "scenario_state.json", r"field 'request_states' is not a list")
    if value is not None and not isinstance(value, str):
        SKIP[f"state instance id {label}"] = (
            _state(lambda s, v=value: _set(s, ("request_states", 0, "instance", "id"), v)),
            "scenario_state.json", r"request_states\[0\] field 'id' must be a non-empty string")
    if isinstance(value, (str, list, dict)) or value is True:
        SKIP[f"stat mean {label}"] = (
            _stats(lambda s, v=value: _set(s, (0, "stats", 0, "mean"), v)),
            "per_instance_stats.json", r"entry 0 stat 'exact_match' has a non-numeric mean")
    if value is not None:
        SKIP[f"stat name {label}"] = (
            _stats(lambda s, v=value: _set(s, (0, "stats", 0, "name"), v)),
            "per_instance_stats.json", r"entry 0 has a stat without a string 'name.name'")
    if value is not None and not isinstance(value, str):
        SKIP[f"stat name.name {label}"] = (
            _stats(lambda s, v=value: _set(s, (0, "stats", 0, "name", "name"), v)),
            "per_instance_stats.json", r"entry 0 has a stat without a string 'name.name'")
    if not isinstance(value, dict):
        SKIP[f"completion {label}"] = (
            _state(lambda s, v=value: _set(s, ("request_states", 0, "result", "completions", 0),
                                           v)),
            "scenario_state.json",
            r"request_states\[0\] field 'result.completions\[0\]' must be an object")
    if not isinstance(value, (list, dict)) or value == []:
        SKIP[f"run_spec groups {label}"] = (
            lambda run, v=value: _edit(run / "run_spec.json", lambda s: _set(s, ("groups",), v)),
            "run_spec.json", r"field 'groups' must be a list of strings")
    if not isinstance(value, dict):
        SKIP[f"adapter_spec {label}"] = (
            lambda run, v=value: _edit(run / "run_spec.json",
                                       lambda s: _set(s, ("adapter_spec",), v)),
            "run_spec.json", r"field 'adapter_spec' is missing or not an object")
# [] is a valid (empty) groups list; it loads like a run without groups.
del SKIP["run_spec groups list"]

SKIP.update({
    "stat mean huge int": (_stats(lambda s: _set(s, (0, "stats", 0, "mean"), HUGE)),
                           "per_instance_stats.json", r"mean too large for a float \(9999"),
    "stat mean 2 (exact match outside [0, 1])": (
        _stats(lambda s: _set(s, (0, "stats", 0, "mean"), 2)), "",
        r"'exact_match' has values in \[0, 2\], outside its range \[0, 1\] \(known\)"),
    "stat mean Infinity": (_raw("per_instance_stats.json", json.dumps(
        [{"instance_id": "id1", "stats": [stat("exact_match", math.inf)]}]).encode()), "",
        r"values in \[inf, inf\], outside its range \[0, 1\] \(known\)"),
    "stats not UTF-8": (_raw("per_instance_stats.json", b'[{"instance_id": "id\xff"}]'),
                        "per_instance_stats.json", "not UTF-8"),
    "state not UTF-8": (_raw("scenario_state.json", b'{"request_states": "\xfe"}'),
                        "scenario_state.json", "not UTF-8"),
    "run_spec not UTF-8": (_raw("run_spec.json", b'{"name": "\xc3"}'), "run_spec.json",
                           "not UTF-8"),
    "stats nested 100k deep": (_raw("per_instance_stats.json", b"[" * 100_000 + b"]" * 100_000),
                               "per_instance_stats.json", "nested too deeply"),
    "state nested 100k deep": (_raw("scenario_state.json", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
                               "scenario_state.json", "nested too deeply"),
    "stats 5000-digit integer": (_raw("per_instance_stats.json", b"[" + b"7" * 5000 + b"]"),
                                 "per_instance_stats.json", r"invalid JSON: an integer of more than 4,300 digits"),
    "stats truncated": (_raw("per_instance_stats.json", b'[{"instance_id": "id1", "st'),
                        "per_instance_stats.json", "invalid JSON at line 1"),
    "stats empty file": (_raw("per_instance_stats.json", b""), "per_instance_stats.json",
                         "invalid JSON at line 1"),
    "stats an empty list": (_raw("per_instance_stats.json", b"[]"),
                            "per_instance_stats.json", r"no per-instance entries \(an empty list\)"),
    "stats is an object": (_raw("per_instance_stats.json", b'{"instance_id": "id1"}'),
                           "per_instance_stats.json", "expected a JSON list, got dict"),
    "display_requests request not an object": (
        lambda run: ((run / "scenario_state.json").unlink(), (run / "display_requests.json")
                     .write_text(json.dumps([{"instance_id": "id1", "request": "prompt"}]))),
        "display_requests.json", r"entry 0 field 'request' must be an object"),
    "display_requests entry not an object": (
        lambda run: ((run / "scenario_state.json").unlink(), (run / "display_requests.json")
                     .write_text(json.dumps(["x"]))),
        "display_requests.json", r"entry 0 field 'entry' must be an object"),
    "display_requests perturbation a string": (
        lambda run: ((run / "scenario_state.json").unlink(), (run / "display_requests.json")
                     .write_text(json.dumps([{"instance_id": "id1", "perturbation": "p",
                                              "request": {"prompt": "q"}}]))),
        "display_requests.json", r"entry 0 field 'perturbation' must be an object"),
    "instances.json item a list": (
        lambda run: ((run / "scenario_state.json").unlink(), (run / "instances.json")
                     .write_text(json.dumps([[1]]))),
        "instances.json", r"instance 0 field 'instance' must be an object"),
    "instances.json id an int": (
        lambda run: ((run / "scenario_state.json").unlink(), (run / "instances.json")
                     .write_text(json.dumps([{"id": 1, "input": {"text": "q"}}]))),
        "instances.json", r"instance 0 field 'id' must be a non-empty string, got 1"),
    "no instance shares an id": (
        _state(lambda s: _set(s, ("request_states",), [])), "",
        "share no instance ids"),
})


def _text_of(data: BenchmarkData, iid: str) -> str:
    return str(data.frame.set_index("instance_id").loc[iid, "text"])


def _check_surrogate(data: BenchmarkData) -> None:
    assert _text_of(data, "id1") == "bad \ufffd text"
    data.save(Path(data.report.sources[0]).parent / "store.parquet")  # encodable and savable


OK.update({
    "train_trial_index null is trial 0": (
        _stats(lambda s: _set(s, (0, "train_trial_index"), None)),
        lambda d: d.frame.set_index("instance_id")["correct"].to_dict() == {"id1": 1.0,
                                                                            "id2": 0.0}),
    "stats perturbation null is unperturbed": (
        _stats(lambda s: _set(s, (0, "perturbation"), None)),
        lambda d: "perturbed_skipped" not in d.report.counts and len(d) == 2),
    "stats perturbation {} is unperturbed": (
        _stats(lambda s: _set(s, (0, "perturbation"), {})),
        lambda d: len(d) == 2),
    "stat mean null is ignored (HELM drops NaN)": (
        _stats(lambda s: _set(s, (0, "stats", 0, "mean"), None)),
        lambda d: d.frame["instance_id"].tolist() == ["id2"]),
    "stat mean NaN dropped and counted": (
        _raw("per_instance_stats.json", b'[{"instance_id": "id1", "stats": [{"name": {"name": '
                                        b'"exact_match"}, "count": 1, "mean": NaN}]}, '
                                        b'{"instance_id": "id2", "stats": [{"name": {"name": '
                                        b'"exact_match"}, "count": 1, "mean": 1}]}]'),
        lambda d: d.report.counts["nan_dropped"] == 1 and len(d) == 1),
    "stat count 0 ignored": (
        _stats(lambda s: _set(s, (0, "stats", 0, "count"), 0)),
        lambda d: d.frame["instance_id"].tolist() == ["id2"]),
    "lone surrogate in the text is replaced": (
        _state(lambda s: _set(s, ("request_states", 0, "instance", "input", "text"),
                              "bad \ud800 text")),
        _check_surrogate),
    "lone surrogate in the id, both files": (
        lambda run: (_state(lambda s: _set(s, ("request_states", 0, "instance", "id"),
                                           "id\udc00"))(run),
                     _stats(lambda s: _set(s, (0, "instance_id"), "id\udc00"))(run)),
        lambda d: "id\ufffd" in set(d.frame["instance_id"])),
    "instance id null is left out and counted": (
        _state(lambda s: _set(s, ("request_states", 0, "instance", "id"), None)),
        lambda d: d.report.counts["instances_without_id"] == 1
        and d.report.counts["instances_without_text"] == 1 and len(d) == 1),
    "result null is no result": (
        _state(lambda s: _set(s, ("request_states", 0, "result"), None)),
        lambda d: math.isnan(d.frame.set_index("instance_id").loc["id1", "logprob"])),
    "input a number: no text for that instance": (
        _state(lambda s: _set(s, ("request_states", 0, "instance", "input"), 5)),
        lambda d: d.frame["instance_id"].tolist() == ["id2"]),
    "run_spec name not a string: the folder name": (
        lambda run: _edit(run / "run_spec.json", lambda s: _set(s, ("name",), 5)),
        lambda d: d.datasets == ["toy"]),
    "adapter_spec.model a number: the run name's model": (
        lambda run: _edit(run / "run_spec.json", lambda s: _set(s, ("adapter_spec", "model"), 7)),
        lambda d: d.models == ["org/bad"]),
    "run_spec groups empty": (
        lambda run: _edit(run / "run_spec.json", lambda s: _set(s, ("groups",), [])),
        lambda d: d.report.metrics == {"toy": "exact_match"}),
    "400-digit string id": (
        lambda run: (_state(lambda s: _set(s, ("request_states", 0, "instance", "id"),
                                           "9" * 400))(run),
                     _stats(lambda s: _set(s, (0, "instance_id"), "9" * 400))(run)),
        lambda d: "9" * 400 in set(d.frame["instance_id"])),
    "stats id unknown to the instance files: counted": (
        _stats(lambda s: _set(s, (0, "instance_id"), "abc")),
        lambda d: d.report.counts["instances_without_text"] == 1 and len(d) == 1),
    "stat with an unknown name is just another stat": (
        _stats(lambda s: _set(s, (0, "stats", 0, "name", "name"), "abc")),
        lambda d: d.frame["instance_id"].tolist() == ["id2"]),
    "stats entries repeated per metric class are merged": (
        _stats(lambda s: s + [{"instance_id": "id1", "stats": [stat("quasi_exact_match", 1)]}]),
        lambda d: len(d) == 2),
})


def _good_run(root: Path) -> Path:
    return write_run(root, "toy", "org/good", GOOD_SCORES)


def _bad_run(root: Path) -> Path:
    return write_run(root, "toy", "org/bad", GOOD_SCORES)


@pytest.mark.parametrize("case", sorted(SKIP))
def test_bad_run_is_an_error_alone_and_a_reported_skip_beside_a_good_one(tmp_path, case):
    mutate, file, reason = SKIP[case]
    bad = _bad_run(tmp_path / "suite")
    mutate(bad)
    with pytest.raises(DataError, match=reason) as alone:
        load_helm(bad)
    assert file in str(alone.value)
    assert len(str(alone.value)) < 1500
    _good_run(tmp_path / "suite")
    data = load_helm(tmp_path / "suite")
    assert data.models == ["org/good"]
    (where, why), = data.report.skipped
    assert "org_bad" in where and file in why
    assert pytest.importorskip("re").search(reason, why)
    assert any(w.startswith("1 of 2 HELM runs skipped") for w in data.report.warnings)


@pytest.mark.parametrize("case", sorted(OK))
def test_odd_but_valid_run_loads_right(tmp_path, case):
    mutate, check = OK[case]
    bad = _bad_run(tmp_path / "suite")
    mutate(bad)
    data = load_helm(tmp_path / "suite")
    assert data.report.skipped == []
    result = check(data)
    assert result is None or result is True


SCHEMA_CASES = {
    "not UTF-8": (b'{"run_groups": "\xff"}', "not UTF-8"),
    "nested 100k deep": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "a list": (b"[]", "expected a JSON dict, got list"),
    "run_groups a string": (b'{"run_groups": "x"}', "field 'run_groups' is not a list"),
    "run group without name": (b'{"run_groups": [{"environment": {}}]}',
                               r"run_groups\[0\] has no string 'name'"),
    "environment a list": (b'{"run_groups": [{"name": "toy", "environment": []}]}',
                           r"run_groups\[0\] \(toy\) field 'environment' is not an object"),
    "metrics an object": (b'{"metrics": {}}', "field 'metrics' is not a list"),
    "metric min/max not numbers": (
        b'{"metrics": [{"name": "exact_match", "min": "a", "max": 1}]}',
        r"metrics\[0\] min/max must be a pair of numbers"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_bad_schema_is_warned_and_the_runs_still_load(tmp_path, case):
    content, reason = SCHEMA_CASES[case]
    suite = tmp_path / "suite"
    _good_run(suite)
    (suite / "schema.json").write_bytes(content)
    data = load_helm(suite)
    assert data.report.metrics == {"toy": "exact_match"}
    warned = [w for w in data.report.warnings if "schema problems" in w]
    assert len(warned) == 1 and "schema.json" in warned[0]
    assert pytest.importorskip("re").search(reason, warned[0])


def test_schema_main_name_not_a_string_is_ignored(tmp_path):
    suite = tmp_path / "suite"
    write_run(suite, "toy", "org/a", {"id1": {"exact_match": 1, "f1_score": 0.2}})
    schema = write_schema(suite, {"toy": "f1_score"})
    _edit(schema, lambda s: _set(s, ("run_groups", 1, "environment", "main_name"), ["f1_score"]))
    assert load_helm(suite).report.metrics == {"toy": "exact_match"}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"metric": 5}, "metric must be a name"),
    ({"metric": {"toy": 5}}, "metric mapping values must be metric names, got 5"),
    ({"metric": "wer_score"}, "lower-is-better with no known range"),
    ({"metric": {"nope": "exact_match"}}, r"metric mapping names \['nope'\]"),
    ({"threshold": {"nope": 0.5}}, r"threshold mapping names \['nope'\]"),
    ({"score_range": (1, 0)}, r"score_range must be finite with min < max, got \(1, 0\)"),
    ({"score_range": (0, HUGE)}, "score_range holds a number too large"),
    ({"score_range": {"toy": "wide"}}, r"score_range\['toy'\] must be a \(min, max\) pair"),
    ({"score_range": (0, math.nan)}, "must be finite"),
    ({"prices": 5}, "prices must be a path or a mapping"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    _good_run(tmp_path / "suite")
    with pytest.raises(DataError, match=match):
        load_helm(tmp_path / "suite", **kwargs)


def test_corpus_size():
    # issue 9 asks for 50+ generated HELM cases; each SKIP case runs two loads
    assert len(SKIP) + len(OK) + len(SCHEMA_CASES) >= 50


def test_run_folder_name_not_utf8_is_printable(tmp_path):
    import os

    _good_run(tmp_path / "suite")
    bad = os.path.join(os.fsencode(str(tmp_path / "suite")), b"bad\xff:model=x")
    os.mkdir(bad)
    with open(os.path.join(bad, b"run_spec.json"), "w") as fh:
        fh.write("{}")
    data = load_helm(tmp_path / "suite")
    (where, why), = data.report.skipped
    assert where == "suite/bad\ufffd:model=x" and why.startswith("incomplete run")
    for line in data.report.warnings:
        line.encode("utf-8")  # printable: no lone surrogates left


@pytest.mark.parametrize("metric", [None, "main", {"toy": "main"}])
def test_metric_main_spellings(tmp_path, metric):
    _good_run(tmp_path / "suite")
    data = load_helm(tmp_path / "suite", metric=metric)
    assert data.report.metrics == {"toy": "exact_match"}
