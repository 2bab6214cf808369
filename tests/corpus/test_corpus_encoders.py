"""Encoder names as users, scripts and (untrusted) router folders give them: each resolves on
this machine at once, or fails at once with what is available; the hub only when asked."""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from benchroute.embedding import HashingEncoder, get_encoder

with contextlib.suppress(ImportError):  # the code before this corpus (its counts in docs/reliability.md)
    from benchroute.embedding import resolve_encoder_name

AREA = "encoders"


def _fast(fn, seconds=2.0):
    def run():
        start = time.perf_counter()
        try:
            return fn()
        finally:
            assert time.perf_counter() - start < seconds, "took too long (network retries?)"
    return run


@pytest.mark.parametrize("name", ["no-such-model", "sentence-transformers/all-MiniLM-L6-v2",
                                  "someone/some-model", "bert-base-uncased", "all-mpnet-base-v3"])
def test_unknown_name_fails_at_once(corpus, name, monkeypatch):
    monkeypatch.delenv("BENCHROUTE_ALLOW_DOWNLOAD", raising=False)
    assert corpus(AREA, "error", _fast(lambda: get_encoder(name).encode(["x"])),
           match=rf"encoder '{name}': not installed; available here: all-mpnet-base-v2.*"
                 r"allow_download=True")


@pytest.mark.parametrize("name", ["./no/such/folder", "/no/such/folder", "~/no-such-folder-here",
                                  "../../etc", "name with spaces", "tab\tname", "a" * 300])
def test_missing_folder_fails_at_once(corpus, name):
    assert corpus(AREA, "error", _fast(lambda: get_encoder(name).encode(["x"])),
           match=r"encoder .*: no such folder; available here:")


@pytest.mark.parametrize("name", ["", "   ", "nul\x00name", "lone \ud800"], ids=repr)
def test_malformed_name(corpus, name):
    assert corpus(AREA, "error", _fast(lambda: get_encoder(name).encode(["x"])),
           match=r"encoder name .*(expected a non-empty string|NUL or an unpaired surrogate)")


@pytest.mark.parametrize("value", [5, 3.5, ["hashing-16-12"], {"name": "x"}, b"hashing-16-12"], ids=repr)
def test_not_a_name_or_encoder(corpus, value):
    assert corpus(AREA, "error", lambda: get_encoder(value).encode(["x"]),
           match=r"encoder .* is a \w+, expected a name or an object with identifier, dimension and encode")


@pytest.mark.parametrize("name", ["hashing-0-12", "hashing--1-12", "hashing-16-21", "hashing-16-1",
                                  "hashing-16-123", "hashing-abc-12", "hashing-16-00",
                                  "hashing-99999999-12", "hashing-16-12-x", "hashing-"])
def test_bad_hashing_name(corpus, name):
    assert corpus(AREA, "error", lambda: get_encoder(name).encode(["x"]),
           match=rf"bad hashing encoder name '{name}'; expected hashing-<dim>-<lo><hi>")


@pytest.mark.parametrize("name, dim, grams", [("hashing-16-12", 16, (1, 2)), ("hashing-256-11", 256, (1, 1)),
                                              ("hashing-1024-13", 1024, (1, 3))])
def test_hashing_name(corpus, name, dim, grams):
    assert corpus(AREA, "right", lambda: get_encoder(name),
           check=lambda e: isinstance(e, HashingEncoder) and e.dimension == dim and e.ngram_range == grams
           and e.identifier == name)


def test_folder_that_is_not_a_model(corpus, tmp_path):
    assert corpus(AREA, "error", lambda: get_encoder(str(tmp_path)),
           match=rf"encoder folder {tmp_path}: no modules\.json or config\.json")


def test_file_instead_of_folder(corpus, tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"\0")
    assert corpus(AREA, "error", lambda: get_encoder(str(f)), match=r"model\.bin': no such folder")


@pytest.mark.new_api
def test_model_folder_resolves_locally(corpus, tmp_path):
    (tmp_path / "modules.json").write_text("[]")
    assert corpus(AREA, "right", lambda: resolve_encoder_name(str(tmp_path)),
           check=lambda r: r.kind == "folder" and r.path == tmp_path.resolve())


@pytest.mark.new_api
@pytest.mark.parametrize("name", ["my-model", "someone/my-model"])
def test_installed_model_resolves_locally(corpus, tmp_path, monkeypatch, name):
    monkeypatch.setenv("BENCHROUTE_HOME", str(tmp_path))
    folder = tmp_path / "models" / "my-model"
    folder.mkdir(parents=True)
    (folder / "modules.json").write_text(json.dumps([]))
    assert corpus(AREA, "right", lambda: resolve_encoder_name(name),
           check=lambda r: r.kind == "installed" and r.path == folder)


@pytest.mark.new_api
def test_unknown_name_lists_installed_models(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHROUTE_HOME", str(tmp_path))
    (tmp_path / "models" / "local-one").mkdir(parents=True)
    (tmp_path / "models" / "local-one" / "config.json").write_text("{}")
    assert corpus(AREA, "error", lambda: resolve_encoder_name("other-one"),
           match=r"available here: all-mpnet-base-v2, local-one, hashing-<dim>-<lo><hi>, a model folder")


@pytest.mark.new_api
@pytest.mark.parametrize("how", ["argument", "env"])
def test_hub_only_when_asked(corpus, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("BENCHROUTE_ALLOW_DOWNLOAD", "1")
    allow = True if how == "argument" else None
    assert corpus(AREA, "right", lambda: resolve_encoder_name("someone/some-model", allow_download=allow),
           check=lambda r: r.kind == "hub" and r.path is None and r.base == "someone/some-model")


@pytest.mark.parametrize("name", ["all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"])
def test_default_model_name(corpus, name):
    assert corpus(AREA, "right", lambda: get_encoder(name),
           check=lambda e: e.identifier == "sentence-transformers/all-mpnet-base-v2" and e.dimension == 768)


@pytest.mark.new_api
@pytest.mark.parametrize("name, suffix", [("all-mpnet-base-v2@onnx", "@onnx"),
                                          ("all-mpnet-base-v2@static@max256", "@static@max256")])
def test_suffixes_are_passed_to_the_backends(corpus, name, suffix):
    assert corpus(AREA, "right", lambda: resolve_encoder_name(name),
           check=lambda r: r.kind == "default" and r.suffix == suffix and r.base == "all-mpnet-base-v2")


def test_broken_local_model_is_a_clear_error(corpus, tmp_path):
    (tmp_path / "modules.json").write_text('[{"idx": 0, "name": "0", "path": "", "type": "no.such.Module"}]')
    assert corpus(AREA, "error", _fast(lambda: get_encoder(str(tmp_path)).encode(["x"]), 60),
           match=rf"{tmp_path}: cannot load the model")
