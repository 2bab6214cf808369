"""The ONNX and static backends on the real weights: same vectors as sentence-transformers,
no torch on the ONNX encode path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from benchroute.embedding import text_key
from benchroute.embedding.install import installed_model
from benchroute.exceptions import ModelNotInstalledError

pytestmark = pytest.mark.real_model

TEXTS = ["What is 2 + 2?", "  Spaces around  ", "Ünïcödé café 東京",
         " ".join(["A long question about the history of the Roman empire."] * 50)]


@pytest.fixture(scope="module")
def onnx_encoder():
    pytest.importorskip("onnxruntime")
    try:
        installed_model()
    except ModelNotInstalledError as exc:
        pytest.skip(f"{exc} (CI installs it; run `benchroute model install`)")
    from benchroute.embedding.onnx import OnnxEncoder, export_onnx

    export_onnx()  # once; a no-op when `make model` has exported it
    return OnnxEncoder()


def test_onnx_matches_shared_vectors(onnx_encoder, helm_mmlu, shared_embeddings):
    with np.load(shared_embeddings / "helm_mmlu_llama3.npz") as z:
        row = {str(k): i for i, k in enumerate(z["sha256"])}
        # the shared file is keyed by the raw text: keep the texts normalisation left unchanged
        texts = [t for t in helm_mmlu.instances()["text"].drop_duplicates().iloc[::40]
                 if text_key(t) in row][:28]
        assert len(texts) >= 20
        ref = z["embedding"][[row[text_key(t)] for t in texts]].astype(np.float32)
    got = onnx_encoder.encode(texts, batch_size=8)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.sum(got * ref, axis=1).min() >= 0.9999  # fp16 storage limits the agreement
    assert onnx_encoder.identifier == "sentence-transformers/all-mpnet-base-v2"


def test_a_lone_surrogate_is_encoded_as_the_replacement_character(onnx_encoder):
    """The tokenizer refused a text with a lone surrogate (a TypeError for the whole batch,
    naming neither the text nor its place); the loaders and the gateway read it as U+FFFD."""
    got = onnx_encoder.encode(["caf\ud800 au lait", "plain"])
    want = onnx_encoder.encode(["caf\ufffd au lait", "plain"])
    np.testing.assert_array_equal(got, want)


def test_onnx_matches_sentence_transformers_fp32(onnx_encoder):
    from benchroute.embedding.sentence import SentenceTransformerEncoder

    ref = SentenceTransformerEncoder(device="cpu").encode(TEXTS)
    got = onnx_encoder.encode(TEXTS, batch_size=3)  # mixed lengths in one padded batch
    assert np.sum(got * ref, axis=1).min() >= 0.9999
    capped = onnx_encoder.__class__(max_seq_length=16).encode(TEXTS[-1:])
    assert float(capped[0] @ got[-1]) < 0.9999  # the cap changes long texts' vectors


def test_onnx_encode_imports_no_torch(onnx_encoder, tmp_path):
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO)\n"
        "from benchroute.embedding import get_encoder\n"
        "enc = get_encoder('all-mpnet-base-v2')\n"
        "v = enc.encode(['hello world', 'a second text'])\n"
        "assert v.shape == (2, 768), v.shape\n"
        "print(type(enc).__name__, sorted(m for m in ('torch', 'sentence_transformers', "
        "'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "OnnxEncoder []"
    assert "loading all-mpnet-base-v2 (ONNX Runtime" in out.stderr  # the phase is announced


def test_static_encoder_ranks_related_texts_closer():
    from benchroute.embedding.static import StaticEncoder, read_static_info

    if read_static_info() is None:
        pytest.skip("static embeddings not distilled (`benchroute model distill-static`)")
    enc = StaticEncoder()
    v = enc.encode(["What is the capital of France?", "Name the capital city of France.",
                    "How do I bake sourdough bread?", ""])
    assert v.shape == (4, 256)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1
