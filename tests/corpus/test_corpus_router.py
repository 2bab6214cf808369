"""Router folders are untrusted data, and API misuse gets a clear error (issue 9, router part).

Each case asserts the exact outcome: a BenchrouteError naming the file and the field, or the
right result. Field cases rewrite ``router.json`` with a recomputed digest, so that the field
check itself (not the digest) is what refuses them.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from benchroute._persist import sha256_file
from benchroute.cli import main
from benchroute.embedding import HashingEncoder
from benchroute.exceptions import BenchrouteError, FormatVersionError
from benchroute.persistence import write_signed_meta
from benchroute.router import Router
from tests.unit.test_router import MODELS, synthetic

Meta = dict[str, object]


@pytest.fixture(scope="module")
def fitted():
    data, X = synthetic(12, n_tasks=3, per_task=12)
    return Router(alphas=(0.0, 0.2), repeats=2, encoder=HashingEncoder(8)).fit(data, embeddings=X), X


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    return fitted[0].save(tmp_path_factory.mktemp("saved") / "router")


@pytest.fixture
def copy(saved, tmp_path):
    dst = tmp_path / "router"
    shutil.copytree(saved, dst)
    return dst


def _rewrite(folder: Path, change: Callable[[Meta], None], redigest: bool = True) -> None:
    path = folder / "router.json"
    meta = json.loads(path.read_text())
    change(meta)
    if redigest:
        write_signed_meta(folder, meta)
    else:
        path.write_text(json.dumps(meta))


def _set(*keys: str, value: object) -> Callable[[Meta], None]:
    def change(meta: Meta) -> None:
        obj = meta
        for k in keys[:-1]:
            obj = obj[k]  # type: ignore[index, assignment]
        obj[keys[-1]] = value  # type: ignore[index]
    return change


def _del(*keys: str) -> Callable[[Meta], None]:
    def change(meta: Meta) -> None:
        obj = meta
        for k in keys[:-1]:
            obj = obj[k]  # type: ignore[index, assignment]
        del obj[keys[-1]]  # type: ignore[attr-defined]
    return change


def _permute_models(meta: Meta) -> None:
    meta["models"] = list(reversed(meta["models"]))  # type: ignore[call-overload]


def _duplicate_model(meta: Meta) -> None:
    meta["models"] = [meta["models"][0]] * 3  # type: ignore[index]


def _permute_columns(meta: Meta) -> None:
    ta = meta["task_accuracy"]
    ta["columns"] = list(reversed(ta["columns"]))  # type: ignore[index]


def _short_p(meta: Meta) -> None:
    meta["reference"]["p"] = meta["reference"]["p"][1:]  # type: ignore[index]


FIELD_CASES = {
    "bandwidth 0": (_set("params", "bandwidth", value=0), "params: bandwidth == 0"),
    "bandwidth negative": (_set("params", "bandwidth", value=-0.1), "params: bandwidth"),
    "bandwidth string": (_set("params", "bandwidth", value="0.09"), "params: bandwidth"),
    "n_neighbours 0": (_set("params", "n_neighbours", value=0), "params: n_neighbours == 0"),
    "k 0": (_set("params", "k", value=0), "params: k == 0"),
    "k string": (_set("params", "k", value="5"), "params: k == '5'"),
    "k bool": (_set("params", "k", value=True), "params: k == True"),
    "k float": (_set("params", "k", value=5.0), "params: k == 5.0"),
    "k huge": (_set("params", "k", value=10**40), "params: k =="),
    "eta 5": (_set("params", "eta", value=5), "params: eta == 5"),
    "threshold 2": (_set("params", "threshold", value=2), "params: threshold == 2"),
    "alphas empty": (_set("params", "alphas", value=[]), "params: alphas"),
    "alphas 1.5": (_set("params", "alphas", value=[0.0, 1.5]), "params: alphas"),
    "alphas string": (_set("params", "alphas", value="0.1"), "params: alphas"),
    "weights unknown": (_set("params", "weights", value="cosine"), "params: weights"),
    "repeats 0": (_set("params", "repeats", value=0), "params: repeats == 0"),
    "n_draws -1": (_set("params", "n_draws", value=-1), "params: n_draws"),
    "seed -1": (_set("params", "seed", value=-1), "params: seed"),
    "prior_strength -1": (_set("params", "prior_strength", value=-1), "params: prior_strength"),
    "nprobe 0": (_set("params", "nprobe", value=0), "params: nprobe"),
    "cache_dir set": (_set("params", "cache_dir", value="/tmp/elsewhere"), "params.cache_dir"),
    "encoder path": (_set("params", "encoder", value="/etc/passwd"), "params.encoder"),
    "encoder hub name": (_set("params", "encoder", value="evil/model"), "params.encoder"),
    "encoder relative path": (_set("params", "encoder", value="../models/x"), "params.encoder"),
    "encoder not str": (_set("params", "encoder", value=7), "params: encoder"),
    "params missing k": (_del("params", "k"), "'params' is invalid"),
    "params extra key": (_set("params", "evil", value=1), "'params' is invalid"),
    "params not object": (_set("params", value=[1, 2]), "'params' is invalid"),
    "models permuted": (_permute_models, "field 'task_accuracy.columns'"),
    "models duplicated": (_duplicate_model, "field 'models'"),
    "models not list": (_set("models", value="m0"), "field 'models'"),
    "models with number": (_set("models", value=["m0", 1, "m2"]), "field 'models'"),
    "format_version string": (_set("format_version", value="2"), "field 'format_version'"),
    "format_version float": (_set("format_version", value=2.0), "field 'format_version'"),
    "format_version list": (_set("format_version", value=[2]), "field 'format_version'"),
    "format_version bool": (_set("format_version", value=True), "field 'format_version'"),
    "columns permuted": (_permute_columns, "field 'task_accuracy.columns'"),
    "accuracy row short": (_set("task_accuracy", "data", value=[[0.5]]), "task_accuracy.data"),
    "accuracy 1.5": (_set("task_accuracy", "data", value=[[1.5, 0.5, 0.5]] * 3),
                     "task_accuracy.data"),
    "accuracy index unknown": (_set("task_accuracy", "index", value=["x", "y", "z"]),
                               "task_accuracy.index"),
    "reference p short": (_short_p, "field 'reference.p'"),
    "reference u negative": (_set("reference", "u", value=[-1.0] * 5), "reference.u"),
    "reference task unknown": (_set("reference", "task", value=["zz"] * 5),
                               "reference.task/alpha"),
    "reference alpha string": (_set("reference", "alpha", value="0"), "reference.alpha"),
    "reference touched list": (_set("reference", "touched", value=[]), "reference.touched"),
    "reference missing": (_del("reference"), "field 'reference'"),
    "reference params list": (_set("reference", "params", value=[1]), "field 'reference.params'"),
    "reference params missing key": (_del("reference", "params", "seed"),
                                     "field 'reference.params'"),
    "reference params threshold 2": (_set("reference", "params", "threshold", value=2),
                                     "reference.params: threshold == 2"),
    "reference params repeats string": (_set("reference", "params", "repeats", value="1"),
                                        "reference.params: repeats == '1'"),
    "reference params alphas empty": (_set("reference", "params", "alphas", value=[]),
                                      "reference.params: alphas"),
    "reference params other alphas": (_set("reference", "params", "alphas", value=[0.0, 0.5]),
                                      "field 'reference.params'"),
    "reference params fewer repeats": (_set("reference", "params", "repeats", value=1),
                                       "field 'reference.params'"),
    "encoder id not str": (_set("encoder", value=None), "field 'encoder'"),
    "encoder id mismatch": (_set("encoder", value="hashing-16-12"), "the index's encoder"),
}


@pytest.mark.parametrize("case", sorted(FIELD_CASES))
def test_bad_field_is_refused_naming_file_and_field(copy, case):
    change, message = FIELD_CASES[case]
    _rewrite(copy, change)
    with pytest.raises(BenchrouteError) as err:
        Router.load(copy)
    text = str(err.value)
    assert str(copy / "router.json") in text or str(copy) in text
    assert message in text, text


def test_field_changed_without_digest_is_refused(copy):
    _rewrite(copy, _set("params", "bandwidth", value=0.5), redigest=False)
    with pytest.raises(BenchrouteError, match=r"router\.json: field 'digest' does not match"):
        Router.load(copy)


def test_missing_digest_is_refused(copy):
    _rewrite(copy, _del("digest"), redigest=False)
    with pytest.raises(BenchrouteError, match="field 'digest'"):
        Router.load(copy)


@pytest.mark.parametrize("name", ["../outside.npz", "/etc/passwd", "index/../../x", "pool.npz/.."])
def test_checksum_names_outside_the_folder_are_refused_before_opening(copy, name, monkeypatch):
    opened: list[str] = []
    import benchroute.persistence as persistence

    monkeypatch.setattr(persistence, "sha256_file", lambda p: opened.append(str(p)) or "0" * 64)
    _rewrite(copy, lambda m: m["checksums"].update({name: "0" * 64}))  # type: ignore[attr-defined]
    with pytest.raises(BenchrouteError, match="field 'checksums' is invalid"):
        Router.load(copy)
    assert opened == []


@pytest.mark.parametrize("change", [
    _del("checksums", "pool.npz"),
    _set("checksums", "pool.npz", value="xyz"),
    _set("checksums", value=[]),
])
def test_checksums_must_cover_exactly_the_data_files(copy, change):
    _rewrite(copy, change)
    with pytest.raises(BenchrouteError, match="field 'checksums' is invalid"):
        Router.load(copy)


@pytest.mark.parametrize(("version", "message"), [(99, r"router.json: field 'format_version': "
                                                      "router format 99 is newer than this "
                                                      "benchroute reads"),
                                                  (1, r"router.json: field 'format_version': router "
                                                      r"format 1 is older than this benchroute "
                                                      r"reads \(\d to \d\); it predates checksummed "
                                                      r"router.json; fit it again")])
def test_format_versions(copy, version, message):
    _rewrite(copy, _set("format_version", value=version))
    with pytest.raises(FormatVersionError, match=message):
        Router.load(copy)


FILE_CASES = {
    "not utf-8": (lambda f: (f / "router.json").write_bytes(b'{"format_version": 2, "x": "\xff"}'),
                  "router.json: not UTF-8"),
    "invalid json": (lambda f: (f / "router.json").write_text("{nope"), "router.json: invalid JSON"),
    "json list": (lambda f: (f / "router.json").write_text("[]"), "expected a JSON object"),
    "NaN constant": (lambda f: (f / "router.json").write_text('{"format_version": NaN}'),
                     "router.json: invalid JSON"),
    "deep nesting": (lambda f: (f / "router.json").write_text("[" * 100_000 + "]" * 100_000),
                     "router.json: invalid JSON"),
    "router.json missing": (lambda f: (f / "router.json").unlink(), "no router.json"),
    "pool.npz truncated": (lambda f: (f / "pool.npz").write_bytes((f / "pool.npz").read_bytes()[:50]),
                           "pool.npz: checksum mismatch"),
    "pool.npz missing": (lambda f: (f / "pool.npz").unlink(), "pool.npz: missing from the saved router"),
    "index.faiss truncated": (
        lambda f: (f / "index" / "index.faiss").write_bytes((f / "index" / "index.faiss").read_bytes()[:40]),
        "index.faiss: checksum mismatch"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_files(copy, case):
    damage, message = FILE_CASES[case]
    damage(copy)
    with pytest.raises(BenchrouteError, match=message.replace(".", r"\.")):
        Router.load(copy)


def _resum(folder: Path) -> None:
    _rewrite(folder, lambda m: m["checksums"].update(  # type: ignore[attr-defined]
        {n: sha256_file(folder / n) for n in m["checksums"]}))  # type: ignore[attr-defined]


def test_index_json_with_an_int_too_long_for_python(copy):
    """A 5,000-digit int (over Python's 4,300-digit limit), re-signed: a ValueError escaped the
    JSON reader before (found by fuzzing)."""
    (copy / "index" / "index.json").write_text('{"format_version": 1' + "0" * 5000 + "}")
    _resum(copy)
    with pytest.raises(BenchrouteError, match=r"index\.json: invalid JSON: an integer of more than 4,300 digits"):
        Router.load(copy)


def test_truncated_pool_with_matching_checksum(copy):
    (copy / "pool.npz").write_bytes((copy / "pool.npz").read_bytes()[:60])
    _resum(copy)
    with pytest.raises(BenchrouteError, match=r"pool\.npz: unreadable or incomplete"):
        Router.load(copy)


@pytest.mark.parametrize(("Y", "models", "message"), [
    (np.full((36, 3), 3.0, np.float32), MODELS, "field 'Y' must be"),
    (np.zeros((36, 2), np.float32), MODELS, "field 'Y' must be"),
    (np.zeros((36, 3), np.float32), ["m2", "m1", "m0"], "stored in pool.npz"),
    (np.array(["a"] * 3), MODELS, "field 'Y' must be"),
])
def test_pool_contents_are_checked(copy, Y, models, message):
    np.savez(copy / "pool.npz", Y=Y, models=np.asarray(models))
    _resum(copy)
    with pytest.raises(BenchrouteError, match=message):
        Router.load(copy)


@pytest.mark.parametrize(("field", "value"), [("rows", [[1, 2]]), ("rows", "x"), ("dimension", "8"),
                                               ("nprobe", -3), ("factory", 5),
                                               # past FAISS's C int: a raw OverflowError (fuzzing)
                                               ("ef_search", 2**40), ("nprobe", 2**31)])
def test_index_sidecar_fields(copy, field, value):
    path = copy / "index" / "index.json"
    meta = json.loads(path.read_text())
    meta[field] = value
    path.write_text(json.dumps(meta))
    _resum(copy)
    with pytest.raises(BenchrouteError, match=f"index.json: field '{field}' is invalid"):
        Router.load(copy)


def test_index_format_version_of_wrong_type(copy):
    path = copy / "index" / "index.json"
    meta = json.loads(path.read_text())
    meta["format_version"] = [1]
    path.write_text(json.dumps(meta))
    _resum(copy)
    with pytest.raises(BenchrouteError, match="index.json: field 'format_version'"):
        Router.load(copy)


def test_router_path_that_is_a_file(tmp_path):
    f = tmp_path / "router"
    f.write_text("x")
    with pytest.raises(BenchrouteError, match="is a file, not a saved router folder"):
        Router.load(f)


def test_loaded_router_writes_only_where_the_caller_says(copy, fitted, tmp_path):
    back = Router.load(copy)
    assert back.cache_dir is None  # $BENCHROUTE_HOME/embeddings
    there = Router.load(copy, cache_dir=tmp_path / "cache")
    assert there.cache_dir == tmp_path / "cache"
    X = fitted[1]
    assert back.select_embedded(X[:5]).model == fitted[0].select_embedded(X[:5]).model


def test_save_is_atomic(saved, tmp_path, monkeypatch, fitted):
    target = tmp_path / "router"
    shutil.copytree(saved, target)
    before = (target / "router.json").read_bytes()
    import benchroute.index as index_mod

    def boom(self, folder, encoder_id=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(index_mod.VectorIndex, "save", boom)
    with pytest.raises(OSError, match="No space left"):
        fitted[0].save(target)
    assert (target / "router.json").read_bytes() == before
    Router.load(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["router"]  # no temporary left behind


def test_save_over_a_router_replaces_it(saved, tmp_path, fitted):
    target = tmp_path / "r"
    shutil.copytree(saved, target)
    fitted[0].set_params(eta=0.7)
    try:
        fitted[0].save(target)
        assert Router.load(target).eta == 0.7
    finally:
        fitted[0].set_params(eta=0.6)


def _occupy(target: Path, kind: str) -> Path:
    """Put a file, or a folder holding a file, at ``target``; returns the file."""
    if kind == "file":
        target.write_text("keep me")
        return target
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    return target / "notes.txt"


def test_save_through_a_link_names_the_folder_it_points_to(tmp_path, fitted):
    """A link to a router folder: the swap would replace the link; it said "exists and is not
    a folder", though the link names one."""
    real = fitted[0].save(tmp_path / "real")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    with pytest.raises(BenchrouteError, match=rf"link: is a symbolic link; save to the folder it "
                                              rf"names \({real}\)"):
        fitted[0].save(tmp_path / "link")


@pytest.mark.parametrize("kind", ["file", "foreign folder"])
def test_save_refuses_to_replace_other_things(tmp_path, fitted, kind):
    target = tmp_path / "t"
    kept = _occupy(target, kind)
    with pytest.raises(BenchrouteError, match="t: (exists and is not a folder|a non-empty folder)"):
        fitted[0].save(target)
    assert kept.read_text() == "keep me"


@pytest.mark.parametrize("kind", ["file", "foreign folder"])
def test_cli_fit_out_is_checked_before_fitting(tmp_path, capsys, kind):
    out = tmp_path / "out"
    kept = _occupy(out, kind)
    # the data path does not exist: the --out check must come first
    assert main(["fit", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "missing.csv" not in err and kept.read_text() == "keep me"


# ------------------------------------------------------------------------ API misuse
def _arrays(seed: int = 0):
    data, X = synthetic(seed, n_tasks=3, per_task=8)
    Y = data.correctness_matrix().to_numpy(dtype=np.float32)
    ds = data.instances()["dataset"].to_numpy()
    return X, Y, ds


def _fit(X, Y, ds, models=MODELS):
    return Router(alphas=(0.0,), encoder=HashingEncoder(8)).fit_arrays(X, Y, ds, models)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda X, Y: Y.__setitem__((0, 0), 1.5), r"fit Y: label \[0, 0\] is 1\.5"),
    (lambda X, Y: Y.__setitem__((3, 1), -0.1), r"fit Y: label \[3, 1\]"),
    (lambda X, Y: X.__setitem__((2, 0), np.nan), "fit X: row 2 has NaN"),
    (lambda X, Y: X.__setitem__((1, 0), np.inf), "fit X: row 1 has NaN or infinite"),
    (lambda X, Y: X.__setitem__(4, 0.0), "fit X: row 4 is all zeros"),
])
def test_fit_refuses_bad_arrays(mutate, message):
    X, Y, ds = _arrays()
    X, Y = X.copy(), Y.copy()
    mutate(X, Y)
    with pytest.raises(BenchrouteError, match=message):
        _fit(X, Y, ds)


def test_fit_refuses_duplicated_models_and_misaligned_rows():
    X, Y, ds = _arrays()
    with pytest.raises(BenchrouteError, match="models: duplicated names"):
        _fit(X, Y, ds, ["m0", "m0", "m1"])
    with pytest.raises(BenchrouteError, match="same rows"):
        _fit(X, Y, ds[:-1])
    with pytest.raises(BenchrouteError, match=r"fit Y: expected shape \(n, 2\)"):
        _fit(X, Y, ds, ["m0", "m1"])


def test_non_unit_vectors_are_normalised_with_a_warning():
    X, Y, ds = _arrays()
    with pytest.warns(UserWarning, match="not unit-norm"):
        router = _fit(X * 3.0, Y, ds)
    np.testing.assert_allclose(np.linalg.norm(router.pool_vectors(), axis=1), 1.0, atol=1e-6)
    ref = _fit(X, Y, ds)
    with pytest.warns(UserWarning, match="queries: 5 vector"):
        a = ref.select_embedded(X[:5] * 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*near-copies of inputs of the pool task")
        b = ref.select_embedded(X[:5])
    np.testing.assert_allclose(a.scores["S3"], b.scores["S3"], atol=1e-9)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"labeled_X": "X"}, "labeled_X and labeled_Y go together"),
    ({"labeled_Y": "Y"}, "labeled_X and labeled_Y go together"),
    ({"labeled_X": "X", "labeled_Y": "Y3"}, "labeled_X has 2 rows, labeled_Y 3"),
    ({"labeled_X": "X0", "labeled_Y": "Y"}, "labeled_X has 0 rows, labeled_Y 2"),
    ({"labeled_X": "X5d", "labeled_Y": "Y"}, r"labeled_X holds 5-d vectors, the queries \d+-d"),
    ({"labeled_X": "X", "labeled_Y": "Ytext"}, r"labeled_Y: labels are text"),
    ({"texts": [1, 2]}, r"texts\[0\] is a int, expected str"),
    ({"labeled_X": "X", "labeled_Y": "Y2cols"}, r"labeled_Y: expected shape \(n, 3\)"),
    ({"labeled_X": "X", "labeled_Y": "Ybad"}, r"labeled_Y: label \[0, 1\] is 2;"),
    ({"labeled_X": "Xnan", "labeled_Y": "Y"}, "labeled_X: row 0 has NaN"),
    ({"exclude_datasets": ["t0", "t1", "t2"]}, "names every task"),
    ({"candidates": []}, "candidates is empty"),
    ({"method": "S9"}, "unknown method 'S9'"),
])
def test_select_embedded_misuse(kwargs, message):
    X, Y, ds = _arrays()
    router = _fit(X, Y, ds)
    values = {"X": X[:2], "Y": Y[:2], "Y3": Y[:3], "Y2cols": Y[:2, :2],
              "Ybad": np.array([[0, 2, 1], [0, 0, 0]], np.float32),
              "Xnan": np.full((2, X.shape[1]), np.nan, np.float32),
              "X0": X[:0], "X5d": np.eye(2, 5, dtype=np.float32),
              "Ytext": np.array([["1", "0", "1"], ["0", "0", "1"]])}
    args = {k: values[v] if isinstance(v, str) and v in values else v for k, v in kwargs.items()}
    with pytest.raises(BenchrouteError, match=message):
        router.select_embedded(X[5:9], **args)


def test_select_embedded_nan_queries():
    X, Y, ds = _arrays()
    router = _fit(X, Y, ds)
    Q = X[:3].copy()
    Q[1, 2] = np.nan
    with pytest.raises(BenchrouteError, match="queries: row 1 has NaN"):
        router.select_embedded(Q)
    with pytest.raises(BenchrouteError, match="queries: row 1 has NaN"):
        router.route_embedded(Q)


@pytest.mark.parametrize("name, known", [
    ("all-mpnet-base-v2", True), ("sentence-transformers/all-mpnet-base-v2", True),
    ("all-mpnet-base-v2@onnx", True), ("all-mpnet-base-v2@static@max256", True),
    ("all-mpnet-base-v2@max128@torch", True), ("hashing-64-12", True),
    ("all-mpnet-base-v2@onnx@static", False), ("all-mpnet-base-v2@max0", False),
    ("all-mpnet-base-v2@gpu", False), ("/tmp/evil-model", False), ("org/other-model", False),
    ("all-mpnet-base-v2@", False), (None, False),
])
def test_saved_encoder_names(name, known):
    from benchroute.inputs import known_encoder_name

    assert known_encoder_name(name) is known
