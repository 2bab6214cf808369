"""Properties of the surfaces that take outside input (hypothesis): the gateway's entry grammar
(benchroute.serve.entry), the one JSON rule (benchroute._persist), the bounded metric labels
(benchroute.serve.metrics) and the policy-parameter checks (benchroute.policies), each on
hostile or arbitrary input: only the library's own error class, never a traceback."""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from benchroute import policies as pol
from benchroute._persist import check_format_version, decode_text, parse_json
from benchroute.exceptions import BenchrouteError, FormatVersionError
from benchroute.serve.decide import Decision
from benchroute.serve.entry import (
    POLICY_NAMES,
    POLICY_PARAMS,
    PREFIX,
    Entry,
    EntryError,
    check_value,
    parse_entry,
    reads_as_entry,
)
from benchroute.serve.metrics import GatewayMetrics

FAST = settings(max_examples=150)
MID = settings(max_examples=80)
SLOW = settings(max_examples=30)

BOM = b"\xef\xbb\xbf"
#: characters str.strip() removes, ASCII and not
SPACES = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2003\u2028\u202f\u3000"
#: any code point, lone surrogates and control characters included
any_char = st.characters(codec=None, categories=None)
any_text = st.text(any_char, max_size=80)
#: integers too long for str() (Python's 4,300-digit limit)
beyond_str = st.integers(4301, 6000).flatmap(
    lambda k: st.sampled_from([10**k, -(10**k), 10**k + 7]))
#: integers past a float's range but printable
beyond_float = st.integers(309, 4000).flatmap(lambda k: st.sampled_from([10**k, -(10**k)]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=20)


class MyError(BenchrouteError):
    """A caller's own error class, as the loaders pass one."""


def same_json(a: object, b: object) -> bool:
    """Equal as JSON: 1 and 1.0, 0.0 and -0.0, NaN and NaN told apart as the text tells them."""
    return json.dumps(a) == json.dumps(b)


# ------------------------------------------------------------------------ entry grammar
def mixed_case(draw, s: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(s), max_size=len(s)))
    return "".join(ch.upper() if f else ch for ch, f in zip(s, flips))


@st.composite
def decimal_text(draw, negative: bool | None = None) -> str:
    """A plain decimal as the grammar spells it: 0.3, -0.05, .5, 7., 1e-4, 12.50E+2."""
    sign = draw(st.booleans()) if negative is None else negative
    whole = draw(st.text("0123456789", max_size=4))
    frac = draw(st.text("0123456789", max_size=6))
    if not whole:
        body = "." + (frac or "0")
    elif frac or draw(st.booleans()):
        body = whole + "." + frac
    else:
        body = whole
    if draw(st.booleans()):
        body += draw(st.sampled_from(["e", "E"])) + draw(st.sampled_from(["", "-", "+"])) + \
            str(draw(st.integers(0, 12)))
    return ("-" if sign else "") + body


@st.composite
def entry_names(draw) -> str:
    """Names of the grammar, valid or not: any policy (or a near miss) with or without a value,
    in any case and spacing."""
    policy = draw(st.sampled_from([*POLICY_NAMES, "smallest-sufficient", "cheapest-within",
                                   "share_", "thresh", "lagrangian-", ""]))
    name = PREFIX if not policy else f"{PREFIX}-{policy}"
    if policy and draw(st.booleans()):
        name += "-" + draw(decimal_text())
    if draw(st.booleans()):
        name = mixed_case(draw, name)
    if draw(st.booleans()):
        name = draw(st.text(SPACES, max_size=3)) + name + draw(st.text(SPACES, max_size=3))
    return name


#: served model names: plain ones, and ones spelled like entry points
served = st.dictionaries(st.text(min_size=1, max_size=12) | entry_names(), st.sampled_from(
    ["m-a", "m-b"]), max_size=4).filter(lambda d: "" not in d)
plain_served = st.dictionaries(st.sampled_from(["gpt-4o", "llama-3-8b", "Qwen2.5-7B"]),
                               st.sampled_from(["m-a", "m-b"]), max_size=3)

long_digits = st.integers(1, 6000).map(lambda n: "9" * n)
any_model_field = st.one_of(
    any_text, entry_names(),
    st.tuples(st.sampled_from([f"{PREFIX}-{p}-" for p in POLICY_PARAMS]),
              long_digits, st.sampled_from(["", ".5", "e9", "e-99999", "." + "0" * 400 + "1"]))
    .map("".join),
    long_digits.map(lambda s: f"{PREFIX}-lagrangian-0.{s}1"),
    long_digits.map(lambda s: f"{PREFIX}-threshold-1e{s}"),
    json_values,  # what a request body's "model" may hold
    st.from_type(type).flatmap(st.from_type),
)


def check_entry_result(name: object, models: dict[str, str]) -> Entry | None:
    """parse_entry's result, or None where it refused with a 400 or a 404."""
    try:
        e = parse_entry(name, models)
    except EntryError as exc:
        assert exc.status in (400, 404), exc.status
        return None
    assert isinstance(e, Entry)
    assert e.policy is None or e.policy == "pinned" or e.policy in POLICY_NAMES
    if e.policy == "pinned":
        assert e.pinned == models[name]  # type: ignore[index]
    if e.value is not None:
        assert e.policy in POLICY_PARAMS
        _, lo, hi = POLICY_PARAMS[e.policy]  # type: ignore[index]
        assert math.isfinite(e.value) and lo <= e.value <= hi, e
    return e


@given(name=any_model_field, models=served)
@FAST
@example(name="\ud800", models={})
@example(name="benchroute-lagrangian-" + "9" * 5000, models={})
@example(name="benchroute-threshold-١", models={})
def test_parse_entry_refuses_only_with_an_entry_error(name, models):
    e = check_entry_result(name, models)
    assert e is None or len(e.label) <= 60


@given(name=st.sampled_from([np.array([1, 2]), np.array(["a", "b"]), np.zeros((2, 2))]))
@settings(max_examples=5)
def test_parse_entry_refuses_any_object_with_an_entry_error(name):
    assert check_entry_result(name, {}) is None


@given(name=entry_names(), models=plain_served)
@FAST
@example(name="benchroute-threshold--0", models={})
@example(name="benchroute-lagrangian-1e15", models={})
@example(name="benchroute-budget-1e16", models={})
def test_label_is_a_fixed_point(name, models):
    e = check_entry_result(name, models)
    assume(e is not None)
    again = parse_entry(e.label, models)
    assert (again.policy, again.value, again.pinned) == (e.policy, e.value, e.pinned)
    assert again.label == e.label
    if e.value is not None:  # and -0.0 stays -0.0
        assert math.copysign(1, again.value) == math.copysign(1, e.value)


@given(policy=st.sampled_from(sorted(POLICY_PARAMS)), text=decimal_text(), data=st.data())
@FAST
def test_spellings_of_one_entry_have_one_label(policy, text, data):
    value = float(text)
    _, lo, hi = POLICY_PARAMS[policy]
    assume(lo <= value <= hi)
    plain = parse_entry(f"{PREFIX}-{policy}-{text}", {})
    assert plain.value == value  # the number as written
    mantissa, e, exponent = text.lower().partition("e")
    zeros = data.draw(st.text("0", min_size=1, max_size=5))
    padded = mantissa + zeros if "." in mantissa else mantissa + "." + zeros
    variant = f"{PREFIX}-{policy.replace('_', data.draw(st.sampled_from('-_')))}-{padded}{e}" \
        f"{exponent}"
    variant = mixed_case(data.draw, variant)
    variant = data.draw(st.text(SPACES, max_size=3)) + variant + \
        data.draw(st.text(SPACES, max_size=3))
    assert parse_entry(variant, {}).label == plain.label, variant


@given(name=any_model_field | st.tuples(
    st.sampled_from([f"{PREFIX}-{p}-" for p in POLICY_PARAMS]),
    st.sampled_from(["-", ""]), st.sampled_from(["0.", "", "."]), long_digits,
    st.sampled_from(["", "e-300", "e-320", "e300", "E-4"])).map("".join))
@FAST
@example(name="benchroute-smallest_sufficient-0.00000000000000000000022250738585072014e-285")
def test_labels_are_short_whatever_the_name(name):
    e = check_entry_result(name, {})
    assume(e is not None)
    assert len(e.label) <= 60, e.label


@st.composite
def outside(draw) -> tuple[str, float]:
    policy = draw(st.sampled_from(sorted(POLICY_PARAMS)))
    _, lo, hi = POLICY_PARAMS[policy]
    below = st.floats(max_value=lo, exclude_max=True, allow_nan=False, allow_infinity=False)
    above = st.floats(min_value=hi, exclude_min=True, allow_nan=False, allow_infinity=False)
    value = draw(below | above if math.isfinite(hi) else below)
    return policy, value


@given(pv=outside())
@FAST
@example(pv=("threshold", 1.0000000000000002))
@example(pv=("share", -5e-324))
def test_values_outside_a_policy_range_are_400(pv):
    policy, value = pv
    with pytest.raises(EntryError) as exc:
        parse_entry(f"{PREFIX}-{policy}-{value!r}", {})
    assert exc.value.status == 400
    with pytest.raises(EntryError):
        check_value(policy, value, "here")


@given(policy=st.sampled_from(sorted(POLICY_PARAMS)), digits=long_digits)
@SLOW
def test_a_value_beyond_a_float_is_400(policy, digits):
    with pytest.raises(EntryError) as exc:
        parse_entry(f"{PREFIX}-{policy}-1{digits}e99{digits}", {})
    assert exc.value.status == 400


@given(models=served.filter(bool), data=st.data())
@FAST
def test_served_model_names_pin(models, data):
    name = data.draw(st.sampled_from(sorted(models)))
    e = parse_entry(name, models)
    assert (e.policy, e.pinned, e.label) == ("pinned", models[name], name)
    assert parse_entry(e.label, models).pinned == models[name]


@given(policy=st.sampled_from(POLICY_NAMES), value=st.sampled_from(["", "-0.5", "-0.50", "1"]),
       upper=st.booleans(),
       models=st.dictionaries(st.sampled_from([PREFIX, *(f"{PREFIX}-{p}" for p in POLICY_NAMES),
                                               *(f"{PREFIX}-{p}-1" for p in POLICY_PARAMS)])
                              | st.text(max_size=8), st.just("m-a"), max_size=4))
@MID
def test_a_policy_label_never_names_a_served_model(policy, value, upper, models):
    """A served model named like an entry point ('benchroute-best') would share its label with
    that entry spelled another way (' BENCHROUTE-BEST'): the gateway refuses such names at
    start-up (``reads_as_entry``), so among the names it serves no label collides."""
    served = {m: v for m, v in models.items() if not reads_as_entry(m)}
    name = f" {PREFIX}-{policy}{value}"
    e = check_entry_result(name.upper() if upper else name, served)
    assume(e is not None)
    assert e.policy != "pinned"  # the name as sent is no served model's (a leading space)
    assert e.label not in served, (e.label, served)
    assert all(reads_as_entry(m) for m in models if m == e.label)


# ------------------------------------------------------------------------ JSON
json_tokens = st.sampled_from(["[", "]", "{", "}", ",", ":", '"', '"a"', "1", "-0", "1.5", "1e5",
                               "1e999", "-1e999", "NaN", "Infinity", "-Infinity", "nan", "true",
                               "null", " ", "\n", '"\\ud800"', '"\\u00e9"', "\ufeff", "9" * 5000,
                               "0." + "1" * 500, "1e-999"])
json_like = st.lists(json_tokens, max_size=12).map("".join)
any_doc = st.one_of(
    st.binary(max_size=200),
    json_like.map(lambda s: s.encode("utf-8", "surrogatepass")),
    any_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 100_000).flatmap(lambda n: st.sampled_from([b"[" * n, b'{"a":' * n,
                                                               b"[" * n + b"]" * n])),
)


def walk(v: object):
    yield v
    if isinstance(v, list):
        for x in v:
            yield from walk(x)
    elif isinstance(v, dict):
        for x in v.values():
            yield from walk(x)


def parse_or_error(doc: str | bytes, strict: bool) -> tuple[bool, object]:
    try:
        return True, parse_json(doc, "doc.json", MyError, strict=strict)
    except MyError as exc:
        assert "doc.json" in str(exc)
        return False, None


@given(doc=any_doc | any_text, strict=st.booleans())
@FAST
@example(doc=b"\xff", strict=False)
@example(doc=b"[" * 50_000, strict=True)
@example(doc=b"9" * 5000, strict=False)
@example(doc=b"[1e999, NaN]", strict=True)
def test_parse_json_fails_only_with_the_callers_error(doc, strict):
    ok, value = parse_or_error(doc, strict)
    if ok and strict:
        assert not any(isinstance(x, float) and not math.isfinite(x) for x in walk(value)), value


@given(v=json_values, ascii_only=st.booleans(), strict=st.booleans(), bom=st.booleans())
@FAST
def test_parse_json_reads_back_what_json_dumps_wrote(v, ascii_only, strict, bom):
    doc = (BOM if bom else b"") + json.dumps(v, ensure_ascii=ascii_only).encode()
    assert same_json(parse_json(doc, "doc.json", MyError, strict=strict), v)


@given(doc=any_doc, strict=st.booleans())
@FAST
@example(doc=b"", strict=False)
def test_a_byte_order_mark_changes_nothing(doc, strict):
    # one BOM is dropped; a second is text (U+FEFF), not a mark, so docs starting with one are
    # left out
    assume(not doc.startswith(BOM))
    ok, value = parse_or_error(doc, strict)
    ok2, value2 = parse_or_error(BOM + doc, strict)
    assert ok == ok2 and same_json(value, value2)


@given(raw=st.binary(max_size=100))
@FAST
def test_decode_text_is_utf8_or_the_callers_error(raw):
    try:
        text = decode_text(raw, "doc.txt", MyError)
    except MyError:
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")
        return
    assert raw in (text.encode(), BOM + text.encode())


versions = st.one_of(st.integers(), beyond_float, st.booleans(), st.none(),
                     st.floats(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
                     st.sampled_from([np.int64(1), "1", 1.0, Decimal(1), Fraction(2)]))


@given(version=versions, absent=st.booleans(), oldest=st.integers(0, 5),
       supported=st.integers(0, 5), required=st.booleans())
@FAST
@example(version=True, absent=False, oldest=0, supported=3, required=False)
@example(version=0, absent=True, oldest=1, supported=3, required=False)
def test_format_version_accepts_exactly_oldest_to_supported(version, absent, oldest, supported,
                                                            required):
    meta = {"other": 1} if absent else {"format_version": version}
    is_int = type(version) is int
    if absent:
        version, is_int = (None, False) if required else (0, True)
    try:
        got = check_format_version(meta, "r.json", supported, "router", MyError, oldest, required)
    except FormatVersionError:
        assert is_int and not oldest <= version <= supported
        assert version > supported or 0 <= version < oldest
        return
    except MyError:
        assert not is_int or version < 0
        return
    assert is_int and oldest <= version <= supported and got == version


@given(version=beyond_str)
@settings(max_examples=10)
def test_format_version_refuses_an_int_too_long_to_print(version):
    with pytest.raises(BenchrouteError):
        check_format_version({"format_version": version}, "r.json", 3, "router", MyError)


# ------------------------------------------------------------------------ metrics
MODELS = ["a", "b", "c"]
label_text = st.text(any_char, max_size=6)


@st.composite
def decision_runs(draw) -> tuple[int, list[str], list[tuple[str, str]]]:
    """max_entries, the reserved names, and (entry label, model) per decision."""
    max_entries = draw(st.integers(1, 5))
    reserved = draw(st.lists(st.sampled_from([PREFIX, "a", "other", "other entries", "x"])
                             | label_text, max_size=3))
    pool = [*reserved, "other", "other entries", PREFIX, "e1", "e2", "e3"]
    decisions = draw(st.lists(st.tuples(st.sampled_from(pool) | label_text,
                                        st.sampled_from(MODELS)), max_size=40))
    return max_entries, reserved, decisions


@given(run=decision_runs())
@MID
@example(run=(1, ["other"], [("e1", "a"), ("e2", "a"), ("other", "b")]))
@example(run=(2, [], [("other", "a"), ("e1", "a"), ("e2", "b"), ("e3", "a")]))
def test_metrics_keep_a_bounded_set_of_entry_labels(run):
    assert check_metric_labels(*run) <= run[0] + len(set(run[1])) + 1


@given(run=decision_runs().map(lambda r: (r[0], [*r[1], "other", "other entries"], r[2])))
@MID
def test_metrics_overflow_label_is_never_a_reserved_name(run):
    labels = check_metric_labels(*run)
    assert labels <= run[0] + len(set(run[1])) + 1


def check_metric_labels(max_entries: int, reserved: list[str],
                        decisions: list[tuple[str, str]]) -> int:
    """Checks the counts against the decisions; returns how many entry labels there are."""
    m = GatewayMetrics(MODELS, "a", None, max_entries=max_entries, reserved=reserved)
    for entry, model in decisions:
        m.decision(Decision(entry, "best", {}, model, {}, None))

    counts: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(m.prometheus().decode("utf-8", "surrogatepass")):
        for s in family.samples:
            if s.name == "benchroute_decisions_total":
                counts[(s.labels["entry"], s.labels["model"])] += int(s.value)
    labels = {e for e, _ in counts}
    assert len(labels) <= max_entries + len(set(reserved)) + 1, labels
    assert sum(counts.values()) == len(decisions)
    for r in set(reserved):  # a reserved name counts its own decisions, and only those
        assert sum(n for (e, _), n in counts.items() if e == r) == \
            sum(e == r for e, _ in decisions), (r, counts)
    # the entries that are neither reserved nor the overflow label: the first max_entries kept
    # with their own counts
    free = list(dict.fromkeys(e for e, _ in decisions if e not in reserved and e != m.other))
    for e in free[:max_entries]:
        assert counts[(e, "a")] + counts[(e, "b")] + counts[(e, "c")] == \
            sum(d == e for d, _ in decisions)
    by_entry = m.snapshot()["by_entry"]
    assert {(e, k): n for e, c in by_entry.items() for k, n in c.items()} == dict(counts)
    return len(labels)


# ------------------------------------------------------------------------ policy parameters
PARAM_NAMES = ["t", "tau", "lam", "budget", "max_quality_drop", "eps", "strong", "weak",
               "iters", "share", "threshold", "T", ""]
param_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-3, 8), beyond_float, st.floats(),
    st.text(max_size=4), st.sampled_from([np.float64("nan"), np.float32(0.5), np.int64(1),
                                          np.int8(-1), np.bool_(True), np.float16("inf"),
                                          np.uint64(2**64 - 1), [1], {"a": 1}, 1j, b"1"]),
    st.from_type(type).flatmap(st.from_type),
)
param_dicts = st.dictionaries(st.sampled_from(PARAM_NAMES) | st.text(max_size=4), param_values,
                              max_size=5)
policy_names = st.sampled_from([*pol.POLICIES, "share", "Best", ""])


def only_benchroute_errors(fn, *args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn(*args)
        except BenchrouteError:
            out = None
    assert all(issubclass(w.category, FutureWarning) for w in caught), \
        [str(w.message) for w in caught]
    return out, caught


@given(name=policy_names, params=param_dicts, n_models=st.integers(0, 6))
@FAST
@example(name="threshold", params={"t": 10**400, "strong": 0, "weak": 1}, n_models=2)
@example(name="cheapest_within", params={"eps": 0.1}, n_models=2)
@example(name="threshold", params={"t": 0.1, "strong": np.int64(1), "weak": 0}, n_models=2)
def test_check_policy_params_fails_only_with_a_benchroute_error(name, params, n_models):
    out, caught = only_benchroute_errors(pol.check_policy_params, name, params, n_models)
    if caught:
        assert name == "cheapest_within" and "eps" in params
    if out is None:
        return
    assert "eps" not in out
    for key, value in out.items():
        if key in ("strong", "weak"):
            assert type(value) is int and 0 <= value < n_models
        else:
            assert type(value) is float and math.isfinite(value)
            assert key not in ("max_quality_drop", "budget") or value >= 0
    if "strong" in out:
        assert out["strong"] != out["weak"]


@given(name=policy_names, params=param_dicts)
@FAST
def test_canonical_params_renames_only_the_old_names(name, params):
    out, caught = only_benchroute_errors(pol.canonical_params, name, params)
    if out is None:
        return
    takes_drop = name == "cheapest_within"
    assert len(caught) == int(takes_drop and "eps" in params)
    if takes_drop and "eps" in params:
        assert "eps" not in out and out["max_quality_drop"] is params["eps"]
        assert {k: v for k, v in out.items() if k != "max_quality_drop"} == \
            {k: v for k, v in params.items() if k != "eps"}
    else:
        assert out.keys() == params.keys()
        assert all(out[k] is params[k] for k in params)


@given(key=st.sampled_from(["t", "strong"]), value=beyond_str)
@settings(max_examples=10)
def test_check_policy_params_refuses_an_int_too_long_to_print(key, value):
    params = {"t": 0.1, "strong": 0, "weak": 1, key: value}
    with pytest.raises(BenchrouteError):
        pol.check_policy_params("threshold", params, 2)
