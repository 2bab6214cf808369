"""Corpus of MixInstruct inputs (valid and broken): each case asserts the exact outcome.
Property-based cases at the end."""

from __future__ import annotations

import json
import lzma
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchroute import load, load_mixinstruct
from benchroute.data.store import BenchmarkData
from benchroute.exceptions import BenchrouteError
from tests.corpus._cases import Case, Err, Ok, run_case


def item(iid: str = "d/1", instruction: Any = "Say hi", input: Any = "", **scores: Any) -> dict:
    scores = scores or {"a": 0.2, "b": 0.8}
    return {"id": iid, "instruction": instruction, "input": input,
            "candidates": [{"model": m, "scores": {"bertscore": s}} for m, s in scores.items()]}


def m(**kw: Any):
    return lambda p: load_mixinstruct(p / "m.json", **kw)


def _report(key: str, value: str):
    def check(data: BenchmarkData) -> None:
        assert getattr(data.report, key) == value
    return check


def _costs(expected: list[float]):
    def check(data: BenchmarkData) -> None:
        frame = data.frame.sort_values(["instance_id", "model"])
        assert frame["cost"].tolist() == pytest.approx(expected)
    return check


def _cost_a_only(data: BenchmarkData) -> None:
    cost = data.frame.set_index("model")["cost"]
    assert cost["a"] == pytest.approx(0.002) and math.isnan(cost["b"])


def _no_cost(data: BenchmarkData) -> None:
    assert "cost" not in data.frame.columns


def _raw(text: str) -> dict[str, str]:
    return {"m.json": text}


CASES = {
    # --- the file ------------------------------------------------------------------------------
    "empty_file": Case(_raw(""), m(), Err("file is empty")),
    "empty_list": Case({"m.json": []}, m(), Err("no items")),
    "invalid_json": Case(_raw('[{"id": "d/1",'), m(), Err("invalid JSON at line 1")),
    "jsonl_bad_line": Case(_raw(json.dumps(item()) + "\nnope\n"), m(), Err("line 2 is not valid JSON")),
    "jsonl_blank_lines": Case(_raw("\n" + json.dumps(item()) + "\n\n" + json.dumps(item("d/2")) + "\n"),
                              m(), Ok(n_instances=2)),
    "not_objects": Case({"m.json": [1, 2]}, m(), Err("record 1 is a int")),
    "bom": Case(_raw("\ufeff" + json.dumps([item()])), m(), Ok(n_instances=1)),
    "non_utf8": Case({"m.json": b'[{"id": "d/1", "instruction": "caf\xe9"}]'}, m(),
                     Err("not UTF-8 text")),
    "deep": Case(_raw("[" * 100_000), m(), Err("nested too deeply|invalid JSON")),
    "xz": Case({"m.jsonl.xz": lzma.compress(json.dumps(item()).encode())},
               lambda p: load_mixinstruct(p / "m.jsonl.xz"), Ok(n_instances=1)),
    "corrupt_xz": Case({"m.jsonl.xz": b"\xfd7zXZ\x00junk"}, lambda p: load_mixinstruct(p / "m.jsonl.xz"),
                       Err("not a readable xz file")),
    # --- ids and texts ----------------------------------------------------------------------------
    "id_int": Case({"m.json": [{**item(), "id": 7}]}, m(), Err("field 'id' must be a non-empty string, got 7")),
    "id_empty": Case({"m.json": [{**item(), "id": ""}]}, m(), Err("field 'id' must be a non-empty string")),
    "id_missing": Case({"m.json": [{k: v for k, v in item().items() if k != "id"}]}, m(),
                       Err("got None")),
    "instruction_int": Case({"m.json": [item(instruction=3)]}, m(),
                            Err("'instruction' and 'input' must be strings")),
    "input_list": Case({"m.json": [item(input=["x"])]}, m(), Err("must be strings")),
    "instruction_none": Case({"m.json": [item(instruction=None, input="Just input")]}, m(),
                             Ok(texts=["Just input"])),
    "empty_instruction": Case({"m.json": [item(instruction="", input="Just input")]}, m(),
                              Ok(texts=["Just input"])),
    "empty_input": Case({"m.json": [item(instruction="Just instruction", input="")]}, m(),
                        Ok(texts=["Just instruction"])),
    "both_parts": Case({"m.json": [item(instruction="Add", input="2 and 3")]}, m(),
                       Ok(texts=["Add\n2 and 3"])),
    "blank_instruction": Case({"m.json": [item(instruction="  \n", input="x")]}, m(), Ok(texts=["x"])),
    "neither_part": Case({"m.json": [item("d/1", "", ""), item("d/2")]}, m(),
                         Ok(n_instances=1, counts={"empty_text_skipped": 1},
                            warns="neither 'instruction' nor 'input' has text")),
    "neither_part_only": Case({"m.json": [item("d/1", "", "")]}, m(), Err("no candidate has")),
    "lone_surrogate": Case(_raw('[{"id": "d/1", "instruction": "a\\udc00", "candidates": '
                                '[{"model": "a", "scores": {"bertscore": 0.5}}]}]'), m(),
                           Ok(texts=["a\ufffd"], counts={"lone_surrogates_replaced": 1})),
    "dataset_from_id": Case({"m.json": [item("dolly/1"), item("chip/1"), item("plain")]}, m(),
                            Ok(datasets=["chip", "dolly", "plain"])),
    # --- candidates and scores ----------------------------------------------------------------------
    "candidates_none": Case({"m.json": [{**item(), "candidates": None}]}, m(),
                            Err("field 'candidates' must be a list")),
    "candidates_dict": Case({"m.json": [{**item(), "candidates": {"a": 1}}]}, m(),
                            Err("field 'candidates' must be a list")),
    "candidate_not_dict": Case({"m.json": [{**item(), "candidates": [1]}]}, m(),
                               Err("candidate 0 needs 'model' and 'scores'")),
    "candidate_no_model": Case({"m.json": [{**item(), "candidates": [{"scores": {}}]}]}, m(),
                               Err("candidate 0 needs 'model' and 'scores'")),
    "scores_list": Case({"m.json": [{**item(), "candidates": [{"model": "a", "scores": [1]}]}]}, m(),
                        Err("candidate 0 needs 'model' and 'scores'")),
    "score_string": Case({"m.json": [item(a="0.7x")]}, m(), Err("scores.bertscore is '0.7x', not a number")),
    "score_bool": Case({"m.json": [item(a=True)]}, m(), Err("scores.bertscore is True, not a number")),
    "score_huge_int": Case(_raw(json.dumps([item(a=1)]).replace('"bertscore": 1', '"bertscore": ' + "9" * 400)),
                           m(), Err("too large")),
    "score_null": Case({"m.json": [item(a=None, b=0.5), item("d/2")]}, m(),
                       Ok(n_results=3, counts={"nan_dropped": 1})),
    "score_nan": Case(_raw(json.dumps([item(a=0.1, b=0.5), item("d/2")]).replace("0.1", "NaN")), m(),
                      Ok(n_results=3, counts={"nan_dropped": 1})),
    "score_inf": Case(_raw(json.dumps([item(a=0.1, b=0.5), item("d/2", a=0.2, b=0.9)]).replace("0.1", "Infinity")),
                      m(), Ok(n_results=3, counts={"non_finite_score_skipped": 1},
                              correct=[3 / 7, 0.0, 1.0])),
    "score_minus_inf": Case(_raw(json.dumps([item(a=0.1, b=0.5), item("d/2", a=0.2, b=0.9)])
                                 .replace("0.1", "-Infinity")), m(),
                            Ok(n_results=3, counts={"non_finite_score_skipped": 1})),
    "only_inf": Case(_raw(json.dumps([item(a=0.1)]).replace("0.1", "Infinity")), m(),
                     Err("no candidate has")),
    "rescaled": Case({"m.json": [item("d/1", a=0.2, b=0.8), item("d/2", a=0.5, b=0.6)]}, m(),
                     Ok(correct=[0.0, 1.0, 0.5, 2 / 3], extra=_report("scales", {"d": "guessed"}))),
    "negative_bartscore": Case({"m.json": [item(a=-4.0, b=-2.0)]}, m(), Ok(correct=[0.0, 1.0])),
    "all_equal": Case({"m.json": [item(a=0.5, b=0.5)]}, m(), Ok(correct=[0.5, 0.5])),
    # --- metrics ------------------------------------------------------------------------------------
    "missing_metric": Case({"m.json": [{**item(), "candidates": [{"model": "a", "scores": {"bleu": 0.1}}]}]},
                           m(), Err(r"no candidate has a 'bertscore' score; metrics present: \['bleu'\]")),
    "some_missing_metric": Case({"m.json": [{**item(), "candidates": [
        {"model": "a", "scores": {"bleu": 0.1}}, {"model": "b", "scores": {"bertscore": 0.3}}]}]},
        m(), Ok(models=["b"], counts={"candidates_without_metric": 1})),
    "other_metric": Case({"m.json": [{**item(), "candidates": [
        {"model": "a", "scores": {"bleu": 0.1, "bertscore": 0.9}},
        {"model": "b", "scores": {"bleu": 0.3, "bertscore": 0.1}}]}]},
        m(metric="bleu"), Ok(correct=[0.0, 1.0], extra=_report("metrics", {"d": "bleu"}))),
    "metric_mapping": Case({"m.json": [
        {**item("x/1"), "candidates": [{"model": "a", "scores": {"bleu": 0.1, "bertscore": 0.9}},
                                       {"model": "b", "scores": {"bleu": 0.3, "bertscore": 0.1}}]},
        {**item("y/1"), "candidates": [{"model": "a", "scores": {"bleu": 0.1, "bertscore": 0.9}},
                                       {"model": "b", "scores": {"bleu": 0.3, "bertscore": 0.1}}]}]},
        m(metric={"x": "bleu"}),
        Ok(correct=[0.0, 1.0, 1.0, 0.0], extra=_report("metrics", {"x": "bleu", "y": "bertscore"}))),
    "metric_mapping_unknown_dataset": Case({"m.json": [item("x/1")]}, m(metric={"z": "bleu"}),
                                           Err(r"metric: unknown dataset\(s\) \['z'\]")),
    "metric_mapping_absent_metric": Case({"m.json": [item("x/1"), item("y/1")]}, m(metric={"x": "bleu"}),
                                         Err(r"dataset 'x' has a 'bleu' score; metrics present: \['bertscore'\]")),
    # --- thresholds -----------------------------------------------------------------------------------
    "threshold": Case({"m.json": [item(a=0.2, b=0.8)]}, m(threshold=0.5),
                      Ok(correct=[0.0, 1.0], extra=_report("scales", {"d": "caller"}))),
    "threshold_negative_metric": Case({"m.json": [item(a=-4.0, b=-2.0)]}, m(threshold=-3.0),
                                      Ok(correct=[0.0, 1.0])),
    "threshold_nan": Case({"m.json": [item()]}, m(threshold=float("nan")), Err("must be a finite number")),
    "threshold_inf": Case({"m.json": [item()]}, m(threshold=float("inf")), Err("must be a finite number")),
    "threshold_string": Case({"m.json": [item()]}, m(threshold="0.5"), Err("must be a number")),
    "threshold_mapping": Case({"m.json": [item("x/1", a=0.2, b=0.8), item("y/1", a=0.2, b=0.8)]},
                              m(threshold={"x": 0.1}), Ok(correct=[1.0, 1.0, 0.0, 1.0])),
    "threshold_mapping_unknown": Case({"m.json": [item("x/1")]}, m(threshold={"q": 0.1}),
                                      Err(r"threshold: unknown dataset\(s\) \['q'\]")),
    # --- repeated ids ----------------------------------------------------------------------------------
    "repeat_same_item": Case({"m.json": [item(), item()]}, m(),
                             Ok(n_instances=1, counts={"duplicate_rows_merged": 2})),
    "repeat_disjoint_models": Case({"m.json": [item(a=0.1), item(b=0.9)]}, m(),
                                   Ok(n_instances=1, models=["a", "b"])),
    "repeat_other_text": Case({"m.json": [item("d/1", "One"), item("d/1", "Two"), item("d/2")]}, m(),
                              Ok(n_instances=1, counts={"text_conflict_skipped": 1},
                                 warns="texts differ")),
    "repeat_other_text_strict": Case({"m.json": [item("d/1", "One"), item("d/1", "Two")]}, m(strict=True),
                                     Err("appears more than once and its texts differ")),
    "repeat_crlf_text": Case({"m.json": [item("d/1", "A\r\nB", a=0.1), item("d/1", "A\nB", b=0.9)]}, m(),
                             Ok(n_instances=1, texts=["A\nB"])),
    "repeat_other_score": Case({"m.json": [item(a=0.1), item(a=0.3), item("d/2")]}, m(),
                               Ok(n_instances=1, counts={"duplicate_conflict_skipped": 1})),
    # --- costs ---------------------------------------------------------------------------------------
    "cost": Case({"m.json": [{**item(), "candidates": [{"model": "a", "scores": {"bertscore": 0.1, "cost": 0.002}},
                                                       {"model": "b", "scores": {"bertscore": 0.2}}]}]},
                 m(), Ok(extra=_cost_a_only)),
    "cost_both": Case({"m.json": [{**item(), "candidates": [{"model": "a", "scores": {"bertscore": 0.1, "cost": 1}},
                                                            {"model": "b", "scores": {"bertscore": 0.2, "cost": 2}}]}]},
                      m(), Ok(extra=_costs([1.0, 2.0]))),
    "no_cost": Case({"m.json": [item()]}, m(), Ok(extra=_no_cost)),
    "cost_string": Case({"m.json": [{**item(), "candidates": [{"model": "a", "scores": {"bertscore": 0.1, "cost": "1$"}}]}]},
                        m(), Err("scores.cost is '1\\$', not a number")),
    "cost_negative": Case({"m.json": [{**item(), "candidates": [{"model": "a", "scores": {"bertscore": 0.1, "cost": -1}}]}]},
                          m(), Err("scores.cost is -1.0, not >= 0")),
    # --- through load() ---------------------------------------------------------------------------------
    "load_detects": Case({"m.json": [item()]}, lambda p: load(p / "m.json"), Ok(models=["a", "b"])),
    "load_metric": Case({"m.json": [item()]}, lambda p: load(p / "m.json", metric="bleu"),
                        Err("metrics present: \\['bertscore'\\]")),
    "load_threshold": Case({"m.json": [item()]}, lambda p: load(p / "m.json", threshold=0.5),
                           Ok(correct=[0.0, 1.0])),
    "load_preset": Case({"m.jsonl": json.dumps(item())}, lambda p: load(p / "m.jsonl", preset="mixinstruct"),
                        Ok(n_instances=1)),
    "load_prices": Case({"m.json": [item()]}, lambda p: load(p / "m.json", prices="p.csv"),
                        Err("prices= applies to HELM")),
    "load_strip_prefix": Case({"m.json": [item("d/1", "Shared intro\nQ one"), item("d/2", "Shared intro\nQ two")]},
                              lambda p: load(p / "m.json", strip_common_prefix=True),
                              Ok(texts=["Q one", "Q two"], counts={"common_prefix_stripped": 1})),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_mixinstruct_corpus(case: Case, tmp_path: Path) -> None:
    assert run_case(case, tmp_path)


def test_corpus_size() -> None:
    assert len(CASES) >= 60


# ------------------------------------------------------------------------------------ properties
_score = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5),
                   st.booleans(), st.text(max_size=3))
_cand = st.one_of(st.fixed_dictionaries({"model": st.sampled_from(["a", "b", "c"]),
                                         "scores": st.fixed_dictionaries({"bertscore": _score})}),
                  st.integers(), st.none())
_item = st.fixed_dictionaries({
    "id": st.one_of(st.sampled_from(["d/1", "d/2", "e/1"]), st.integers(), st.just("")),
    "instruction": st.one_of(st.text(max_size=5), st.none(), st.integers()),
    "input": st.one_of(st.text(max_size=5), st.just("")),
    "candidates": st.one_of(st.lists(_cand, max_size=3), st.none()),
})
FAST = settings(max_examples=40,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FAST
@given(items=st.lists(_item, max_size=4))
def test_property_mixinstruct(items: list[dict], tmp_path_factory: pytest.TempPathFactory) -> None:
    """Random small MixInstruct files: a store whose labels lie in [0, 1] and whose instances all
    come from the file with finite scores, or a BenchrouteError; never another exception."""
    f = tmp_path_factory.mktemp("h") / "m.json"
    f.write_text(json.dumps(items, allow_nan=True))
    try:
        data = load_mixinstruct(f)
    except BenchrouteError:
        return
    assert data.frame["correct"].between(0, 1).all()
    assert all(math.isfinite(s) for s in data.frame["score"])
    ids = {it["id"] for it in items if isinstance(it["id"], str)}
    assert set(data.frame["instance_id"]) <= ids
    assert all(t.strip() and not t.startswith("\n") for t in data.frame["text"])


@FAST
@given(blob=st.binary(max_size=60))
def test_property_mixinstruct_bytes(blob: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A valid file with random bytes appended: a store or a BenchrouteError."""
    f = tmp_path_factory.mktemp("h") / "m.jsonl"
    f.write_bytes(json.dumps({"id": "d/1", "instruction": "x", "input": "", "candidates": [
        {"model": "a", "scores": {"bertscore": 0.5}}]}).encode() + b"\n" + blob)
    try:
        data = load(f)
    except BenchrouteError:
        return
    assert isinstance(data, BenchmarkData) and len(data) >= 1
