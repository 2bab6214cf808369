"""Encoder names → backends, word-piece caps in identifiers, per-batch progress, pooling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchroute.embedding import backends as B
from benchroute.embedding import get_encoder
from benchroute.embedding.base import HashingEncoder, encode_reporting, length_batches
from benchroute.embedding.onnx import OnnxEncoder, mean_pool
from benchroute.embedding.sentence import SentenceTransformerEncoder
from benchroute.embedding.static import StaticEncoder
from benchroute.exceptions import BenchrouteError


def test_names_pick_backend_and_cap():
    assert isinstance(get_encoder("all-mpnet-base-v2@torch"), SentenceTransformerEncoder)
    assert isinstance(get_encoder("all-mpnet-base-v2@onnx"), OnnxEncoder)
    assert isinstance(get_encoder("all-mpnet-base-v2@static"), StaticEncoder)
    enc = get_encoder("all-mpnet-base-v2@torch@max128")
    assert enc.identifier == "sentence-transformers/all-mpnet-base-v2@max128"
    assert get_encoder("all-mpnet-base-v2@torch").identifier == B.shared_identifier(384)
    assert get_encoder("all-mpnet-base-v2@static").identifier == "all-mpnet-base-v2@static"
    assert get_encoder("all-mpnet-base-v2@static@max256").identifier == \
        "all-mpnet-base-v2@static@max256"
    assert B.mpnet_encoder("all-mpnet-base-v2@onnx@max512", max_seq_length=128).max_seq_length == 128


@pytest.mark.parametrize("name", ["all-mpnet-base-v2@gpu", "all-mpnet-base-v2@max",
                                  "all-mpnet-base-v2@onnx@torch"])
def test_bad_suffix_names_the_grammar(name):
    with pytest.raises(BenchrouteError, match=r"unknown suffix .*\[@backend\]\[@max<N>\]"):
        get_encoder(name)


def test_identifiers_resolve_back_to_an_encoder():
    """A saved router stores an identifier; loading resolves it to the same namespace."""
    for name in ("all-mpnet-base-v2@torch@max128", "all-mpnet-base-v2@static@max256"):
        ident = get_encoder(name).identifier
        assert get_encoder(ident).identifier == ident


@pytest.mark.parametrize("suffix, message", [
    ("@max1", r"max_seq_length == 1, must be in \[3, 512\]"),
    ("@max2", r"max_seq_length == 2, must be in \[3, 512\]"),
    ("@max²", r"unknown suffix @max²"), ("@max١٢", r"unknown suffix @max١٢"),
    ("@max" + "9" * 5000, r"max_seq_length == 999999999999…, must be in \[3, 512\]")])
def test_caps_the_tokenizer_cannot_cut_to_or_no_ascii_number_are_refused(suffix, message):
    """From fuzzing the encoders: @max1 truncated nothing (texts past 512 word pieces then
    crashed both backends), @max2 gave every text one vector; "@max²" raised int()'s
    ValueError, "@max١٢" read as @max12, 5,000 digits passed Python's digit limit."""
    with pytest.raises(BenchrouteError, match=message):
        get_encoder("all-mpnet-base-v2" + suffix)


def test_onnx_cap_is_validated():
    with pytest.raises(BenchrouteError, match=r"max_seq_length == 600, must be in \[3, 512\]"):
        OnnxEncoder(max_seq_length=600)


@pytest.mark.parametrize("cap", [1, 2, 513, 0, -1, 2.5, "128", True])
@pytest.mark.parametrize("make", ["torch", "bf16", "other model"])
def test_encoders_built_directly_check_the_cap_as_names_do(make, cap):
    """From a review: SentenceTransformerEncoder and Bf16Encoder built directly took
    max_seq_length=1 (a cap the tokenizer cannot cut to), which the name's @max1 refuses.
    Another model's upper limit is its own (checked when it loads, below)."""
    from benchroute.embedding.bf16 import Bf16Encoder

    build = {"torch": lambda: SentenceTransformerEncoder(max_seq_length=cap),
             "bf16": lambda: Bf16Encoder(max_seq_length=cap),
             "other model": lambda: SentenceTransformerEncoder("some/model", max_seq_length=cap)}
    if make == "other model" and cap == 513:
        assert build[make]().identifier == "some/model@max513"
        return
    name = "Bf16Encoder" if make == "bf16" else "SentenceTransformerEncoder"
    bound = "the model's own limit" if make == "other model" else "512"
    with pytest.raises(BenchrouteError, match=rf"{name}: max_seq_length == .*must be in "
                                              rf"\[3, {bound}\]"):
        build[make]()


@pytest.mark.usefixtures("mpnet_installed")
def test_another_models_cap_is_checked_against_its_positions_when_it_loads():
    """A local model folder is another model to the encoder: 1,024 word pieces pass the
    constructor (a long-context model takes them) and are refused by MPNet's 512 positions
    when it loads, instead of crashing on the first long text."""
    from benchroute.embedding.install import installed_model

    enc = SentenceTransformerEncoder(str(installed_model()), device="cpu", max_seq_length=1024)
    with pytest.raises(BenchrouteError, match=r"max_seq_length == 1024, above .* 512 position"):
        enc.encode(["a text"])
    assert enc._st is None
    ok = SentenceTransformerEncoder(str(installed_model()), device="cpu", max_seq_length=512)
    assert ok.encode(["word " * 600]).shape == (1, 768)


def test_encoders_built_directly_keep_a_good_cap():
    from benchroute.embedding.bf16 import Bf16Encoder

    assert SentenceTransformerEncoder(max_seq_length=np.int64(3)).identifier == \
        "sentence-transformers/all-mpnet-base-v2@max3"
    assert Bf16Encoder(max_seq_length=512).max_seq_length == 512
    assert SentenceTransformerEncoder().max_seq_length is None


def test_default_backend(monkeypatch, caplog):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with caplog.at_level("INFO", logger="benchroute.embedding.backends"):
        assert B.default_backend() == "torch"
    assert "onnxruntime is not installed: the torch backend" in caplog.text
    monkeypatch.setattr(importlib.util, "find_spec", real)
    assert B.default_backend("cuda") == "torch"  # an accelerator: sentence-transformers


def test_onnx_shares_the_torch_namespace_only_when_verified(tmp_path, caplog):
    folder = tmp_path / "all-mpnet-base-v2-onnx"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"x")
    info = {"format_version": 1, "check_min_cosine": 0.99999, "onnx_bytes": 1}
    (folder / "export.json").write_text(json.dumps(info))
    assert OnnxEncoder(root=tmp_path).identifier == "sentence-transformers/all-mpnet-base-v2"
    assert OnnxEncoder(max_seq_length=128, root=tmp_path).identifier == \
        "sentence-transformers/all-mpnet-base-v2@max128"
    info["check_min_cosine"] = 0.999
    (folder / "export.json").write_text(json.dumps(info))
    assert OnnxEncoder(root=tmp_path).identifier == "all-mpnet-base-v2@onnx"
    # its vectors go to a cache of their own: said, not silent (found by a review)
    assert "minimum cosine of 0.999000 only" in caplog.text and "cached apart" in caplog.text
    info["format_version"] = 99
    (folder / "export.json").write_text(json.dumps(info))
    with pytest.raises(BenchrouteError, match="format_version is 99, expected 1"):
        OnnxEncoder(root=tmp_path).identifier  # noqa: B018


def test_missing_export_without_auto_export_says_how(tmp_path):
    with pytest.raises(BenchrouteError, match="benchroute model export-onnx"):
        OnnxEncoder(root=tmp_path, export=False).identifier  # noqa: B018


def test_length_batches_cover_every_row_once_shortest_first():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    batches = length_batches(lengths, 3)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(7)) and [len(b) for b in batches] == [3, 3, 1]
    assert [lengths[r] for r in rows] == sorted(lengths)


def test_progress_moves_per_batch():
    calls: list[int] = []

    class Batched(HashingEncoder):
        def encode(self, texts, batch_size=32, on_batch=None):
            out = super().encode(texts)
            for s in range(0, len(texts), batch_size):
                if on_batch is not None:
                    on_batch(len(texts[s:s + batch_size]))
            return out

    texts = [f"text {i}" for i in range(10)]
    encode_reporting(Batched(), texts, 4, calls.append)
    assert calls == [4, 4, 2]
    calls.clear()
    encode_reporting(HashingEncoder(), texts, 4, calls.append)  # no on_batch: once at the end
    assert calls == [10]


def test_mean_pool_ignores_padding_and_normalises():
    tokens = np.zeros((2, 3, 2), dtype=np.float32)
    tokens[0] = [[1, 0], [0, 1], [100, 100]]  # third position is padding
    tokens[1] = [[3, 4], [3, 4], [3, 4]]
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    out = mean_pool(tokens, mask)
    np.testing.assert_allclose(out, [[2 ** -0.5, 2 ** -0.5], [0.6, 0.8]], rtol=1e-6)
