"""fit / select / route on the command line, in-process."""

from __future__ import annotations

import json
import re

import pytest

from benchroute.cli import main
from benchroute.router import Router
from tests.unit.test_router import synthetic


@pytest.fixture
def router_dir(tmp_path):
    data, _ = synthetic(11)
    Router(alphas=(0.0, 0.2), encoder="hashing-64-12", cache_dir=str(tmp_path / "cache")).fit(data).save(tmp_path / "r")
    return tmp_path / "r"


def test_select_and_route(router_dir, tmp_path, capsys):
    texts = tmp_path / "task.lines"  # no .txt: a line starting with '{' is JSON
    texts.write_text("task 1 input 1\n\ntask 1 input 2\n" + json.dumps({"text": "task 1 input 3"}) + "\n")
    assert main(["select", str(texts), "--router", str(router_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_examples"] == 3 and out["model"] in ("m0", "m1", "m2")
    assert set(out["scores"]["m0"]) >= {"S1", "S2", "S3", "p_hat", "bma"}

    labeled = tmp_path / "lab.jsonl"
    labeled.write_text(json.dumps({"text": "task 1 input 9", "labels": {"m0": 1, "m2": 0}}) + "\n")
    assert main(["select", str(texts), "--router", str(router_dir), "--labeled", str(labeled)]) == 0
    out = capsys.readouterr().out
    assert "p_labeled" in out and "chosen:" in out and "1 labelled" in out

    assert main(["route", str(texts), "--router", str(router_dir), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["text"] for x in lines] == ["task 1 input 1", "task 1 input 2", "task 1 input 3"]
    assert main(["route", str(texts), "--router", str(router_dir), "--candidates", "m1"]) == 0
    assert all(line.startswith("m1\t") for line in capsys.readouterr().out.splitlines())
    # without costs a cost-free policy routes and says the cost is unknown (it printed 0)
    assert main(["route", str(texts), "--router", str(router_dir), "--policy", "best",
                 "--json"]) == 0
    assert [json.loads(x)["cost"] for x in capsys.readouterr().out.splitlines()] == [None] * 3
    assert main(["route", str(texts), "--router", str(router_dir), "--policy", "best"]) == 0
    assert all("\tcost=none\t" in line for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("empty", "no input texts"),
        ("badjson", "line 1 has no string field 'text'"),
        ("unknown_label", r"unknown model\(s\) \['gpt-9'\]"),
        ("label_out_of_range", r"l\.jsonl: record 2\b.*'m0'.* 3"),
        ("not_router", "not a saved benchroute router"),
        ("bad_candidate", r"unknown model\(s\) \['zz'\]"),
    ],
)
def test_cli_errors(router_dir, tmp_path, capsys, setup, match):
    texts = tmp_path / "t.txt"
    texts.write_text("task 0 input 1\n")
    args = ["select", str(texts), "--router", str(router_dir)]
    if setup == "empty":
        texts.write_text("\n\n")
    elif setup == "badjson":
        texts = tmp_path / "t.jsonl"
        texts.write_text('{"txt": "x"}\n')
        args[1] = str(texts)
    elif setup == "unknown_label":
        lab = tmp_path / "l.jsonl"
        lab.write_text(json.dumps({"text": "x", "labels": {"gpt-9": 1}}))
        args += ["--labeled", str(lab)]
    elif setup == "label_out_of_range":
        lab = tmp_path / "l.jsonl"
        lab.write_text(json.dumps({"text": "x", "labels": {"m0": 1}}) + "\n"
                       + json.dumps({"text": "y", "labels": {"m0": 3}}) + "\n")
        args += ["--labeled", str(lab)]
    elif setup == "not_router":
        args = ["select", str(texts), "--router", str(tmp_path)]
    elif setup == "bad_candidate":
        args += ["--candidates", "zz"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("benchroute: error:")
    import re
    assert re.search(match, err)


def test_fit_command(tmp_path, capsys):
    f = tmp_path / "t.csv"
    rows = ["text,dataset,a,b"] + [f"question {i} about {'cats' if i < 6 else 'dogs'},{'c' if i < 6 else 'd'},{i % 2},{1 - i % 2}" for i in range(12)]
    f.write_text("\n".join(rows) + "\n")
    out = tmp_path / "r"
    assert main(["fit", str(f), "--out", str(out), "--model", "hashing-32-12", "--store",
                 str(tmp_path / "c"), "--alphas", "0", "0.2"]) == 0
    assert "saved to" in capsys.readouterr().out
    back = Router.load(out)
    assert back.models_ == ["a", "b"] and tuple(back.alphas) == (0.0, 0.2)


def test_help_shows_defaults_and_encoder_option(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "--encoder ENCODER" in out and "(default: all-mpnet-base-v2)" in out
    assert "(default: 5)" in out and "(default: 3)" in out
    assert re.search(r"--model\b(?!s)", out) is None  # the deprecated spelling is not shown


def test_deprecated_model_option_still_names_the_encoder(tmp_path):
    from benchroute.cli import build_parser

    args = build_parser().parse_args(["fit", "x.csv", "--out", str(tmp_path / "r"), "--model", "hashing-8-12"])
    assert args.encoder == "hashing-8-12"
    args = build_parser().parse_args(["embed", "x.csv"])
    assert args.encoder == "all-mpnet-base-v2"


def test_route_reports_ood_and_falls_back(router_dir, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("task 1 input 1\nzebra quartz fjord nymph vexed\n")
    args = ["route", str(texts), "--router", str(router_dir), "--json"]
    assert main([*args, "--policy", "best", "--ood-alpha", "0.05"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["ood_fallback"] for x in lines] == [False, True]
    assert [x["in_pool"] for x in lines] == [True, False]      # "task 1 input 1" is a pool text
    assert lines[0]["ood_p"] > 0.05 > lines[1]["ood_p"]
    bma = Router.load(router_dir).bma_
    assert lines[1]["model"] == bma
    assert main([*args, "--ood-alpha", "0.05"]) == 0
    assert [json.loads(x)["model"] for x in capsys.readouterr().out.splitlines()][1] == bma
    assert main([*args, "--ood-alpha", "1.5"]) == 2
    assert "ood_alpha == 1.5, expected a number in (0, 1)" in capsys.readouterr().err


def test_select_counts_and_keeps_near_duplicates(router_dir, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("task 1 input 1\ntask 1 input 2\n")
    args = ["select", str(texts), "--router", str(router_dir), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_in_pool"] == 2 and not out["duplicates_kept"]
    assert main([*args, "--keep-duplicates"]) == 0
    assert json.loads(capsys.readouterr().out)["duplicates_kept"]


def test_router_options_reach_the_router_and_old_spellings_warn(tmp_path, capsys, caplog):
    data, _ = synthetic(12)
    f = tmp_path / "d.csv"
    data.frame.to_csv(f, index=False)
    out = tmp_path / "r"
    assert main(["fit", str(f), "--out", str(out), "--encoder", "hashing-32-12", "--cache-dir",
                 str(tmp_path / "c"), "--eta", "0.3", "--bandwidth", "0.2", "--no-tune",
                 "--predictor-threshold", "0.4", "--alphas", "0", "--repeats", "1"]) == 0
    params = Router.load(out).get_params()
    assert (params["eta"], params["bandwidth"], params["tune"], params["threshold"]) == \
        (0.3, 0.2, False, 0.4)
    assert params["k"] == Router().k                         # untouched: the library's default
    caplog.clear()
    assert main(["fit", str(f), "--out", str(tmp_path / "r2"), "--model", "hashing-32-12",
                 "--store", str(tmp_path / "c"), "--alphas", "0", "--repeats", "1"]) == 0
    assert "--model is deprecated; use --encoder" in caplog.text
    assert "--store is deprecated; use --cache-dir" in caplog.text
    assert Router.load(tmp_path / "r2").get_params()["encoder"] == "hashing-32-12"


def test_names_holding_commas_are_quoted_as_in_csv(tmp_path, capsys):
    """--candidates and inline --prices split on commas by CSV's rule, so a model whose name
    holds a comma is nameable quoted; a line break in the option is a clear error."""
    from benchroute.data.store import BenchmarkData

    data, _ = synthetic(11)
    frame = data.frame.replace({"model": {"m1": "org/m,1"}})
    Router(alphas=(0.0,), encoder="hashing-64-12", cache_dir=str(tmp_path / "cache")).fit(
        BenchmarkData(frame)).save(tmp_path / "r")
    texts = tmp_path / "t.txt"
    texts.write_text("task 1 input 1\ntask 2 input 2\n")
    base = ["route", str(texts), "--router", str(tmp_path / "r")]
    assert main(base + ["--candidates", '"org/m,1"']) == 0
    assert all(line.startswith("org/m,1\t") for line in capsys.readouterr().out.splitlines())
    assert main(base + ["--candidates", ' m0 , "org/m,1"', "--policy", "cheapest_within",
                        "--prices", '"org/m,1"=1, m0=5', "--param", "max_quality_drop=1",
                        "--json"]) == 0
    assert {json.loads(x)["model"] for x in capsys.readouterr().out.splitlines()} == {"org/m,1"}
    assert main(base + ["--candidates", "m0\nm2"]) == 2
    assert "a line break outside quotes" in capsys.readouterr().err
    assert main(base + ["--candidates", "org/m,1"]) == 2  # unquoted: two names, both unknown
    assert "unknown model(s) ['org/m', '1']" in capsys.readouterr().err
    # a quote left open was closed at the end of the text, which read '"org/m,1' as one name
    assert main(base + ["--candidates", '"org/m,1, m0']) == 2
    assert "a quote is not closed" in capsys.readouterr().err
    assert main(base + ["--candidates", "m0", "--prices", 'm0=1, "org/m,1=2']) == 2
    assert "--prices" in capsys.readouterr().err


def test_holdout_refuses_what_it_would_ignore(router_dir, tmp_path, capsys):
    """select --holdout runs the demo on --pack; a texts file or --router given with it were
    silently ignored."""
    texts = tmp_path / "t.txt"
    texts.write_text("x\n")
    assert main(["select", str(texts), "--holdout", "anatomy", "--router", str(router_dir)]) == 2
    assert "a texts file and --router would be ignored" in capsys.readouterr().err


def test_lines_end_at_newlines_only(router_dir, tmp_path, capsys):
    """A prompt holding U+2028 or a form feed is one line, and JSONL written with
    ensure_ascii=False keeps such a character raw inside a string: splitlines() made two
    inputs of each and shifted the rest. A blank JSONL text names its file and line."""
    texts = tmp_path / "t.lines"  # no .txt: a line starting with '{' is JSON
    texts.write_text("first\nsecond\u2028continued\r\nthird\x0cpage\n"
                     + json.dumps({"text": "a\u2028b\x85c"}, ensure_ascii=False) + "\n",
                     encoding="utf-8")
    assert main(["route", str(texts), "--router", str(router_dir), "--json"]) == 0
    got = [json.loads(x)["text"] for x in capsys.readouterr().out.splitlines()]
    assert got == ["first", "second\u2028continued", "third\x0cpage", "a\u2028b\x85c"]
    texts.write_bytes(b"one\rtwo\r\nthree\r")  # old Mac line ends still end lines
    assert main(["route", str(texts), "--router", str(router_dir), "--json"]) == 0
    got = [json.loads(x)["text"] for x in capsys.readouterr().out.splitlines()]
    assert got == ["one", "two", "three"]
    texts.write_text('{"text": "a"}\n\n{"text": "   "}\n')
    assert main(["route", str(texts), "--router", str(router_dir)]) == 2
    assert "t.lines: line 3: field 'text' is empty" in capsys.readouterr().err


def test_route_out_never_replaces_the_texts_file(router_dir, tmp_path, capsys, monkeypatch):
    texts = tmp_path / "in.txt"
    texts.write_text("task 1 input 1\n")
    assert main(["route", str(texts), "--router", str(router_dir), "--out", str(texts)]) == 2
    assert "is the texts file" in capsys.readouterr().err
    assert texts.read_text() == "task 1 input 1\n"
    with texts.open() as stdin:  # `route - --out in.txt < in.txt`
        monkeypatch.setattr("sys.stdin", stdin)
        assert main(["route", "-", "--router", str(router_dir), "--out", str(texts)]) == 2
    assert "is the texts file" in capsys.readouterr().err
    assert texts.read_text() == "task 1 input 1\n"
    assert main(["route", str(texts), "--router", str(router_dir), "--out",
                 str(texts / "x.parquet")]) == 2
    assert "in.txt is not a folder" in capsys.readouterr().err


def test_add_results_and_remove_model_on_the_command_line(tmp_path, capsys):
    """The router-changing methods each have a command: a pool model's error named them, and
    the command line had none."""
    data, _ = synthetic(11)
    frame = data.frame[["dataset", "instance_id", "text", "model", "correct"]]
    frame[frame["model"] != "m2"].to_csv(tmp_path / "known.csv", index=False)
    frame[frame["model"] == "m2"].to_csv(tmp_path / "m2.csv", index=False)
    r = tmp_path / "r"
    common = ["--encoder", "hashing-64-12", "--cache-dir", str(tmp_path / "cache")]
    assert main(["fit", str(tmp_path / "known.csv"), "--out", str(r), "--alphas", "0",
                 *common]) == 0
    assert main(["add-results", str(tmp_path / "m2.csv"), "--router", str(r)]) == 0
    assert "models m0, m1, m2; saved to" in capsys.readouterr().out
    assert Router.load(r).models_ == ["m0", "m1", "m2"]
    assert main(["remove-model", "--router", str(r), "--name", "m1"]) == 0
    assert "removed m1; models: m0, m2" in capsys.readouterr().out
    assert Router.load(r).models_ == ["m0", "m2"]
    assert main(["remove-model", "--router", str(r), "--name", "zz"]) == 2
    assert "zz" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["probe", "--router", "{r}", "--n", "3", "--out", "{r}/router.json"],
    ["probe", "--router", "{r}", "--n", "3", "--out", "{r}/index/index.json"],
    ["calibrate", "--router", "{r}", "--prompts", "{t}", "--strong-share", "0.3", "--out",
     "{r}/pool.npz"],
    ["route", "{t}", "--router", "{r}", "--out", "{r}/pool.npz"],
])
def test_outputs_never_replace_the_routers_own_files(router_dir, tmp_path, capsys, command):
    """probe, calibrate and route --out wrote over router.json, pool.npz or the index, and the
    router no longer loaded."""
    texts = tmp_path / "t.txt"
    texts.write_text("task 1 input 1\ntask 2 input 2\n")
    before = (router_dir / "router.json").read_bytes()
    argv = [a.format(r=router_dir, t=texts) for a in command]
    assert main(argv) == 2
    assert "is one of the router's own files" in capsys.readouterr().err
    assert (router_dir / "router.json").read_bytes() == before
    Router.load(router_dir)


def test_calibrate_takes_partial_prices_for_a_threshold_and_one_source_of_costs(router_dir,
                                                                               tmp_path, capsys):
    """Found by a review of the cost surfaces: a threshold, which reads no cost, was refused
    with prices for some candidates; --prices beside --upstreams was silently ignored when the
    upstreams file had costs (serve uses the file's)."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"task {i % 3} input {i}\n" for i in range(30)))
    base = ["calibrate", "--router", str(router_dir), "--prompts", str(prompts),
            "--out", str(tmp_path / "c.json")]
    assert main(base + ["--policy", "threshold", "--strong-share", "0.3", "--prices",
                        "m0=1,m1=2", "--strong", "m0", "--weak", "m1"]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["costs"] is None
    up = tmp_path / "up.yaml"
    up.write_text("models:\n" + "".join(f"  m{i}: {{base_url: 'http://127.0.0.1:1/v1', "
                                        f"model: m{i}, cost: {i + 1}, "
                                        "api_key_env: BENCHROUTE_TEST_UNSET_KEY}\n"
                                        for i in range(3)))
    capsys.readouterr()
    assert main(base + ["--policy", "budget", "--mean-cost", "2", "--upstreams", str(up),
                        "--prices", "m0=1,m1=2,m2=3"]) == 2
    assert "--prices and --upstreams both give costs" in capsys.readouterr().err
    # the costs alone are read: no upstream key is needed to calibrate (serve needs them)
    assert main(base + ["--policy", "budget", "--mean-cost", "2", "--upstreams", str(up)]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["costs"] == {"m0": 1.0, "m1": 2.0,
                                                                      "m2": 3.0}


def test_quiet_hides_the_embedding_bars_of_every_command(tmp_path, capfd):
    """From fuzzing the command line: -q hid the bar of `embed` only; fit's and route's
    embeddings drew theirs on stderr."""
    f = tmp_path / "t.csv"
    rows = ["text,dataset,a,b"] + [f"question {i} about {'cats' if i < 200 else 'dogs'},"
                                   f"{'c' if i < 200 else 'd'},{i % 2},{1 - i % 2}"
                                   for i in range(400)]
    f.write_text("\n".join(rows) + "\n")
    for quiet in ([], ["-q"]):
        home = tmp_path / f"c{len(quiet)}"
        texts = tmp_path / f"texts{len(quiet)}.txt"  # new to the default cache each time
        texts.write_text("\n".join(f"new question {i} {quiet}" for i in range(300)) + "\n")
        assert main([*quiet, "fit", str(f), "--out", str(tmp_path / f"r{len(quiet)}"),
                     "--encoder", "hashing-32-12", "--cache-dir", str(home), "--alphas", "0",
                     "--no-tune"]) == 0
        assert main([*quiet, "route", str(texts), "--router", str(tmp_path / f"r{len(quiet)}"),
                     "--out", str(tmp_path / f"o{len(quiet)}.parquet")]) == 0
        err = capfd.readouterr().err
        assert ("embedding" in err) == (not quiet), err[-300:]


def test_what_fuzzing_the_command_line_found(router_dir, tmp_path, capsys):
    """Each of these exited 0 having done something the user did not ask (overwritten an input,
    filled the current folder, ignored an option, kept the last of two values) or ended in an
    internal error; each is now exit 2 with one line naming the option or file."""
    texts = tmp_path / "t.txt"
    texts.write_text("task 0 input 1\ntask 1 input 2\n")
    wide = tmp_path / "wide.csv"
    wide.write_text("dataset,text,m1,m2\n" + "".join(f"d{i % 2},q {i},{i % 2},1\n" for i in range(8)))
    long = tmp_path / "long.csv"
    long.write_text("dataset,text,model,score\n" + "".join(f"d{i % 2},q {i},m{i % 3},1\n"
                                                           for i in range(9)))
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"text": "task 0 input 1", "labels": {"m0": 1}, "labels": {"m1": 0}}\n')
    before = texts.read_text()
    cases = [
        (["calibrate", "--router", str(router_dir), "--prompts", str(texts), "--strong-share",
          "0.5", "--strong", "m0", "--weak", "m1", "--out", str(texts)],
         r"--out .*t\.txt is the --prompts file"),
        (["probe", "--router", str(router_dir), "--n", "2", "--out",
          str(router_dir / "calibration.json")], r"is one of the router's own files"),
        (["embed", str(wide), "--encoder", "hashing-32-12", "--cache-dir", ""],
         r"argument --cache-dir: an empty path"),
        (["route", str(texts), "--router", str(router_dir), "--out", ""],
         r"argument --out: an empty path"),
        (["select", str(texts), "--router", str(router_dir), "--labeled", ""],
         r"argument --labeled: an empty path"),
        (["select", str(texts), "--router", str(router_dir), "--labeled", str(dup)],
         r"dup\.jsonl: line 1: .*key 'labels' appears twice"),
        (["reproduce", str(wide), "--encoder", "hashing-16-11", "--no-plots", "--out",
          str(tmp_path / "rep"), "--task-repeats", "99999999999999999999"],
         r"--task-repeats 99999999999999999999: expected an integer in \[1, 10000\]"),
        (["reproduce", str(wide), "--encoder", "hashing-16-11", "--no-plots", "--out",
          str(tmp_path / "rep"), "--task-alphas", "0.1", "0.1"], r"a fraction given twice"),
        (["inspect", str(wide), "--column", "score=nope"],
         r"score='nope' name a long table's columns; this table is wide"),
        (["inspect", str(long), "--models", "m1"], r"models= picks a wide table's score columns"),
        (["inspect", str(long), "--label-threshold", "d0=0.3;d0=0.9"],
         r"--label-threshold: dataset 'd0' is given twice"),
    ]
    def run(args):  # type: ignore[no-untyped-def]
        try:
            return main(args)
        except SystemExit as exc:  # argparse's own refusal of an option's value
            return exc.code

    for args, match in cases:
        assert run(args) == 2, args
        err = capsys.readouterr().err
        assert re.search(match, err), (args, err)
        assert err.count("\n") == 1 or "usage:" in err, err  # one line (argparse adds its usage)
    assert texts.read_text() == before and not (router_dir / "calibration.json").exists()
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("options, match", [
    (["--release", "v1.0.0"], r"--release without --fetch: it chooses the HELM runs"),
    (["--runs", "runs.json"], r"--runs without --fetch: it chooses"),
    (["--release", "v1", "--runs", "runs.json"], r"--release and --runs without --fetch: they"),
    (["--fetch", "https://example.invalid/out", "--release", "v1", "--runs", "runs.json"],
     r"--release and --runs both name the runs to fetch; give one"),
    (["--fetch", "", "--runs", "runs.json"], r"base URL must start with http:// or https://"),
])
def test_reproduce_refuses_fetch_options_it_would_ignore(tmp_path, capsys, monkeypatch, options,
                                                         match):
    """Left as found by the fuzzing of the command line: --release or --runs without --fetch
    (and --release beside --runs, or --fetch '') were ignored and the protocol ran on the
    source."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs.json").write_text("{}")
    wide = tmp_path / "wide.csv"
    wide.write_text("dataset,text,m1,m2\n" + "".join(f"d{i % 2},q {i},{i % 2},1\n" for i in range(8)))
    out = tmp_path / "rep"
    assert main(["reproduce", str(wide), "--encoder", "hashing-16-11", "--no-plots", "--out",
                 str(out), *options]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and err.count("\n") == 1, err
    assert not out.exists()


def test_table_options_apply_to_the_tables_of_their_layout(tmp_path, capsys):
    """From a review: one --column score=... for a wide and a long table read together was
    refused for the wide one once options of the other layout were; each table now takes the
    options of its layout, and an option that no table takes is still refused."""
    wide = tmp_path / "wide.csv"
    wide.write_text("dataset,text,m1,m2\n" + "".join(f"w{i % 2},wide q {i},{i % 2},1\n"
                                                     for i in range(8)))
    long = tmp_path / "long.csv"
    long.write_text("dataset,text,model,acc\n" + "".join(f"l{i % 2},long q {i},m{1 + i % 2},{i % 2}\n"
                                                         for i in range(8)))
    args = ["--encoder", "hashing-16-12", "--alphas", "0", "--no-tune", "--cache-dir",
            str(tmp_path / "c")]
    assert main(["fit", str(wide), str(long), "--column", "score=acc", "--out",
                 str(tmp_path / "r"), *args]) == 0
    assert sorted(Router.load(tmp_path / "r").tasks_) == ["l0", "l1", "w0", "w1"]
    capsys.readouterr()
    assert main(["fit", str(long), str(long), "--column", "score=acc", "--models", "m1", "--out",
                 str(tmp_path / "r2"), *args]) == 2
    assert "models= picks a wide table's score columns" in capsys.readouterr().err


def test_a_long_table_with_a_misnamed_model_column_is_not_read_as_wide(tmp_path, capsys):
    """From a review: with one --column model=llm for two long tables, the one whose model
    column is named otherwise was read again as wide, its score column becoming a model."""
    for name, col in (("a.csv", "llm"), ("b.csv", "system")):
        (tmp_path / name).write_text(f"dataset,text,{col},acc\n" + "".join(
            f"d{i % 2},q {name} {i},m{1 + i % 2},{i % 2}\n" for i in range(8)))
    assert main(["fit", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--column",
                 "model=llm", "--column", "score=acc", "--encoder", "hashing-16-12", "--alphas",
                 "0", "--no-tune", "--out", str(tmp_path / "r"), "--cache-dir",
                 str(tmp_path / "c")]) == 2
    assert "b.csv: column(s) ['acc'] named by model=, score= are here, but no model column 'llm'" \
        in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
