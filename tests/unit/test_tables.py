"""Table and MixInstruct loaders on small hand-made files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchroute import load, load_mixinstruct, load_table
from benchroute.exceptions import DataError


def test_wide_csv_with_true_false(tmp_path):
    f = tmp_path / "mmlu_x.csv"
    f.write_text("prompt,gpt,mix,gpt_response\nq1,True,False,blah\nq2,False,False,blah\n")
    data = load_table(f, text="prompt", models=["gpt", "mix"])
    assert data.datasets == ["mmlu_x"]
    assert data.frame.groupby("model")["correct"].sum().to_dict() == {"gpt": 1.0, "mix": 0.0}
    auto = load(f)  # prompt column detected, *_response text column ignored
    assert auto.models == ["gpt", "mix"]


def test_long_table_ids_from_text(tmp_path):
    f = tmp_path / "long.jsonl"
    rows = [{"dataset": "d", "text": "q1", "model": "a", "score": 0.9},
            {"dataset": "d", "text": "q1", "model": "b", "score": 0.2},
            {"dataset": "d", "text": "q2", "model": "a", "score": 0.4}]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    data = load_table(f)
    assert data.n_instances == 2
    assert data.frame["correct"].tolist() == [1.0, 0.0, 0.0]


def test_the_stores_own_columns_read_back_as_written(tmp_path):
    """A table in the store's layout (dataset, instance_id, text, model, correct) is long, its
    ids are ids: read as a wide table before, 'instance_id' and 'correct' became two models."""
    f = tmp_path / "store.csv"
    f.write_text("dataset,instance_id,text,model,correct\n"
                 "d,1,same text,m1,1\nd,1,same text,m2,0\nd,2,same text,m1,0\nd,2,same text,m2,1\n")
    data = load(f)
    assert data.models == ["m1", "m2"] and data.n_instances == 2  # ids kept apart one text
    got = data.frame.set_index(["instance_id", "model"])["correct"].to_dict()
    assert got == {("1", "m1"): 1.0, ("1", "m2"): 0.0, ("2", "m1"): 0.0, ("2", "m2"): 1.0}
    assert any("labels read from 'correct'" in n for n in data.report.notes)
    # a 'correct' column is read as written; a rule or a threshold derives it instead
    f.write_text("text,model,correct\nq1,m1,0.7\nq1,m2,0.2\n")
    assert load_table(f).frame["correct"].tolist() == [0.7, 0.2]
    assert load_table(f, threshold=0.5).frame["correct"].tolist() == [1.0, 0.0]
    assert load_table(f, correct="threshold").frame["correct"].tolist() == [1.0, 0.0]


def test_a_stores_frame_written_to_csv_reads_back(tmp_path):
    """score and correct both kept: correct was recomputed as score >= 0.5 before; the cost,
    token and text columns were dropped without a note, so a fit had no costs (found by a
    review), and the metric became the label column's name."""
    from benchroute.data.store import BenchmarkData
    from benchroute.routing import store_costs

    frame = pd.DataFrame({"dataset": "d", "instance_id": ["1", "1", "2", "2"],
                          "text": ["a", "a", "b", "b"], "model": ["m1", "m2"] * 2,
                          "score": [0.9, 0.4, 0.45, 0.1], "correct": [0.9, 1.0, 0.0, 0.5],
                          "metric": "exact_match", "cost": [0.002, 0.01, 0.004, np.nan],
                          "prompt_tokens": [10.0, 10, 12, 12], "output": ["42", "x", "007", ""]})
    data = BenchmarkData(frame)
    for name, write in (("store.csv", lambda f, p: f.to_csv(p, index=False)),
                        ("store.parquet", lambda f, p: f.to_parquet(p))):
        write(data.frame, tmp_path / name)
        back = load(tmp_path / name)
        key = ["dataset", "instance_id", "model"]
        got = back.frame.set_index(key).sort_index()
        want = data.frame.set_index(key).sort_index()
        assert sorted(got.columns) == sorted(want.columns)
        pd.testing.assert_frame_equal(got[list(want.columns)], want, check_dtype=False)
        assert any("as written" in n for n in back.report.notes)
        assert store_costs(back) == {"m1": 0.003, "m2": 0.01}


def test_wide_table_with_an_id_column(tmp_path):
    f = tmp_path / "w.csv"
    f.write_text("instance_id,text,a,b\n7,q1,1,0\n9,q1,0,1\n")
    data = load(f)
    assert data.models == ["a", "b"] and sorted(data.frame["instance_id"].unique()) == ["7", "9"]


def test_model_column_without_scores_is_an_error(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text("text,model,accuracy\nq1,m1,1\n")
    with pytest.raises(DataError, match=r"m\.csv: has a 'model' column.*no score column 'score'"):
        load(f)
    assert load_table(f, score="accuracy").models == ["m1"]


def test_custom_rule_and_threshold(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("text,a,b\nq1,0.3,0.7\n")
    data = load_table(f, threshold=0.25)
    assert data.frame["correct"].tolist() == [1.0, 1.0]
    data = load_table(f, correct=lambda s: (s > 0.5).astype(float))
    assert data.frame["correct"].tolist() == [0.0, 1.0]
    data = load_table(f, correct="as_is")
    assert data.frame["correct"].tolist() == [0.3, 0.7]


def test_routerbench_preset(tmp_path):
    f = tmp_path / "routerbench.csv"
    f.write_text(
        "sample_id,prompt,eval_name,gpt-4,llama,gpt-4|model_response,gpt-4|total_cost,"
        "llama|total_cost,oracle_model_to_route_to\n"
        "s1,q1,mmlu,1.0,0.0,A,0.01,0.001,gpt-4\n"
        "s2,q2,gsm8k,0.0,1.0,B,0.02,0.002,llama\n"
    )
    data = load_table(f, preset="routerbench")
    assert data.models == ["gpt-4", "llama"] and data.datasets == ["gsm8k", "mmlu"]
    cost = data.frame.set_index(["instance_id", "model"])["cost"]
    assert cost[("s2", "llama")] == pytest.approx(0.002)


MIX = [
    {"id": "dolly_15k/1", "instruction": "Add", "input": "2 and 3",
     "candidates": [{"model": "a", "scores": {"bertscore": 0.70}},
                    {"model": "b", "scores": {"bertscore": 0.90}}]},
    {"id": "dolly_15k/2", "instruction": "Hi", "input": "",
     "candidates": [{"model": "a", "scores": {"bertscore": 0.80}},
                    {"model": "b", "scores": {"bertscore": None}}]},
    {"id": "sharegpt/9", "instruction": "Solo", "input": "",
     "candidates": [{"model": "a", "scores": {"bertscore": 0.5}}]},
]


def test_mixinstruct_rescaled_and_binarised(tmp_path):
    f = tmp_path / "mix.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in MIX))
    data = load_mixinstruct(f)
    assert data.datasets == ["dolly_15k", "sharegpt"]
    texts = data.instances().set_index("instance_id")["text"]
    assert texts["dolly_15k/1"] == "Add\n2 and 3" and texts["dolly_15k/2"] == "Hi"
    c = data.frame.set_index(["instance_id", "model"])["correct"]
    assert c[("dolly_15k/1", "a")] == pytest.approx(0.0)
    assert c[("dolly_15k/1", "b")] == pytest.approx(1.0)
    assert c[("dolly_15k/2", "a")] == pytest.approx(0.5)
    assert c[("sharegpt/9", "a")] == 0.5  # a constant dataset carries no ranking
    assert data.report.counts == {"nan_dropped": 1}
    binary = load_mixinstruct(f, threshold=0.75)
    assert binary.frame.set_index(["instance_id", "model"])["correct"][("dolly_15k/2", "a")] == 1.0
    assert load(f).n_instances == 3


def test_a_numeric_id_column_read_as_a_model_says_how_to_name_it(tmp_path):
    f = tmp_path / "w.csv"
    f.write_text("text,idx,a,b\nq1,1,1,0\nq2,2,0,1\n")
    with pytest.raises(DataError, match=r"model='idx'.*name the model columns \(models=\[\.\.\.\]; "
                                        r"on the command line --models a,b\) or the id column "
                                        r"\(instance_id=\.\.\.; --column instance_id=COL\)"):
        load_table(f)
    assert load_table(f, instance_id="idx").models == ["a", "b"]


def test_load_passes_a_generic_tables_columns(tmp_path):
    """load() guesses the layout; table= names a generic table's columns, which the command
    line had no way to do (its error pointed at models= and instance_id=)."""
    from benchroute.cli import main

    f = tmp_path / "w.csv"
    f.write_text("question,year,a,b\nq1,2023,1,0\nq2,2024,0,1\n")
    with pytest.raises(DataError, match="'year'"):
        load(f, table={"text": "question"})
    data = load(f, table={"text": "question", "models": ["a", "b"]})
    assert data.models == ["a", "b"] and sorted(data.instances()["text"]) == ["q1", "q2"]
    assert load(f, table={"text": "question", "instance_id": "year"}).models == ["a", "b"]
    assert load(f, table={"text": "question", "models": "a"}).models == ["a"]  # one name
    with pytest.raises(DataError, match=r"unknown option\(s\) \['modles'\]"):
        load(f, table={"modles": ["a"]})
    alpaca = tmp_path / "alpaca"
    alpaca.mkdir()
    (alpaca / "alpaca_eval_preferences.csv.gz").write_bytes(b"")
    with pytest.raises(DataError, match="generic tables; this source is read by the alpaca_eval loader"):
        load(alpaca, table={"models": ["a"]})
    assert main(["inspect", str(f), "--column", "text=question", "--models", "a, b"]) == 0
    assert main(["inspect", str(f), "--column", "text = question", "--column",
                 "instance_id=year"]) == 0
    assert main(["inspect", str(f), "--column", "txt=question"]) == 2
    assert main(["inspect", str(f), "--column", "text=question", "--column", "text=a"]) == 2


def test_a_pipe_is_refused_clearly(tmp_path):
    """<(cat results.csv) or a FIFO was taken for a folder: 'Not a directory', exit 1."""
    import os

    fifo = tmp_path / "results.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"results\.csv: not a file or a folder \(a pipe"):
        load(fifo)


def test_a_dataframe_is_read_as_a_table():
    """load_table(df) failed inside pathlib ("expected str, bytes or os.PathLike object, not
    DataFrame"); a notebook's table is read as a file's typed columns are."""
    wide = pd.DataFrame({"text": ["q1", "q2", "q3"], "a": [1, 0, 1], "b": [0.0, 1.0, 1.0]},
                        index=[10, 11, 12])
    data = load_table(wide)
    assert data.models == ["a", "b"] and data.report.sources == ["DataFrame"]
    assert set(data.frame["dataset"]) == {"table"}
    assert load_table(wide, dataset_name="mine").frame["dataset"].unique().tolist() == ["mine"]
    long = data.frame[["dataset", "instance_id", "text", "model", "correct"]]
    back = load_table(long)
    pd.testing.assert_frame_equal(back.frame.sort_values(["instance_id", "model"])
                                  .reset_index(drop=True)[["text", "model", "correct"]],
                                  data.frame.sort_values(["instance_id", "model"])
                                  .reset_index(drop=True)[["text", "model", "correct"]])
    with pytest.raises(DataError, match="no rows"):
        load_table(wide.iloc[:0])
    with pytest.raises(DataError, match="a DataFrame is read as a generic table"):
        load_table(wide, "routerdc")


def test_odd_dataframe_columns_are_named_or_read_as_written():
    """Found by fuzzing: a repeated column name raised pandas' own errors; whole-number float
    ids beyond int64 wrapped to -9223372036854775808 (two ids became one); pd.NA was not a
    blank score."""
    with pytest.raises(DataError, match=r"the columns name \['m'\] twice"):
        load_table(pd.DataFrame([["a", 1, 0], ["b", 0, 1]], columns=["text", "m", "m"]))
    ids = load_table(pd.DataFrame({"text": ["a", "b"], "instance_id": [1e19, 3.0], "m": [1, 0]}))
    assert sorted(ids.frame["instance_id"]) == ["10000000000000000000", "3"]
    long = pd.DataFrame({"text": ["a", "b"], "model": ["x", "x"],
                         "score": pd.array(["1", None], dtype="string")})
    data = load_table(long)
    assert data.frame["text"].tolist() == ["a"]
    wide = pd.DataFrame({"text": ["a", "b"], "m": pd.array([1.0, None], dtype="Float64").astype(object)})
    assert load_table(wide).models == ["m"]


def test_a_long_tables_cost_that_is_no_number_is_left_out_with_a_note(tmp_path):
    """Since a long table's cost column is read, '$0.002' refused the whole table, which had
    loaded before (found by a review)."""
    f = tmp_path / "t.csv"
    f.write_text("dataset,text,model,score,cost\nd,q1,m1,1,$0.002\nd,q1,m2,0,$0.004\n")
    data = load(f)
    assert "cost" not in data.frame.columns and data.models == ["m1", "m2"]
    assert any("column 'cost' is not numbers" in n for n in data.report.notes)


@pytest.mark.parametrize("blank", [" \n", "\u200b", "\x00\ufeff"])
def test_a_mixinstruct_item_of_invisible_parts_is_skipped_before_the_rescaling(tmp_path, blank):
    """From a review: the loader kept its own blank rule (str.strip), so an item whose
    instruction and input were invisible ('\\u200b') was not skipped: its scores stretched the
    min-max rescaling of its dataset's other items before the store dropped it, and an
    invisible input joined a real instruction's text. The one rule (is_blank) now."""
    items = [{"id": "d/1", "instruction": "Name a colour", "input": blank,
              "candidates": [{"model": "a", "scores": {"bertscore": 0.2}},
                             {"model": "b", "scores": {"bertscore": 0.4}}]},
             {"id": "d/2", "instruction": blank, "input": blank,
              "candidates": [{"model": "a", "scores": {"bertscore": -5.0}},
                             {"model": "b", "scores": {"bertscore": 9.0}}]}]
    f = tmp_path / "mix.json"
    f.write_text(json.dumps(items))
    data = load_mixinstruct(f)
    c = data.frame.set_index(["instance_id", "model"])["correct"]
    assert (c[("d/1", "a")], c[("d/1", "b")]) == (0.0, 1.0)
    assert data.instances()["text"].tolist() == ["Name a colour"]
    assert data.report.counts == {"empty_text_skipped": 1}
