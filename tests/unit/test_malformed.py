"""A corpus of malformed inputs: each gives a clear DataError or a reported skip, never a crash
deep inside pandas or json."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from benchroute import DataError, load, load_helm, load_mixinstruct, load_table

RUN_SPEC = {"name": "toy:model=org_m1", "adapter_spec": {"model": "org/m1", "method": "generation"}}
STATS = [
    {"instance_id": "id1", "train_trial_index": 0,
     "stats": [{"name": {"name": "exact_match", "split": "test"}, "count": 1, "mean": 1.0}]},
    {"instance_id": "id2", "train_trial_index": 0,
     "stats": [{"name": {"name": "exact_match", "split": "test"}, "count": 1, "mean": 0.0}]},
]
INSTANCES = [{"id": "id1", "input": {"text": "q1"}, "references": [], "split": "test"},
             {"id": "id2", "input": "q2 as a bare string (pre-v0.2)", "references": []}]


def write_run(root: Path, run_spec=RUN_SPEC, stats=STATS, instances=INSTANCES, raw=None) -> Path:
    run = root / "suite" / run_spec.get("name", "toy:model=org_m1")
    run.mkdir(parents=True)
    files = {"run_spec.json": run_spec, "per_instance_stats.json": stats, "instances.json": instances}
    for name, obj in files.items():
        if obj is not None:
            (run / name).write_text(json.dumps(obj))
    for name, text in (raw or {}).items():
        (run / name).write_text(text)
    return run


def test_valid_toy_run_loads(tmp_path):
    data = load_helm(write_run(tmp_path))
    assert data.frame.set_index("instance_id")["text"].to_dict() == {
        "id1": "q1", "id2": "q2 as a bare string (pre-v0.2)"}
    assert data.datasets == ["toy"]


def _stats_with(mean):
    s = copy.deepcopy(STATS)
    s[0]["stats"][0]["mean"] = mean
    return s


HELM_CASES = {
    "truncated per_instance_stats": (dict(raw={"per_instance_stats.json": '[{"instance_id": "id1", '}),
                                     "invalid JSON at line 1"),
    "run_spec without adapter_spec": (dict(run_spec={"name": "toy:model=org_m1"}),
                                      "'adapter_spec' is missing"),
    "stats not a list": (dict(stats={"instance_id": "id1"}), "expected a JSON list, got dict"),
    "stats entry without instance_id": (dict(stats=[{"stats": []}]), "entry 0 has no string 'instance_id'"),
    "stat mean is a string": (dict(stats=_stats_with("high")), "non-numeric mean 'high'"),
    "stats and instances disagree": (
        dict(instances=[{"id": "id9", "input": {"text": "other"}}]), "share no instance ids"),
    "metric outside any scale": (dict(stats=_stats_with(42.0)), r"values in \[0, 42\]"),
    "no correctness metric": (
        dict(stats=[{"instance_id": "id1", "stats": [{"name": {"name": "num_bytes"}, "count": 1, "mean": 3}]}]),
        "no correctness metric"),
    "no instance file at all": (dict(instances=None), "no scenario_state.json, instances.json"),
    "per_instance_stats missing (incomplete)": (dict(stats=None), "incomplete run: per_instance_stats.json"),
    "redacted inputs": (dict(instances=[{"id": "id1", "input": {"text": "[redacted]"}},
                                        {"id": "id2", "input": {"text": "[redacted]"}}]), "redacted or encrypted"),
}


@pytest.mark.parametrize("case", sorted(HELM_CASES))
def test_malformed_helm_run_is_skipped_with_reason(tmp_path, case):
    kwargs, reason = HELM_CASES[case]
    write_run(tmp_path / "bad", **kwargs)
    write_run(tmp_path / "good", run_spec={**RUN_SPEC, "name": "toy:model=org_m2",
                                           "adapter_spec": {"model": "org/m2"}})
    # alone: a clear error naming the run and the reason
    with pytest.raises(DataError, match=reason):
        load_helm(tmp_path / "bad")
    # beside a good run: reported skip, the good run still loads
    both = tmp_path / "both"
    (tmp_path / "bad" / "suite").rename(both)
    for p in (tmp_path / "good" / "suite").iterdir():
        p.rename(both / p.name)
    data = load_helm(both)
    assert data.models == ["org/m2"]
    assert len(data.report.skipped) == 1 and reason.split("\\")[0][:12] in data.report.skipped[0][1]


def test_directory_without_runs(tmp_path):
    (tmp_path / "empty" / "nothing").mkdir(parents=True)
    with pytest.raises(DataError, match="no HELM runs found"):
        load_helm(tmp_path / "empty")


def test_helm_path_is_a_file(tmp_path):
    f = tmp_path / "x.json"
    f.write_text("{}")
    with pytest.raises(DataError, match="must be a directory"):
        load_helm(f)


MIX = {"id": "unified_chip2/1", "instruction": "Say hi", "input": "",
       "candidates": [{"model": "a", "scores": {"bertscore": 0.7}},
                      {"model": "b", "scores": {"bertscore": 0.9}}]}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "file is empty"),
        ('[{"id": "x/1", "instruction": "hi", ', "invalid JSON"),
        (json.dumps([{**MIX, "candidates": None}]), "field 'candidates' must be a list"),
        (json.dumps([{**MIX, "id": 7}]), "field 'id' must be a non-empty string"),
        (json.dumps([{**MIX, "candidates": [{"model": "a", "scores": {"bertscore": "0.7x"}}]}]),
         "scores.bertscore is '0.7x', not a number"),
        (json.dumps([{**MIX, "candidates": [{"model": "a", "scores": {"bleu": 0.1}}]}]),
         "no candidate has a 'bertscore' score"),
        (json.dumps(MIX) + "\nnot json\n", "line 2 is not valid JSON"),
        (json.dumps([1, 2]), "record 1 is a int, expected an object"),
    ],
)
def test_malformed_mixinstruct(tmp_path, content, match):
    f = tmp_path / "mix.json"
    f.write_text(content)
    with pytest.raises(DataError, match=match):
        load_mixinstruct(f)


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "match"),
    [
        ("empty.csv", "", {}, "file is empty"),
        ("header.csv", "text,m1,m2\n", {}, "table has no rows"),
        ("notext.csv", "prompt,m1\nq,1\n", {}, r"missing column\(s\) \['text'\]"),
        ("words.csv", "text,m1\nq,yes\n", {"models": ["m1"]}, "value 'yes' is not a number or True/False"),
        ("nomodels.csv", "text,comment\nq,hello\n", {}, "no model columns"),
        ("dup.csv", "dataset,instance_id,text,model,score\nd,1,q,m,1\nd,1,q,m,0\n",
         {"instance_id": "instance_id"}, "share a \\(dataset, instance_id, model\\) key"),
        ("range.csv", "text,m1\nq,1.5\n", {"correct": "as_is"}, r"must lie in \[0, 1\]; got 1.5"),
        ("x.pkl", "junk", {}, "pickle files are not loaded"),
        ("x.xlsx", "junk", {}, "unknown table format"),
        ("rule.csv", "text,m1\nq,1\n", {"correct": "sometimes"}, "is not a rule"),
        ("t.csv", "text,m1\nq,1\n", {"preset": "bogus"}, r"unknown preset 'bogus'; choose one of \['routerdc'"),
        ("rdc.json", json.dumps([{"question": "q", "score": {"m": 1}}]), {"preset": "routerdc"},
         "record 0 needs a string 'question' and a 'scores' object"),
    ],
)
def test_malformed_tables(tmp_path, name, content, kwargs, match):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(DataError, match=match):
        load_table(f, **kwargs)


def test_table_nan_scores_are_counted(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("text,m1,m2\nq1,1,\nq2,0,1\n")
    data = load_table(f)
    assert len(data) == 3 and data.report.counts == {"nan_dropped": 1}


def test_load_unknown_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="no known layout"):
        load(tmp_path)


def test_load_broken_archive(tmp_path):
    (tmp_path / "x.tar.xz").write_bytes(b"not an archive")
    with pytest.raises(DataError, match="cannot extract the archive"):
        load(tmp_path / "x.tar.xz")
