"""Saved stores with bad ``benchroute`` parquet metadata, and tables with very long cells
(issue 18, class 8): a clear DataError naming the file and the field, or the right result."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchroute import load, load_prices
from benchroute.data.store import BenchmarkData
from tests.unit.test_router import synthetic

AREA = "tables"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    data, _ = synthetic(3, n_tasks=2, per_task=4)
    return data.save(tmp_path_factory.mktemp("store") / "s.parquet")


def _with_meta(store, tmp_path, raw: bytes):
    import pyarrow.parquet as pq

    table = pq.read_table(store)
    meta = dict(table.schema.metadata or {})
    meta[b"benchroute"] = raw
    out = tmp_path / "s.parquet"
    pq.write_table(table.replace_schema_metadata(meta), out)
    return out


INVALID = r"s\.parquet: parquet metadata 'benchroute' is invalid: "
META = r"s\.parquet: parquet metadata 'benchroute': "


@pytest.mark.parametrize("raw, pattern", [
    (b"{not json", META + r"invalid JSON at line 1 column 2"),
    (b"\xff\xfe", META + r"not UTF-8 text \(invalid start byte at byte 0\)"),
    (b"[" * 100_000, META + r"invalid JSON: nested too deeply"),
    (b'{"format_version": NaN}', META + r"invalid JSON: NaN is not a number JSON allows"),
    (b"[1, 2]", INVALID + r"expected an object, got list"),
    (b'"text"', INVALID + r"expected an object, got str"),
    (json.dumps({"format_version": "abc"}).encode(), META + r"field 'format_version' is 'abc', expected an integer >= 0"),
    (json.dumps({"format_version": 1.5}).encode(), META + r"field 'format_version' is 1\.5, expected an integer >= 0"),
    (json.dumps({"format_version": None}).encode(), META + r"field 'format_version' is None, expected an integer >= 0"),
    (json.dumps({"format_version": -1}).encode(), META + r"field 'format_version' is -1, expected an integer >= 0"),
    (json.dumps({"format_version": 1, "report": [1]}).encode(), INVALID + r"field 'report'"),
    (json.dumps({"format_version": 1, "report": {"counts": {"x": "many"}}}).encode(),
     INVALID + r"field 'report'.*integer counts"),
    (json.dumps({"format_version": 1, "report": {"counts": {"x": 1.5}}}).encode(), INVALID),
    (json.dumps({"format_version": 1, "report": {"counts": [1]}}).encode(), INVALID),
    (json.dumps({"format_version": 1, "report": {"skipped": [["a"]]}}).encode(), INVALID),
    (json.dumps({"format_version": 1, "report": {"skipped": "ab"}}).encode(), INVALID),
    (json.dumps({"format_version": 1, "report": {"metrics": [["a", "b"]]}}).encode(), INVALID),
    (json.dumps({"format_version": 1, "report": {"warnings": "w"}}).encode(), INVALID),
], ids=["invalid", "not-utf8", "deep", "nan", "list", "string", "version-str", "version-float",
        "version-null", "version-negative", "report-list", "count-str", "count-float",
        "counts-list", "skipped-single", "skipped-str", "metrics-list", "warnings-str"])
def test_bad_store_metadata(corpus, store, tmp_path, raw, pattern):
    path = _with_meta(store, tmp_path, raw)
    assert corpus(AREA, "error", lambda: BenchmarkData.load(path), match=pattern)


def test_newer_store_format(corpus, store, tmp_path):
    path = _with_meta(store, tmp_path, json.dumps({"format_version": 99}).encode())
    assert corpus(AREA, "error", lambda: BenchmarkData.load(path),
                  match=r"field 'format_version': store format 99 is newer than this benchroute "
                        r"reads \(1\); upgrade benchroute")


def test_good_store_metadata_round_trips(corpus, store):
    assert corpus(AREA, "right", lambda: BenchmarkData.load(store),
                  check=lambda d: d.n_instances == 8)


@pytest.mark.parametrize("size", [200_000, 2_000_000], ids=["200k", "2M"])
def test_csv_cell_over_the_csv_module_limit(corpus, tmp_path, size):
    long = "word " * (size // 5)
    rows = [("d", f"q{i}", long if i == 0 else f"short {i}", "m1", i % 2, i % 2) for i in range(4)]
    pd.DataFrame(rows, columns=["dataset", "instance_id", "text", "model", "score", "correct"]
                 ).to_csv(tmp_path / "t.csv", index=False)
    assert corpus(AREA, "right", lambda: load(tmp_path / "t.csv"),
                  check=lambda d: max(map(len, d.instances()["text"])) == len(long.strip()))


def test_price_table_cell_over_the_limit(corpus, tmp_path):
    (tmp_path / "p.csv").write_text("model,input,output\n" + "m" * 200_000 + ",1,2\n")
    assert corpus(AREA, "right", lambda: load_prices(tmp_path / "p.csv"),
                  check=lambda p: len(next(iter(p))) == 200_000)


def test_csv_with_nul_byte(corpus, tmp_path):
    (tmp_path / "p.csv").write_bytes(b"model,input,output\nm\x00,1,2\n")
    assert corpus(AREA, "right", lambda: load_prices(tmp_path / "p.csv"),
                  check=lambda p: list(p) == ["m\x00"])
