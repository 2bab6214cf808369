"""``inspect`` and the CLI reading options; the encoder input check; common-prefix stripping."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from benchroute import load
from benchroute.cli import main
from benchroute.data.encoder_check import check_inputs
from benchroute.data.inspect import format_summary, skipped_by_reason, summarize
from benchroute.data.options import parse_mapping_option, parse_threshold_option
from benchroute.exceptions import DataError
from tests.unit.test_tables_routerbench import MIX, write_routerbench

LONG_NAME = "mmlu:subject=abstract_algebra,method=multiple_choice_joint,groups=a_very_long_group"


def test_summary_shows_costs_metrics_and_warnings(tmp_path: Path) -> None:
    s = summarize(load(write_routerbench(tmp_path, "rb")))
    assert s["usage_columns"] == ["mean_cost"]
    cost = {m["model"]: m["mean_cost"] for m in s["models"]}
    assert cost["gpt-4"] == pytest.approx(0.015) and cost["llama"] == pytest.approx(0.0015)
    assert {d["dataset"]: (d["metric"], d["scale"]) for d in s["datasets"]} == {
        "gsm8k": ("performance", "binary"), "mmlu": ("performance", "binary")}
    text = format_summary(s)
    assert "WARNINGS (1):" in text and "repeated id" in text
    header = next(line for line in text.splitlines() if line.startswith("model "))
    assert header.split()[-1] == "cost" and "0.015" in text
    assert "performance (binary)" in text


def test_summary_dataset_names_whole_and_grouped_skips(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text(f'dataset,text,m1,m2\n"{LONG_NAME}",q,1,0\n"{LONG_NAME}",r,0,1\n')
    text = format_summary(summarize(load(f)))
    assert LONG_NAME in text
    skipped = [(f"run{i}", f"no correctness metric among per-instance stats (has: {['x'] * 50})")
               for i in range(40)] + [("runX", "incomplete run: run_spec.json is missing")]
    groups = skipped_by_reason(skipped)
    assert groups[0] == {"reason": "no correctness metric among per-instance stats", "count": 40,
                         "examples": ["run0", "run1", "run2"]}
    assert groups[1]["count"] == 1


def test_archive_folder_never_shown(tmp_path: Path) -> None:
    folder = write_routerbench(tmp_path, "rb")
    archive = tmp_path / "rb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="rb")
    data = load(archive)
    dump = json.dumps(summarize(data))
    assert "benchroute-" not in dump and str(archive) in dump
    assert data.n_instances == 4


def test_cli_inspect_with_reading_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "mix.json"
    f.write_text(json.dumps(MIX[:2]))
    assert main(["inspect", str(f), "--threshold", "dolly=0.55", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["datasets"][0]["scale"] == "caller"
    assert main(["inspect", str(f), "--metric", "bleu"]) == 2
    assert "metrics present: ['bertscore', 'cost']" in capsys.readouterr().err
    assert main(["inspect", str(f), "--threshold", "nan"]) == 2
    assert "must be a finite number" in capsys.readouterr().err
    assert main(["inspect", str(f), "--preset", "routerbench"]) == 2
    assert "benchroute: error:" in capsys.readouterr().err
    assert main(["inspect", str(f), "--prices", str(tmp_path / "p.csv")]) == 2
    assert "prices= applies to HELM" in capsys.readouterr().err


def test_cli_reading_options_on_every_loading_command() -> None:
    from benchroute.cli import build_parser

    parser = build_parser()
    for argv in (["inspect", "x"], ["embed", "x"], ["fit", "x", "--out", "o"], ["reproduce", "x"]):
        args = parser.parse_args(argv + ["--metric", "m", "--threshold", "0.3", "--preset", "helm",
                                         "--prices", "p.csv", "--strict"])
        assert (args.metric, args.threshold, args.preset, str(args.prices), args.strict) == (
            "m", "0.3", "helm", "p.csv", True)


def test_parse_mapping_option() -> None:
    assert parse_threshold_option("0.3") == 0.3
    assert parse_threshold_option("a=0.3,b=0.7") == {"a": 0.3, "b": 0.7}
    assert parse_threshold_option("mmlu:subject=x,method=y=0.3;gsm=0.5") == {
        "mmlu:subject=x,method=y": 0.3, "gsm": 0.5}
    assert parse_threshold_option('{"a,b=c": 0.2}') == {"a,b=c": 0.2}
    assert parse_mapping_option("x=rouge_l", "metric", numeric=False) == {"x": "rouge_l"}
    with pytest.raises(DataError, match="'high' is not a number"):
        parse_threshold_option("a=high")
    with pytest.raises(DataError, match="is not dataset=value"):
        parse_threshold_option("=0.3")
    # found by fuzzing the command line: the last of two values won silently, JSON's true and
    # "0.5" were numbers, 10**400 raised OverflowError; the option is named as typed
    for text, message in [("alpha=0.3;alpha=0.9", r"dataset 'alpha' is given twice"),
                          ('{"alpha": 0.3, "alpha": 0.9}', r"key 'alpha' appears twice"),
                          ('{"alpha": true}', r"True is not a number"),
                          ('{"alpha": "0.5"}', r"'0.5' is not a number"),
                          ('{"alpha": 1' + "0" * 400 + "}", r"1000.*is not a number")]:
        with pytest.raises(DataError, match=rf"^--label-threshold: .*{message}"):
            parse_threshold_option(text)
    with pytest.raises(DataError, match=r"--metric: 3 is not a string"):
        parse_mapping_option('{"x": 3}', "metric", numeric=False)


def _tokenize(texts: list[str]) -> list[list[int]]:
    """One token per word, ids from a running vocabulary (a stand-in for word pieces)."""
    vocab: dict[str, int] = {}
    return [[vocab.setdefault(w, len(vocab)) for w in t.split()] for t in texts]


def test_check_inputs_truncation_and_collapse(tmp_path: Path) -> None:
    shot = "Example question and its worked answer. " * 20  # 120 words shared by all inputs
    rows = [f'few,"{shot}\nQuestion {i}?",1,0' for i in range(3)] + ["short,Short one,1,0"]
    f = tmp_path / "t.csv"
    f.write_text("dataset,text,m1,m2\n" + "\n".join(rows) + "\n")
    data = load(f)
    checks = {c.dataset: c for c in check_inputs(data, _tokenize, max_tokens=100)}
    assert (checks["few"].truncated, checks["few"].collapsed, checks["few"].longest) == (3, 3, 122)
    assert (checks["short"].truncated, checks["short"].collapsed) == (0, 0)
    (warning,) = data.report.warnings
    assert "3 of 3 inputs exceed the encoder's 100 word pieces" in warning
    assert "strip_common_prefix=['few']" in warning
    stripped = data.strip_common_prefix(["few"])
    assert sorted(stripped.subset(["few"]).instances()["text"]) == [
        "Question 0?", "Question 1?", "Question 2?"]
    assert check_inputs(stripped, _tokenize, max_tokens=100)[0].collapsed == 0
    assert any("stripped a common prefix" in n for n in stripped.report.notes)


def test_check_inputs_skips_without_tokenizer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import benchroute.data.encoder_check as ec

    monkeypatch.setattr(ec, "installed_tokenizer", lambda model_dir=None: None)
    f = tmp_path / "t.csv"
    f.write_text("text,m1\nq,1\n")
    assert check_inputs(load(f)) == []


def test_installed_tokenizer_absent_folder(tmp_path: Path) -> None:
    from benchroute.data.encoder_check import installed_tokenizer

    assert installed_tokenizer(tmp_path) is None


def test_strip_common_prefix_loader_option(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text('dataset,text,m1\nx,"Intro\nQ1",1\nx,"Intro\nQ2",0\ny,"Intro\nQ3",1\ny,"Other\nQ4",0\n')
    data = load(f, strip_common_prefix=["x"])
    assert data.instances()["text"].tolist() == ["Q1", "Q2", "Intro\nQ3", "Other\nQ4"]
    with pytest.raises(DataError, match=r"unknown dataset\(s\) \['z'\]"):
        load(f, strip_common_prefix=["z"])
    assert load(f, strip_common_prefix=True).report.counts == {"common_prefix_stripped": 1}


def test_texts_file_with_bom(tmp_path: Path) -> None:
    from benchroute.cli import _read_texts

    f = tmp_path / "in.jsonl"
    f.write_bytes("\ufeff".encode() + b'{"text": "hello"}\n')
    assert _read_texts(str(f)) == ["hello"]
    f.write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError, match="not UTF-8"):
        _read_texts(str(f))


def test_summary_mean_tokens_per_model() -> None:
    import pandas as pd

    from benchroute.data.store import BenchmarkData

    frame = pd.DataFrame({
        "dataset": "d", "instance_id": ["1", "1", "2", "2"], "text": ["q", "q", "r", "r"],
        "model": ["a", "b", "a", "b"], "score": 1.0, "correct": [1.0, 0.0, 1.0, 1.0],
        "prompt_tokens": [10.0, 12.0, 20.0, 22.0], "completion_tokens": [1.0, 2.0, 3.0, float("nan")],
    })
    s = summarize(BenchmarkData(frame))
    assert s["usage_columns"] == ["mean_prompt_tokens", "mean_completion_tokens"]
    rows = {m["model"]: m for m in s["models"]}
    assert rows["a"]["mean_prompt_tokens"] == 15.0 and rows["b"]["mean_completion_tokens"] == 2.0
    text = format_summary(s)
    assert "prompt_tokens" in text and "completion_tokens" in text


def test_usage_footnote_names_only_the_columns_shown():
    """Issue 18: a source with token counts and no prices printed the cost footnote."""
    import pandas as pd

    from benchroute.data.inspect import format_summary, summarize
    from benchroute.data.store import BenchmarkData

    rows = [("d", str(i), f"q {i}", m, i % 2, i % 2, 100.0) for i in range(4) for m in ("a", "b")]
    frame = pd.DataFrame(rows, columns=["dataset", "instance_id", "text", "model", "score",
                                        "correct", "prompt_tokens"])
    text = format_summary(summarize(BenchmarkData(frame)))
    assert "(tokens: mean per call)" in text and "USD" not in text
    frame["cost"] = 0.0004
    text = format_summary(summarize(BenchmarkData(frame)))
    assert "(cost: mean USD per call; tokens: mean per call)" in text and "0.0004" in text
