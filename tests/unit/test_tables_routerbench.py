"""The issue-8 fixtures: a RouterBench-style train/test CSV pair and a MixInstruct file with
empty instructions and a repeated id, each loaded by default through ``benchroute.load``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchroute import load, load_table
from benchroute.exceptions import DataError

HEAD = ("Unnamed: 0,sample_id,prompt,eval_name,cluster_id,gpt-4,llama,gpt-4|model_response,"
        "llama|model_response,gpt-4|total_cost,llama|total_cost,oracle_model_to_route_to\n")
TRAIN = HEAD + (
    "0,0,What is 2+2?,gsm8k,3,1.0,0.0,4,5,0.01,0.001,gpt-4\n"
    "1,1,Capital of France?,mmlu,1,1.0,1.0,Paris,Paris,0.02,0.002,llama\n"
    "2,2,Colour of the sky?,mmlu,1,0.0,1.0,green,blue,0.03,0.003,llama\n"
    "3,2,Colour of grass?,mmlu,1,1.0,1.0,green,green,0.03,0.003,llama\n"
)
TEST = HEAD + (
    "0,0,What is 3+3?,gsm8k,3,1.0,1.0,6,6,0.01,0.001,llama\n"
    "1,1,Capital of Spain?,mmlu,1,1.0,0.0,Madrid,Paris,0.02,0.002,gpt-4\n"
)


def write_routerbench(parent: Path, name: str = "routerbench") -> Path:
    """The train/test pair in ``parent/<name>/`` (files ``<name>_train.csv``, ``<name>_test.csv``)."""
    folder = parent / name
    folder.mkdir()
    (folder / f"{name}_train.csv").write_text(TRAIN)
    (folder / f"{name}_test.csv").write_text(TEST)
    return folder


@pytest.fixture
def routerbench_dir(tmp_path: Path) -> Path:
    return write_routerbench(tmp_path)


def test_routerbench_pair_loads_by_default(routerbench_dir: Path) -> None:
    data = load(routerbench_dir)
    assert data.models == ["gpt-4", "llama"]
    assert data.datasets == ["gsm8k", "mmlu"]
    # 6 rows, 2 of them share sample_id 2 with different prompts: skipped and reported
    assert data.n_instances == 4 and len(data) == 8
    assert data.report.counts == {"text_conflict_skipped": 1}
    assert any("sample_id" not in w and "'routerbench_train:2'" in w for w in data.report.warnings)
    ids = sorted(data.frame["instance_id"].unique())
    assert ids == ["routerbench_test:0", "routerbench_test:1", "routerbench_train:0",
                   "routerbench_train:1"]
    f = data.frame.set_index(["instance_id", "model"])
    assert f.loc[("routerbench_train:1", "llama"), "cost"] == pytest.approx(0.002)
    assert f.loc[("routerbench_test:1", "gpt-4"), "output"] == "Madrid"
    assert f.loc[("routerbench_test:1", "gpt-4"), "split"] == "test"
    assert data.report.metrics == {"gsm8k": "performance", "mmlu": "performance"}
    assert data.report.scales == {"gsm8k": "binary", "mmlu": "binary"}
    assert any("Unnamed: 0" in n and "cluster_id" in n for n in data.report.notes)
    mean_cost = data.frame.groupby("model")["cost"].mean()
    assert mean_cost["gpt-4"] == pytest.approx(0.015)


def test_routerbench_single_file_and_strict(routerbench_dir: Path) -> None:
    one = load(routerbench_dir / "routerbench_test.csv")
    assert sorted(one.frame["instance_id"].unique()) == ["0", "1"]
    assert one.models == ["gpt-4", "llama"]
    with pytest.raises(DataError, match="instance_id='routerbench_train:2' appears more than once"):
        load(routerbench_dir, strict=True)


def test_routerbench_threshold_mapping(routerbench_dir: Path) -> None:
    (routerbench_dir / "routerbench_test.csv").write_text(TEST.replace("1.0,1.0,6", "0.4,0.2,6"))
    data = load_table(routerbench_dir, preset="routerbench", threshold={"gsm8k": 0.3})
    c = data.frame.set_index(["instance_id", "model"])["correct"]
    assert c[("routerbench_test:0", "gpt-4")] == 1.0 and c[("routerbench_test:0", "llama")] == 0.0


def test_routerbench_parquet_and_pickle(tmp_path: Path, routerbench_dir: Path) -> None:
    import pandas as pd

    frame = pd.read_csv(routerbench_dir / "routerbench_test.csv")
    folder = tmp_path / "pq"
    folder.mkdir()
    frame.to_parquet(folder / "routerbench_test.parquet")
    data = load(folder)
    assert data.models == ["gpt-4", "llama"] and data.n_instances == 2
    (tmp_path / "rb.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(DataError, match="pickle files are not loaded"):
        load_table(tmp_path / "rb.pkl", preset="routerbench")


MIX = [
    {"id": "dolly/1", "instruction": "", "input": "Tell me a joke",
     "candidates": [{"model": "a", "scores": {"bertscore": 0.6, "cost": 0.001}},
                    {"model": "b", "scores": {"bertscore": 0.8, "cost": 0.002}}]},
    {"id": "dolly/2", "instruction": "Summarise", "input": "Long text",
     "candidates": [{"model": "a", "scores": {"bertscore": 0.5}},
                    {"model": "b", "scores": {"bertscore": 0.7}}]},
    {"id": "dolly/2", "instruction": "Translate", "input": "Hola",
     "candidates": [{"model": "a", "scores": {"bertscore": 0.1}},
                    {"model": "b", "scores": {"bertscore": 0.2}}]},
    {"id": "dolly/3", "instruction": "", "input": "",
     "candidates": [{"model": "a", "scores": {"bertscore": 0.4}}]},
    {"id": "chip/1", "instruction": "Hi", "input": "",
     "candidates": [{"model": "a", "scores": {"bertscore": float("inf")}},
                    {"model": "b", "scores": {"bertscore": 0.3}}]},
    {"id": "chip/2", "instruction": "", "input": "Yo",
     "candidates": [{"model": "a", "scores": {"bertscore": 0.4}},
                    {"model": "b", "scores": {"bertscore": 0.9}}]},
]


def test_mixinstruct_fixture_loads_by_default(tmp_path: Path) -> None:
    f = tmp_path / "mix.json"
    f.write_text(json.dumps(MIX))
    data = load(f)
    assert data.datasets == ["chip", "dolly"]
    texts = data.instances().set_index("instance_id")["text"].to_dict()
    assert texts == {"chip/1": "Hi", "chip/2": "Yo", "dolly/1": "Tell me a joke"}
    assert data.report.counts == {"empty_text_skipped": 1, "non_finite_score_skipped": 1,
                                  "text_conflict_skipped": 1}
    skipped = dict(data.report.skipped)
    assert skipped[f"{f}: 1 item(s): dolly/3"] == "neither 'instruction' nor 'input' has text"
    assert skipped[f"{f}: 1 item(s): chip/1 a=inf"].startswith("infinite score")
    cost = data.frame.set_index(["instance_id", "model"])["cost"]
    assert cost[("dolly/1", "b")] == pytest.approx(0.002)
    # chip is rescaled without the infinite score: 0.3 -> 0, 0.9 -> 1
    c = data.frame.set_index(["instance_id", "model"])["correct"]
    assert c[("chip/1", "b")] == 0.0 and c[("chip/2", "b")] == 1.0
    assert c[("chip/2", "a")] == pytest.approx(1 / 6)
    assert data.report.metrics == {"chip": "bertscore", "dolly": "bertscore"}


def test_load_options_reach_the_loader(tmp_path: Path) -> None:
    f = tmp_path / "mix.json"
    f.write_text(json.dumps(MIX[:2]))
    with pytest.raises(DataError, match=r"metrics present: \['bertscore', 'cost'\]"):
        load(f, metric="bleu")
    data = load(f, threshold={"dolly": 0.55})
    assert data.frame.sort_values(["instance_id", "model"])["correct"].tolist() == [1.0, 1.0, 0.0, 1.0]
