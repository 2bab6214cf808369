"""No hidden state or side effects: caches keyed by the parameters they depend on and left out
of copies, the pool vectors copied only when asked, no process-wide environment change, no
estimator fitted that nothing uses."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _separated_router(**params: object) -> Router:
    """Tasks far enough apart that a held-out task's neighbours avoid some other task, so
    ``reference_without`` reuses cached pairs."""
    data, X = synthetic(3, n_tasks=8, per_task=30, d=32)
    return Router(**{**_SEPARATED, **params}).fit(data, embeddings=X)


_SEPARATED: dict[str, object] = dict(alphas=(0.0, 0.2), repeats=1, tune=False,
                                     encoder=HashingEncoder(32))


def _refit_without(task: str, **params: object) -> Router:
    data, X = synthetic(3, n_tasks=8, per_task=30, d=32)
    keep = (data.instances()["dataset"] != task).to_numpy()
    rest = sorted(set(data.instances()["dataset"]) - {task})
    return Router(**{**_SEPARATED, **params}).fit(data.subset(rest), embeddings=X[keep])


@pytest.mark.parametrize("change", [{}, {"alphas": (0.0, 0.1)}, {"seed": 5}, {"n_neighbours": 7},
                                    {"threshold": 0.6}, {"repeats": 2}])
def test_excluded_pairs_equal_a_refit_with_the_new_parameters(change):
    router = _separated_router()
    tasks = router.tasks_
    # some task's pairs never met tasks[0], so the cache would be reused
    assert any(tasks[0] not in router.reference_.touched[t] for t in tasks[1:])
    router.set_params(**change)
    got, want = router.reference_without([tasks[0]]), _refit_without(tasks[0], **change).reference_
    assert list(got.task) == list(want.task)
    np.testing.assert_allclose(got.u, want.u)
    np.testing.assert_allclose(got.p, want.p)
    np.testing.assert_allclose(got.alpha, want.alpha)


def test_saved_pairs_keep_their_parameters_across_set_params(tmp_path):
    router = _separated_router()
    router.set_params(threshold=0.6, n_neighbours=7)  # no refit: the pairs are the fit's
    router.save(tmp_path / "r")
    loaded = Router.load(tmp_path / "r")  # the spot check recomputes with the pairs' parameters
    assert loaded.reference_.params == router.reference_.params
    assert loaded.reference_.params.threshold == 0.5 and loaded.threshold == 0.6
    task = loaded.tasks_[0]
    got, want = loaded.reference_without([task]), _refit_without(task, threshold=0.6,
                                                                 n_neighbours=7).reference_
    np.testing.assert_allclose(got.p, want.p)


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


_PARAMS = st.fixed_dictionaries({
    "alphas": st.sampled_from([(0.0,), (0.0, 0.2), (0.1, 0.3)]),
    "repeats": st.integers(1, 2), "seed": st.integers(0, 3),
    "n_neighbours": st.integers(2, 12), "threshold": st.sampled_from([0.3, 0.5, 0.7]),
    "max_task_queries": st.sampled_from([None, 5])})


@settings(max_examples=40)
@given(seed=st.integers(0, 10_000), n_tasks=st.integers(3, 7), per_task=st.integers(8, 30),
       fit_params=_PARAMS, data=st.data())
def test_property_excluded_pairs_equal_a_refit(seed, n_tasks, per_task, fit_params, data):
    """Whatever the pool, the parameters at fit and after ``set_params`` (often the same, so
    that cached pairs are reused, often not) and the tasks left out, the pairs of the smaller
    pool equal a refit's."""
    now_params = data.draw(st.one_of(st.just(fit_params), _PARAMS))
    pool, X = synthetic(seed, n_tasks=n_tasks, per_task=per_task, d=32)
    tasks = sorted(set(pool.instances()["dataset"]))
    out = data.draw(st.lists(st.sampled_from(tasks), min_size=1, max_size=len(tasks) - 1,
                             unique=True))
    base = dict(tune=False, encoder=HashingEncoder(32))
    router = Router(**base, **fit_params).fit(pool, embeddings=X)
    router.set_params(**now_params)
    got = router.reference_without(out)
    keep = ~pool.instances()["dataset"].isin(out).to_numpy()
    rest = [t for t in tasks if t not in out]
    want = Router(**base, **now_params).fit(pool.subset(rest), embeddings=X[keep]).reference_
    assert list(got.task) == list(want.task)
    np.testing.assert_allclose(got.u, want.u)
    np.testing.assert_allclose(got.p, want.p)
    np.testing.assert_allclose(got.alpha, want.alpha)
    assert got.fallback == want.fallback


def _rewrite_reference(folder: Path, change) -> None:  # type: ignore[no-untyped-def]
    from tests.saved_router import rewrite_meta

    rewrite_meta(folder, lambda meta: change(meta["reference"]))


def test_routers_saved_before_pair_params_load_with_their_samples_seed(tmp_path):
    """A file without ``reference.params``, saved after ``set_params(seed=...)`` on a sampled
    router: the pairs' seed is the sample's, not the saved parameter."""
    router = _separated_router(max_task_queries=5)
    router.set_params(seed=5)
    router.save(tmp_path / "r")
    _rewrite_reference(tmp_path / "r", lambda ref: ref.pop("params"))
    loaded = Router.load(tmp_path / "r")
    assert loaded.reference_.params == router.reference_.params
    assert loaded.reference_.params.seed == 0 and loaded.seed == 5


def test_pair_params_must_agree_with_the_pairs_sample(tmp_path):
    from benchroute.exceptions import BenchrouteError

    router = _separated_router(max_task_queries=5)
    router.save(tmp_path / "r")
    _rewrite_reference(tmp_path / "r", lambda ref: ref["params"].update(seed=3))
    with pytest.raises(BenchrouteError, match=r"router\.json: field 'reference\.params'.*seed"):
        Router.load(tmp_path / "r")


@pytest.mark.parametrize("change", [{"k": 7}, {"weights": "distance"}, {"index_factory": "SQfp16"}])
def test_save_refuses_predictor_parameters_changed_after_the_fit(tmp_path, change):
    from benchroute.exceptions import BenchrouteError

    router = _separated_router()
    before = {name: getattr(router, name) for name in change}
    name = next(iter(change))
    with pytest.warns(UserWarning, match=f"{name} changed on a fitted router takes effect at "
                                         "the next fit"):
        router.set_params(**change)
    with pytest.raises(BenchrouteError, match=rf"Router\.save: .*{name} is"):
        router.save(tmp_path / "r")
    assert not (tmp_path / "r").exists()
    router.set_params(**before)  # set back: saves and loads
    router.save(tmp_path / "r")
    assert Router.load(tmp_path / "r").k == router.k


@pytest.mark.parametrize("change", ["remove_model", "add_results"])
def test_predictor_parameters_set_after_the_fit_wait_for_the_next_fit(tmp_path, change):
    """``remove_model`` and ``add_results`` rebuild the predictor like the fitted one: the
    pairs stay consistent with it, and ``save`` still names the changed ``k``."""
    from benchroute.exceptions import BenchrouteError

    router = _separated_router()
    with pytest.warns(UserWarning, match="k changed on a fitted router takes effect at the next fit"):
        router.set_params(k=9)
    if change == "remove_model":
        router.remove_model(router.models_[0])
    else:
        data, _ = synthetic(3, n_tasks=8, per_task=30, d=32)
        router.add_results(data.subset(router.tasks_[:1]), embeddings=_separated_vectors(
            data, router.tasks_[:1]))
    assert router.predictor_.k == 5
    with pytest.raises(BenchrouteError, match="k is 9, the fitted pool uses 5"):
        router.save(tmp_path / "r")
    router.set_params(k=5)
    router.save(tmp_path / "r")
    Router.load(tmp_path / "r")  # the spot check agrees with the saved pairs


def _separated_vectors(data, tasks):  # type: ignore[no-untyped-def]
    full, X = synthetic(3, n_tasks=8, per_task=30, d=32)
    return X[full.instances()["dataset"].isin(tasks).to_numpy()]
