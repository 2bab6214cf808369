"""Cost-aware routing with bad parameters, costs, prices and token counts (issue 18, classes 1–3).

Each case asserts its outcome: a BenchrouteError naming the parameter or the field, or the right
result. Parameters go through ``Router.route``/``select_model`` and the CLI, costs through the
policies, the router and the stores.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchroute import policies as pol
from benchroute import routing
from benchroute.data.store import BenchmarkData
from benchroute.embedding import HashingEncoder
from benchroute.router import Router
from tests.corpus.test_corpus_cli import CSV as CLI_CSV
from tests.unit.test_router import MODELS, synthetic

AREA = "policies"
TEXTS = [f"task 1 input {i}" for i in range(4)]
COSTS = {"m0": 3.0, "m1": 2.0, "m2": 1.0}
P = np.array([[0.9, 0.6, 0.3], [0.5, 0.55, 0.2]])


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    data, X = synthetic(5, n_tasks=3, per_task=10)
    cache = tmp_path_factory.mktemp("cache")
    return Router(alphas=(0.0,), repeats=1, encoder=HashingEncoder(8), cache_dir=str(cache),
                  tune=False).fit(data, embeddings=X)


# ---------------------------------------------------------------- policy parameters
@pytest.mark.parametrize("policy, params, pattern", [
    ("threshold", {"t": float("nan"), "strong": "m0", "weak": "m2"}, r"'threshold': t == nan"),
    ("threshold", {"t": float("inf"), "strong": "m0", "weak": "m2"}, r"t == inf"),
    ("threshold", {"t": "0.1", "strong": "m0", "weak": "m2"}, r"t == '0.1', expected a finite"),
    ("threshold", {"t": 0.0, "strong": "m1", "weak": "m1"}, r"strong and weak are the same model"),
    ("threshold", {"t": 0.0, "strong": ["m0"], "weak": "m1"}, r"strong model \['m0'\] is not among"),
    ("smallest_sufficient", {"tau": float("nan")}, r"tau == nan"),
    ("smallest_sufficient", {"tau": "abc"}, r"tau == 'abc'"),
    ("smallest_sufficient", {"tau": None}, r"tau == None"),
    ("smallest_sufficient", {"tau": True}, r"tau == True"),
    ("cheapest_within", {"max_quality_drop": -0.1},
     r"max_quality_drop == -0.1, expected a finite number >= 0"),
    ("cheapest_within", {"max_quality_drop": float("nan")}, r"max_quality_drop == nan"),
    ("budget", {"budget": float("nan")}, r"budget == nan"),
    ("budget", {"budget": -1.0}, r"budget == -1.0, expected a finite number >= 0"),
    ("budget", {"budget": [1.0]}, r"budget == \[1.0\]"),
    ("cheap", {}, r"unknown policy 'cheap'; choose one of"),
], ids=["t-nan", "t-inf", "t-str", "strong-is-weak", "strong-list", "tau-nan", "tau-str",
        "tau-none", "tau-bool", "eps-neg", "eps-nan", "budget-nan", "budget-neg", "budget-list",
        "unknown"])
def test_bad_policy_parameter(corpus, router, policy, params, pattern):
    run = lambda: router.route_table(TEXTS, policy=policy, costs=COSTS, **params)  # noqa: E731
    assert corpus(AREA, "error", run, match=pattern)


@pytest.mark.parametrize("name, params, pattern", [
    ("smallest_sufficient", {"tau": float("nan")}, r"tau == nan"),
    ("threshold", {"t": 0.0, "strong": 1, "weak": 1}, r"strong and weak are the same"),
    ("threshold", {"t": 0.0, "strong": 5, "weak": 1}, r"strong == 5, expected a column index"),
    ("threshold", {"t": 0.0, "strong": 0.0, "weak": 1}, r"strong == 0.0"),
], ids=["tau-nan", "same", "out-of-range", "float-index"])
def test_bad_parameter_through_apply_policy(corpus, name, params, pattern):
    assert corpus(AREA, "error", lambda: pol.apply_policy(name, P, None, **params), match=pattern)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"tau": 0.5}, r"\['tau'\] apply to a policy only; call route_table"),
    ({"costs": COSTS}, r"\['costs'\] apply to a policy only"),
], ids=["param", "costs"])
def test_policy_parameter_without_policy(corpus, router, kwargs, pattern):
    assert corpus(AREA, "error", lambda: router.route(TEXTS, **kwargs), match=pattern)


def test_costs_without_max_quality_drop(corpus, router):
    run = lambda: router.select_model(TEXTS, costs=COSTS)  # noqa: E731
    assert corpus(AREA, "error", run, match=r"costs are used only with max_quality_drop")


@pytest.mark.parametrize("drop, pattern", [
    (float("nan"), r"max_quality_drop == nan"), (-0.5, r"max_quality_drop == -0.5"),
    (float("inf"), r"max_quality_drop == inf"), ("0.1", r"max_quality_drop == '0.1'"),
], ids=["nan", "neg", "inf", "str"])
def test_bad_max_quality_drop(corpus, router, drop, pattern):
    run = lambda: router.select_model(TEXTS, max_quality_drop=drop, costs=COSTS)  # noqa: E731
    assert corpus(AREA, "error", run, match=pattern)


@pytest.mark.parametrize("texts, pattern", [
    (["fine", "   "], r"texts\[1\] is empty or only whitespace"),
    (["\n\t"], r"texts\[0\] is empty or only whitespace"),
    ([""], r"texts\[0\] is empty"),
], ids=["spaces", "newline-tab", "empty"])
def test_blank_texts_are_no_input(corpus, router, texts, pattern):
    assert corpus(AREA, "error", lambda: router.route(texts), match=pattern)


def test_blank_task_example(corpus, router):
    run = lambda: router.select_model(["a question", " "])  # noqa: E731
    assert corpus(AREA, "error", run, match=r"task_examples\[1\] is empty or only whitespace")


# ---------------------------------------------------------------- costs given by the caller
@pytest.mark.parametrize("costs, pattern", [
    ({"m0": "3", "m1": 2.0, "m2": 1.0}, r"cost of 'm0' == '3', expected a finite number >= 0"),
    ({"m0": None, "m1": 2.0, "m2": 1.0}, r"cost of 'm0' == None"),
    ({"m0": [3.0], "m1": 2.0, "m2": 1.0}, r"cost of 'm0' == \[3.0\]"),
    ({"m0": float("inf"), "m1": 2.0, "m2": 1.0}, r"cost of 'm0' == inf"),
    ({"m0": -1.0, "m1": 2.0, "m2": 1.0}, r"cost of 'm0' == -1.0"),
    ({"m0": float("nan"), "m1": 2.0, "m2": 1.0}, r"cost of 'm0' == nan"),
    ([3.0, "x", 1.0], r"costs must be numbers"),
    ([3.0, None, 1.0], r"costs must be numbers"),
    ([3.0, float("inf"), 1.0], r"costs must be finite and >= 0"),
    ({"m0": 3.0}, r"no cost given for model\(s\) \['m1', 'm2'\]"),
], ids=["str", "none", "list", "inf", "neg", "nan", "seq-str", "seq-none", "seq-inf", "missing"])
def test_bad_costs(corpus, router, costs, pattern):
    run = lambda: router.route_table(TEXTS, policy="budget", budget=1.0, costs=costs)  # noqa: E731
    assert corpus(AREA, "error", run, match=pattern)


@pytest.mark.parametrize("c, pattern", [
    (np.array([1.0, np.inf, 1.0]), r"costs must be finite and >= 0"),
    (np.array(["1", "2", "3"]), r"costs must be numbers"),
    ([[1.0, 2.0], [1.0]], r"costs must be"),
    (np.array([True, False, True]), r"costs must be numbers"),
], ids=["inf", "str", "ragged", "bool"])
def test_bad_cost_array_in_policy(corpus, c, pattern):
    assert corpus(AREA, "error", lambda: pol.best(P, c), match=pattern)


def test_costs_needed_for_candidates_only(corpus, router):
    run = lambda: router.route_table(TEXTS, candidates=["m1", "m2"], policy="budget", budget=1.5,  # noqa: E731
                               costs={"m1": 2.0, "m2": 1.0})
    assert corpus(AREA, "right", run, check=lambda out: set(out["model"]) <= {"m1", "m2"})


def test_threshold_needs_no_costs(corpus, router):
    run = lambda: router.route_table(TEXTS, policy="threshold", strong="m0", weak="m2", t=-1.0)  # noqa: E731
    assert corpus(AREA, "right", run, check=lambda out: set(out["model"]) == {"m0"})


def test_max_quality_drop_needs_costs_of_candidates_only(corpus, router):
    run = lambda: router.select_model(TEXTS, candidates=["m1", "m2"], max_quality_drop=1.0,  # noqa: E731
                                      costs={"m1": 2.0, "m2": 1.0}, fallback=False)
    assert corpus(AREA, "right", run, check=lambda sel: sel.model == "m2")


# ---------------------------------------------------------------- costs and tokens in stores
def _frame(column: str, value: object) -> pd.DataFrame:
    rows = [("d", f"{i}", f"text {i}", m, 1.0, 1.0) for i in range(3) for m in MODELS]
    frame = pd.DataFrame(rows, columns=["dataset", "instance_id", "text", "model", "score",
                                        "correct"])
    frame[column] = [value if i == 4 else 1.0 for i in range(len(frame))]
    return frame


@pytest.mark.parametrize("column, value, pattern", [
    ("cost", -1.0, r"field 'cost' must be a finite number >= 0 \(or empty\); got -1"),
    ("cost", np.inf, r"field 'cost' must be a finite number >= 0.*got inf"),
    ("cost", -np.inf, r"field 'cost'.*got -inf"),
    ("prompt_tokens", -500.0, r"field 'prompt_tokens'.*got -500"),
    ("completion_tokens", np.inf, r"field 'completion_tokens'.*got inf"),
    ("cost", True, r"field 'cost' must be a number; got True .*\(1 such rows\)"),
], ids=["cost-neg", "cost-inf", "cost-neg-inf", "tokens-neg", "tokens-inf", "cost-bool"])
def test_bad_amount_in_store(corpus, column, value, pattern):
    run = lambda: BenchmarkData(_frame(column, value), source="t.csv")  # noqa: E731
    assert corpus(AREA, "error", run, match=rf"t\.csv: {pattern}")


def test_missing_cost_is_no_cost(corpus):
    data = lambda: BenchmarkData(_frame("cost", np.nan))  # noqa: E731
    assert corpus(AREA, "right", data, check=lambda d: d.frame["cost"].isna().sum() == 1)


@pytest.mark.parametrize("value, pattern", [("inf", r"field 'cost'.*got inf"),
                                            ("1e400", r"field 'cost'.*got inf")],
                         ids=["inf", "overflow"])
def test_routerbench_infinite_cost(corpus, tmp_path, value, pattern):
    from benchroute import load
    from tests.unit.test_tables_routerbench import HEAD, TRAIN

    path = tmp_path / "routerbench" / "routerbench_train.csv"
    path.parent.mkdir()
    path.write_text(HEAD + TRAIN.splitlines()[1].replace("0.01", value) + "\n"
                    + "\n".join(TRAIN.splitlines()[2:]) + "\n")
    assert corpus(AREA, "error", lambda: load(path.parent), match=pattern)


@pytest.mark.parametrize("tokens, pattern", [
    (1e308, r"field 'cost' must be a finite number >= 0.*got inf"),
    (-500, r"field 'prompt_tokens' must be a finite number >= 0.*got -500"),
], ids=["huge", "negative"])
def test_helm_bad_token_count(corpus, tmp_path, tokens, pattern):
    from benchroute import load_helm
    from tests.helm_builder import write_run

    for model in ("org/a", "org/b"):
        write_run(tmp_path / "s", "qa", model, {
            "id1": {"exact_match": 1, "num_prompt_tokens": tokens, "num_completion_tokens": 1e308},
            "id2": {"exact_match": 0, "num_prompt_tokens": 10, "num_completion_tokens": 1}})
    run = lambda: load_helm(tmp_path / "s", prices={"org/a": (1.0, 1.0), "org/b": (1.0, 1.0)})  # noqa: E731
    assert corpus(AREA, "error", run, match=pattern)


def test_saving_router_with_infinite_cost(corpus, router, tmp_path):
    import copy

    broken = copy.copy(router)
    broken.costs_ = {"m0": float("inf"), "m1": 1.0}
    run = lambda: broken.save(tmp_path / "r")  # noqa: E731
    assert corpus(AREA, "error", run, match=r"cost of 'm0' == inf")


# ---------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def router_dir(tmp_path_factory):
    from benchroute.cli import main

    root = tmp_path_factory.mktemp("cli")
    (root / "t.csv").write_text(CLI_CSV)  # models m1 and m2
    (root / "texts.txt").write_text("a question about cats\nanother about dogs\n")
    (root / "prices.csv").write_text("model,input,output\nm1,30,60\nm2,1,2\n")
    (root / "prices.json").write_text(json.dumps({"m1": {"input": 30, "output": 60},
                                                  "m2": [1, 2]}))
    (root / "list.json").write_text("[1, 2]")
    (root / "null.json").write_text("null")
    (root / "bad.json").write_text("{m1: 1")
    (root / "flat.json").write_text('{"m1": 1, "m2": 2}')
    (root / "folder.d").mkdir()
    code = main(["-q", "fit", str(root / "t.csv"), "--out", str(root / "router"), "--encoder",
                 "hashing-64-12", "--store", str(root / "store"), "--k", "3", "--repeats", "1"])
    assert code == 0
    return root


def _route(root, *extra: str) -> list[str]:
    return ["-q", "route", str(root / "texts.txt"), "--router", str(root / "router"), "--json",
            *extra]


@pytest.mark.parametrize("extra, pattern", [
    (["--prices", "{root}/missing.csv", "--tokens", "100"], r"missing\.csv: price table not found"),
    (["--prices", "{root}/folder.d", "--tokens", "100"], r"folder\.d: price table not found"),
    (["--prices", "{root}/list.json", "--tokens", "100"], r"list\.json: row 0 must be an object"),
    (["--prices", "{root}/null.json", "--tokens", "100"], r"null\.json: expected a JSON object or list"),
    (["--prices", "{root}/bad.json", "--tokens", "100"], r"bad\.json: invalid JSON at line 1"),
    (["--prices", "{root}/flat.json", "--tokens", "100"], r"flat\.json: entry 'm1' must be"),
    (["--prices", "{root}/prices.csv"], r"prices\.csv: a price table holds USD per 1M.*--tokens"),
    (["--prices", "m1=abc,m2=1"], r"--prices m1: 'abc' is not a number"),
    (["--prices", "m1=-1,m2=1"], r"--prices m1 == -1.0, expected a finite number >= 0"),
    (["--prices", "m1=inf,m2=1"], r"--prices m1 == inf"),
    (["--prices", "m1=1,m1=2"], r"model 'm1' is listed twice"),
    (["--prices", "m1=1,junk"], r"--prices: 'junk' is not model=number"),
    (["--prices", "m1=1,m2=1", "--tokens", "0"], r"--tokens '0': expected a number of tokens > 0"),
    (["--prices", "m1=1,m2=1", "--tokens", "-5"], r"--tokens '-5' == -5.0"),
    (["--prices", "m1=1,m2=1", "--tokens", "1,2,3"], r"--tokens '1,2,3': expected IN or IN,OUT"),
    (["--prices", "m1=1,m2=1", "--tokens", "many"], r"--tokens: 'many' is not a number"),
    (["--prices", "m1=1,m2=1", "--tokens", "1e308,1e308"], r"cost per call of 'm1'.*== inf"),
    (["--prices", "m1=1,m2=1", "--param", "budget=abc"], r"--param budget: 'abc' is not a number"),
    (["--prices", "m1=1,m2=1", "--param", "budget=nan"], r"budget == nan"),
    (["--prices", "m1=1,m2=1", "--param", "budget=1", "--param", "budget=2"], r"'budget' is given twice"),
    (["--tokens", "100", "--param", "budget=1"], r"--tokens needs --prices"),
    (["--policy", "smallest_sufficient", "--param", "tau=abc"], r"--param tau: 'abc' is not a number"),
    (["--policy", "smallest_sufficient", "--param", "tau=0.5", "--prices", "m1=1,m2=1", "--tokens",
      "0"], r"--tokens '0'"),
], ids=["missing", "folder", "list", "null", "invalid", "flat-json", "table-no-tokens",
        "inline-str", "inline-neg", "inline-inf", "inline-twice", "inline-junk", "tokens-0",
        "tokens-neg", "tokens-three", "tokens-str", "tokens-overflow", "param-str", "param-nan",
        "param-twice", "tokens-alone", "tau-abc", "tau-tokens-0"])
def test_bad_route_options(corpus, run_cli, router_dir, extra, pattern):
    extra = [e.format(root=router_dir) for e in extra]
    if "--policy" not in extra:  # budget, with a budget unless the case gives parameters
        extra = ["--policy", "budget", *extra]
        if not any(e.startswith("--param") for e in extra):
            extra += ["--param", "budget=1"]
    assert corpus(AREA, "error", run_cli(_route(router_dir, *extra)), match=pattern)


@pytest.mark.parametrize("extra", [["--prices", "m1=1"], ["--param", "tau=0.5"], ["--tokens", "0"]],
                         ids=["prices", "param", "tokens"])
def test_policy_options_without_policy(corpus, run_cli, router_dir, extra):
    argv = _route(router_dir, *extra)
    assert corpus(AREA, "error", run_cli(argv), match=r"apply to a policy only; add --policy")


def _costs(out: str) -> dict[str, float]:
    rows = [json.loads(line) for line in out.splitlines()]
    return {r["model"]: r["cost"] for r in rows}


@pytest.mark.parametrize("prices, tokens, expected", [
    ("prices.csv", "1000,500", {"m2": (1000 * 1 + 500 * 2) / 1e6}),
    ("prices.json", "1000", {"m2": 1000 / 1e6}),
    ("inline", None, {"m2": 0.25}),
    ("inline", "2000", {"m2": 0.25 * 2000 / 1e6}),
], ids=["csv-in-out", "json-in", "inline-per-call", "inline-per-1m"])
def test_prices_as_load_prices_reads_them(corpus, run_cli, router_dir, prices, tokens, expected):
    price_arg = "m1=30,m2=0.25" if prices == "inline" else str(router_dir / prices)
    argv = _route(router_dir, "--policy", "budget", "--param", "budget=0", "--prices", price_arg,
                  *(["--tokens", tokens] if tokens else []))
    assert corpus(AREA, "right", run_cli(argv),
                  check=lambda out: _costs(out) == pytest.approx(expected))


def test_prices_for_candidates_only(corpus, run_cli, router_dir):
    argv = _route(router_dir, "--policy", "cheapest_within", "--param", "max_quality_drop=1", "--candidates",
                  "m2", "--prices", "m2=0.5")
    assert corpus(AREA, "right", run_cli(argv), check=lambda out: _costs(out) == {"m2": 0.5})


def test_threshold_without_prices(corpus, run_cli, router_dir):
    argv = _route(router_dir, "--policy", "threshold", "--param", "strong=m2", "--param",
                  "weak=m1", "--param", "t=-1")
    assert corpus(AREA, "right", run_cli(argv), check=lambda out: set(_costs(out)) == {"m2"})


# ---------------------------------------------------------------- max_quality_drop and η (class 10)
def _fell_back_selection():
    """The RouteLLM case: S3 prefers the cheap model, the η test refused it (it beats the
    expensive best model on average with probability 0.35 < η) and fell back."""
    from benchroute.selection import Selection

    table = pd.DataFrame({"S1": [0.80, 0.82], "S2": [0.80, 0.83], "S3": [0.700, 0.705],
                          "p_hat": [0.872, 0.806], "bma": [True, False],
                          "chosen": [True, False]}, index=pd.Index(["gpt-4", "mixtral"], name="model"))
    return Selection(model="gpt-4", method="S3", scores=table, fell_back=True,
                     task_distance=0.3, bma="gpt-4", n_examples=50, win_probability=0.35)


@pytest.mark.parametrize("eps, expected", [(0.0, "gpt-4"), (0.01, "gpt-4"), (0.07, "mixtral")],
                         ids=["0-points", "1-point", "7-points"])
def test_max_quality_drop_keeps_what_the_fallback_protects(corpus, eps, expected):
    """S3's ε is the η rule with slack ε·n: the model the fallback refused (S3 above the
    chosen one's) comes back only once it is likely (P >= η) within ε."""
    sel = _fell_back_selection()
    run = lambda: routing.cheaper_selection(sel, np.array([24.7, 0.24]), ["gpt-4", "mixtral"], eps)  # noqa: E731

    def check(out):
        said = out.summary()
        if expected == "gpt-4":
            return out.model == "gpt-4" and out.fell_back and "fell back" in said \
                and out.scores.loc["mixtral", "p_within"] < 0.6
        return out.model == "mixtral" and "within 0.07 of gpt-4's accuracy" in said \
            and "eta = 0.6" in said and out.to_dict()["cheaper_than"]["model"] == "gpt-4" \
            and out.scores.loc["mixtral", "p_within"] >= 0.6

    assert corpus(AREA, "right", run, check=check)


def test_max_quality_drop_keeps_what_the_form_shift_refused(corpus):
    """S3 chose the cheap model (it passed the η test), the form shift moved the choice to the
    BMA: at ε = 0 the refused model qualified by the η rule and came back."""
    import dataclasses

    sel = dataclasses.replace(_fell_back_selection(), fell_back=True, shift_fell_back=True)
    sel.scores.loc["mixtral", "p_hat"] = 0.95  # likely to win, as a passed η test says
    for eps in (0.0, 0.05, 0.5):
        run = lambda eps=eps: routing.cheaper_selection(  # noqa: E731
            sel, np.array([24.7, 0.24]), ["gpt-4", "mixtral"], eps)
        assert corpus(AREA, "right", run, check=lambda out: out.model == "gpt-4")


def test_max_quality_drop_compares_accuracy_not_the_predictors(corpus):
    """A model predicted wrong on every input has a high p̂ (its predictor is right): compared
    by p̂ it was "within ε" even at ε = 0 and was chosen (found by a review)."""
    from benchroute.selection import Selection

    table = pd.DataFrame({"S1": [0.80, 0.40], "S2": [1.0, 0.0], "S3": [0.640, 0.345],
                          "p_hat": [0.640, 0.655], "bma": [True, False],
                          "chosen": [True, False]}, index=pd.Index(["big", "small"], name="model"))
    sel = Selection(model="big", method="S3", scores=table, fell_back=False, task_distance=0.3,
                    bma="big", n_examples=20)
    for eps in (0.0, 0.01, 0.1, 0.2):
        run = lambda eps=eps: routing.cheaper_selection(  # noqa: E731
            sel, np.array([10.0, 0.1]), ["big", "small"], eps)
        assert corpus(AREA, "right", run, check=lambda out: out.model == "big")
    out = routing.cheaper_selection(sel, np.array([10.0, 0.1]), ["big", "small"], 0.5)
    assert out.model == "small"  # 0.295 apart: within 0.5 with near certainty


def test_max_quality_drop_compares_with_the_chosen_model_for_s1(corpus):
    from benchroute.selection import Selection

    table = pd.DataFrame({"S1": [0.60, 0.80, 0.58], "bma": [True, False, False],
                          "chosen": [False, True, False]}, index=["a", "b", "c"])
    sel = Selection(model="b", method="S1", scores=table, fell_back=False, task_distance=0.1,
                    bma="a", n_examples=5)
    run = lambda: routing.cheaper_selection(sel, np.array([1.0, 5.0, 0.5]), ["a", "b", "c"], 0.21)  # noqa: E731
    assert corpus(AREA, "right", run, check=lambda out: out.model == "a")
