"""HELM token counts into the store, price tables, and cost = tokens × price."""

from __future__ import annotations

import json

import pytest

import benchroute
from benchroute import DataError, load_helm, load_prices
from benchroute.data.prices import Price
from tests.helm_builder import write_run


def _token_suite(root):
    suite = root / "s"
    write_run(suite, "qa", "org/a", {
        "id1": {"exact_match": 1, "num_prompt_tokens": 1000, "num_completion_tokens": 200},
        "id2": {"exact_match": 0, "num_prompt_tokens": 3000, "num_completion_tokens": 10},
    })
    # an older run with only num_output_tokens, priced under its deployment name
    write_run(suite, "qa", "org/b", {
        "id1": {"exact_match": 0, "num_prompt_tokens": 1000, "num_output_tokens": 50},
        "id2": {"exact_match": 1, "num_prompt_tokens": 3000, "num_output_tokens": 5},
    }, deployment="host/b-serving")
    return suite


def test_tokens_and_costs_from_price_csv(tmp_path):
    suite = _token_suite(tmp_path)
    table = tmp_path / "prices.csv"
    table.write_text("model,input_usd_per_1m,output_usd_per_1m\norg/a,2.5,10\nhost/b-serving,0.5,1.5\n")
    data = load_helm(suite, prices=table)
    got = data.frame.set_index(["model", "instance_id"])
    assert got.loc[("org/a", "id1"), ["prompt_tokens", "completion_tokens"]].tolist() == [1000, 200]
    assert got.loc[("org/b", "id2"), "completion_tokens"] == 5
    assert got.loc[("org/a", "id1"), "cost"] == pytest.approx((1000 * 2.5 + 200 * 10) / 1e6)
    assert got.loc[("org/a", "id2"), "cost"] == pytest.approx((3000 * 2.5 + 10 * 10) / 1e6)
    assert got.loc[("org/b", "id1"), "cost"] == pytest.approx((1000 * 0.5 + 50 * 1.5) / 1e6)
    assert data.frame.groupby("model")["cost"].mean()["org/a"] == pytest.approx(0.00605)
    assert data.report.warnings == []


def test_tokens_without_prices_and_missing_price_warned(tmp_path):
    suite = _token_suite(tmp_path)
    plain = load_helm(suite)
    assert "cost" not in plain.frame.columns
    assert plain.frame["prompt_tokens"].sum() == 8000
    partial = load_helm(suite, prices={"org/a": (1.0, 2.0)})
    assert partial.frame.loc[partial.frame["model"] == "org/b", "cost"].isna().all()
    assert any("no price for model(s) ['org/b']" in w for w in partial.report.warnings)


def test_price_json_forms(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"m1": {"input": 1, "output": 2}, "m2": [0.5, "0.75"]}))
    assert load_prices(a) == {"m1": Price(1.0, 2.0), "m2": Price(0.5, 0.75)}
    b = tmp_path / "b.json"
    b.write_text(json.dumps([{"model": "m1", "input_usd_per_1m": 3, "output_usd_per_1m": 4}]))
    assert load_prices(b) == {"m1": Price(3.0, 4.0)}
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffmodel,input,output\nm1,1,2\n".encode())
    assert load_prices(bom) == {"m1": Price(1.0, 2.0)}
    assert benchroute.load_prices is load_prices


@pytest.mark.parametrize(("content", "match"), [
    ("model,input\nm1,1\n", "an output price column"),
    ("name,input,output\nm1,1,2\n", "must name 'model'"),
    ("model,input,output\nm1,1,abc\n", "line 2 field 'output' must be a non-negative number.*'abc'"),
    ("model,input,output\nm1,-1,2\n", "line 2 field 'input' must be a non-negative.*'-1'"),
    ("model,input,output\nm1,inf,2\n", "line 2 field 'input'.*'inf'"),
    ("model,input,output\nm1,1,2\nm1,3,4\n", "line 3: model 'm1' is listed twice"),
    ("model,input,output\n,1,2\n", "line 2 field 'model' must be a non-empty string"),
    ("model,input,output\nm1,1\n", "line 2 has 2 fields, the header 3"),
    ("model,input,output\n", "no rows"),
    ("", "empty"),
    ('{"m1": 5}', r"entry 'm1' must be \{'input': x, 'output': y\} or \[x, y\], got 5"),
    ('{"m1": {"input": true, "output": 1}}', "field 'input' must be a non-negative.*True"),
    ('[1, 2]', "row 0 must be an object, got 1"),
    ('"prices"', "expected a JSON object or list, got str"),
    ('{"m1": [1, 2', "invalid JSON at line 1"),
    # an object naming a model twice kept the last price silently (found by a review)
    ('{"m1": [1, 2], "m1": [3, 4]}', "key 'm1' appears twice in one object"),
    ("[" * 100_000, "unreadable JSON|invalid JSON"),
])
def test_bad_price_tables(tmp_path, content, match):
    p = tmp_path / ("prices.json" if content[:1] in '[{"' else "prices.csv")
    p.write_text(content)
    with pytest.raises(DataError, match=match):
        load_prices(p)


def test_price_file_missing_or_not_utf8(tmp_path):
    with pytest.raises(DataError, match="price table not found"):
        load_prices(tmp_path / "nope.csv")
    p = tmp_path / "p.csv"
    p.write_bytes(b"model,input,output\nm\xff,1,2\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_prices(p)


@pytest.mark.parametrize("bad", [{"m": (1,)}, {"m": (1, -2)}, {"m": "cheap"}, 5])
def test_bad_price_mappings(tmp_path, bad):
    suite = _token_suite(tmp_path)
    with pytest.raises(DataError, match="prices"):
        load_helm(suite, prices=bad)


def test_no_token_stats_no_token_columns(tmp_path):
    write_run(tmp_path / "s", "qa", "org/a", {"id1": {"exact_match": 1}})
    data = load_helm(tmp_path / "s")
    assert not {"prompt_tokens", "completion_tokens", "cost"} & set(data.frame.columns)
    priced = load_helm(tmp_path / "s", prices={"org/a": (1, 1)})
    assert priced.frame["cost"].isna().all()
    assert any("no token counts" in w for w in priced.report.warnings)


def test_costs_survive_save_and_load(tmp_path):
    data = load_helm(_token_suite(tmp_path), prices={"org/a": (1, 2), "org/b": (1, 2)})
    again = benchroute.BenchmarkData.load(data.save(tmp_path / "store.parquet"))
    assert again.frame["cost"].tolist() == pytest.approx(data.frame["cost"].tolist())
    assert again.report.metrics == {"qa": "exact_match"}
