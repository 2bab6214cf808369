"""The canonical store: validation, views, transforms and persistence."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchroute import BenchmarkData, DataError
from benchroute.exceptions import FormatVersionError


def _frame(**overrides):
    rows = [
        ("a", "1", "x one", "m1", 1.0, 1.0),
        ("a", "1", "x one", "m2", 0.0, 0.0),
        ("a", "2", "x two", "m1", 0.0, 0.0),
        ("b", "1", "y one", "m1", 1.0, 1.0),
        ("b", "1", "y one", "m2", 1.0, 1.0),
    ]
    df = pd.DataFrame(rows, columns=["dataset", "instance_id", "text", "model", "score", "correct"])
    for k, v in overrides.items():
        df[k] = v
    return df


def test_views():
    data = BenchmarkData(_frame())
    assert data.datasets == ["a", "b"] and data.models == ["m1", "m2"]
    assert data.n_instances == 3
    mat = data.correctness_matrix()
    assert list(mat.index) == [("a", "1"), ("a", "2"), ("b", "1")]
    assert np.isnan(mat.loc[("a", "2"), "m2"])
    acc = data.dataset_accuracy()
    assert acc.loc["a", "m1"] == 0.5 and acc.loc["b", "m2"] == 1.0
    # unweighted mean over datasets: m1 = (0.5 + 1) / 2, m2 = (0 + 1) / 2
    assert data.model_accuracy().to_dict() == {"m1": 0.75, "m2": 0.5}
    miss = data.missing_cells()
    assert miss.to_dict(orient="records") == [{"model": "m2", "missing": 1, "datasets": ["a"]}]
    assert list(data.instances()["text"]) == ["x one", "x two", "y one"]


def test_subset_exclude_concat():
    data = BenchmarkData(_frame())
    assert data.subset(["a"]).datasets == ["a"]
    assert data.exclude(["a"]).datasets == ["b"]
    assert data.subset(models=["m2"]).models == ["m2"]
    with pytest.raises(DataError, match=r"unknown dataset\(s\) \['zzz'\]"):
        data.subset(["zzz"])
    both = BenchmarkData.concat([data.subset(["a"]), data.subset(["b"])])
    assert len(both) == len(data)
    with pytest.raises(DataError, match="share a \\(dataset, instance_id, model\\) key"):
        BenchmarkData.concat([data, data])


def test_nan_rows_dropped_and_counted():
    df = _frame()
    df.loc[0, "score"] = np.nan
    df.loc[1, "correct"] = np.nan
    data = BenchmarkData(df)
    assert len(data) == 3
    assert data.report.counts["nan_dropped"] == 2


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.drop(columns=["text"]), r"missing column\(s\) \['text'\]"),
        (lambda d: d.assign(correct=[1.0, 0.0, 2.0, 1.0, 1.0]), r"'correct' must lie in \[0, 1\]; got 2 for"),
        (lambda d: d.assign(score=["1", "x", "0", "1", "1"]), r"column 'score' must be numeric; found 'x'"),
        (lambda d: pd.concat([d, d.iloc[[0]]]), r"2 rows share a \(dataset, instance_id, model\) key"),
        (lambda d: d.iloc[0:0], r"no benchmark results \(0 rows\)"),
        (lambda d: d.assign(score=np.nan), "every row had a NaN score"),
    ],
)
def test_validation_errors(mutate, match):
    with pytest.raises(DataError, match=match):
        BenchmarkData(mutate(_frame()), source="t.csv")


def test_save_load_roundtrip(tmp_path):
    df = _frame()
    df.loc[0, "score"] = np.nan
    data = BenchmarkData(df)
    path = data.save(tmp_path / "store.parquet")
    back = BenchmarkData.load(path)
    pd.testing.assert_frame_equal(back.frame, data.frame)
    assert back.report.counts == {"nan_dropped": 1}


def test_newer_store_format_refused(tmp_path):
    import pyarrow.parquet as pq

    path = BenchmarkData(_frame()).save(tmp_path / "store.parquet")
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[b"benchroute"] = json.dumps({"format_version": 99, "report": {}}).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(FormatVersionError, match="store format 99"):
        BenchmarkData.load(path)


def test_not_parquet(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match="not a readable parquet file"):
        BenchmarkData.load(bad)


def _rows_frame(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=["dataset", "instance_id", "text", "model", "score", "correct"])


def test_text_identity_normalises_and_skips_conflicts():
    from benchroute.data.store import BenchmarkData
    from benchroute.exceptions import DataError

    rows = [
        ("d", "1", "What?\r\nA. x\r\n", "m", 1, 1), ("d", "1", "What?\nA. x", "n", 0, 0),
        ("d", "2", "Shared prefix then one", "m", 1, 1), ("d", "2", "Shared prefix then two", "n", 0, 0),
        ("d", "3", "ok", "m", 1, 1), ("d", "3", "ok", "n", 1, 1),
    ]
    data = BenchmarkData(_rows_frame(rows))
    assert data.n_instances == 2 and data.report.counts == {"text_conflict_skipped": 1}
    assert "first difference at character 19" in data.report.skipped[0][1]
    assert data.instances()["text"].tolist() == ["What?\nA. x", "ok"]
    with pytest.raises(DataError, match="first difference at character 19: 'Shared prefix then one' vs 'Shared prefix then two'"):
        BenchmarkData(_rows_frame(rows), strict=True)


def test_degenerate_labels_warn_with_the_fix():
    from benchroute.data.store import BenchmarkData

    rows = [("rouge", str(i), f"q{i}", m, 0.2, 0) for i in range(3) for m in ("a", "b")]
    rows += [("ok", str(i), f"p{i}", m, float(i % 2), i % 2) for i in range(3) for m in ("a", "b")]
    data = BenchmarkData(_rows_frame(rows))
    assert len(data.report.warnings) == 1
    assert "dataset 'rouge': every label is 0" in data.report.warnings[0]
    assert "threshold={'rouge': ...}" in data.report.warnings[0]
