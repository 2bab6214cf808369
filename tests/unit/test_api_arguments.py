"""Arguments of the public API that ended in a raw Python error or a silently wrong answer,
each found by a fuzzing campaign of the router's Python API: now a BenchrouteError naming the
argument, a warning, or the right answer."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from benchroute.exceptions import BenchrouteError, NotFittedError
from benchroute.experiments.costs import routing_metrics
from benchroute.router import Router
from tests.unit.test_router import MODELS, synthetic

TEXTS = ["task 0 input 1 more", "task 1 input 2 other", "task 2 input 3"]
NEW = ["words of another kind", "nothing like the pool"]


@pytest.fixture(scope="module")
def router(tmp_path_factory):  # type: ignore[no-untyped-def]
    data, _ = synthetic(4)
    return Router(alphas=(0.0,), repeats=1, tune=False, encoder="hashing-64-12",
                  cache_dir=str(tmp_path_factory.mktemp("cache"))).fit(data)


def test_exclusions_and_candidates_of_the_wrong_kind(router):
    """None is no exclusion (as the default); a number or a list where a name goes is refused."""
    assert router.select_model(TEXTS, exclude_datasets=None).model \
        == router.select_model(TEXTS).model
    with pytest.raises(BenchrouteError, match=r"exclude_datasets: expected task names"):
        router.select_model(TEXTS, exclude_datasets=3)
    with pytest.raises(BenchrouteError, match=r"candidates == 5; expected model names"):
        router.route(TEXTS, candidates=5)
    with pytest.raises(BenchrouteError, match=rf"candidates name \['{MODELS[0]}'\] twice"):
        router.route_table(TEXTS, candidates=[MODELS[0], MODELS[0], MODELS[1]])
    with pytest.raises(BenchrouteError, match=r"unknown policy \['best'\]"):
        router.route_table(TEXTS, ["best"])  # type: ignore[arg-type]


@pytest.mark.parametrize("labeled, message", [
    (pd.DataFrame([["task 0 x", 1.0, 0.0]], columns=["text", MODELS[0], MODELS[0]]),
     rf"column\(s\) \['{MODELS[0]}'\] appear twice"),
    (pd.DataFrame({"text": ["task 0 x"], "labels": [{MODELS[0]: 1}], MODELS[1]: [0.0]}),
     r"a 'labels' column and other columns"),
    (pd.DataFrame([["task 0 x", 1.0]], columns=pd.MultiIndex.from_tuples([("text", ""), ("m", "")])),
     r"MultiIndex columns"),
    ([{"text": "task 0 input 1 more", "labels": {}}], r"labeled\[0\] gives no label"),
    ([{"text": "task 0 x", "labels": {MODELS[0]: None, MODELS[1]: float("nan")}}],
     r"labeled\[0\] gives no label"),
    (pd.DataFrame({"text": ["task 0 x", "task 1 y"], MODELS[0]: [1.0, np.nan]}),
     r"labeled\[1\] gives no label"),
    ([{"text": "task 0 new", "labels": {MODELS[0]: 1}}, {"text": "task 0 new ", "labels": {MODELS[0]: 0}}],
     rf"labeled\[0\] and labeled\[1\] both label '{MODELS[0]}' on the same input"),
    ([{"text": "task 0 new", "labels": {MODELS[0]: 10**400}}], r"is 1000000000.*…\(401 chars\); expected a number"),
])
def test_few_shot_labels_that_said_nothing_or_two_things(router, labeled, message):
    """A record with no label counted as labelled and dropped its input from the task examples;
    two labels of one input counted as two; a duplicated model column kept one silently."""
    with pytest.raises(BenchrouteError, match=message):
        router.select_model(TEXTS, labeled=labeled)


def test_one_input_may_carry_labels_of_several_models_in_several_records(router):
    two = router.select_model(TEXTS, labeled=[{"text": "task 0 new", "labels": {MODELS[0]: 1}},
                                              {"text": "task 0 new", "labels": {MODELS[1]: 0}}])
    one = router.select_model(TEXTS, labeled=[{"text": "task 0 new",
                                               "labels": {MODELS[0]: 1, MODELS[1]: 0}}])
    assert two.scores.equals(one.scores)


@pytest.mark.parametrize("bandwidth", [1e300, 1e-300])
def test_a_bandwidth_at_the_ends_of_the_float_range(router, bandwidth):
    """h² overflowed (OverflowError at 1e300) or was 0 (a divide-by-zero warning at 1e-300); the
    weights are now their limits: every reference pair alike, or none near (p̂ = the prior)."""
    r = Router(**{**router.get_params(), "bandwidth": bandwidth}).fit(synthetic(4)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sel = r.select_model(TEXTS)
    p_hat = sel.scores["p_hat"].to_numpy()
    assert np.isfinite(p_hat).all()
    if bandwidth < 1:
        np.testing.assert_allclose(p_hat, 0.5)


def test_costs_are_checked_alike_by_every_policy_and_a_misspelled_name_is_said(router):
    costs = {m: 1.0 + i for i, m in enumerate(MODELS)}
    for policy, kw in [("best", {}), ("cheapest_within", {"max_quality_drop": 0.1}),
                       ("lagrangian", {"lam": 0.1})]:
        with pytest.raises(BenchrouteError, match=r"cost of 'zz' == nan"):
            router.route_table(TEXTS, policy, costs={**costs, "zz": float("nan")}, **kw)
    last = costs.pop(MODELS[-1])
    typo = {**costs, MODELS[-1].upper(): last}
    with pytest.warns(UserWarning, match=rf"costs name \['{MODELS[-1].upper()}'\], which the router does not have, and no cost for "
                                         rf"\['{MODELS[-1]}'\]"):
        table = router.route_table(TEXTS, "best", costs=typo)
    assert table["cost"].isna().all()


def test_an_ood_fallback_that_cannot_act_is_said(tmp_path):
    data, _ = synthetic(4, n_tasks=1)
    one_task = Router(alphas=(0.0,), repeats=1, tune=False, encoder="hashing-64-12",
                      cache_dir=str(tmp_path)).fit(data)
    with pytest.warns(UserWarning, match=r"ood_alpha=0.5: the pool has no out-of-distribution "
                                         r"reference .* no input falls back"):
        table = one_task.route_table(TEXTS, ood_alpha=0.5)
    assert not table["ood_fallback"].any()


def test_best_on_average_arguments(router):
    with pytest.raises(NotFittedError):
        Router().bma_  # noqa: B018
    with pytest.raises(BenchrouteError, match=r"cand == .*expected column indices"):
        router.bma_index(np.array([len(MODELS)]))
    with pytest.raises(BenchrouteError, match=r"cand == .*expected column indices"):
        router.bma_index(np.array([], dtype=int))
    with pytest.raises(BenchrouteError, match=r"unknown task\(s\) \['nope'\]"):
        router.bma_index(np.arange(len(MODELS)), ["nope"])


def test_an_added_model_labelled_on_an_excluded_task_is_said(tmp_path):
    data, _ = synthetic(4)
    r = Router(alphas=(0.0,), repeats=1, tune=False, encoder="hashing-64-12",
               cache_dir=str(tmp_path)).fit(data)
    t0 = data.instances().query("dataset == 't0'").head(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r.add_model("new", t0[["dataset", "instance_id"]].assign(correct=1.0))
    with pytest.warns(UserWarning, match=r"added model 'new': 10 of its 10 labels are on inputs "
                                         r"of the excluded task\(s\) \['t0'\]"):
        r.select_model(NEW, exclude_datasets=["t0"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r.select_model(NEW, exclude_datasets=["t1"])  # its labels lie elsewhere: silent


def _curve() -> pd.DataFrame:
    curve = pd.DataFrame({"policy": ["threshold"] * 3, "param": [0, .5, 1], "cost": [1., 2., 3.],
                          "quality": [.3, .5, .6], "share_strong": [0., .5, 1.]})
    curve.attrs.update(q_strong=.6, q_weak=.3, c_min=1., c_max=3.)
    return curve


@pytest.mark.parametrize("edit, kwargs, message", [
    (lambda c: c.drop(columns="quality"), {}, r"curve lacks column\(s\) \['quality'\]"),
    (lambda c: c.to_dict(), {}, r"curve is a dict"),
    (lambda c: c.assign(quality=["a", "b", "c"]), {}, r"curve column 'quality' must hold numbers"),
    (lambda c: c.assign(policy=[None, "threshold", "threshold"]), {}, r"a row has no policy"),
    (lambda c: c, {"c_min": "0"}, r"c_min == '0'"),
    (lambda c: c, {"q_strong": "0.9"}, r"q_strong == '0.9'"),
    (lambda c: c, {"c_min": -np.inf}, r"c_min == -inf"),
    (lambda c: c, {"c_min": 3.0, "c_max": 1.0}, r"c_min <= c_max"),
    (lambda c: c, {"levels": (0.2, 0.2049)}, r"round to the same percent"),
    (lambda c: c, {"levels": (1.5,)}, r"expected call shares in \[0, 1\]"),
    (lambda c: c, {"levels": (np.nan,)}, r"expected call shares"),
    (lambda c: c, {"levels": None}, r"expected call shares"),
])
def test_routing_metrics_refuses_what_it_cannot_measure(edit, kwargs, message):
    with pytest.raises(BenchrouteError, match=message):
        routing_metrics(edit(_curve()), **kwargs)


@pytest.mark.parametrize("edit, kwargs, message", [
    (lambda c: c, {"q_strong": 1e308, "q_weak": -1e308}, r"past a float's range"),
    (lambda c: _without_pair(c), {"q_strong": 0.6}, r"q_strong is given but not q_weak"),
    (lambda c: _without_pair(c), {"q_weak": 0.3}, r"q_weak is given but not q_strong"),
    (lambda c: c.drop(columns="share_strong"), {"q_strong": 0.6, "q_weak": 0.3},
     r"q_strong and q_weak given, but the curve has no share_strong column"),
])
def test_routing_metrics_refuses_a_pair_pgr_cannot_read(edit, kwargs, message):
    """Left as found by the fuzzing of the Python API: one quality alone or qualities for a
    curve without share_strong were ignored (a tie, NaN without a word, now warns: below)."""
    with pytest.raises(BenchrouteError, match=message):
        routing_metrics(edit(_curve()), **kwargs)


def _without_pair(curve: pd.DataFrame) -> pd.DataFrame:
    for key in ("q_strong", "q_weak"):
        del curve.attrs[key]
    return curve


def test_routing_metrics_takes_a_curve_past_its_pair_and_a_resample_tie():
    from benchroute.experiments.costs import CostQuality, bootstrap_metrics

    # a router better than the strong model, or a pair named the other way: numbers, not NaN
    assert routing_metrics(_curve(), q_strong=0.4, q_weak=0.3).loc[0, "PGR@50"] == \
        pytest.approx(2.0)
    # PGR 1, 1/3, 0 along the curve
    assert routing_metrics(_curve(), q_strong=0.3, q_weak=0.6).loc[0, "APGR"] == \
        pytest.approx(5 / 12)
    # a tie: NaN with a warning that says why, the AIQ kept
    with pytest.warns(UserWarning, match=r"q_strong == q_weak == 0.3: the two models are equally"):
        tied = routing_metrics(_curve(), q_strong=0.3).iloc[0]
    assert np.isnan(tied["APGR"]) and np.isfinite(tied["AIQ"])
    # without a pair the AIQ alone, as before
    assert "APGR" not in routing_metrics(_without_pair(_curve()))
    # the data's qualities differ (2/3, 1/3), but about a third of the resamples tie: those
    # give NaN and the bootstrap goes on
    Q = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    choices = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 0]])
    curve = pd.DataFrame({"policy": ["threshold"] * 3, "param": [0.0, 0.5, 1.0],
                          "cost": [1.0, 4 / 3, 2.0], "quality": [1 / 3, 2 / 3, 2 / 3],
                          "share_strong": [0.0, 1 / 3, 1.0]})
    run = CostQuality(curve, choices, Q, np.tile([2.0, 1.0], (3, 1)), ["s", "w"], 0, 1, "test")
    boot = bootstrap_metrics(run, n_boot=30).set_index("policy")
    assert boot.loc["threshold", "APGR"] == pytest.approx(5 / 6)  # PGR 0, 1, 1
    assert np.isfinite(boot.loc["threshold", ["APGR_lo", "APGR_hi"]].astype(float)).all()


def test_routing_metrics_on_a_good_curve():
    table = routing_metrics(_curve(), levels=(0.2, 0.5))
    assert list(table["policy"]) == ["threshold", "random-analytic"]
    assert table.loc[0, "PGR@50"] == pytest.approx((0.5 - 0.3) / 0.3)
    # every model at one cost (a flat fee): the pair metrics, and AIQ NaN (found by a review)
    flat = routing_metrics(_curve(), c_min=1.0, c_max=1.0)
    assert flat.loc[0, "APGR"] == table.loc[0, "APGR"] and np.isnan(flat.loc[0, "AIQ"])


def test_a_model_name_fit_refuses_names_its_source_before_embedding(tmp_path):
    """A model "a " (a loader keeps names as the files give them) was refused after the
    embedding of every input, naming no file (found by fuzzing the command line)."""
    from benchroute import BenchmarkData

    rows = [(d, i, f"question {i}", m, y, y) for d, i in (("d", "1"), ("e", "2"))
            for m, y in (("a ", 1.0), ("b", 0.0))]
    data = BenchmarkData(pd.DataFrame(rows, columns=["dataset", "instance_id", "text", "model",
                                                     "score", "correct"]), source="runs.jsonl")
    router = Router(encoder="hashing-32-12", cache_dir=str(tmp_path))
    calls = []
    router.embed = lambda texts: calls.append(texts)  # type: ignore[method-assign]
    with pytest.raises(BenchrouteError, match=r"^runs\.jsonl: model name == 'a ', expected a "
                                              r"model name"):
        router.fit(data)
    assert not calls


def test_embed_takes_one_string_as_one_text_and_checks_its_sizes(router, tmp_path):
    """From fuzzing the encoders: Router.embed("a text") embedded each character, a dict its
    keys, None raised TypeError; a chunk or batch size of 0 ended in range()'s ValueError."""
    from benchroute.embedding import EmbeddingCache, HashingEncoder

    assert router.embed("one text").shape == (1, 64)
    for bad in (None, {"a": 1}, b"bytes"):
        with pytest.raises(BenchrouteError, match=r"texts is a \w+; expected a text or a list"):
            router.embed(bad)  # type: ignore[arg-type]
    enc = HashingEncoder(16)
    cache = EmbeddingCache(tmp_path / "c", enc.identifier)
    for kw, message in [({"chunk_size": 0}, r"chunk_size == 0"), ({"chunk_size": 1.5}, r"1\.5"),
                        ({"batch_size": -1}, r"batch_size == -1"), ({"batch_size": None}, "None")]:
        with pytest.raises(BenchrouteError, match=message):
            cache.embed(["a b"], enc, **kw)


def test_model_names_written_two_ways_are_one_name_too_many(tmp_path):
    """"é" and "e" + a combining accent were two models (found by fuzzing the gateway): on fit,
    as an added model and as a new pool model."""
    data, _ = synthetic(4)
    frame = data.frame.copy()
    frame["model"] = frame["model"].replace({"m0": "mod\u00e9", "m1": "mode\u0301"})
    from benchroute import BenchmarkData

    with pytest.raises(BenchrouteError, match=r"model names 'mod.{1,2}' and 'mod.{1,2}' are the same text "
                                              r"written two ways"):
        Router(alphas=(0.0,), tune=False, encoder="hashing-64-12",
               cache_dir=str(tmp_path)).fit(BenchmarkData(frame))
    r = Router(alphas=(0.0,), tune=False, encoder="hashing-64-12", cache_dir=str(tmp_path)).fit(
        BenchmarkData(data.frame.replace({"model": {"m0": "mod\u00e9"}})))
    t0 = data.instances().head(10)
    with pytest.raises(BenchrouteError, match=r"the same text written two ways"):
        r.add_model("mode\u0301", t0[["dataset", "instance_id"]].assign(correct=1.0))
    assert "mode\u0301" not in r.models_


INVISIBLE = ["\u200b", "\x00", "\ufeff\u200d \u2060", "\u202e\t\u00ad", " \x7f\n"]


@pytest.mark.parametrize("text", INVISIBLE)
def test_a_text_of_invisible_characters_is_no_input(router, tmp_path, text):
    """Left as found by the fuzzing of the Python API: a text of a zero-width space or a NUL
    passed the "not blank" check and was routed by the vector of the empty text (the
    tokenizer drops control and format characters). One rule now, as for whitespace."""
    import logging

    pytest.importorskip("fastapi")
    from benchroute import BenchmarkData
    from benchroute.data.text import is_blank
    from benchroute.prompt_file import read_prompt_file
    from benchroute.serve.app import GatewayConfig, routed_text

    assert is_blank(text) and is_blank("") and is_blank(" \n")
    assert not is_blank(text + "a") and not is_blank("\u3164x") and not is_blank("\ue000")
    # the library refuses it, as an empty text
    for call in (lambda: router.select_model([TEXTS[0], text]),
                 lambda: router.route_table([TEXTS[0], text]),
                 lambda: router.select_model(TEXTS, labeled=[{"text": text,
                                                              "labels": {MODELS[0]: 1}}])):
        with pytest.raises(BenchrouteError, match=r"is empty or only whitespace and invisible"):
            call()
    # a texts file skips its line, as a blank line, and refuses it as a JSON record's text
    lines = tmp_path / "t.txt"
    lines.write_text(f"one\n{text.replace(chr(10), '')}\ntwo\n", encoding="utf-8")
    assert read_prompt_file(lines) == ["one", "two"]
    records = tmp_path / "t.jsonl"
    records.write_text('{"text": "one"}\n' + pd.Series([{"text": text}]).to_json(
        orient="records", lines=True), encoding="utf-8")
    with pytest.raises(BenchrouteError, match=r"line 2: field 'text' is empty or only"):
        read_prompt_file(records)
    # a store drops the row as one without a text
    frame = pd.DataFrame([("d", "1", "a question", "m", 1.0, 1.0), ("d", "2", text, "m", 1.0, 1.0)],
                         columns=["dataset", "instance_id", "text", "model", "score", "correct"])
    logging.getLogger("benchroute").disabled = True
    try:
        data = BenchmarkData(frame)
    finally:
        logging.getLogger("benchroute").disabled = False
    assert data.n_instances == 1 and data.report.counts["missing_text_dropped"] == 1
    # the gateway routes the request as one without a user message
    assert routed_text([{"role": "user", "content": text}], GatewayConfig()) is None
    assert routed_text([{"role": "user", "content": "hi"}, {"role": "user", "content": text}],
                       GatewayConfig()) == "hi"
