"""Task-level format shift (benchroute.shift): the fingerprint, the leave-one-task-out reference,
the S3 fallback it triggers, its report in Selection, and save/load."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchroute import BenchmarkData
from benchroute.exceptions import BenchrouteError
from benchroute.reference import ReferencePairs
from benchroute.router import Router
from benchroute.selection import SelectionConfig, select
from benchroute.shift import FEATURES, SHIFT_ALPHA, FormShift, fingerprints
from tests.saved_router import rewrite_pool

N_CLUSTERS, PER_TASK, D = 11, 20, 64  # D: the hashing-64 encoder's, for save/load


def mcq(words: int, i: int) -> str:
    return (f"Which statement {i} holds {'so ' * words}?\nA. the first\nB. the second\n"
            "C. the third\nD. the fourth\nAnswer:")


def free(words: int, i: int) -> str:
    return (f"Tom has {3 * i + 4} apples {'and ' * words}buys {i + 7} more at $2 each. How "
            "many dollars did he spend in total?")


def pool(seed: int = 0, free_form: bool = True) -> tuple[BenchmarkData, np.ndarray]:
    """Two multiple-choice tasks per cluster (so a task's twin predicts it) and a held-out
    task "new" on cluster 0's centre, free-form when ``free_form``. Model "b" is strong on
    cluster 0 only, "a" everywhere else (the best model on average)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(N_CLUSTERS, D))
    rows, vecs = [], []
    tasks = [(f"c{c}{t}", c) for c in range(N_CLUSTERS) for t in "xy"] + [("new", 0)]
    for task, c in tasks:
        skill = {"a": 0.1 if c == 0 else 0.9, "b": 0.95 if c == 0 else 0.1}
        if task == "new":
            skill = {"a": 0.9, "b": 0.5}  # the new format: "a" wins, as on GSM8K
        for i in range(PER_TASK):
            v = centres[c] + 0.3 * rng.normal(size=D)
            vecs.append(v / np.linalg.norm(v))
            words = int(rng.integers(2, 40))  # the pool's own variation in form
            text = free(words, i) if task == "new" and free_form else mcq(words, i)
            for m in "ab":
                y = float(rng.random() < skill[m])
                rows.append((task, f"{i:03d}", text, m, y, y))
    frame = pd.DataFrame(rows, columns=["dataset", "instance_id", "text", "model", "score",
                                        "correct"])
    data = BenchmarkData(frame)
    order = {(t, f"{i:03d}"): j * PER_TASK + i for j, (t, _) in enumerate(tasks)
             for i in range(PER_TASK)}
    inst = data.instances()
    X = np.asarray(vecs, np.float32)[[order[k] for k in zip(inst["dataset"], inst["instance_id"])]]
    return data, X


def fitted(free_form: bool = True) -> tuple[Router, BenchmarkData, np.ndarray]:
    data, X = pool(free_form=free_form)
    router = Router(encoder="hashing-64-12", tune=False, alphas=(0.0,), repeats=1)
    return router.fit(data, embeddings=X), data, X


def held_out(router: Router, data: BenchmarkData, X: np.ndarray, fallback: bool = True):
    inst = data.instances()
    rows = np.flatnonzero(inst["dataset"].to_numpy() == "new")
    return router.select_embedded(X[rows], exclude_datasets=["new"], fallback=fallback,
                                  texts=inst["text"].iloc[rows].tolist())


def test_fingerprint_features():
    F = fingerprints([mcq(3, 1), free(3, 1), "def f(x):\n    return x"])
    assert F.shape == (3, len(FEATURES))
    col = {f: i for i, f in enumerate(FEATURES)}
    assert F[0, col["lettered_options"]] == 1 and F[1, col["lettered_options"]] == 0
    assert F[1, col["ends_question"]] == 1 and F[0, col["ends_colon"]] == 1
    assert F[2, col["code"]] == 1 and F[1, col["digit_share"]] > F[0, col["digit_share"]]


def test_shift_fires_and_falls_back_on_a_new_format():
    router, data, X = fitted()
    sel = held_out(router, data, X)
    assert sel.shift is not None and sel.shift.n_reference == 2 * N_CLUSTERS
    assert sel.shift.p_value == pytest.approx(1 / (1 + 2 * N_CLUSTERS))
    assert sel.shift.fired and sel.shift_fell_back and sel.fell_back
    assert sel.model == sel.bma == "a"
    # without the shift test, S3 reads cluster 0's neighbours and switches to "b"
    plain = held_out(router, data, X, fallback=False)
    assert plain.model == "b" and not plain.shift_fell_back
    assert "differ in form" in sel.summary()
    d = sel.to_dict()
    assert d["shift_fell_back"] is True and d["shift"]["fired"] is True
    json.dumps(d)


def test_the_shift_reuses_the_tasks_own_search(monkeypatch):
    """One index search per selection: the form shift reads the neighbour rows of the search the
    selection already made, and gets the same statistic as a search of its own."""
    from benchroute import shift

    router, data, X = fitted()
    held_out(router, data, X)  # the pool's references without "new" are built, then kept
    index = router.predictor_.index_
    calls = []
    original = type(index).search
    monkeypatch.setattr(type(index), "search",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    sel = held_out(router, data, X)
    assert len(calls) == 1
    inst = data.instances()
    rows = np.flatnonzero(inst["dataset"].to_numpy() == "new")
    own = shift.TaskForm(router, X[rows], inst["text"].iloc[rows].tolist(), ["new"])
    alone = own.shift(np.arange(len(rows)))
    assert alone.statistic == pytest.approx(sel.shift.statistic, abs=1e-12)
    assert alone.p_value == sel.shift.p_value


def test_the_reference_survives_a_changed_model_set_not_a_changed_pool():
    """Fingerprints and neighbours depend on the pool's texts and index, not its labels: removing
    a model keeps the reference; new inputs rebuild it."""
    from benchroute import shift

    router, data, X = fitted()
    before = shift.reference_of(router)
    sel = held_out(router, data, X)
    router.remove_model("b")
    assert shift.reference_of(router) is before
    assert held_out(router, data, X).shift.statistic == pytest.approx(sel.shift.statistic)
    inst = data.instances()
    extra = data.frame[data.frame["dataset"] == "c1x"].assign(dataset="c1z")
    router.add_results(BenchmarkData(extra[extra["model"] == "a"]),
                       embeddings=X[(inst["dataset"] == "c1x").to_numpy()])
    assert shift.reference_of(router) is not before


def test_matching_form_changes_nothing():
    router, data, X = fitted(free_form=False)
    sel = held_out(router, data, X)
    assert sel.shift is not None and not sel.shift.fired and not sel.shift_fell_back
    inst = data.instances()
    rows = np.flatnonzero(inst["dataset"].to_numpy() == "new")
    no_texts = router.select_embedded(X[rows], exclude_datasets=["new"])
    assert no_texts.shift is None and no_texts.model == sel.model
    assert "form shift unknown" in no_texts.summary()


def test_fit_arrays_has_no_signal():
    data, X = pool()
    inst = data.instances()
    Y = data.correctness_matrix().to_numpy(dtype=float)
    router = Router(tune=False, alphas=(0.0,), repeats=1).fit_arrays(
        X, Y, inst["dataset"].to_numpy(), ["a", "b"])
    rows = np.flatnonzero(inst["dataset"].to_numpy() == "new")
    sel = router.select_embedded(X[rows], exclude_datasets=["new"],
                                 texts=inst["text"].iloc[rows].tolist())
    assert sel.shift is None and not sel.shift_fell_back and sel.to_dict()["shift"] is None


def test_save_load_keeps_the_signal(tmp_path):
    router, data, X = fitted()
    before = held_out(router, data, X)
    loaded = Router.load(router.save(tmp_path / "r"))
    after = held_out(loaded, data, X)
    assert after.shift is not None and before.shift is not None
    assert after.shift.statistic == pytest.approx(before.shift.statistic)
    assert after.shift.p_value == before.shift.p_value and after.model == before.model


def test_exclusion_is_exact():
    """The reference with a task left out equals that of a router fitted without it."""
    router, data, X = fitted()
    inst = data.instances()
    keep = inst["dataset"].to_numpy() != "c3x"
    alone = Router(encoder="hashing-64-12", tune=False, alphas=(0.0,), repeats=1).fit(
        data.subset([t for t in data.datasets if t != "c3x"]), embeddings=X[keep])
    a, b = held_out(router, data, X), held_out(alone, data.subset(
        [t for t in data.datasets if t != "c3x"]), X[keep])
    assert a.shift is not None and b.shift is not None
    # "new" and "c3x" both left out of the first: compare at the same pool
    rows = np.flatnonzero(inst["dataset"].to_numpy() == "new")
    both = router.select_embedded(X[rows], exclude_datasets=["new", "c3x"],
                                  texts=inst["text"].iloc[rows].tolist())
    assert both.shift is not None
    assert both.shift.statistic == pytest.approx(b.shift.statistic)
    assert both.shift.p_value == pytest.approx(b.shift.p_value)


@pytest.mark.parametrize("p_value, moved", [(0.01, True), (0.5, False)])
def test_select_applies_the_level(p_value, moved):
    g = np.array([[0.9, 0.2]] * 30)
    ref = ReferencePairs(np.linspace(0.1, 0.9, 20), np.full((20, 2), 0.95),
                         np.array([f"t{i}" for i in range(20)], dtype=object), np.zeros(20))
    shift = FormShift(3.0, p_value, SHIFT_ALPHA, 20, {f: 0.0 for f in FEATURES})
    sel = select(g, 0.5, ref, ["x", "y"], np.array([0, 1]), 1, shift=shift,
                 config=SelectionConfig())
    assert sel.shift_fell_back is moved and sel.model == ("y" if moved else "x")
    off = select(g, 0.5, ref, ["x", "y"], np.array([0, 1]), 1, fallback=False, shift=shift)
    assert off.model == "x" and not off.shift_fell_back


def test_protocol_measures_the_same_path():
    from benchroute.experiments.protocol import leave_one_task_out

    data, X = pool()
    out = leave_one_task_out(data, {"encoder": "hashing-64-12", "alphas": (0.0,), "repeats": 1},
                             embeddings=X, tasks=["new"])
    s3 = out[out.method == "S3"].iloc[0]
    router, _, _ = fitted()
    sel = held_out(router, data, X)
    assert bool(s3.shift_fell_back) and s3.model == sel.model == "a"
    assert s3.shift_p == pytest.approx(sel.shift.p_value)
    assert out[out.method == "S1"].iloc[0].model == "b"


# ------------------------------------------------------------------ the saved reference
@pytest.fixture()
def saved(tmp_path):
    router, data, X = fitted()
    return router, data, X, router.save(tmp_path / "r")


def test_a_saved_router_brings_its_reference(saved, monkeypatch):
    """A load neither fingerprints the pool nor searches it once per task: two searches in all
    (the pairs' spot check and the shift's, on the same smallest task), and the loaded
    reference is the one a fresh computation gives."""
    from benchroute import shift
    from benchroute.index import VectorIndex

    router, data, X, folder = saved
    searches, prints = [], []
    search, fps = VectorIndex.search, shift.fingerprints
    monkeypatch.setattr(VectorIndex, "search", lambda self, *a, **k: searches.append(1) or
                        search(self, *a, **k))
    monkeypatch.setattr(shift, "fingerprints", lambda texts: prints.append(len(texts)) or
                        fps(texts))
    loaded = Router.load(folder)
    assert len(searches) == 2 and prints == []  # the spot check's fingerprints: persistence's
    ref = shift.reference_of(loaded)
    assert ref is loaded.shift_reference_ and len(searches) == 2
    fresh = shift.ShiftReference(loaded.predictor_, loaded.texts_, loaded.n_neighbours,
                                 loaded.max_task_queries, loaded.seed)
    assert ref.raw.keys() == fresh.raw.keys() and ref.touched == fresh.touched
    for task in fresh.raw:
        np.testing.assert_allclose(ref.raw[task], fresh.raw[task], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(ref.F, fresh.F)
    # and the selection of a held-out task reads the same
    assert held_out(loaded, data, X).shift == held_out(router, data, X).shift


def test_save_computes_the_reference_once(tmp_path):
    from benchroute import shift

    router, _, _ = fitted()
    assert getattr(router, "shift_reference_", None) is None  # no selection yet
    router.save(tmp_path / "r")
    ref = router.shift_reference_
    router.save(tmp_path / "r2")
    assert router.shift_reference_ is ref and shift.reference_of(router) is ref


def test_an_older_file_computes_it_on_first_use(saved):
    from benchroute import shift

    router, _, _, folder = saved
    rewrite_pool(folder, lambda a: [a.pop(k) for k in shift.SAVED_ARRAYS])
    loaded = Router.load(folder)
    assert getattr(loaded, "shift_reference_", None) is None
    ref = shift.reference_of(loaded)
    assert ref.touched == router.shift_reference_.touched


@pytest.mark.parametrize("change, field", [
    (lambda a: a.pop("shift_raw"), "shift_raw"),
    (lambda a: a.update(shift_tasks=a["shift_tasks"][::-1].copy()), "shift_tasks"),
    (lambda a: a.update(shift_tasks=a["shift_tasks"][1:], shift_raw=a["shift_raw"][1:],
                        shift_touched=a["shift_touched"][1:, 1:]), "shift_tasks"),
    (lambda a: a.update(shift_features=a["shift_features"][1:]), "shift_features"),
    (lambda a: a.update(shift_features=np.where(a["shift_features"] > 1, np.nan,
                                                a["shift_features"])), "shift_features"),
    (lambda a: a.update(shift_features=a["shift_features"] * 1.01), "shift_features"),
    (lambda a: a.update(shift_touched=np.ones_like(a["shift_touched"])), "shift_touched"),
    (lambda a: a.update(shift_touched=a["shift_touched"].astype(float)), "shift_touched"),
    (lambda a: a.update(shift_raw=a["shift_raw"] + 0.5), "shift_raw"),  # the spot check
    (lambda a: a.pop("texts"), "shift_features"),
])
def test_bad_shift_arrays_are_refused_naming_the_field(saved, change, field):
    *_, folder = saved
    rewrite_pool(folder, change)
    with pytest.raises(BenchrouteError, match=rf"pool\.npz.*'{field}'"):
        Router.load(folder)


def test_fingerprints_rounded_otherwise_still_load(saved):
    """Another CPU's log1p may differ in the last bit (NumPy's AVX-512 code against the C
    library's): the saved fingerprints are compared up to rounding, not bit for bit."""
    *_, folder = saved
    rewrite_pool(folder, lambda a: a.update(shift_features=a["shift_features"]
                                            * (1 + 4 * np.finfo(np.float64).eps)))
    loaded = Router.load(folder)
    assert loaded.shift_reference_.F.shape == (len(loaded.texts_), len(FEATURES))


def test_the_spot_tasks_neighbours_fingerprints_are_checked(saved):
    """The rows the smallest task's neighbours come from are recomputed too, not only a
    sample."""
    router, *_, folder = saved
    ref = router.shift_reference_
    ds = router.predictor_.datasets_
    task = min(ref.raw, key=lambda t: (int((ds == t).sum()), t))
    _, _, read = ref.task_difference(task)
    neighbours = np.setdiff1d(read, np.flatnonzero(ds == task))
    sample = np.random.default_rng(router.seed).choice(len(ds), min(256, len(ds)), replace=False)
    unsampled = np.setdiff1d(neighbours, sample)
    assert len(unsampled)  # rows only the neighbour check covers

    def change(a):  # type: ignore[no-untyped-def]
        a["shift_features"] = a["shift_features"].copy()
        a["shift_features"][unsampled[0], 0] += 0.5

    rewrite_pool(folder, change)
    with pytest.raises(BenchrouteError, match=r"pool\.npz.*'shift_features'"):
        Router.load(folder)


def test_save_refuses_texts_ending_in_nul(tmp_path):
    router, _, _ = fitted()
    router.texts_ = [*router.texts_[:-1], router.texts_[-1] + "\x00"]
    with pytest.raises(BenchrouteError, match="1 pool text.*NUL.*index 459"):
        router.save(tmp_path / "r")
    assert not (tmp_path / "r").exists()
    # model and task names are kept as text too (found by fuzzing: saved, then refused at load)
    router, _, _ = fitted()
    router.pool_models_ = [*router.pool_models_[:-1], router.pool_models_[-1] + "\x00"]
    with pytest.raises(BenchrouteError, match="1 pool model name.*NUL"):
        router.save(tmp_path / "r")
    data, X = pool()
    last = data.frame["dataset"].max()
    frame = data.frame.assign(dataset=data.frame["dataset"].replace(last, last + "\x00"))
    router = Router(encoder="hashing-64-12", tune=False, alphas=(0.0,), repeats=1)
    router.fit(BenchmarkData(frame), embeddings=X)
    with pytest.raises(BenchrouteError, match="1 task name.*NUL"):
        router.save(tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_small_task_is_tested_against_draws_of_its_size(tmp_path):
    """T of 1-3 inputs is far noisier than a whole task's: tested against whole tasks, one
    short question fell back in 14% of the pack's held-out subjects. The reference is now T
    of seeded draws of that many inputs of each pool task; a saved router searches for its
    tasks' inputs again on first use and gives the same p."""
    from benchroute.default import default_router

    r = default_router()
    ds, texts, X = r.datasets_, np.asarray(r.texts_, dtype=object), r.pool_vectors()
    rng = np.random.default_rng(0)
    fired = total = 0
    for t in r.tasks_:
        rows = np.flatnonzero(ds == t)
        for pick in (rng.choice(rows, 1), rng.choice(rows, 1)):
            view = r.task_neighbours(X[pick], exclude_datasets=[t], texts=list(texts[pick]))
            fired += view.form.shift(np.arange(1)).fired
            total += 1
    assert total == 2 * len(r.tasks_) and fired <= 0.08 * total  # 14% (16 of 114) before

    router, data, X = fitted()
    inst = data.instances()
    rows = np.flatnonzero(inst["dataset"].to_numpy() == "new")[:3]
    args = dict(exclude_datasets=["new"], texts=inst["text"].iloc[rows].tolist())
    before = router.select_embedded(X[rows], **args).shift
    loaded = Router.load(router.save(tmp_path / "r"))
    after = loaded.select_embedded(X[rows], **args).shift
    assert after is not None and before is not None and after.p_value == before.p_value
    whole = router.select_embedded(X[np.flatnonzero(inst["dataset"].to_numpy() == "new")],
                                   exclude_datasets=["new"],
                                   texts=inst["text"][inst["dataset"] == "new"].tolist()).shift
    assert whole is not None and whole.p_value * (1 + whole.n_reference) == pytest.approx(
        round(whole.p_value * (1 + whole.n_reference)))  # whole tasks: T_j themselves


def test_the_form_shift_reads_past_many_near_copies_of_an_input():
    """With more near-copies of an input in the pool than the search's margin (4), its
    neighbours' mean fingerprint came from nothing (all zeros): T and p were read off it."""
    from benchroute.task import task_view

    data, X = pool()
    rng = np.random.default_rng(5)
    q = X[3] + 0.05 * rng.normal(size=X.shape[1])
    q = (q / np.linalg.norm(q)).astype(np.float32)
    text = free(7, 3)
    means = []
    for copies in (0, 30):
        frame = data.frame
        extra = pd.DataFrame([("c1x", f"copy{j:03d}", text, m, 1.0, 1.0) for j in range(copies)
                              for m in "ab"], columns=frame.columns[:6])
        both = BenchmarkData(pd.concat([frame, extra]) if copies else frame)
        inst, old = both.instances(), data.instances()
        where = {k: i for i, k in enumerate(zip(old["dataset"], old["instance_id"]))}
        XX = np.stack([X[where[k]] if k in where else q
                       for k in zip(inst["dataset"], inst["instance_id"])]).astype(np.float32)
        router = Router(encoder="hashing-64-12", tune=False, alphas=(0.0,), repeats=1)
        router.fit(both, embeddings=XX)
        view, _, _ = task_view(router, q[None], None, None, (), False, [text])
        sel = view.select(np.arange(1))
        assert sel.shift is not None and sel.n_in_pool == (copies > 0)
        means.append(view.form._means[0])
    np.testing.assert_allclose(means[1], means[0], atol=1e-12)
