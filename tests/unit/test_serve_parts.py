"""The gateway's parts without a server: entry grammar, upstreams file, calibration, decisions."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("fastapi")

from benchroute.exceptions import BenchrouteError  # noqa: E402
from benchroute.serve import calibrate as cal  # noqa: E402
from benchroute.serve.entry import Entry, EntryError, parse_entry  # noqa: E402
from benchroute.serve.upstreams import Upstream, check_coverage, load_upstreams  # noqa: E402

MODELS = {"gpt-4": "gpt-4", "up-gpt-4": "gpt-4"}


@pytest.mark.parametrize("name, policy, value", [
    ("benchroute", None, None),
    ("", None, None),
    ("benchroute-best", "best", None),
    ("benchroute-threshold-0.116", "threshold", 0.116),
    ("benchroute-threshold--0.05", "threshold", -0.05),
    ("benchroute-share-0.3", "share", 0.3),
    ("benchroute-smallest-sufficient-0.7", "smallest_sufficient", 0.7),
    ("benchroute-cheapest_within-.02", "cheapest_within", 0.02),
    ("benchroute-lagrangian-1e-3", "lagrangian", 0.001),
    ("benchroute-budget-5", "budget", 5.0),
    ("benchroute-share", "share", None),
])
def test_entry_grammar(name, policy, value):
    e = parse_entry(name, MODELS)
    assert (e.policy, e.value, e.pinned) == (policy, value, None)


def test_model_names_pin_the_model():
    assert parse_entry("gpt-4", MODELS) == Entry("gpt-4", "pinned", pinned="gpt-4")
    assert parse_entry("up-gpt-4", MODELS).pinned == "gpt-4"


@pytest.mark.parametrize("name, match", [
    ("gpt-5", r"unknown model 'gpt-5'.*benchroute-<policy>"),
    ("benchroute-nope-1", r"unknown policy 'nope'"),
    ("benchroute-share-1.5", r"share takes share in \[0, 1\], got 1.5"),
    ("benchroute-cheapest_within--1", r"max_quality_drop in \[0, 1\]"),
    ("benchroute-best-1", r"'best' takes no value"),
    (7, r"model must be a string"),
])
def test_bad_entries_say_what_is_valid(name, match):
    with pytest.raises(EntryError, match=match):
        parse_entry(name, MODELS)


@pytest.mark.parametrize("name, status", [
    ("gpt-5", 404), ("benchroute-nope", 404), ("benchroute-nope-1", 404),  # no such model
    ("benchroute-share-1.5", 400), ("benchroute-best-1", 400), (7, 400),  # a bad value
    ("benchroute-threshold-\u0661", 400),  # an Arabic-Indic digit is no plain decimal
    # a known policy with a value that is no plain decimal: a bad value, not an unknown
    # policy 'threshold_abc' (404; found by a review)
    ("benchroute-threshold-abc", 400), ("benchroute-threshold-nan", 400),
    ("benchroute-threshold-inf", 400), ("benchroute-threshold-0.1.2", 400),
    ("benchroute-smallest-sufficient-x", 400), ("benchroute-threshold-0.1", None),
    ("benchroute-threshold-abc-0.1", 400), ("benchroute-threshold---0.1", 400),
    ("benchroute-smallest-sufficient-tau-0.7", 400), ("benchroute-best-abc", 400),
    ("benchroute-smallest-sufficient--0", None),
])
def test_entry_errors_carry_their_status(name, status):
    """Unknown names are 404 as docs/gateway.md says ("benchroute-bogus" was a 400 coded
    model_not_found); values must be ASCII decimals (found by fuzzing)."""
    if status is None:  # a valid entry
        assert parse_entry(name, MODELS).policy is not None
        return
    with pytest.raises(EntryError) as info:
        parse_entry(name, MODELS)
    assert info.value.status == status
    if status == 400 and isinstance(name, str) and name.startswith("benchroute-threshold-"):
        assert "threshold takes t as a plain ASCII decimal" in str(info.value)


# ---------------------------------------------------------------------- upstreams file
def _write(tmp_path, content, name="up.yaml"):
    p = tmp_path / name
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


def test_upstreams_file_yaml_and_json(tmp_path):
    p = _write(tmp_path, "models:\n  a: {base_url: 'http://127.0.0.1:9/v1', model: A, "
               "api_key_env: KEY_A, cost: 2}\n  b: {base_url: 'http://127.0.0.1:9/v1/', model: B}\n")
    ups = load_upstreams(p, {"KEY_A": "sekrit"})
    assert ups["a"].chat_url == "http://127.0.0.1:9/v1/chat/completions"
    assert ups["b"].chat_url == "http://127.0.0.1:9/v1/chat/completions"
    assert ups["a"].headers() == {"Authorization": "Bearer sekrit"} and ups["b"].headers() == {}
    assert ups["a"].cost == 2.0 and "sekrit" not in repr(ups["a"])
    j = _write(tmp_path, {"models": {"a": {"base_url": "https://127.0.0.1/v1", "model": "A"}}},
               "up.json")
    assert load_upstreams(j, {})["a"].model == "A"
    # a query string stays after the path (Azure's api-version: every call was a 404), and a
    # key read from a secrets file loses its line break (every call failed as unreachable)
    q = _write(tmp_path, "models:\n  a: {base_url: 'https://127.0.0.1/openai/d?api-version=1', "
               "model: A, api_key_env: K}\n", "q.yaml")
    got = load_upstreams(q, {"K": "sekrit\n"})["a"]
    assert got.chat_url == "https://127.0.0.1/openai/d/chat/completions?api-version=1"
    assert got.headers() == {"Authorization": "Bearer sekrit"}


@pytest.mark.parametrize("content, match", [
    ("models: {}", r"non-empty 'models' mapping"),
    ("- a\n- b", r"non-empty 'models' mapping"),
    ("models: {a: {model: A}}", r"field 'models.a.base_url' is missing"),
    ("models: {a: {base_url: 'ftp://x', model: A}}", r"'models.a.base_url' must be an http"),
    ("models: {a: {base_url: 'http://127.0.0.1', model: 3}}", r"'models.a.model' must be a str"),
    ("models: {a: {base_url: 'http://127.0.0.1', model: A, cost: -1}}", r"'models.a.cost' must"),
    ("models: {a: {base_url: 'http://127.0.0.1', model: A, cost: .nan}}", r"'models.a.cost' must"),
    ("models: {a: {base_url: 'http://127.0.0.1', model: A, key: 1}}", r"unknown key\(s\) \['key'\]"),
    ("models: {a: {base_url: 'http://127.0.0.1', model: A, api_key_env: NOPE1},"
     " b: {base_url: 'http://127.0.0.1', model: B, api_key_env: NOPE2}}",
     r"not set: NOPE1 \(models.a\), NOPE2 \(models.b\)"),
    ("models: [unclosed", r"invalid YAML at line 1 column 18: expected ',' or ']'"),
    ("models:\n  a: {base_url: 'http://127.0.0.1/v1', model: A}\n  a: {base_url: 'http://127.0.0.2/v1', "
     "model: B}", r"invalid YAML at line 3 column 3: key 'a' appears twice"),
    # URLs and ids no request could use were accepted (found by a review)
    ("models: {a: {base_url: 'http://:80/v1', model: A}}", r"base_url' must be an http\(s\) URL "
                                                          r"with a host"),
    ("models: {a: {base_url: 'http://127.0.0.1:99999/v1', model: A}}", r"Port out of range"),
    ("models: {a: {base_url: 'http://127.0.0.1/v1#x', model: A}}", r"a #fragment"),
    ("models: {a: {base_url: 'http://127.0.0.1/v1', model: ''}}", r"'models.a.model' must be"),
    ("models: {a: {base_url: 'http://127.0.0.1/v1', model: ' A'}}", r"without surrounding"),
    # and those the HTTP client refuses on every call, which then answered a bare 500, or
    # that raised out of the reader (found by fuzzing)
    ("models: {a: {base_url: 'http://127.999.999.999/v1', model: A}}", r"Invalid IPv4"),
    ("models: {a: {base_url: 'http://[::1]x/v1', model: A}}", r"Invalid port"),
    ("models: {a: {base_url: 'http://[::1/v1', model: A}}", r"Invalid IPv6 URL"),
    ("models: {a: {base_url: \"http://127.0.0.1/v\\0/\", model: A}}", r"not a URL the HTTP client"),
    ("models:\n  [1, 2]: {base_url: 'http://127.0.0.1/v1', model: A}", r"invalid YAML \(TypeError"),
    # a control character reached a response header, and every pinned request lost its
    # connection; an integer cost past a float raised OverflowError (found by fuzzing)
    ('{"models": {"a": {"base_url": "http://127.0.0.1/v1", "model": "up\\nx"}}}',
     r"'models.a.model' must be .* without surrounding spaces or control characters"),
    ('{"models": {"a": {"base_url": "http://127.0.0.1/v1", "model": "up\\u0000x"}}}',
     r"control characters"),
    ("models: {a: {base_url: 'http://127.0.0.1/v1', model: A, cost: 1" + "0" * 400 + "}}",
     r"'models.a.cost' must be a finite number >= 0"),
    # read as local, called 'evil' (urllib and httpx agree); a password reached error messages
    ('{"models": {"a": {"base_url": "http://127.0.0.1\\\\@evil/v1", "model": "A"}}}',
     r"a backslash before its host \('evil' is the host called\)"),
    ("models: {a: {base_url: 'http://127.0.0.1:secret@127.0.0.1:9/v1', model: A}}",
     r"a user name, a password .* keys come from api_key_env"),
    # every other refusal printed the password too (a review)
    ("models: {a: {base_url: 'http://127.0.0.1:secret@127.0.0.1:99999/v1', model: A}}",
     r"a malformed user name, password or port, in 'http://127\.0\.0\.1:99999/v1'"),
    ("models: {a: {base_url: 'ftp://127.0.0.1:secret@127.0.0.1/v1', model: A}}",
     r"must be an http\(s\) URL with a host, got 'ftp://127\.0\.0\.1/v1'"),
    ("models: {a: {base_url: 'http://127.0.0.1:secret@127.0.0.1/v1#x', model: A}}", r"#fragment"),
    ("models: {a: {base_url: 'http://127.0.0.1:secret\\127.0.0.2/v1', model: A}}",
     r"a malformed user name, password or port"),
])
def test_upstreams_file_errors_name_file_and_field(tmp_path, content, match):
    p = _write(tmp_path, content)
    with pytest.raises(BenchrouteError, match=match) as info:
        load_upstreams(p, {})
    assert str(p) in str(info.value) and "\n" not in str(info.value)  # one line, as the CLI prints
    assert "secret" not in str(info.value)  # a password refused is not printed (a review)


def test_an_upstream_key_no_header_can_carry_is_refused(tmp_path):
    p = _write(tmp_path, "models: {a: {base_url: 'http://127.0.0.1/v1', model: A, "
               "api_key_env: K}}")
    for key in ("two\nlines", "sk-\u00e9t\u00e9"):
        with pytest.raises(BenchrouteError, match=r"the key in \$K \(models.a\) holds") as e:
            load_upstreams(p, {"K": key})
        assert key[:3] not in str(e.value)  # the secret is never shown


def test_missing_upstreams_listed_at_once():
    ups = {"a": Upstream("a", "http://127.0.0.1/v1", "A")}
    with pytest.raises(BenchrouteError, match=r"no upstream for model\(s\) \['b', 'c'\]"):
        check_coverage(ups, ["a", "b", "c"], "up.yaml", "the policy can choose")
    with pytest.raises(BenchrouteError, match="no such upstreams file"):
        load_upstreams("/nonexistent/up.yaml", {})


# ---------------------------------------------------------------------- calibration maths
@pytest.mark.parametrize("share", [0.0, 0.1, 0.25, 0.3, 0.5, 0.99, 1.0])
def test_threshold_for_share_realises_the_share(share):
    score = np.random.default_rng(0).normal(size=1000)
    t = cal.threshold_for_share(score, share)
    assert np.mean(score >= t) == pytest.approx(share, abs=1e-9)


@pytest.mark.parametrize("share, realised", [(0.3, 0.6), (0.29, 0.0), (0.79, 0.6), (0.81, 1.0),
                                             (0.0, 0.0), (1.0, 1.0)])
def test_threshold_for_share_with_ties_takes_the_closest_block(share, realised):
    score = np.array([0.5] * 6 + [0.1] * 4)
    assert np.mean(score >= cal.threshold_for_share(score, share)) == realised


def test_budget_price_fixes_lambda_that_budget_uses():
    from benchroute import policies as pol

    rng = np.random.default_rng(1)
    P, c = rng.random((200, 3)), np.array([3.0, 1.0, 0.2])
    for b in (0.3, 1.0, 2.0):
        lam = pol.budget_price(P, c, budget=b)
        pick = pol.lagrangian(P, c, lam=lam)
        assert np.array_equal(pick, pol.budget(P, c, budget=b))
        assert c[pick].mean() <= b + 1e-12
    assert pol.budget_price(P, c, budget=100.0) == 0.0
    assert np.isinf(pol.budget_price(P, c, budget=0.1))


@pytest.mark.parametrize("field, value, match", [
    ("max_batch", 0, r"max_batch == 0, must be >= 1"),
    ("encode_batch", 0, r"encode_batch == 0, must be >= 1"),
    ("retries", -1, r"retries == -1, must be >= 0"),
    ("upstream_timeout", 0.0, r"upstream_timeout == 0.0, must be > 0"),
    ("route_text", "all", r"route_text 'all': choose one of"),
])
def test_gateway_config_refuses_bad_values(field, value, match):
    from benchroute.serve.app import GatewayConfig

    with pytest.raises(BenchrouteError, match=match):
        GatewayConfig(**{field: value}).check()


def test_a_missing_extra_names_it():
    from benchroute.extras import require_extra

    require_extra("serve", "json")                                      # present: no error
    with pytest.raises(BenchrouteError, match=r"needs the 'ray' extra \(no_such_module_x is "
                       r"missing\): pip install 'benchroute\[ray\]'"):
        require_extra("ray", "json", "no_such_module_x")


def test_a_call_answered_by_a_model_without_a_cost_is_not_free():
    """A pinned model outside the candidates, without a cost, was counted at 0 in the cost
    totals (found by a review of the cost surfaces)."""
    from benchroute.serve.metrics import GatewayMetrics

    metrics = GatewayMetrics(["m0", "m1", "m2"], "m0", {"m0": 3.0, "m1": 2.0})
    for model in ("m0", "m2", "m2"):
        metrics.answered(model)
    cost = metrics.snapshot()["cost"]
    assert cost == {"estimated": 3.0, "strongest": 3.0, "unpriced_calls": 2}
    assert "benchroute_estimated_cost_total 3.0" in metrics.prometheus().decode()


@pytest.mark.parametrize("content, name", [
    ("models:\n  m0: {base_url: 'http://127.0.0.1:1/v1', model: a, cost: 1}\n"
     "  m0: {base_url: 'http://127.0.0.1:1/v1', model: b, cost: 5}\n", "up.yaml"),
    ('{"models": {"m0": {"base_url": "http://127.0.0.1:1/v1", "model": "a", "cost": 1}, '
     '"m0": {"base_url": "http://127.0.0.1:1/v1", "model": "b", "cost": 5}}}', "up.json"),
])
def test_an_upstreams_file_naming_a_model_twice_is_refused(tmp_path, content, name):
    """YAML and JSON readers keep the last of two equal keys, silently: a model listed twice
    with two costs took the second (found by a review of the cost surfaces)."""
    with pytest.raises(BenchrouteError, match="'m0' appears twice"):
        load_upstreams(_write(tmp_path, content, name))


def test_an_upstreams_yaml_cost_in_exponent_form_is_a_number(tmp_path):
    """PyYAML reads YAML 1.1, where 1e-4 (no dot) is text: the cost was refused as "got
    '1e-4'" while price files and --prices take it."""
    ups = load_upstreams(_write(tmp_path, "models:\n  m0: {base_url: 'http://127.0.0.1:1/v1', "
                                          "model: a, cost: 1e-4}\n"))
    assert ups["m0"].cost == pytest.approx(1e-4)


def test_a_long_entry_value_is_read_in_one_pass_and_minus_zero_is_zero():
    """A model of 'benchroute-threshold-' and 12,000 digits and one wrong character took the
    value grammar O(n²) steps: 6 s on the event loop, every other request waiting (2.0 s for
    the grammar alone here, against 0.0015 s now and 0.12 s for a million digits); -0 had a
    label of its own, a second metrics series for one entry (found by fuzzing)."""
    from benchroute.serve.entry import _PLAIN_VALUE

    with pytest.raises(EntryError, match=r"threshold takes t as a plain ASCII decimal") as info:
        parse_entry("benchroute-threshold-" + "1" * 12000 + "x", MODELS)
    assert info.value.status == 400
    # the grammar reads each digit string one way, and accepts or refuses what it did before
    for value, ok in [("10", True), ("1.", True), ("1.5", True), (".5", True), ("1e-4", True),
                      ("-0.0", True), ("1.2.3", False), ("1x", False), ("", False), (".", False),
                      ("1" * 5000, True), ("1" * 5000 + "e", False)]:
        assert (_PLAIN_VALUE.match(value) is not None) == ok, value[:10]
    for spelling in ("benchroute-share--0", "benchroute-share-0", "benchroute-share-0.000"):
        entry = parse_entry(spelling, MODELS)
        assert entry.label == "benchroute-share-0" and str(entry.value) == "0.0"


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -1.0, "3"])
def test_a_drain_that_is_no_finite_duration_is_refused(seconds):
    """--drain-seconds nan or inf failed as an internal error inside uvicorn (fuzzing)."""
    from benchroute.serve.run import check_drain

    with pytest.raises(BenchrouteError, match="drain seconds must be a finite number >= 0"):
        check_drain(seconds)
    assert check_drain(0) == 0.0 and check_drain(2.5) == 2.5


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_a_port_out_of_range_is_a_usage_error(port, capsys):
    """--port 99999 ran the whole start-up, then failed as an internal error (found by a
    review)."""
    from benchroute.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--router", "r", "--upstreams", "u.yaml", "--port", port])
    assert exit_.value.code == 2 and "--port" in capsys.readouterr().err


def test_a_fallback_that_cannot_act_is_said_once_at_start_up(tmp_path):
    """From a review: on a pool of one task the gateway's --ood-alpha warned at start-up and
    again on every request (the decision rule's warning, at each batch of decisions)."""
    import warnings

    from fastapi.testclient import TestClient

    from benchroute.embedding import HashingEncoder
    from benchroute.router import Router
    from benchroute.serve.app import GatewayConfig, build_gateway, create_app
    from tests.unit.test_router import synthetic

    data, _ = synthetic(4, n_tasks=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        router = Router(alphas=(0.0,), encoder=HashingEncoder(64), cache_dir=str(tmp_path),
                        tune=False).fit(data)
    ups = {m: Upstream(m, "http://127.0.0.1:9/v1", f"up-{m}", cost=1.0) for m in router.models_}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gw = build_gateway(router, ups, GatewayConfig(ood_alpha=0.05))
        assert [str(w.message)[:36] for w in caught] == ["ood_alpha=0.05: the pool has no out-"]
        assert caught[0].filename == __file__  # the line that built the gateway
        with TestClient(create_app(gw)) as client:
            for i in range(3):
                got = client.post("/v1/route", json={"input": f"task 0 input {i}"})
                assert got.status_code == 200 and got.json()["fallback"] is False, got.text
        assert len(caught) == 1, [str(w.message)[:60] for w in caught]
