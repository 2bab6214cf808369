"""Saved routers whose files disagree with each other (issue 18, class 6).

router.json's digest has no key (docs/reliability.md): a consistent rewrite of every file still
loads. What needs no key is checked: the encoder the parameters name against the index's, the
pool's labels against the stored per-task accuracies, one task's reference pair computed again
from the index and pool, the calibration map's order, the reference p̂'s nulls against the
pool's labels. Each case rewrites a file with recomputed
checksums and digest, so that the consistency check itself refuses it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchroute.embedding import HashingEncoder
from benchroute.router import Router
from tests.corpus.test_corpus_router import _resum, _rewrite, _set
from tests.unit.test_router import synthetic

AREA = "router"


def _fit(seed: int) -> Router:
    data, X = synthetic(seed, n_tasks=3, per_task=12)
    return Router(alphas=(0.0, 0.2), repeats=2, encoder=HashingEncoder(8)).fit(data, embeddings=X)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    return _fit(12).save(root / "router"), _fit(13).save(root / "other")


@pytest.fixture
def copy(saved, tmp_path):
    return Path(shutil.copytree(saved[0], tmp_path / "router"))


def _load(folder: Path, cache: Path | None = None):
    return lambda: Router.load(folder, cache_dir=cache)


ENCODER = r"router\.json: field 'params\.encoder' is invalid; expected "


@pytest.mark.parametrize("name, pattern", [
    ("hashing-65536-12", ENCODER + r"the encoder the index was built with \('hashing-8-12'\)"),
    ("hashing-16-12", ENCODER + r"the encoder the index was built with"),
    ("hashing-8-13", ENCODER + r"the encoder the index was built with"),
    ("all-mpnet-base-v2", ENCODER + r"the encoder the index was built with"),
    ("all-mpnet-base-v2@static", ENCODER + r"the encoder the index was built with"),
], ids=["huge-hashing", "other-dimension", "other-ngrams", "mpnet", "static"])
def test_params_encoder_is_not_the_index_encoder(corpus, copy, tmp_path, name, pattern):
    _rewrite(copy, _set("params", "encoder", value=name))
    assert corpus(AREA, "error", _load(copy, tmp_path / "cache"), match=pattern)
    assert not (tmp_path / "cache").exists()  # nothing embedded or cached


@pytest.mark.parametrize("name, identifier, pattern", [
    ("hashing-16-12", "hashing-16-12", r"an encoder of the index's dimension 8 \('hashing-16-12' gives 16\)"),
    ("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2",
     r"an encoder of the index's dimension 8 \('all-mpnet-base-v2' gives 768\)"),
], ids=["hashing", "mpnet"])
def test_every_encoder_name_rewritten_consistently(corpus, copy, name, identifier, pattern):
    # params, router.json and index.json all name another encoder: the index holds 8-d vectors
    sidecar = copy / "index" / "index.json"
    meta = json.loads(sidecar.read_text())
    meta["encoder"] = identifier
    sidecar.write_text(json.dumps(meta))
    _rewrite(copy, lambda m: (m["params"].update(encoder=name),  # type: ignore[attr-defined]
                              m.update(encoder=identifier)))
    _resum(copy)
    assert corpus(AREA, "error", _load(copy), match=ENCODER + pattern)


@pytest.mark.parametrize("files", [["pool.npz"], ["index"], ["pool.npz", "index"]],
                         ids=["pool", "index", "pool-and-index"])
def test_files_from_another_router(corpus, saved, copy, files):
    for name in files:
        src, dst = saved[1] / name, copy / name
        if src.is_dir():
            shutil.rmtree(dst)
            shutil.copytree(src, dst)
        else:
            shutil.copy(src, dst)
    _resum(copy)
    assert corpus(AREA, "error", _load(copy),
                  match=r"router\.json: field '(task_accuracy\.(data|index)|reference)' is invalid")


def _task_accuracy(change):
    def edit(meta):
        change(meta["task_accuracy"])
    return edit


@pytest.mark.parametrize("change, pattern", [
    (lambda t: t["data"][0].__setitem__(0, 1.0 - (t["data"][0][0] or 0.0)), r"task_accuracy\.data"),
    (lambda t: t["data"].reverse(), r"task_accuracy\.data"),
    (lambda t: (t["index"].pop(), t["data"].pop()), r"task_accuracy\.index.*the pool's tasks \(3\)"),
    (lambda t: t["data"][1].__setitem__(2, None), r"task_accuracy\.data"),
], ids=["one-value", "rows-swapped", "task-missing", "value-nulled"])
def test_task_accuracy_disagrees_with_the_pool(corpus, copy, change, pattern):
    _rewrite(copy, _task_accuracy(change))
    assert corpus(AREA, "error", _load(copy), match=pattern)


def _calibration(change):
    def edit(meta):
        cal = meta["routing"]["per_input"]["calibration"]
        # a kept map to break: calibration "auto" keeps none on this small pool
        cal.update(x=[0.1, 0.4, 0.7, 0.9], y=[0.2, 0.3, 0.6, 0.8])
        change(cal)
    return edit


def test_a_kept_calibration_map_loads(copy):
    _rewrite(copy, _calibration(lambda c: None))
    P = Router.load(copy).per_input_.calibration_(np.array([0.1, 0.9]))
    np.testing.assert_allclose(P, [0.2, 0.8], atol=1e-5)


CALIBRATION = r"field 'routing\.per_input' is invalid.*x increasing, y non-decreasing"


@pytest.mark.parametrize("change", [
    lambda c: (c["x"].reverse(), c["y"].reverse()),
    lambda c: c["y"].reverse(),
    lambda c: c["x"].reverse(),
    lambda c: c["x"].__setitem__(1, c["x"][0]),
    lambda c: c["y"].__setitem__(-1, 1.5),
    lambda c: c["x"].__setitem__(0, -0.1),
], ids=["both-reversed", "y-reversed", "x-reversed", "x-repeated", "y-above-1", "x-below-0"])
def test_calibration_not_an_isotonic_map(corpus, copy, change):
    _rewrite(copy, _calibration(change))
    assert corpus(AREA, "error", _load(copy), match=CALIBRATION)


def test_all_null_reference_p(corpus, copy):
    _rewrite(copy, lambda m: m["reference"].update(  # type: ignore[attr-defined]
        p=[[None] * len(row) for row in m["reference"]["p"]]))  # type: ignore[index]
    assert corpus(AREA, "error", _load(copy), match=r"field 'reference\.p' is invalid; expected "
                  r"null exactly where a model has no label")


def test_one_model_null_in_reference_p(corpus, copy):
    _rewrite(copy, lambda m: [row.__setitem__(1, None) for row in m["reference"]["p"]])  # type: ignore[index]
    assert corpus(AREA, "error", _load(copy), match=r"field 'reference\.p' is invalid")


def test_all_nan_labels(corpus, copy):
    with np.load(copy / "pool.npz") as z:
        models = z["models"]
        Y = np.full(z["Y"].shape, np.nan, dtype=np.float32)
    np.savez(copy / "pool.npz", Y=Y, models=models)
    _resum(copy)
    assert corpus(AREA, "error", _load(copy), match=r"pool\.npz: field 'Y' must be .*at least one a label")


def test_intact_router_still_loads(corpus, copy):
    assert corpus(AREA, "right", _load(copy), check=lambda r: len(r.models_) == 3)


def test_fit_arrays_all_nan_labels(corpus):
    X = np.eye(4, 8, dtype=np.float32)
    Y = np.full((4, 2), np.nan, dtype=np.float32)
    run = lambda: Router(alphas=(0.0,), encoder=HashingEncoder(8)).fit_arrays(  # noqa: E731
        X, Y, ["a", "a", "b", "b"], ["m0", "m1"])
    assert corpus(AREA, "error", run, match=r"fit Y: every label is NaN")


def test_encoder_changed_after_fit_caches_nothing(corpus, tmp_path):
    router = _fit(14)
    router.set_params(encoder="hashing-65536-12", cache_dir=str(tmp_path / "cache"))
    assert corpus(AREA, "error", lambda: router.route(["a text"]),
                  match=r"encoder 'hashing-65536-12' does not give the vectors the router's pool "
                        r"holds \(its encoder is 'hashing-8-12'\)")
    assert not list((tmp_path / "cache").rglob("*.npz"))


# ---------------------------------------------------------------- killed saves (class 9)
def _killed_between_renames(target: Path) -> Path:
    """The state a kill between save's two renames leaves: the old router moved aside, the new
    one complete in its temporary folder, no target."""
    old = target.parent / f".{target.name}.k1ll3d.tmp.old"
    target.rename(old)
    new = target.parent / f".{target.name}.n3w.tmp"
    shutil.copytree(old, new)
    return old


def test_load_restores_the_router_a_killed_save_moved_aside(corpus, copy):
    _killed_between_renames(copy)
    assert corpus(AREA, "right", _load(copy),
                  check=lambda r: len(r.models_) == 3 and (copy / "router.json").is_file())


def test_save_after_a_killed_save_restores_then_replaces(corpus, copy, saved):
    import os

    old = _killed_between_renames(copy)
    stale = copy.parent / f".{copy.name}.n3w.tmp"
    os.utime(stale, (0, 0))  # left by a process killed long ago
    fresh = copy.parent / f".{copy.name}.fr3sh.tmp"
    fresh.mkdir()  # a save in progress elsewhere: kept

    def run():
        return Router.load(saved[1]).save(copy)

    def check(path):
        left = sorted(p.name for p in copy.parent.iterdir() if p.name.startswith("."))
        return path == copy and not old.exists() and left == [fresh.name]

    assert corpus(AREA, "right", run, check=check)


def test_replaced_router_left_by_a_kill_after_the_swap_is_removed(corpus, copy, saved):
    leftover = copy.parent / f".{copy.name}.l3ft.tmp.old"
    shutil.copytree(copy, leftover)
    run = lambda: Router.load(saved[1]).save(copy)  # noqa: E731
    assert corpus(AREA, "right", run, check=lambda _: not leftover.exists())


def test_no_router_and_no_leftover(corpus, tmp_path):
    assert corpus(AREA, "error", _load(tmp_path / "nothing"), match=r"not a saved benchroute router")
