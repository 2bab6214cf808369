"""Model files as untrusted data (issue 18, class 7): the ONNX export and the static tier are
checked against the SHA-256 their sidecars record before any vector is computed (so none reaches
a shared cache namespace), and broken sidecars, graphs, tokenizers and arrays are one clear error.

A tiny ONNX graph (an embedding lookup, 768-d) and a word-level tokenizer stand in for the real
model, built in a few milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchroute._persist import sha256_file
from benchroute.embedding import EmbeddingCache, get_encoder
from benchroute.embedding.onnx import ONNX_FOLDER, OnnxEncoder
from benchroute.embedding.static import DISTILL_PARAMS, STATIC_FOLDER, StaticEncoder

AREA = "models"
WORDS = ["<s>", "<pad>", "</s>", "[UNK]", "what", "is", "the", "capital", "of", "france"]
TEXTS = ["what is the capital of france", "the capital"]


def _tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))


def _graph(path: Path, table: np.ndarray) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])
    out = helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, ["b", "s", 768])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["token_embeddings"]),
         helper.make_node("Identity", ["attention_mask"], ["unused"])],
        "lookup", [ids, mask], [out], [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _table(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(len(WORDS), 768)).astype(np.float32)


def _models_folder(tmp_path: Path, name: str) -> Path:
    """``models/`` holding the tokenizer (no weights) and an empty ``name`` folder."""
    _tokenizer(tmp_path / "models" / "all-mpnet-base-v2")
    (tmp_path / "models" / name).mkdir()
    return tmp_path / "models"


@pytest.fixture
def onnx_root(tmp_path):
    """models/ with the tokenizer and an export recorded as verified."""
    root = _models_folder(tmp_path, ONNX_FOLDER)
    _graph(root / ONNX_FOLDER / "model.onnx", _table())
    _sidecar(root / ONNX_FOLDER)
    return root


def _sidecar(folder: Path, **change: object) -> None:
    graph = folder / "model.onnx"
    info = {"format_version": 1, "onnx_sha256": sha256_file(graph),
            "onnx_bytes": graph.stat().st_size, "check_min_cosine": 0.99999, **change}
    (folder / "export.json").write_text(json.dumps(info))


def _embed(root: Path, cache: Path) -> np.ndarray:
    enc = OnnxEncoder(root=root, export=False)
    return EmbeddingCache.for_encoder(enc, cache).embed(TEXTS, enc, progress=False)


def test_verified_export_encodes_without_weights(corpus, onnx_root, tmp_path):
    run = lambda: _embed(onnx_root, tmp_path / "cache")  # noqa: E731
    assert corpus(AREA, "right", run, check=lambda X: X.shape == (2, 768)
                  and np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5))


def _poisoned_cache_is_empty(cache: Path) -> bool:
    return not list(cache.rglob("*.npz"))


@pytest.mark.parametrize("tamper", ["zeroed", "negated", "other-seed"])
def test_same_size_graph_with_other_weights(corpus, onnx_root, tmp_path, tamper):
    graph = onnx_root / ONNX_FOLDER / "model.onnx"
    _embed(onnx_root, tmp_path / "before")  # verified once in this process: the memo is warm
    table = {"zeroed": np.zeros_like(_table()), "negated": -_table(),
             "other-seed": _table(1)}[tamper]
    size = graph.stat().st_size
    _graph(graph, table)
    assert graph.stat().st_size == size
    cache = tmp_path / "cache"
    run = lambda: _embed(onnx_root, cache)  # noqa: E731
    assert corpus(AREA, "error", run, match=r"model\.onnx: SHA-256 [0-9a-f]{64}, but "
                  r"export\.json records [0-9a-f]{64}; the file changed")
    assert _poisoned_cache_is_empty(cache)


@pytest.mark.parametrize("change, pattern", [
    ({"onnx_sha256": None}, r"export\.json: no SHA-256 of model\.onnx recorded"),
    ({"onnx_sha256": "ab" * 32}, r"model\.onnx: SHA-256 .* but export\.json records abab"),
    ({"check_min_cosine": "high"}, r"check_min_cosine is 'high', expected a number in \[-1, 1\]"),
    ({"check_min_cosine": 7}, r"check_min_cosine is 7"),
    ({"check_min_cosine": None}, r"check_min_cosine is None"),
    ({"onnx_bytes": "1"}, r"model\.onnx: \d+ bytes, the export recorded '1'"),
], ids=["no-sha", "wrong-sha", "cosine-str", "cosine-7", "cosine-null", "bytes-str"])
def test_bad_export_sidecar_field(corpus, onnx_root, tmp_path, change, pattern):
    _sidecar(onnx_root / ONNX_FOLDER, **change)
    assert corpus(AREA, "error", lambda: _embed(onnx_root, tmp_path / "c"), match=pattern)


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"[" * 100_000, b"{bad json",
                                     b"[1, 2]"], ids=["not-utf8", "deep", "invalid", "list"])
def test_unreadable_export_sidecar(corpus, onnx_root, tmp_path, content):
    (onnx_root / ONNX_FOLDER / "export.json").write_bytes(content)
    run = lambda: _embed(onnx_root, tmp_path / "c")  # noqa: E731
    assert corpus(AREA, "error", run, match=r"export\.json: (not UTF-8 text|invalid JSON|expected a JSON object)"
                  r".*export-onnx --force")


@pytest.mark.parametrize("content", [b"not a protobuf at all", b"", b"\x08\x07" * 50],
                         ids=["text", "empty", "truncated"])
def test_corrupt_graph_with_matching_sidecar(corpus, onnx_root, tmp_path, content):
    folder = onnx_root / ONNX_FOLDER
    (folder / "model.onnx").write_bytes(content)
    _sidecar(folder)
    run = lambda: _embed(onnx_root, tmp_path / "c")  # noqa: E731
    assert corpus(AREA, "error", run, match=r"model\.onnx: not a valid ONNX graph")


@pytest.mark.parametrize("content", [b"{}", b"not json", b'{"model": {"type": "WordLevel"}}'],
                         ids=["empty-object", "not-json", "incomplete"])
def test_broken_tokenizer(corpus, onnx_root, tmp_path, content):
    (onnx_root / "all-mpnet-base-v2" / "tokenizer.json").write_bytes(content)
    run = lambda: _embed(onnx_root, tmp_path / "c")  # noqa: E731
    assert corpus(AREA, "error", run, match=r"tokenizer\.json: not a valid tokenizer file")


# ---------------------------------------------------------------- the static tier
D = int(DISTILL_PARAMS["pca_dims"])


@pytest.fixture
def static_root(tmp_path):
    root = _models_folder(tmp_path, STATIC_FOLDER)
    folder = root / STATIC_FOLDER
    ids = np.arange(4, len(WORDS), dtype=np.int32)
    vectors = np.random.default_rng(0).normal(size=(len(ids), D)).astype(np.float16)
    np.savez(folder / "vectors.npz", token_ids=ids, vectors=vectors)
    _static_sidecar(folder)
    return root


def _static_sidecar(folder: Path) -> None:
    info = {"format_version": 1, "params": DISTILL_PARAMS,
            "vectors_sha256": sha256_file(folder / "vectors.npz")}
    (folder / "distill.json").write_text(json.dumps(info))


def _static_embed(root: Path) -> np.ndarray:
    return StaticEncoder(root=root, distill=False).encode(TEXTS)


def test_verified_static_tier_encodes(corpus, static_root):
    assert corpus(AREA, "right", lambda: _static_embed(static_root),
                  check=lambda X: X.shape == (2, D))


def _rewrite_vectors(root: Path, resign: bool, **arrays: np.ndarray) -> None:
    folder = root / STATIC_FOLDER
    with np.load(folder / "vectors.npz") as z:
        current = {k: z[k] for k in z.files}
    np.savez(folder / "vectors.npz", **{**current, **arrays})
    if resign:
        _static_sidecar(folder)


@pytest.mark.parametrize("change", ["negated", "shifted"])
def test_static_vectors_changed_after_distillation(corpus, static_root, change):
    with np.load(static_root / STATIC_FOLDER / "vectors.npz") as z:
        vectors = z["vectors"]
    new = -vectors if change == "negated" else np.roll(vectors, 1, axis=0)
    _rewrite_vectors(static_root, resign=False, vectors=new)
    assert corpus(AREA, "error", lambda: _static_embed(static_root),
                  match=r"vectors\.npz: SHA-256 .* but distill\.json records")


@pytest.mark.parametrize("arrays, pattern", [
    ({"token_ids": np.array([4, 5, 6, 7, 8, 99], dtype=np.int32)}, r"'token_ids' must be distinct ids"),
    ({"token_ids": np.array([4, 5, 6, 7, 8, -1], dtype=np.int32)}, r"'token_ids' must be distinct"),
    ({"token_ids": np.array([4, 4, 6, 7, 8, 9], dtype=np.int32)}, r"'token_ids' must be distinct"),
    ({"token_ids": np.arange(6, dtype=np.float32)}, r"'token_ids' has shape \(6,\) and type float32"),
    ({"vectors": np.full((6, D), np.nan, dtype=np.float16)}, r"'vectors' must be \(6, 256\) finite"),
    ({"vectors": np.zeros((6, 3), dtype=np.float16)}, r"'vectors' has shape \(6, 3\) .*expected \(6, 256\)"),
    ({"vectors": np.zeros((6, D), dtype=np.int8)}, r"'vectors' has shape \(6, 256\) and type int8"),
], ids=["id-past-vocab", "id-negative", "id-repeated", "id-float", "nan", "narrow", "ints"])
def test_broken_static_arrays_with_matching_sidecar(corpus, static_root, arrays, pattern):
    _rewrite_vectors(static_root, resign=True, **arrays)
    assert corpus(AREA, "error", lambda: _static_embed(static_root), match=pattern)


@pytest.mark.parametrize("content", [b"PK\x03\x04 truncated", b"plain text"], ids=["zip", "text"])
def test_unreadable_static_file_with_matching_sidecar(corpus, static_root, content):
    folder = static_root / STATIC_FOLDER
    (folder / "vectors.npz").write_bytes(content)
    _static_sidecar(folder)
    assert corpus(AREA, "error", lambda: _static_embed(static_root),
                  match=r"vectors\.npz: unreadable")


def test_static_sidecar_without_digest(corpus, static_root):
    folder = static_root / STATIC_FOLDER
    info = json.loads((folder / "distill.json").read_text())
    del info["vectors_sha256"]
    (folder / "distill.json").write_text(json.dumps(info))
    assert corpus(AREA, "error", lambda: _static_embed(static_root),
                  match=r"distill\.json: no SHA-256 of vectors\.npz recorded")


# ---------------------------------------------------------------- word-piece caps
@pytest.mark.parametrize("name", ["all-mpnet-base-v2@torch@max999", "all-mpnet-base-v2@max0",
                                  "all-mpnet-base-v2@static@max513",
                                  "all-mpnet-base-v2@onnx@max100000000000000000000"],
                         ids=["torch-999", "zero", "static-513", "huge"])
def test_cap_above_the_position_embeddings(corpus, name):
    assert corpus(AREA, "error", lambda: get_encoder(name),
                  match=r"max_seq_length == \d+…?, must be in \[3, 512\]")


def test_torch_cap_given_as_argument(corpus):
    from benchroute.embedding.backends import mpnet_encoder

    run = lambda: mpnet_encoder("all-mpnet-base-v2@torch", max_seq_length=999)  # noqa: E731
    assert corpus(AREA, "error", run, match=r"max_seq_length == 999")


# ---------------------------------------------------------------- the torch backend's weights
@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"not safetensors"],
                         ids=["empty", "zeros", "text"])
def test_installed_weights_not_the_published_ones(corpus, tmp_path, monkeypatch, content):
    from benchroute.embedding.sentence import SentenceTransformerEncoder

    folder = tmp_path / "models" / "all-mpnet-base-v2"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(content)
    (folder / "modules.json").write_text("[]")
    monkeypatch.setenv("BENCHROUTE_HOME", str(tmp_path))
    run = lambda: SentenceTransformerEncoder().encode(TEXTS)  # noqa: E731
    assert corpus(AREA, "error", run, match=r"model\.safetensors: SHA-256 [0-9a-f]{64}, but the "
                  r"published model records [0-9a-f]{64}.*model install --force")
