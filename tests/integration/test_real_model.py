"""The real all-mpnet-base-v2 on a few dozen texts, against the shared precomputed vectors."""

from __future__ import annotations

import numpy as np
import pytest

from benchroute.embedding import EmbeddingCache, text_key
from benchroute.embedding.bf16 import bf16_units

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def encoder(mpnet_installed):
    from benchroute.embedding.sentence import SentenceTransformerEncoder

    return SentenceTransformerEncoder()


def test_matches_shared_embeddings(encoder, helm_mmlu, shared_embeddings, tmp_path):
    shared = np.load(shared_embeddings / "helm_mmlu_llama3.npz")
    row = {str(k): i for i, k in enumerate(shared["sha256"])}
    # the shared file is keyed by the raw text; the store holds normalised texts, whose key
    # equals the raw one except where normalisation changed the text
    texts = [t for t in helm_mmlu.instances()["text"].drop_duplicates().iloc[::40]
             if text_key(t) in row][:28]
    ref = shared["embedding"][[row[text_key(t)] for t in texts]].astype(np.float32)
    cache = EmbeddingCache(tmp_path, encoder.identifier, encoder.dimension)
    got = cache.embed(texts, encoder)
    assert got.shape == (len(texts), 768) and cache.misses == len(texts)
    cos = np.sum(got * ref, axis=1)
    assert cos.min() > 0.999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    # a lone string is one text
    np.testing.assert_allclose(encoder.encode(texts[0])[0], got[0], atol=1e-5)


@pytest.mark.real_model
@pytest.mark.skipif(not bf16_units(),
                    reason="this CPU has no bfloat16 units (amx_bf16, avx512_bf16)")
def test_bf16_backend_checked_once_and_close_to_float32(mpnet_installed, tmp_path):
    from benchroute.embedding import bf16
    from benchroute.embedding.sentence import SentenceTransformerEncoder

    entry = bf16.check_bf16(tmp_path)
    assert entry["units"] == bf16.bf16_units() and entry["texts"] == len(bf16.CHECK_TEXTS)
    stored = bf16.check_path(tmp_path).stat().st_mtime_ns
    assert bf16.check_bf16(tmp_path) == entry  # measured once
    assert bf16.check_path(tmp_path).stat().st_mtime_ns == stored
    if not entry["passed"]:
        pytest.skip(f"bf16 moved the vectors to min cosine {entry['min_cosine']} on this CPU")
    texts = ["How many legs does a spider have?", "Name the largest planet.", "x"]
    low = bf16.Bf16Encoder(root=tmp_path).encode(texts)
    ref = SentenceTransformerEncoder().encode(texts)
    assert low.dtype == np.float32 and float(np.min(np.sum(low * ref, axis=1))) >= bf16.MIN_COSINE
