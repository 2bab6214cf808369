"""No hidden state or side effects: caches keyed by the parameters they depend on and left out
of copies, the pool vectors copied only when asked, no process-wide environment change, no
estimator fitted that nothing uses."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest

from benchroute.embedding import HashingEncoder
from benchroute.embedding.sentence import _load_installed
from benchroute.experiments import leave_one_task_out
from benchroute.router import Router
from benchroute.tuning import PerInputPredictor
from tests.unit.test_router import synthetic


def _router() -> tuple[Router, list[str]]:
    data, X = synthetic(7, n_tasks=3, per_task=12)
    router = Router(alphas=(0.0, 0.2), repeats=1, tune=False, encoder=HashingEncoder(8))
    return router.fit(data, embeddings=X), sorted(set(data.instances()["dataset"]))


def test_excluded_pairs_follow_set_params():
    router, tasks = _router()
    before = router.reference_without([tasks[0]])
    router.set_params(alphas=(0.0,))
    after = router.reference_without([tasks[0]])
    assert set(np.unique(before.alpha)) == {0.0, 0.2}
    assert set(np.unique(after.alpha)) == {0.0}  # not the memo of the old alphas


def test_copies_leave_the_caches_out():
    router, tasks = _router()
    router.reference_without([tasks[0]])
    router.embed(["a text"])
    assert {"_excluded", "_held_encoder"} <= set(router.__dict__)
    clone = copy.deepcopy(router)
    assert not set(Router._CACHES) & set(clone.__dict__)
    # the copy builds its own on first use and agrees
    np.testing.assert_array_equal(clone.reference_without([tasks[0]]).u,
                                  router.reference_without([tasks[0]]).u)
    assert set(clone.get_params()) == set(Router().get_params())


def test_pool_vectors_are_explicit_and_x_is_deprecated():
    router, _ = _router()
    v = router.pool_vectors(np.array([0, 2]))
    assert v.shape == (2, 8)
    with pytest.warns(DeprecationWarning, match="pool_vectors"):
        np.testing.assert_array_equal(router.X_[[0, 2]], v)


def test_loading_a_local_model_leaves_the_environment_alone(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen = {}

    def factory(path: str, device: str | None, local_files_only: bool) -> object:
        seen.update(env=os.environ.get("HF_HUB_OFFLINE"), local=local_files_only)
        return object()

    _load_installed(factory, tmp_path, None)
    assert seen == {"env": None, "local": True}
    assert "HF_HUB_OFFLINE" not in os.environ


def test_leave_one_task_out_fits_no_tuned_predictor(monkeypatch):
    data, X = synthetic(8, n_tasks=3, per_task=10)
    calls = []
    real = PerInputPredictor.fit
    monkeypatch.setattr(PerInputPredictor, "fit",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    out = leave_one_task_out(data, {"alphas": (0.0,), "repeats": 1, "encoder": HashingEncoder(8)},
                             repeats=1, embeddings=X)
    assert len(out) and not calls
