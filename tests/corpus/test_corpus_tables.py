"""Corpus of table inputs (valid and broken) for ``load_table``, its presets and ``load``'s
format detection: each case asserts the exact outcome. Property-based cases at the end."""

from __future__ import annotations

import gzip
import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchroute import load, load_table
from benchroute.data.store import BenchmarkData
from benchroute.data.text import is_blank
from benchroute.exceptions import BenchrouteError
from tests.corpus._cases import Case, Err, Ok, run_case

RB_HEAD = "sample_id,prompt,eval_name,a,b,a|total_cost,b|total_cost\n"


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


def t(name: str = "t.csv", **kw: object):
    return lambda p: load_table(p / name, **kw)


def d(name: str = "t.csv", **kw: object):
    return lambda p: load(p / name, **kw)


def _cost_is(value: float):
    def check(data: BenchmarkData) -> None:
        assert data.frame["cost"].tolist()[0] == pytest.approx(value)
    return check


def _metrics_are(expected: dict[str, str]):
    def check(data: BenchmarkData) -> None:
        assert data.report.metrics == expected
    return check


def _no_column(name: str):
    def check(data: BenchmarkData) -> None:
        assert name not in data.models
        assert any(name in n for n in data.report.notes), data.report.notes
    return check


CASES = {
    # --- reading CSV/TSV -------------------------------------------------------------------
    "empty_csv": Case({"t.csv": ""}, t(), Err("file is empty")),
    "header_only": Case({"t.csv": "text,m1\n"}, t(), Err("table has no rows")),
    "duplicate_header": Case({"t.csv": "text,m1,m1\nq,1,0\n"}, t(), Err("names column 'm1' twice")),
    "ragged_long_row": Case({"t.csv": "text,m1,m2\nq,1,0\nr,1,0,1\n"}, t(),
                            Err("line 3 has 4 fields, the header has 3")),
    "ragged_short_row": Case({"t.csv": "text,m1,m2\nq,1,0\nr,1\n"}, t(),
                             Err("line 3 has 2 fields, the header has 3")),
    "numeric_text_kept": Case({"t.csv": "text,m1\n1,1\n2,0\n"}, t(), Ok(texts=["1", "2"])),
    "numeric_text_with_blank": Case({"t.csv": "text,m1\n1,1\n,0\n2,1\n"}, t(),
                                    Ok(texts=["1", "2"], counts={"missing_text_dropped": 1})),
    "decimal_text_kept": Case({"t.csv": "text,m1\n1.50,1\n2,0\n"}, t(), Ok(texts=["1.50", "2"])),
    "na_text_kept": Case({"t.csv": "text,m1\nNA,1\nNone,0\n"}, t(), Ok(texts=["NA", "None"])),
    "bom_csv": Case({"t.csv": "\ufefftext,m1\nq,1\n"}, t(), Ok(models=["m1"], texts=["q"])),
    "latin1_csv": Case({"t.csv": "text,m1\ncaf\xe9,1\n".encode("latin-1")}, t(),
                       Err("cannot parse the table")),
    "crlf_csv": Case({"t.csv": b"text,m1\r\nq,1\r\nr,0\r\n"}, t(), Ok(correct=[1.0, 0.0])),
    "quoted_newline": Case({"t.csv": 'text,m1\n"a, b\nc",1\n'}, t(), Ok(texts=["a, b\nc"])),
    "tsv": Case({"t.tsv": "text\tm1\tm2\nq\t1\t0\n"}, t("t.tsv"), Ok(models=["m1", "m2"])),
    "gzip_csv": Case({"t.csv.gz": gzip.compress(b"text,m1\nq,1\n")}, t("t.csv.gz"),
                     Ok(models=["m1"])),
    "corrupt_gzip": Case({"t.csv.gz": b"\x1f\x8bnot gzip"}, t("t.csv.gz"),
                         Err("cannot parse the table")),
    "true_false": Case({"t.csv": "text,m1,m2\nq,True,false\n"}, t(), Ok(correct=[1.0, 0.0])),
    "empty_model_cell": Case({"t.csv": "text,m1,m2\nq,1,\nr,0,1\n"}, t(),
                             Ok(n_results=3, counts={"nan_dropped": 1})),
    "na_model_cell": Case({"t.csv": "text,m1,m2\nq,1,NA\nr,0,1\n"}, t(),
                          Ok(n_results=3, counts={"nan_dropped": 1})),
    "all_blank_column": Case({"t.csv": "text,m1,m2\nq,,1\n"}, t(),
                             Ok(models=["m2"], extra=_no_column("m1"))),
    "text_column_ignored": Case({"t.csv": "text,m1,note\nq,1,hello\n"}, t(),
                                Ok(models=["m1"], extra=_no_column("note"))),
    "numbers_and_words": Case({"t.csv": "text,m1,m2\nq,1,0\nr,hello,1\n"}, t(),
                              Ok(models=["m2"], warns="column 'm1' holds 1 numbers but also 'hello'")),
    "words_in_named_model": Case({"t.csv": "text,m1\nq,yes\n"}, t(models=["m1"]),
                                 Err("value 'yes' is not a number or True/False")),
    "no_text_column": Case({"t.csv": "prompt,m1\nq,1\n"}, t(), Err(r"missing column\(s\) \['text'\]")),
    "unknown_model_named": Case({"t.csv": "text,m1\nq,1\n"}, t(models=["m9"]),
                                Err(r"missing column\(s\) \['m9'\]")),
    "no_models": Case({"t.csv": "text,comment\nq,hello\n"}, t(), Err("no model columns")),
    # --- JSON / JSONL / parquet ---------------------------------------------------------------
    "empty_json_list": Case({"t.json": []}, t("t.json"), Err("empty JSON list")),
    "invalid_json": Case({"t.json": '[{"text": "q",'}, t("t.json"), Err("invalid JSON at line 1")),
    "bad_jsonl_line": Case({"t.jsonl": '{"text": "q", "m": 1}\n{oops\n'}, t("t.jsonl"),
                           Err("line 2 is not valid JSON")),
    "json_not_objects": Case({"t.json": [1, 2]}, t("t.json"), Err("record 1 is a int")),
    "json_bom": Case({"t.json": "\ufeff" + json.dumps([{"text": "q", "m": 1}])}, t("t.json"),
                     Ok(models=["m"], texts=["q"])),
    "json_deep": Case({"t.json": "[" * 100_000}, t("t.json"), Err("nested too deeply|invalid JSON")),
    "json_numbers_and_bools": Case({"t.json": [{"text": "q", "m": 1}, {"text": "r", "m": True},
                                               {"text": "s", "m": 0.0}]}, t("t.json"),
                                   Ok(models=["m"], correct=[1.0, 1.0, 0.0])),
    "json_numbers_and_dict": Case({"t.json": [{"text": "q", "m": 1}, {"text": "r", "m": {"x": 1}}]},
                                  t("t.json"), Err("column 'm' mixes scores with a dict")),
    "json_numbers_and_list": Case({"t.json": [{"text": "q", "m": 1}, {"text": "r", "m": [1]}]},
                                  t("t.json"), Err("column 'm' mixes scores with a list")),
    "json_huge_int_named": Case({"t.json": '[{"text": "q", "m": ' + "9" * 400 + "}]"},
                                t("t.json", models=["m"]), Err("is not a number or True/False")),
    "json_numeric_text": Case({"t.json": [{"text": 1, "m": 1}, {"text": 2.5, "m": 0}]}, t("t.json"),
                              Ok(texts=["1", "2.5"])),
    "json_dict_text": Case({"t.json": [{"text": {"a": 1}, "m": 1}]}, t("t.json"),
                           Err("column 'text'.*is a dict, expected text")),
    "json_bool_text": Case({"t.json": [{"text": True, "m": 1}]}, t("t.json"),
                           Err("is a bool, expected text")),
    "json_null_text": Case({"t.json": [{"text": None, "m": 1}, {"text": "q", "m": 0}]}, t("t.json"),
                           Ok(n_results=1, counts={"missing_text_dropped": 1})),
    "lone_surrogate": Case({"t.json": '[{"text": "a\\ud800b", "m": 1}]'}, t("t.json"),
                           Ok(texts=["a\ufffdb"], counts={"lone_surrogates_replaced": 1})),
    "non_utf8_json": Case({"t.json": b'[{"text": "caf\xe9", "m": 1}]'}, t("t.json"),
                          Err("not UTF-8 text")),
    "parquet_wide": Case({"t.parquet": _parquet(pd.DataFrame({"text": ["q", "r"], "m": [1.0, 0.0]}))},
                         t("t.parquet"), Ok(models=["m"], correct=[1.0, 0.0])),
    "corrupt_parquet": Case({"t.parquet": b"PAR1garbage"}, t("t.parquet"),
                            Err("not a readable parquet file")),
    "pickle_refused": Case({"t.pkl": b"\x80\x04junk"}, t("t.pkl"), Err("pickle files are not loaded")),
    "unknown_format": Case({"t.xlsx": b"junk"}, t("t.xlsx"), Err("unknown table format")),
    # --- long layout -----------------------------------------------------------------------
    "long_ok": Case({"t.csv": "dataset,text,model,score\nd,q,a,1\nd,q,b,0\n"}, t(),
                    Ok(models=["a", "b"], n_instances=1, correct=[1.0, 0.0])),
    "long_empty_model": Case({"t.csv": "dataset,text,model,score\nd,q,a,1\nd,q,,0\n"}, t(),
                             Ok(models=["a"], counts={"missing_key_dropped": 1})),
    "long_null_model_json": Case({"t.json": [{"text": "q", "model": "a", "score": 1},
                                             {"text": "q", "model": None, "score": 0}]},
                                 t("t.json"), Ok(models=["a"], counts={"missing_key_dropped": 1})),
    "long_empty_dataset": Case({"t.csv": "dataset,text,model,score\nd,q,a,1\n,q,b,0\n"}, t(),
                               Ok(datasets=["d"], counts={"missing_key_dropped": 1})),
    "long_numeric_models": Case({"t.csv": "dataset,text,model,score\nd,q,1,1\nd,q,2,0\n"}, t(),
                                Ok(models=["1", "2"])),
    "long_duplicate_key": Case({"t.csv": "dataset,instance_id,text,model,score\nd,1,q,m,1\nd,1,q,m,0\n"},
                               t(instance_id="instance_id"),
                               Err(r"share a \(dataset, instance_id, model\) key")),
    "bad_layout": Case({"t.csv": "text,m\nq,1\n"}, t(layout="tall"), Err("layout must be")),
    # --- correctness rules and thresholds -----------------------------------------------------
    "threshold_nan": Case({"t.csv": "text,m\nq,1\n"}, t(threshold=float("nan")),
                          Err("must be a finite number")),
    "threshold_zero": Case({"t.csv": "text,m\nq,1\n"}, t(threshold=0.0), Err(r"must lie in \(0, 1\]")),
    "threshold_negative": Case({"t.csv": "text,m\nq,1\n"}, t(threshold=-0.1), Err(r"must lie in \(0, 1\]")),
    "threshold_above_one": Case({"t.csv": "text,m\nq,1\n"}, t(threshold=1.5), Err(r"must lie in \(0, 1\]")),
    "threshold_string": Case({"t.csv": "text,m\nq,1\n"}, t(threshold="0.5"), Err("must be a number")),
    "threshold_bool": Case({"t.csv": "text,m\nq,1\n"}, t(threshold=True), Err("must be a number")),
    "threshold_one": Case({"t.csv": "text,m1,m2\nq,1,0.99\n"}, t(threshold=1.0), Ok(correct=[1.0, 0.0])),
    "threshold_mapping": Case(
        {"t.csv": "dataset,text,m\nx,q,0.4\ny,r,0.4\n"}, t(threshold={"x": 0.3}),
        Ok(correct=[1.0, 0.0])),
    "threshold_mapping_unknown": Case({"t.csv": "dataset,text,m\nx,q,0.4\n"}, t(threshold={"z": 0.3}),
                                      Err(r"unknown dataset\(s\) \['z'\]")),
    "threshold_mapping_nan": Case({"t.csv": "dataset,text,m\nx,q,0.4\n"},
                                  t(threshold={"x": float("nan")}), Err("threshold for 'x'")),
    "score_above_one": Case({"t.csv": "text,m\nq,5\n"}, t(), Err(r"needs scores in \[0, 1\]")),
    "score_negative": Case({"t.csv": "text,m\nq,-0.5\n"}, t(), Err(r"needs scores in \[0, 1\]")),
    "score_inf": Case({"t.csv": "text,m\nq,inf\n"}, t(), Err(r"needs scores in \[0, 1\]")),
    "as_is_above_one": Case({"t.csv": "text,m\nq,1.5\n"}, t(correct="as_is"),
                            Err(r"must lie in \[0, 1\]; got 1.5")),
    "as_is_negative": Case({"t.csv": "text,m\nq,-0.2\n"}, t(correct="as_is"),
                           Err(r"must lie in \[0, 1\]; got -0.2")),
    "positive_rule": Case({"t.csv": "text,m1,m2\nq,5,0\n"}, t(correct="positive"), Ok(correct=[1.0, 0.0])),
    "callable_wrong_length": Case({"t.csv": "text,m\nq,1\n"}, t(correct=lambda s: [1.0, 0.0]),
                                  Err("returned shape")),
    "callable_out_of_range": Case({"t.csv": "text,m\nq,1\n"}, t(correct=lambda s: s * 2),
                                  Err(r"must lie in \[0, 1\]; got 2")),
    "bad_rule": Case({"t.csv": "text,m\nq,1\n"}, t(correct="sometimes"), Err("is not a rule")),
    "bad_preset": Case({"t.csv": "text,m\nq,1\n"}, t(preset="bogus"), Err("unknown preset 'bogus'")),
    "options_without_preset": Case({"t.csv": "text,m\nq,1\n"}, t(annotator="x"),
                                   Err("unexpected options")),
    # --- RouterBench ---------------------------------------------------------------------------
    "rb_missing_eval_name": Case({"r.csv": "sample_id,prompt,a,a|total_cost\n1,q,1,0.1\n"},
                                 t("r.csv", preset="routerbench"), Err(r"missing column\(s\) \['eval_name'\]")),
    "rb_negative_cost": Case({"r.csv": RB_HEAD + "1,q,e,1,0,-0.1,0.2\n"},
                             t("r.csv", preset="routerbench"), Err("negative cost")),
    "rb_text_cost": Case({"r.csv": RB_HEAD + "1,q,e,1,0,cheap,0.2\n"},
                         t("r.csv", preset="routerbench"), Err("'cheap' is not a number")),
    "rb_cost": Case({"r.csv": RB_HEAD + "1,q,e,1,0,0.25,0.5\n"}, t("r.csv", preset="routerbench"),
                    Ok(models=["a", "b"], extra=_cost_is(0.25))),
    "rb_index_columns": Case({"r.csv": "Unnamed: 0,cluster_id," + RB_HEAD + "0,3,1,q,e,1,0,0.1,0.2\n"},
                             t("r.csv", preset="routerbench"),
                             Ok(models=["a", "b"], extra=_no_column("cluster_id"))),
    "rb_index_no_suffix": Case({"r.csv": "Unnamed: 0,sample_id,prompt,eval_name,a,b\n0,1,q,e,1,0\n"},
                               t("r.csv", preset="routerbench"), Ok(models=["a", "b"])),
    "rb_same_row_twice": Case({"r.csv": RB_HEAD + "1,q,e,1,0,0.1,0.2\n1,q,e,1,0,0.1,0.2\n"},
                              t("r.csv", preset="routerbench"),
                              Ok(n_instances=1, counts={"duplicate_rows_merged": 2})),
    "rb_same_prompt_other_scores": Case(
        {"r.csv": RB_HEAD + "1,q,e,1,0,0.1,0.2\n1,q,e,0,0,0.1,0.2\n2,r,e,1,1,0.1,0.2\n"},
        t("r.csv", preset="routerbench"),
        Ok(n_instances=1, counts={"duplicate_conflict_skipped": 1})),
    "rb_other_prompt": Case({"r.csv": RB_HEAD + "1,q,e,1,0,0.1,0.2\n1,z,e,0,1,0.1,0.2\n2,r,e,1,1,0.1,0.2\n"},
                            t("r.csv", preset="routerbench"),
                            Ok(n_instances=1, counts={"text_conflict_skipped": 1},
                               warns="appears more than once and its texts differ")),
    "rb_other_prompt_strict": Case({"r.csv": RB_HEAD + "1,q,e,1,0,0.1,0.2\n1,z,e,0,1,0.1,0.2\n"},
                                   t("r.csv", preset="routerbench", strict=True),
                                   Err("appears more than once and its texts differ")),
    "rb_pickles_only": Case({"rb/x.pkl": b"\x80junk"}, t("rb", preset="routerbench"),
                            Err("pickles are not loaded")),
    "rb_empty_folder": Case({"rb/readme.md": "hi"}, t("rb", preset="routerbench"),
                            Err("no RouterBench CSV or parquet files")),
    "rb_no_models": Case({"r.csv": "sample_id,prompt,eval_name,note\n1,q,e,hi\n"},
                         t("r.csv", preset="routerbench"), Err("no model score columns")),
    # --- format detection in load() -------------------------------------------------------------
    "load_empty_json_list": Case({"t.json": []}, d("t.json"), Err("empty JSON list")),
    "load_empty_csv": Case({"t.csv": ""}, d(), Err("file is empty")),
    "load_corrupt_parquet": Case({"t.parquet": b"PAR1garbage"}, d("t.parquet"),
                                 Err("not a readable parquet file")),
    "load_first_json_not_utf8": Case({"f/a.json": b"\xff\xfe\x00junk", "f/b.json": []}, d("f"),
                                     Err("no known layout")),
    "load_routerbench_file": Case({"r.csv": "Unnamed: 0," + RB_HEAD + "0,1,q,e,1,0,0.1,0.2\n"}, d("r.csv"),
                                  Ok(models=["a", "b"], datasets=["e"])),
    "load_routerbench_folder": Case(
        {"rb/x_train.csv": RB_HEAD + "0,q,e,1,0,0.1,0.2\n", "rb/x_test.csv": RB_HEAD + "0,r,e,0,1,0.1,0.2\n"},
        d("rb"), Ok(models=["a", "b"], n_instances=2)),
    "load_metric_on_table": Case({"t.csv": "text,m\nq,1\n"}, d(metric="bleu"), Err("metric= applies")),
    "load_prices_on_table": Case({"t.csv": "text,m\nq,1\n"}, d(prices="p.csv"), Err("prices= applies")),
    "load_unknown_preset": Case({"t.csv": "text,m\nq,1\n"}, d(preset="nope"), Err("unknown preset 'nope'")),
    "load_threshold_table": Case({"t.csv": "text,m1,m2\nq,0.3,0.2\n"}, d(threshold=0.25),
                                 Ok(correct=[1.0, 0.0])),
    # --- the other presets ------------------------------------------------------------------------
    "rdc_score_text": Case({"mmlu_test.json": [{"question": "q", "scores": {"m": "high"}}]},
                           t("mmlu_test.json", preset="routerdc"), Err("scores.m: value 'high'")),
    "rdc_mc_positive": Case({"mmlu_test.json": [{"question": "q", "scores": {"a": 0.01, "b": 0.0}}]},
                            t("mmlu_test.json", preset="routerdc"),
                            Ok(correct=[1.0, 0.0], extra=_metrics_are({"mmlu": "p_gold_if_correct"}))),
    "rdc_fraction_above_one": Case({"gsm8k_test.json": [{"question": "q", "scores": {"a": 2.0}}]},
                                   t("gsm8k_test.json", preset="routerdc"), Err(r"needs scores in \[0, 1\]")),
    "rdc_threshold_mapping": Case({"gsm8k_test.json": [{"question": "q", "scores": {"a": 0.4, "b": 0.2}}]},
                                  t("gsm8k_test.json", preset="routerdc", threshold={"gsm8k": 0.3}),
                                  Ok(correct=[1.0, 0.0])),
    "rdc_empty_folder": Case({"rdc/readme.md": "x"}, t("rdc", preset="routerdc"), Err("no RouterDC")),
    "rllm_empty_folder": Case({"rl/readme.md": "x"}, t("rl", preset="routellm"), Err("no RouteLLM response CSVs")),
    "rllm_no_prompt": Case({"mmlu_x.csv": "question,gpt\nq,True\n"}, t("mmlu_x.csv", preset="routellm"),
                           Err(r"missing column\(s\) \['prompt'\]")),
    "rllm_text_cell": Case({"mmlu_x.csv": "prompt,gpt\nq,maybe\n"}, t("mmlu_x.csv", preset="routellm"),
                           Err("'maybe' is not a number or True/False")),
    "alpaca_missing_instructions": Case({"a/alpaca_eval_preferences.csv.gz": gzip.compress(b"x\n1\n")},
                                        t("a", preset="alpaca_eval"), Err("no such file")),
    "alpaca_threshold": Case({"a/alpaca_eval_preferences.csv.gz": b""}, t("a", preset="alpaca_eval", threshold=0.7),
                             Err("threshold=0.7 does not apply")),
    "load_prompt_table": Case({"t.csv": "prompt,m1,m2\nq,1,0\n"}, d(), Ok(models=["m1", "m2"])),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_table_corpus(case: Case, tmp_path: Path) -> None:
    assert run_case(case, tmp_path)


def test_corpus_size() -> None:
    assert len(CASES) >= 80


def test_load_store_with_options_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("text,m\nq,1\n")
    saved = load_table(tmp_path / "t.csv").save(tmp_path / "s.parquet")
    assert load(saved).models == ["m"]
    with pytest.raises(BenchrouteError, match="loaded as saved"):
        load(saved, threshold=0.3)


# ------------------------------------------------------------------------------------ properties
_cell = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "1", "0", "True", "false", "NA", "x", "1.5", "-0", "inf"]),
    st.text(max_size=4), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.lists(st.integers(), max_size=1),
)
_text = st.one_of(st.text(max_size=8), st.integers(0, 9), st.none(), st.booleans())
_rows = st.lists(st.fixed_dictionaries({"text": _text, "m1": _cell, "m2": _cell}), min_size=0,
                 max_size=5)
FAST = settings(max_examples=40,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _expected_scores(rows: list[dict]) -> list[tuple[str, str, float]] | None:
    """What a JSON table of rows must load to, or None where an error is right."""
    def score(v: object) -> float | None:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return math.nan
        if isinstance(v, bool):
            return float(v)
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, str):
            s = v.strip().lower()
            if s in ("", "na", "nan", "none", "null", "n/a", "#n/a"):
                return math.nan
            if s in ("true", "false"):
                return float(s == "true")
            try:
                return float(s)
            except ValueError:
                return None
        return None
    out = []
    for i, r in enumerate(rows):
        for m in ("m1", "m2"):
            s = score(r[m])
            if s is None:
                return None
            if isinstance(r["text"], (dict, list, bool)):
                return None
            if (isinstance(r["text"], int) or (isinstance(r["text"], str)
                                               and not is_blank(r["text"]))) \
                    and not math.isnan(s):
                if not 0 <= s <= 1:
                    return None
                out.append((str(i), m, s))
    return out or None


@FAST
@given(rows=_rows)
def test_property_json_table(rows: list[dict], tmp_path_factory: pytest.TempPathFactory) -> None:
    """Random small JSON tables: the right store, or a BenchrouteError, never another exception."""
    f = tmp_path_factory.mktemp("h") / "t.json"
    f.write_text(json.dumps(rows, allow_nan=True))
    expected = _expected_scores(rows)
    if expected is None:
        with pytest.raises(BenchrouteError):
            load_table(f, models=["m1", "m2"], correct="as_is")
        return
    data = load_table(f, models=["m1", "m2"], correct="as_is")
    got = sorted(zip(data.frame["instance_id"], data.frame["model"], data.frame["score"]))
    assert len(got) == len(expected)
    for (i, m, s), (gi, gm, gs) in zip(sorted(expected), got):
        assert (i, m) == (gi, gm) and s == pytest.approx(gs)


@FAST
@given(text=st.text(max_size=120), cut=st.integers(0, 120))
def test_property_csv_bytes(text: str, cut: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Random (truncated, corrupted) CSV text: a store or a BenchrouteError."""
    base = "text,m1,m2\nq,1,0\n" + text
    f = tmp_path_factory.mktemp("h") / "t.csv"
    f.write_bytes(base.encode("utf-8", "surrogatepass")[: cut + 10])
    try:
        data = load(f)
    except BenchrouteError:
        return
    assert set(data.frame["correct"].unique()) <= {0.0, 1.0}
    assert all(isinstance(x, str) for x in data.frame["text"])
