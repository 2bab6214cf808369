"""The CLI, called in-process: exit codes and output."""

from __future__ import annotations

import json

import numpy as np

from benchroute.cli import main
from benchroute.embedding import text_key


def test_inspect_pack(capsys):
    assert main(["inspect", "pack:helm_mmlu_llama3"]) == 0
    out = capsys.readouterr().out
    assert "5 models x 57 datasets x 1140 instances" in out
    assert "groq/llama3-70b-8192: 40 instances in 2 datasets" in out


def test_inspect_json(capsys, tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("text,a,b\nq1,1,0\nq2,1,1\n")
    assert main(["inspect", str(f), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n_models"] == 2 and s["models"][0] == {"model": "a", "accuracy": 1.0, "datasets": 1, "results": 2}


def test_errors_are_one_line_exit_2(capsys, tmp_path):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("benchroute: error:") and "no such file" in err
    assert "Traceback" not in err


def test_embed_uses_imported_vectors(capsys, tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("text,a,b\nq1,1,0\nq2,1,1\n")
    npz = tmp_path / "pre.npz"
    from benchroute.embedding import HashingEncoder

    np.savez(npz, sha256=np.array([text_key("q1"), text_key("q2")]),
             embedding=HashingEncoder(64, (1, 2)).encode(["q1", "q2"]).astype(np.float16))
    store = ["--store", str(tmp_path / "store"), "--encoder", "hashing-64-12"]
    code = main(["-q", "embed", str(f), *store, "--import", str(npz)])
    assert code == 0
    out = capsys.readouterr().out
    assert "imported 2 new embeddings" in out and "2 inputs: 2 cached, 0 embedded" in out
    # a file of another encoder's vectors (here another dimension's hashing, cut to 64) is
    # refused before anything is written: it was stored under this encoder's name
    other = tmp_path / "other.npz"
    np.savez(other, sha256=np.array([text_key("q1"), text_key("q2")]),
             embedding=HashingEncoder(128, (1, 2)).encode(["q1", "q2"])[:, :64] + 0.1)
    store = ["--store", str(tmp_path / "store2"), "--encoder", "hashing-64-12"]
    assert main(["-q", "embed", str(f), *store, "--import", str(other)]) == 2
    assert "not vectors of 'hashing-64-12'" in capsys.readouterr().err
    assert not list((tmp_path / "store2").rglob("shard-*.npz"))


def test_inspect_shows_each_warning_once(capsys, caplog, tmp_path):
    """Issue 18: the report's warnings were printed in the summary and logged as well."""
    f = tmp_path / "t.csv"
    f.write_text("text,a,b\nq1,1,1\nq2,1,1\n")  # every label 1: a degenerate-labels warning
    assert main(["inspect", str(f)]) == 0
    logged = [r.getMessage() for r in caplog.records if "every label is 1" in r.getMessage()]
    assert capsys.readouterr().out.count("every label is 1") == 1 and logged == []


def test_global_flags_after_the_subcommand():
    """``benchroute fit ... -q`` was refused (unrecognized arguments)."""
    from benchroute.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["fit", "d.csv", "--out", "r", "-q"]).quiet is True
    assert parser.parse_args(["-q", "fit", "d.csv", "--out", "r"]).quiet is True
    assert parser.parse_args(["fit", "d.csv", "--out", "r"]).quiet is False
    assert parser.parse_args(["model", "install", "--debug"]).debug is True
