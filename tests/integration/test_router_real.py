"""The router on the real HELM MMLU Llama-3 results with the shared all-mpnet-base-v2 vectors."""

from __future__ import annotations

import numpy as np
import pytest

from benchroute.default import default_router
from benchroute.embedding import EmbeddingCache
from benchroute.embedding.install import DEFAULT_ENCODER_ID
from benchroute.router import Router

HELD = "mmlu:subject=college_biology,method=multiple_choice_joint"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, shared_embeddings):
    folder = tmp_path_factory.mktemp("cache")
    EmbeddingCache(folder, DEFAULT_ENCODER_ID, 768).import_npz(shared_embeddings / "helm_mmlu_llama3.npz")
    return folder


def test_holdout_subject_selection(helm_mmlu, cache_dir):
    train = helm_mmlu.exclude([HELD])
    router = Router(cache_dir=str(cache_dir), repeats=2).fit(train)  # every text is in the cache
    texts = helm_mmlu.subset([HELD]).instances()["text"].tolist()
    sel = router.select_model(texts)
    assert sel.model in helm_mmlu.models and sel.n_examples == 20
    cols = sel.scores[["S1", "S2", "S3", "p_hat"]]
    assert ((cols >= 0) & (cols <= 1)).all().all()
    assert sel.bma == "together/Llama-3-70b-chat-hf"
    assert 0 < sel.task_distance < 1
    # candidates restricted to what a user can deploy
    small = router.select_model(texts, candidates=["groq/llama3-8b-8192", "together/Llama-3-8b-chat-hf"])
    assert small.model in ("groq/llama3-8b-8192", "together/Llama-3-8b-chat-hf")
    routed = router.route(texts)
    assert len(routed) == 20 and set(routed) <= set(helm_mmlu.models)


def test_default_router_is_built_once(tmp_path, monkeypatch, helm_mmlu):
    monkeypatch.setenv("BENCHROUTE_HOME", str(tmp_path))
    first = default_router()
    saved = list((tmp_path / "routers").iterdir())
    assert len(saved) == 1 and (saved[0] / "router.json").is_file()
    again = default_router()
    assert again.models_ == first.models_
    np.testing.assert_array_equal(again.reference_.u, first.reference_.u)
    rows = np.flatnonzero(first.datasets_ == HELD)
    a = first.select_embedded(first.pool_vectors(rows), exclude_datasets=[HELD])
    b = again.select_embedded(again.pool_vectors(rows), exclude_datasets=[HELD])
    assert a.model == b.model and a.scores.equals(b.scores)
