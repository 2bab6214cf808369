"""The linear maps on the tuned kNN P (the cross-model stack, logistic regression on the vectors,
their blends): chosen by CV, saved, and used by every routing path."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from benchroute.exceptions import BenchrouteError
from benchroute.persistence import ROUTER_FORMAT_VERSION
from benchroute.routing import router_proba, router_proba_ood
from benchroute.stacking import (
    TASK_VECTOR_SCALE,
    LinearStack,
    TaskClassifier,
    choose_stack,
    fit_stack,
    fit_task_stack,
    fit_vector_logistic,
    logits,
    task_oof,
)
from benchroute.tuning import Calibration, PerInputPredictor, fold_ids, route_value
from tests.unit.test_tuning import _clusters

SMALL = {"ks": (5,), "weights": "uniform", "priors": (0.0,)}


def complement(n: int = 800, seed: int = 0, frac: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Model b is right exactly where model a is wrong, but has results on ``frac`` of the
    inputs only, so its own few neighbours say little; c is a coin."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(8, 16))
    c = rng.integers(0, 8, n)
    X = centre[c] + 0.5 * rng.normal(size=(n, 16))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ya = (rng.random(n) < np.where(c % 2, 0.9, 0.1)).astype(float)
    yb = np.where(rng.random(n) < frac, 1.0 - ya, np.nan)
    yc = (rng.random(n) < 0.5).astype(float)
    return X.astype(np.float32), np.stack([ya, yb, yc], axis=1)


def test_stack_chosen_where_one_models_correctness_is_a_function_of_anothers(monkeypatch):
    """(Eight clusters in 16 dimensions are linearly separable too, so the logistic family is
    left out: this is about the stack.)"""
    from benchroute import stacking

    monkeypatch.setattr(stacking, "AUTO_MAX_CELLS", 0)
    X, Y = complement()
    pred = PerInputPredictor(**SMALL).fit(X[:600], Y[:600])
    t = pred.tuning_.methods.set_index("method")
    assert pred.method_ in ("stack", "blend") and pred.stack_ is not None
    chosen = t[t["chosen"]].iloc[0]
    assert chosen["value"] > t.loc["knn", "value"] + t.loc["knn", "se"]
    assert pred.tuning_.method == pred.method_ and "stack or logistic: " in pred.tuning_.summary()
    assert pred.describe()["tuning"]["cv_methods"][0]["method"] == "knn"
    # and it routes better on inputs it never saw
    knn = PerInputPredictor(method="knn", **SMALL).fit(X[:600], Y[:600])
    assert route_value(pred.predict_proba(X[600:]), Y[600:]) > \
        route_value(knn.predict_proba(X[600:]), Y[600:])


def test_auto_leaves_the_stack_untried_past_its_model_limit(monkeypatch):
    """The stack's fit grows as M²: past AUTO_MAX_MODELS, "auto" does not try it (nor the task
    family, which reads the same logits), only the logistic family within its cell limit, and
    an explicit method="stack" still fits it."""
    from benchroute import stacking

    X, Y = complement()
    monkeypatch.setattr(stacking, "AUTO_MAX_MODELS", 2)  # the data has 3 models
    pred = PerInputPredictor(**SMALL).fit(X[:600], Y[:600])
    assert set(pred.tuning_.methods["method"]) == {"knn", "logistic_blend", "logistic"}
    monkeypatch.setattr(stacking, "AUTO_MAX_CELLS", 0)  # and past both limits, none
    pred = PerInputPredictor(**SMALL).fit(X[:600], Y[:600])
    assert pred.method_ == "knn" and pred.stack_ is None and pred.tuning_.methods is None
    forced = PerInputPredictor(method="stack", **SMALL).fit(X[:600], Y[:600])
    assert forced.stack_ is not None
    monkeypatch.undo()
    assert stacking.AUTO_MAX_MODELS >= 58  # every measured pool (7 to 58 models) tries it


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knn_chosen_where_the_stack_cannot_help(seed, monkeypatch):
    """Two clusters: each model's correctness is the cluster, which its neighbours show; the
    other model's P adds nothing. (A linear boundary also finds the clusters, so the logistic
    family is left out here.)"""
    from benchroute import stacking

    monkeypatch.setattr(stacking, "AUTO_MAX_CELLS", 0)
    X, Y, _ = _clusters(seed=seed)
    pred = PerInputPredictor(ks=(5, 20), priors=(0.0, 5.0)).fit(X, Y)
    assert pred.method_ == "knn" and pred.stack_ is None
    desc = pred.describe()
    assert desc["method"] == "knn" and "stack" not in desc
    same = PerInputPredictor(ks=(5, 20), priors=(0.0, 5.0), method="knn").fit(X, Y)
    np.testing.assert_array_equal(pred.predict_proba(X[:20]), same.predict_proba(X[:20]))


def test_stack_and_blend_are_one_linear_map_on_the_logits():
    rng = np.random.default_rng(0)
    P = rng.uniform(0.05, 0.95, (50, 3))
    Y = (rng.random((50, 3)) < P).astype(float)
    s = fit_stack(logits(P), Y)
    z = logits(P)
    lin = z @ s.coef + s.intercept
    np.testing.assert_allclose(s(P), 1 / (1 + np.exp(-lin)))
    w = 0.25
    np.testing.assert_allclose(s.blended(w)(P), 1 / (1 + np.exp(-(w * z + (1 - w) * lin))))
    back = LinearStack.from_dict(json.loads(json.dumps(s.blended(w).to_dict())))
    np.testing.assert_array_equal(back(P), s.blended(w)(P))
    # fractional labels are two weighted rows; a model with one label value is its mean
    Y[:, 2] = 1.0
    Y[:, 1] = rng.uniform(size=50)
    s = fit_stack(z, Y)
    assert np.all(s.coef[:, 2] == 0) and s(P)[:, 2] == pytest.approx(0.99)


def test_choice_is_the_simplest_within_one_standard_error():
    X, Y = complement()
    P = PerInputPredictor(method="knn", calibration="none", **SMALL).fit(X, Y).predict_proba(
        X, exclude_rows=None)
    fold, _ = fold_ids(len(X), None, 5, 0)
    ch = choose_stack(P, Y, fold)
    best = ch.table["value"].max()
    first_ok = ch.table[best - ch.table["value"] <= ch.table["se"]].iloc[0]
    assert ch.table.loc[ch.table["chosen"], "method"].item() == first_ok["method"]
    only = choose_stack(P, Y, fold, blends=(0.0,))
    assert only.method == "stack" and only.stack is not None and only.stack.knn_weight == 0.0


def test_description_round_trip_gives_identical_P_and_checks_the_shape():
    X, Y = complement()
    pred = PerInputPredictor(method="stack", **SMALL).fit(X, Y)
    back = PerInputPredictor.from_description(json.loads(json.dumps(pred.describe())), X, Y)
    assert back.method_ == "stack"
    np.testing.assert_array_equal(back.predict_proba(X[:30]), pred.predict_proba(X[:30]))
    with pytest.raises(BenchrouteError, match="stack of shape"):
        PerInputPredictor.from_description(pred.describe(), X, Y[:, :2])
    old = {k: v for k, v in pred.describe().items()
           if k not in ("method", "stack", "calibration_knn")}
    assert PerInputPredictor.from_description(old, X, Y).method_ == "knn"
    with pytest.raises(BenchrouteError, match="method == 'mlp'"):
        PerInputPredictor(method="mlp").fit(X, Y)


# ---------------------------------------------------------------------- a stacked router
def _stacked_router(tmp_path):
    from benchroute.embedding import HashingEncoder
    from benchroute.router import Router
    from tests.unit.test_router import synthetic

    data, _ = synthetic(3, per_task=40)
    router = Router(alphas=(0.0,), encoder=HashingEncoder(64), cache_dir=str(tmp_path))
    router.fit(data)
    pred = PerInputPredictor(method="stack", **SMALL).fit(
        router.pool_vectors(), router.Y_, router.datasets_)
    # a map that reverses each model's ranking (P -> 1 - P), so any path skipping it shows
    M = len(router.pool_models_)
    pred.stack_ = LinearStack(-np.eye(M), np.zeros(M))
    pred.calibration_ = pred.calibration_knn_ = Calibration.identity()
    router.per_input_ = pred.without_pool()
    return router, data


def _refused_as_format(router, tmp_path, version: int, needs: int) -> None:
    """A saved router whose map needs format ``needs``, relabelled ``version``, is refused."""
    from benchroute.router import Router
    from tests.corpus.test_corpus_router import _rewrite

    folder = router.save(tmp_path / f"as_format_{version}")
    _rewrite(folder, lambda m: m.update(format_version=version))
    with pytest.raises(BenchrouteError, match=r"'routing\.per_input\.method' is invalid.*"
                                              rf"\(format {needs}\)"):
        Router.load(folder)


def test_route_route_table_and_the_gateways_search_use_the_stack(tmp_path):
    router, _ = _stacked_router(tmp_path)
    texts = [f"task {t} input {i}" for t in range(3) for i in range(5)]
    Q = router.embed(texts)
    P = router_proba(router, Q)
    stacked = router.per_input_
    router.per_input_ = copy.copy(stacked).drop_stack("compare")
    knn = router_proba(router, Q)
    router.per_input_ = stacked
    np.testing.assert_allclose(P, 1.0 - np.clip(knn, 0.01, 0.99))
    np.testing.assert_array_equal(router.predict_proba(texts).to_numpy(), P)
    np.testing.assert_array_equal(router_proba_ood(router, Q)[0], P)  # the gateway's call
    table = router.route_table(texts, policy="best")
    np.testing.assert_allclose(table["p"].to_numpy(), P.max(axis=1))
    assert router.route(texts) == table["model"].tolist()


def test_stacked_router_save_load_round_trip_and_field_errors(tmp_path):
    from benchroute.router import Router
    from tests.corpus.test_corpus_router import _rewrite

    router, _ = _stacked_router(tmp_path)
    texts = [f"task 1 input {i}" for i in range(6)]
    folder = router.save(tmp_path / "r")
    back = Router.load(folder)
    assert back.per_input_.method_ == "stack"
    pd.testing.assert_frame_equal(back.predict_proba(texts), router.predict_proba(texts))
    meta = json.loads((folder / "router.json").read_text())
    assert meta["routing"]["per_input"]["stack"]["coef"][0][0] == -1.0

    def edit(change):
        def f(m):
            change(m["routing"]["per_input"])
        return f

    _rewrite(folder, edit(lambda d: d["stack"]["coef"].pop()))
    with pytest.raises(BenchrouteError, match=r"router\.json: field 'routing\.per_input\.stack"
                                              r"\.coef' is invalid; expected a 3 x 3 list"):
        Router.load(folder)
    folder = router.save(tmp_path / "r2")
    assert meta["format_version"] == ROUTER_FORMAT_VERSION == 5  # older readers refuse it
    _rewrite(folder, lambda m: m.update(format_version=2))
    with pytest.raises(BenchrouteError, match="'routing.per_input.stack' is invalid; expected "
                                              "absent in format 2"):
        Router.load(folder)
    _rewrite(folder, edit(lambda d: (d.pop("stack"), d.pop("calibration_knn"), d.pop("method"))))
    assert Router.load(folder).per_input_.method_ == "knn"  # format 2: saved before the stack


def test_remove_model_and_add_model_with_a_stacked_router(tmp_path):
    router, data = _stacked_router(tmp_path)
    texts = [f"task 0 input {i}" for i in range(5)]
    frame = data.frame[data.frame["model"] == "m1"].head(20)
    router.add_model("new", frame[["dataset", "instance_id", "correct"]])
    assert router.per_input_.method_ == "stack"  # the pool models are the same
    assert router.predict_proba(texts).shape == (5, 4)
    router.remove_model("m0")
    desc = router.per_input_.describe()
    assert desc["method"] == "knn" and "stack" not in desc and "m0" in desc["fallback"]
    P = router.predict_proba(texts)
    assert list(P.columns) == ["m1", "m2", "new"] and np.isfinite(P.to_numpy()).all()
    router.save(tmp_path / "after")
    assert "fallback" in json.loads((tmp_path / "after" / "router.json").read_text())[
        "routing"]["per_input"]


# ---------------------------------------------------------------------- logistic on the vectors
def halfspaces(n: int = 900, d: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each model is right on one side of a hyperplane through the origin: a linear function of
    the vector that a logistic regression finds, while in 24 dimensions an input's few
    neighbours are far and straddle the planes."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    V = rng.normal(size=(d, 3))
    Y = ((X @ V + 0.1 * rng.normal(size=(n, 3))) > 0).astype(float)
    return X.astype(np.float32), Y


def test_logistic_chosen_where_correctness_is_linear_in_the_vector():
    X, Y = halfspaces()
    pred = PerInputPredictor(**SMALL).fit(X[:700], Y[:700])
    t = pred.tuning_.methods.set_index("method")
    assert pred.method_ in ("logistic", "logistic_blend")
    assert pred.stack_ is not None and pred.stack_.vector_coef is not None
    chosen = t[t["chosen"]].iloc[0]
    assert chosen["value"] > t.loc["knn", "value"] + t.loc["knn", "se"]
    assert {"stack", "logistic", "logistic_blend"} <= set(t.index)
    knn = PerInputPredictor(method="knn", **SMALL).fit(X[:700], Y[:700])
    assert route_value(pred.predict_proba(X[700:]), Y[700:]) > \
        route_value(knn.predict_proba(X[700:]), Y[700:]) + 0.05
    # the map is one logistic regression per model on the vectors, blended with the kNN logit
    full = fit_vector_logistic(X[:700], Y[:700]).blended(pred.stack_.knn_weight)
    np.testing.assert_allclose(pred.stack_.vector_coef, full.vector_coef)


def test_logistic_needs_the_queries_and_without_vectors_is_the_knn():
    X, Y = halfspaces()
    pred = PerInputPredictor(method="logistic", **SMALL).fit(X, Y)
    assert pred.method_ == "logistic" and pred.stack_.knn_weight == 0.0
    from benchroute.tuning import _gather, knn_search

    d, r = knn_search(X, X[:10], 5)
    labels = _gather(Y, r)
    with pytest.raises(BenchrouteError, match="reads the query vectors"):
        pred.predict_from_neighbours(d, labels)
    np.testing.assert_array_equal(pred.predict_from_neighbours(d, labels, queries=X[:10]),
                                  pred.predict_proba(X[:10]))
    knn = pred.without_vectors()
    assert knn.method_ == "knn" and knn.stack_ is None and pred.method_ == "logistic"  # a copy
    assert knn.calibration_ is pred.calibration_knn_
    raw = knn.predict_from_neighbours(d, labels, calibrated=False)
    np.testing.assert_array_equal(raw, PerInputPredictor(method="knn", calibration="none", **SMALL)
                                  .fit(X, Y).predict_from_neighbours(d, labels))


def test_auto_leaves_logistic_untried_past_its_cell_limit(monkeypatch):
    from benchroute import stacking

    X, Y = halfspaces()
    monkeypatch.setattr(stacking, "AUTO_MAX_CELLS", Y[:700].size - 1)
    pred = PerInputPredictor(**SMALL).fit(X[:700], Y[:700])
    assert not pred.tuning_.methods["method"].str.startswith("logistic").any()
    assert not pred.method_.startswith("logistic")


def test_logistic_router_routes_saves_loads_and_checks_the_field(tmp_path):
    from benchroute.new_models import known_proba
    from benchroute.router import Router
    from tests.corpus.test_corpus_router import _rewrite

    router, data = _stacked_router(tmp_path)
    d, M = router.pool_vectors().shape[1], len(router.pool_models_)
    rng = np.random.default_rng(0)
    pred = router.per_input_
    pred.stack_ = LinearStack(np.zeros((M, M)), np.zeros(M), 0.0, 5.0 * rng.normal(size=(d, M)))
    pred.method_ = "logistic"
    texts = [f"task {t} input {i}" for t in range(3) for i in range(4)]
    Q = router.embed(texts)
    expect = 1.0 / (1.0 + np.exp(-(Q.astype(np.float64) @ pred.stack_.vector_coef)))
    np.testing.assert_allclose(router_proba(router, Q), expect)  # route's path
    np.testing.assert_allclose(router_proba_ood(router, Q)[0], expect)  # the gateway's path
    assert router.route(texts) == [router.pool_models_[j] for j in expect.argmax(axis=1)]
    folder = router.save(tmp_path / "r")
    back = Router.load(folder)
    assert back.per_input_.method_ == "logistic"
    pd.testing.assert_frame_equal(back.predict_proba(texts), router.predict_proba(texts))
    # an added model's features are the kNN P: the regression has seen the pool inputs
    frame = data.frame[data.frame["model"] == "m1"].head(20)
    router.add_model("new", frame[["dataset", "instance_id", "correct"]])
    assert router.per_input_.method_ == "logistic"
    F = known_proba(router, Q, without_self=True)
    router.per_input_ = pred.without_vectors()
    np.testing.assert_array_equal(F, known_proba(router, Q, without_self=True))
    router.per_input_ = pred
    _rewrite(folder, lambda m: m["routing"]["per_input"]["stack"]["vector_coef"].pop())
    with pytest.raises(BenchrouteError, match=rf"field 'routing\.per_input\.stack\.vector_coef' "
                                              rf"is invalid; expected a {d} x {M} list"):
        Router.load(folder)
    _refused_as_format(router, tmp_path, 3, needs=4)


# ---------------------------------------------------------------------- the task classifier
def tasks_in_noise(n: int = 900, d: int = 24, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three tasks apart along one axis of 24, the rest noise: a linear classifier tells them
    apart, while an input's nearest neighbours come from every task. Model m is right on 85% of
    task m's inputs and 25% of the others'."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 3, n)
    X = rng.normal(size=(n, d))
    X[:, 0] += 3.0 * (g - 1)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y = (rng.random((n, 3)) < np.where(g[:, None] == np.arange(3), 0.85, 0.25)).astype(float)
    return X.astype(np.float32), Y, np.array([f"task{t}" for t in g])


def test_task_stack_chosen_with_random_folds_and_never_tried_with_tasks_held_out():
    X, Y, g = tasks_in_noise(1400)
    pred = PerInputPredictor(folds_by="random", **SMALL).fit(X[:900], Y[:900], g[:900])
    t = pred.tuning_.methods.set_index("method")
    assert pred.method_ in ("task", "task_blend")
    assert pred.stack_.task is not None and pred.stack_.task.tasks == ("task0", "task1", "task2")
    chosen = t[t["chosen"]].iloc[0]
    assert chosen["value"] > t.loc["stack", "value"] + t.loc["stack", "se"]
    knn = PerInputPredictor(method="knn", **SMALL).fit(X[:900], Y[:900])
    assert route_value(pred.predict_proba(X[900:]), Y[900:]) > \
        route_value(knn.predict_proba(X[900:]), Y[900:]) + 0.05
    # whole tasks held out: T of a held-out task is noise by construction, so it is not tried
    grouped = PerInputPredictor(**SMALL).fit(X[:900], Y[:900], g[:900])
    assert not grouped.tuning_.methods["method"].str.startswith("task").any()
    assert grouped.tuning_.cv.startswith("GroupKFold") and pred.tuning_.cv.endswith("random folds")


def test_task_stack_is_the_stack_on_logits_and_oof_task_probabilities():
    X, Y, g = tasks_in_noise()
    fold = fold_ids(len(X), None, 5, 0)[0]
    P = np.clip(Y * 0.6 + 0.2, 0, 1)  # any P: the check is the map's form
    choice = choose_stack(P, Y, fold, blends=(0.0,), families=("task",), X=X, groups=g)
    T = task_oof(X, g, fold)
    np.testing.assert_allclose(T.sum(axis=1), 1.0)
    clf = TaskClassifier.fit(X, g)
    expect = fit_task_stack(logits(P), T, X, clf, Y)
    np.testing.assert_allclose(choice.stack.task_coef, expect.task_coef)
    np.testing.assert_allclose(choice.stack(P, X), expect(P, X))
    # the vectors enter scaled, so their weights are penalised 1/s² times more
    direct = fit_stack(np.hstack([logits(P), T, TASK_VECTOR_SCALE * X]), Y)
    np.testing.assert_allclose(expect.vector_coef, TASK_VECTOR_SCALE * direct.coef[3 + 3:],
                               rtol=1e-6, atol=1e-9)
    z = logits(P) @ expect.coef + clf(X) @ expect.task_coef + X @ expect.vector_coef \
        + expect.intercept
    np.testing.assert_allclose(expect(P, X), 1.0 / (1.0 + np.exp(-z)))
    with pytest.raises(BenchrouteError, match="reads the query vectors"):
        expect(P)
    # two tasks: scikit-learn's one column becomes the softmax of [0, s]
    two = g != "task2"
    clf2 = TaskClassifier.fit(X[two], g[two])
    from sklearn.linear_model import LogisticRegression

    ref = LogisticRegression(C=10.0, max_iter=300).fit(X[two].astype(np.float64), g[two])
    np.testing.assert_allclose(clf2(X[:5]), ref.predict_proba(X[:5].astype(np.float64)),
                               atol=1e-6)
    with pytest.raises(BenchrouteError, match="method 'task' needs the task of each"):
        PerInputPredictor(method="task", **SMALL).fit(X, Y)


def test_task_router_routes_saves_loads_and_checks_its_fields(tmp_path):
    from benchroute.new_models import known_proba
    from benchroute.router import Router
    from tests.corpus.test_corpus_router import _rewrite

    router, data = _stacked_router(tmp_path)
    d, M = router.pool_vectors().shape[1], len(router.pool_models_)
    Xp, tasks = router.pool_vectors(), np.asarray(router.datasets_)
    pred = router.per_input_
    clf = TaskClassifier.fit(Xp, tasks)
    rng = np.random.default_rng(0)
    pred.stack_ = LinearStack(np.zeros((M, M)), np.zeros(M), 0.0, rng.normal(size=(d, M)), clf,
                              4.0 * rng.normal(size=(len(clf.tasks), M)))
    pred.method_ = "task"
    pred.folds_by = "random"  # the family is fitted on random folds only (a load checks it)
    router.set_params(tune_folds="random")
    texts = [f"task {t} input {i}" for t in range(3) for i in range(4)]
    Q = router.embed(texts)
    expect = 1.0 / (1.0 + np.exp(-(clf(Q) @ pred.stack_.task_coef
                                   + Q.astype(np.float64) @ pred.stack_.vector_coef)))
    np.testing.assert_allclose(router_proba(router, Q), expect)  # route's path
    np.testing.assert_allclose(router_proba_ood(router, Q)[0], expect)  # the gateway's path
    folder = router.save(tmp_path / "r")
    back = Router.load(folder)
    assert back.per_input_.method_ == "task" and back.per_input_.stack_.task.tasks == clf.tasks
    pd.testing.assert_frame_equal(back.predict_proba(texts), router.predict_proba(texts))
    # an added model's features are the kNN P: the classifier has seen the pool inputs' tasks
    F = known_proba(router, Q, without_self=True)
    router.per_input_ = pred.without_vectors()
    assert router.per_input_.method_ == "knn"
    np.testing.assert_array_equal(F, known_proba(router, Q, without_self=True))
    router.per_input_ = pred
    T = len(clf.tasks)
    for i, (change, field, expected) in enumerate([
            (lambda s: s["task_coef"].pop(), r"stack\.task_coef'", rf"a {T} x {M} list"),
            (lambda s: s["task_classifier"]["coef"][0].pop(), r"stack\.task_classifier\.coef'",
             rf"a {d} x {T} list"),
            (lambda s: s["task_classifier"].update(tasks=["a"] * T),
             r"stack\.task_classifier\.tasks'", "a non-empty list of distinct task names"),
            (lambda s: s["vector_coef"].pop(), r"stack\.vector_coef'", rf"a {d} x {M} list"),
            (lambda s: s.pop("task_coef"), r"stack'", "an object with exactly")]):
        # a new folder each time: saving over an edited router is refused (it changed since
        # this router saved it)
        folder = router.save(tmp_path / f"bad{i}")
        _rewrite(folder, lambda m, change=change: change(m["routing"]["per_input"]["stack"]))
        with pytest.raises(BenchrouteError, match=rf"field 'routing\.per_input\.{field} is "
                                                  rf"invalid; expected {expected}"):
            Router.load(folder)
    _refused_as_format(router, tmp_path, 4, needs=5)


def _save_refuses_a_change(router, tmp_path, name, new, old):  # type: ignore[no-untyped-def]
    """A parameter of the fitted predictor changed after the fit: set_params warns that it
    waits for the next fit, and save refuses it, writing nothing."""
    with pytest.warns(UserWarning, match=f"{name} changed on a fitted router"):
        router.set_params(**{name: new})
    with pytest.raises(BenchrouteError, match=rf"parameters changed after the fit \({name} is "
                                              rf"'{new}', the fitted pool uses '{old}'\)"):
        router.save(tmp_path / "changed")
    assert not (tmp_path / "changed").exists()


def test_router_tune_folds_reaches_the_predictor_and_is_checked(tmp_path):
    from benchroute.router import Router

    router, data = _stacked_router(tmp_path)
    with pytest.raises(BenchrouteError, match="tune_folds == 'tasks', expected 'task' or "
                                              "'random'"):
        Router(tune_folds="tasks").fit(data)
    fitted = Router(tune_folds="random", encoder=router.encoder).fit(data)
    assert "random folds" in fitted.per_input_.tuning_.cv
    assert Router(encoder=router.encoder).fit(data).per_input_.tuning_.cv.startswith("GroupKFold")
    back = Router.load(fitted.save(tmp_path / "rf"))
    assert back.tune_folds == "random" and back.per_input_.folds_by == "random"
    # changed after the fit, the saved router would claim folds its predictor was not tuned on
    _save_refuses_a_change(fitted, tmp_path, "tune_folds", "task", "random")
    from tests.corpus.test_corpus_router import _rewrite

    folder = tmp_path / "rf"
    _rewrite(folder, lambda m: m["routing"]["per_input"].update(folds_by="task"))
    with pytest.raises(BenchrouteError, match=r"field 'routing\.per_input\.folds_by' is "
                                              r"invalid; expected params\.tune_folds \('random'\)"):
        Router.load(folder)
    _rewrite(folder, lambda m: m["routing"]["per_input"].pop("folds_by"))  # saved before it was kept
    assert Router.load(folder).per_input_.folds_by == "random"
    # format 5 always writes the calibration: one deleted loaded as uncalibrated (fuzzing)
    _rewrite(folder, lambda m: m["routing"]["per_input"].pop("calibration"))
    with pytest.raises(BenchrouteError, match=r"field 'routing\.per_input' is invalid"):
        Router.load(folder)


def test_router_tune_calibration_reaches_the_predictor_is_saved_and_checked(tmp_path):
    from benchroute.cli import _make_router, build_parser
    from benchroute.router import Router
    from tests.corpus.test_corpus_router import _rewrite

    router, data = _stacked_router(tmp_path)
    with pytest.raises(BenchrouteError, match="tune_calibration == 'iso', expected 'auto', "
                                              "'isotonic' or 'none'"):
        Router(tune_calibration="iso").fit(data)
    kept = Router(tune_calibration="isotonic", encoder=router.encoder).fit(data)
    dropped = Router(tune_calibration="none", encoder=router.encoder).fit(data)
    assert kept.per_input_.calibration == "isotonic" and kept.per_input_.tuning_.calibrated
    assert len(kept.per_input_.calibration_.x) > 0
    assert not dropped.per_input_.tuning_.calibrated
    assert len(dropped.per_input_.calibration_.x) == 0
    texts = [f"task {t} input {i}" for t in range(3) for i in range(5)]
    # the same tuning either way, so P differs by the map alone (the map is increasing)
    P_kept = kept.predict_proba(texts).to_numpy()
    P_dropped = dropped.predict_proba(texts).to_numpy()
    assert not np.allclose(P_kept, P_dropped)
    np.testing.assert_array_equal(kept.per_input_.calibration_(P_dropped), P_kept)
    back = Router.load(kept.save(tmp_path / "iso"))
    assert back.tune_calibration == "isotonic" and back.per_input_.calibration == "isotonic"
    np.testing.assert_array_equal(back.predict_proba(texts).to_numpy(), P_kept)
    # changed after the fit, the saved router would claim a rule its map was not chosen by
    _save_refuses_a_change(kept, tmp_path, "tune_calibration", "none", "isotonic")
    folder = tmp_path / "iso"
    _rewrite(folder, lambda m: m["routing"]["per_input"].update(calibration_rule="none"))
    with pytest.raises(BenchrouteError, match=r"field 'routing\.per_input\.calibration_rule' "
                                              r"is invalid; expected params\.tune_calibration "
                                              r"\('isotonic'\)"):
        Router.load(folder)
    # saved before the rule was kept: it reads the parameters' rule and the saved map
    _rewrite(folder, lambda m: m["routing"]["per_input"].pop("calibration_rule"))
    np.testing.assert_array_equal(Router.load(folder).predict_proba(texts).to_numpy(), P_kept)
    _rewrite(folder, lambda m: (m.update(format_version=5), m["params"].pop("tune_calibration")))
    assert Router.load(folder).tune_calibration == "auto"
    # the CLI's option reaches the router; a value outside the rules is refused by argparse
    args = build_parser().parse_args(["fit", "d", "--out", "o", "--tune-calibration", "none"])
    assert _make_router(args).tune_calibration == "none"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "d", "--out", "o", "--tune-calibration", "iso"])


def test_a_saved_router_whose_maps_contradict_their_rule_or_fields_is_refused(tmp_path):
    """A review's fuzzing of router.json: each of these loaded, applied a map its rule could
    not have made (0.19 off in P), lost the kNN map that remove_model switches to, claimed an
    index factory its index is not, or took keys no fit writes."""
    from benchroute.router import Router
    from tests.corpus.test_corpus_router import _rewrite

    router, data = _stacked_router(tmp_path)
    enc = router.encoder
    cases = {
        "none": [
            (lambda m: m["routing"]["per_input"].update(calibration={"x": [0.2, 0.8],
                                                                     "y": [0.0, 1.0]}),
             r"routing\.per_input\.calibration' is invalid; expected what calibration_rule "
             r"'none' keeps"),
            # saved before the rule was kept: the parameters' rule judges the map likewise
            (lambda m: (m["routing"]["per_input"].pop("calibration_rule"),
                        m["routing"]["per_input"].update(calibration={"x": [0.2, 0.8],
                                                                      "y": [0.0, 1.0]})),
             r"routing\.per_input\.calibration' is invalid"),
        ],
        "isotonic": [
            (lambda m: m["params"].update(index_factory="Fla"),
             r"params\.index_factory' is invalid; expected the saved index's factory \('Flat'"),
            (lambda m: m["routing"]["per_input"].update(zzz=1),
             r"routing\.per_input' is invalid; expected an object with keys among .*\(not "
             r"\['zzz'\]\)"),
        ],
    }
    for rule, edits in cases.items():
        fitted = Router(tune_calibration=rule, encoder=enc, alphas=(0.0,)).fit(data)
        for i, (edit, message) in enumerate(edits):
            folder = fitted.save(tmp_path / f"{rule}{i}")
            _rewrite(folder, edit)
            with pytest.raises(BenchrouteError, match=message):
                Router.load(folder)
    # a stacked router's kNN map: required (remove_model switches to it)
    folder = router.save(tmp_path / "stacked")
    _rewrite(folder, lambda m: m["routing"]["per_input"].pop("calibration_knn"))
    with pytest.raises(BenchrouteError, match=r"routing\.per_input\.calibration_knn' is "
                                              r"invalid"):
        Router.load(folder)


def test_a_capped_fit_that_scored_no_label_saves_and_loads(tmp_path):
    """Every label outside the capped sample of scored inputs: the tuning's scores are NaN and
    the isotonic map is empty. Saving raised a raw ValueError (JSON has no NaN); the record now
    holds null, and the router loads and predicts as saved (found by a review). The fit also
    warned NumPy's "Mean of empty slice"."""
    from benchroute.embedding import HashingEncoder
    from benchroute.router import Router
    from benchroute.sampling import query_mask

    rng = np.random.default_rng(0)
    ds = np.repeat([f"t{t}" for t in range(4)], 20).astype(object)
    X = rng.normal(size=(80, 64)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    scored = query_mask(ds, len(ds), 2, 0)
    Y = np.full((80, 3), np.nan)
    for t in range(4):
        Y[np.flatnonzero((ds == f"t{t}") & ~scored)[0]] = rng.random(3) < 0.5
    with warnings.catch_warnings():  # the pool's few labels warn; NumPy's mean of none did
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", RuntimeWarning)
        router = Router(tune_calibration="isotonic", max_task_queries=2, alphas=(0.0,),
                        encoder=HashingEncoder(64), cache_dir=str(tmp_path)).fit_arrays(
            X, Y, ds, ["m0", "m1", "m2"])
        assert len(router.per_input_.calibration_.x) == 0
        assert np.isnan(router.per_input_.tuning_.brier_raw)
        back = Router.load(router.save(tmp_path / "r"))
    assert back.per_input_.describe()["tuning"]["brier_raw"] is None
    np.testing.assert_array_equal(back.predict_proba(["a b", "c d"]).to_numpy(),
                                  router.predict_proba(["a b", "c d"]).to_numpy())


def test_a_saved_task_family_outside_random_folds_or_the_pools_tasks_is_refused(tmp_path):
    from benchroute.router import Router
    from tests.corpus.test_corpus_router import _rewrite

    router, _ = _stacked_router(tmp_path)
    d, M = router.pool_vectors().shape[1], len(router.pool_models_)
    clf = TaskClassifier.fit(router.pool_vectors(), np.asarray(router.datasets_))
    pred = router.per_input_
    pred.stack_ = LinearStack(np.zeros((M, M)), np.zeros(M), 0.0, np.zeros((d, M)), clf,
                              np.ones((len(clf.tasks), M)))
    pred.method_, pred.folds_by = "task", "random"
    router.set_params(tune_folds="random")
    folder = router.save(tmp_path / "task")
    assert Router.load(folder).per_input_.method_ == "task"
    _rewrite(folder, lambda m: (m["params"].update(tune_folds="task"),
                                m["routing"]["per_input"].update(folds_by="task")))
    with pytest.raises(BenchrouteError, match=r"routing\.per_input\.method' is invalid; "
                                              r"expected no task family on task folds"):
        Router.load(folder)
    folder = router.save(tmp_path / "task2")
    _rewrite(folder, lambda m: m["routing"]["per_input"]["stack"]["task_classifier"]["tasks"]
             .__setitem__(0, "not a pool task"))
    with pytest.raises(BenchrouteError, match=r"task_classifier\.tasks' is invalid; expected "
                                              r"tasks of the pool \(not \['not a pool task'\]"):
        Router.load(folder)


def test_task_oof_aligns_columns_when_a_task_is_missing_from_training_folds():
    X, Y, g = tasks_in_noise(300)
    g = g.astype(object)
    fold = fold_ids(len(X), None, 5, 0)[0]
    g[fold == 2] = "only_in_fold_2"  # absent from every training part that predicts fold 2
    T = task_oof(X, g, fold)
    tasks = np.unique(g)
    np.testing.assert_allclose(T.sum(axis=1), 1.0)
    col = list(tasks).index("only_in_fold_2")
    assert (T[fold == 2, col] == 0).all() and (T[fold != 2, col] > 0).all()
    # the other columns are that fold's classifier's probabilities, by task name
    clf = TaskClassifier.fit(X[fold != 2], g[fold != 2])
    np.testing.assert_allclose(T[np.ix_(fold == 2, np.searchsorted(tasks, clf.tasks))],
                               clf(X[fold == 2]))


def test_task_family_with_a_capped_sample_and_its_refusals(monkeypatch):
    from benchroute import stacking

    X, Y, g = tasks_in_noise(1400)
    capped = PerInputPredictor(folds_by="random", max_task_queries=150, **SMALL).fit(X, Y, g)
    assert capped.method_ in ("task", "task_blend") and "450 of 1400 inputs scored" in \
        capped.tuning_.cv
    assert capped.predict_proba(X[:5]).shape == (5, 3)
    with pytest.raises(BenchrouteError, match="random tuning folds"):
        PerInputPredictor(method="task", **SMALL).fit(X, Y, g)  # tasks held out: T is noise
    monkeypatch.setattr(stacking, "AUTO_MAX_TASK_CELLS", len(X) * 3 - 1)
    untried = PerInputPredictor(folds_by="random", **SMALL).fit(X, Y, g)
    assert not untried.tuning_.methods["method"].str.startswith("task").any()
    # a map with the classifier alone still reads the vectors, and without_vectors drops it
    clf = TaskClassifier.fit(X, g)
    capped.stack_ = LinearStack(np.eye(3), np.zeros(3), 0.0, None, clf, np.ones((3, 3)))
    assert capped.stack_.reads_vectors and capped.without_vectors().stack_ is None


def test_a_format_4_router_without_tune_folds_loads_as_task_folds(tmp_path):
    from benchroute.router import Router
    from tests.corpus.test_corpus_router import _rewrite

    router, _ = _stacked_router(tmp_path)
    folder = router.save(tmp_path / "r4")
    _rewrite(folder, lambda m: (m.update(format_version=4), m["params"].pop("tune_folds")))
    back = Router.load(folder)
    assert back.tune_folds == "task" and back.per_input_.method_ == "stack"
