"""The bf16 backend's gate: CPU units from the flags, the stored check, the name."""

from __future__ import annotations

import json

import pytest

from benchroute.embedding import bf16, get_encoder
from benchroute.embedding.backends import mpnet_encoder
from benchroute.exceptions import BenchrouteError

AMX = frozenset({"fpu", "avx512f", "amx_bf16", "amx_tile", "avx512_bf16"})
ZEN4 = frozenset({"fpu", "avx512f", "avx512_bf16", "avx512_vnni"})
OLD = frozenset({"fpu", "avx2"})


@pytest.mark.parametrize("flags, units", [(AMX, ["amx_bf16", "avx512_bf16"]),
                                          (ZEN4, ["avx512_bf16"]), (OLD, [])])
def test_units_from_flags(flags, units):
    assert bf16.bf16_units(flags) == units


def test_cpu_flags_reads_this_machine():
    flags = bf16.cpu_flags()
    assert isinstance(flags, frozenset)
    assert set(bf16.bf16_units()) <= set(bf16.BF16_UNITS)


@pytest.mark.parametrize("flags, passed, auto", [(AMX, True, True), (AMX, False, False),
                                                 (ZEN4, True, False), (OLD, True, False)])
def test_auto_only_with_amx_and_a_passed_check(monkeypatch, tmp_path, flags, passed, auto):
    monkeypatch.setattr(bf16, "cpu_flags", lambda: flags)
    assert not bf16.auto_bf16(tmp_path)  # nothing measured yet
    units = bf16.bf16_units(flags)
    entry = {"min_cosine": 0.99999 if passed else 0.99, "passed": passed, "units": units,
             "seconds_fp32": 14.0, "seconds_bf16": 7.1}
    bf16._store(tmp_path, bf16._check_key(units), entry)
    assert bf16.auto_bf16(tmp_path) is auto
    # a check that measured bf16 slower (torch emulating it) never makes it the default, nor
    # one without timings
    for seconds in ({"seconds_bf16": 109.0}, {"seconds_bf16": None}):
        bf16._store(tmp_path, bf16._check_key(units), {**entry, **seconds})
        assert bf16.auto_bf16(tmp_path) is False
    # the entry belongs to these units: another CPU sharing the folder measures again
    assert bf16.stored_check(tmp_path, ["other_unit"]) is None


def test_malformed_check_file_names_the_file(tmp_path):
    bf16.check_path(tmp_path).write_text(json.dumps({"format_version": 1, "checks": {
        bf16._check_key(["avx512_bf16"]): {"min_cosine": "high"}}}))
    with pytest.raises(BenchrouteError, match=r"bf16-check.json: field 'min_cosine' is 'high'"):
        bf16.stored_check(tmp_path, ["avx512_bf16"])
    bf16.check_path(tmp_path).write_text("[1, 2")
    with pytest.raises(BenchrouteError, match=r"bf16-check.json: invalid JSON at line 1 column 6"
                                              r".*delete it to measure again"):
        bf16.stored_check(tmp_path, ["avx512_bf16"])


def test_never_on_a_cpu_without_units(monkeypatch, tmp_path):
    monkeypatch.setattr(bf16, "cpu_flags", lambda: OLD)
    with pytest.raises(BenchrouteError, match="no bfloat16 units"):
        bf16.check_bf16(tmp_path)
    with pytest.raises(BenchrouteError, match="no bfloat16 units"):
        bf16.Bf16Encoder(root=tmp_path).encode(["x"])
    assert not bf16.check_path(tmp_path).exists()


def test_name_selects_the_backend():
    enc = get_encoder("all-mpnet-base-v2@bf16@max128")
    assert isinstance(enc, bf16.Bf16Encoder) and enc.max_seq_length == 128
    assert enc.identifier == "sentence-transformers/all-mpnet-base-v2@max128"
    with pytest.raises(BenchrouteError, match="device 'cuda'"):
        mpnet_encoder("all-mpnet-base-v2@bf16", device="cuda")


def test_a_failed_check_refuses_the_backend(monkeypatch, tmp_path):
    monkeypatch.setattr(bf16, "cpu_flags", lambda: ZEN4)
    bf16._store(tmp_path, bf16._check_key(["avx512_bf16"]),
                {"min_cosine": 0.998, "passed": False, "units": ["avx512_bf16"]})
    with pytest.raises(BenchrouteError, match=r"min cosine 0.998000 < 0.9999"):
        bf16.Bf16Encoder(root=tmp_path).encode(["x"])


def test_check_command_prints_the_stored_result(monkeypatch, capsys):
    from benchroute.cli import main

    entry = {"min_cosine": 0.99997, "passed": True, "units": ["avx512_bf16"], "texts": 12,
             "seconds_fp32": 2.0, "seconds_bf16": 1.0}
    monkeypatch.setattr(bf16, "check_bf16", lambda force=False: entry)
    monkeypatch.setattr(bf16, "cpu_flags", lambda: ZEN4)
    assert main(["model", "check-bf16"]) == 0
    out = capsys.readouterr().out
    assert "min cosine 0.999970" in out and "passed" in out and "default backend: unchanged" in out
    monkeypatch.undo()
    monkeypatch.setattr(bf16, "cpu_flags", lambda: OLD)
    assert main(["model", "check-bf16"]) != 0
    assert "no bfloat16 units" in capsys.readouterr().err
