"""Saving and loading a fitted router: ``router.json``, ``pool.npz`` and ``index/`` (FAISS's own
format plus a JSON sidecar); no pickle.

A router folder is untrusted data. ``router.json`` carries a digest of its own canonical content
and the SHA-256 of each data file; checksum names must be exactly the package's data file names
(refused before anything is opened); every field is validated as ``fit`` validates its arguments;
the cache folder is never taken from the file, and the encoder only as a name the package
resolves by itself. Saving writes a temporary folder beside the target and renames it, so a
failure half way leaves the old router loadable; a kill between the two renames leaves the old
router beside the target, where loading (or the next save) moves it back, and each save removes
the temporary folders killed saves left.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from benchroute._persist import HEX64, read_versioned_json, sha256_file
from benchroute.embedding.base import NORM_TOL, unit_norm_rows
from benchroute.exceptions import BenchrouteError
from benchroute.index import VectorIndex
from benchroute.inputs import (
    check_router_params,
    is_int,
    is_real,
    is_real_list,
    is_real_rows,
    known_encoder_name,
    same_vectors,
    task_accuracy_problem,
)
from benchroute.npz import read_npz
from benchroute.ood import OODReference, scored_rows
from benchroute.policies import cost_vector
from benchroute.predictors import KNNCorrectnessPredictor, check_is_fitted
from benchroute.reference import PairParams, ReferencePairs
from benchroute.shift import FEATURES, SAVED_ARRAYS, ShiftReference, fingerprints
from benchroute.shift import reference_of as shift_reference_of
from benchroute.stacking import METHOD_NAMES
from benchroute.tuning import PerInputPredictor

if TYPE_CHECKING:
    from benchroute.router import Router

logger = logging.getLogger(__name__)

ROUTER_FORMAT_VERSION = 5
#: Format 2 is format 3 without the tuned predictor's cross-model stack, format 3 is format 4
#: without its logistic regression on the vectors (``stack.vector_coef``), format 4 is format 5
#: without its task classifier (``stack.task_classifier``, ``stack.task_coef``): all still
#: read. An older reader refuses a newer format, so it never applies a stacked router's
#: calibration to its plain kNN P.
OLDEST_ROUTER_FORMAT = 2
#: a save's temporary folder older than this was left by a killed process
STALE_SAVE_SECONDS = 3600.0
DATA_FILES = ("pool.npz", "index/index.faiss", "index/index.json")
#: Written only when the router has models added from a few labels (Router.add_model).
ADDED_FILE = "added.npz"


def canonical_digest(meta: Mapping[str, object]) -> str:
    """SHA-256 of ``meta`` without its ``digest`` field, as sorted compact JSON."""
    body = {k: v for k, v in meta.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_signed_meta(folder: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Write ``meta`` as ``folder``'s router.json with its ``digest`` made to match.

    Why one function: saving and every tool that edits a saved router on purpose (the tests'
    rewrites, a benchmark that strips arrays) must produce what :func:`load_router` checks, and
    the digest is a checksum, not a signature (docs/reliability.md)."""
    meta["digest"] = canonical_digest(meta)
    (Path(folder) / "router.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def check_router_target(folder: str | os.PathLike[str]) -> Path:
    """Refuse a save target that is a file, or a non-empty folder that is not a saved router
    (so that saving never replaces unrelated files); call before a long fit."""
    folder = Path(folder)
    if folder.exists() or folder.is_symlink():
        if folder.is_symlink():  # the swap would replace the link by a folder
            raise BenchrouteError(f"{folder}: is a symbolic link; save to the folder it names "
                                  f"({os.path.realpath(folder)})")
        if not folder.is_dir():
            raise BenchrouteError(f"{folder}: exists and is not a folder; a router is saved as a "
                                  "folder")
        if any(folder.iterdir()) and not (folder / "router.json").is_file():
            raise BenchrouteError(f"{folder}: a non-empty folder that is not a saved router; "
                                  "choose a new or empty folder")
    return folder


def _leftovers(folder: Path, suffix: str) -> list[Path]:
    """Folders a save of ``folder`` left beside it: ``.<name>.<random>.tmp`` (being written) or
    ``.<name>.<random>.tmp.old`` (the replaced router), newest first."""
    found = [p for p in folder.parent.glob(f".{glob.escape(folder.name)}.*{suffix}")
             if p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def recover_interrupted_save(folder: Path) -> None:
    """A save killed between its two renames leaves no ``folder`` and the old router as
    ``.<name>.<random>.tmp.old``: move it back (the new router was never complete)."""
    if folder.exists() or folder.is_symlink():
        return
    old = next((p for p in _leftovers(folder, ".tmp.old") if (p / "router.json").is_file()), None)
    if old is not None:
        os.replace(old, folder)
        logger.warning("%s: restored the router an interrupted save had moved to %s",
                       folder, old.name)


def _remove_leftovers(folder: Path, max_age: float = STALE_SAVE_SECONDS) -> None:
    """Remove what killed saves left: temporary folders older than ``max_age`` (a save in
    progress elsewhere keeps its own), and replaced routers once ``folder`` holds one."""
    now = time.time()
    stale = [p for p in _leftovers(folder, ".tmp") if now - p.stat().st_mtime > max_age]
    if (folder / "router.json").is_file():
        stale += _leftovers(folder, ".tmp.old")
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


def save_router(router: Router, folder: str | os.PathLike[str]) -> Path:
    """Write ``router`` to ``folder`` through a temporary folder beside it and a rename."""
    check_is_fitted(router, "predictor_")
    _check_fitted_params(router)
    if getattr(router, "_derived_stale", False):
        _refresh_derived(router)
    folder = Path(folder)
    recover_interrupted_save(folder)
    folder = check_router_target(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        _write(router, tmp)
        with _saves_locked(folder.parent):  # check and swap as one step among savers
            _check_unchanged_since_load(router, folder)
            _keep_other_files(folder, tmp)
            os.chmod(tmp, _folder_mode(folder))  # mkdtemp's 0700 otherwise
            old = None
            if folder.exists():
                old = folder.parent / f"{tmp.name}.old"
                os.replace(folder, old)
            os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _remove_leftovers(folder)
    router._loaded_from = (str(folder.resolve()), _digest_of(folder))
    return folder


@contextlib.contextmanager
def _saves_locked(parent: Path) -> Iterator[None]:
    """An advisory lock on the folder that holds the router, for the check and the swap: two
    processes saving one router at once both reported success, and one change was lost."""
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _digest_of(folder: Path) -> str | None:
    """The ``digest`` field of a saved router's router.json (None if unreadable)."""
    try:
        digest = json.loads((folder / "router.json").read_text(encoding="utf-8")).get("digest")
    except (OSError, ValueError, AttributeError):
        return None
    return digest if isinstance(digest, str) else None


def _check_unchanged_since_load(router: Router, folder: Path) -> None:
    """Refuse to replace a saved router that changed after this one was loaded from (or saved
    to) the same folder: another process saved it meanwhile, and replacing it would lose that
    change silently."""
    loaded = getattr(router, "_loaded_from", None)
    if loaded is None or loaded[0] != str(folder.resolve()) or not folder.is_dir():
        return
    if _digest_of(folder) != loaded[1]:
        raise BenchrouteError(f"{folder}: changed since this router was loaded from it (another "
                              "process saved it?); load it again and repeat the change")


def _folder_mode(folder: Path) -> int:
    """The replaced folder's permission bits, else those a new folder gets under the umask."""
    if folder.is_dir():
        return stat.S_IMODE(folder.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


#: What a save writes at the top of a router folder; anything else there is the user's
ROUTER_ENTRIES = frozenset({"router.json", "pool.npz", "index", ADDED_FILE})


def _keep_other_files(folder: Path, tmp: Path) -> None:
    """Copy what the replaced router folder holds besides the router's own files (a
    calibration, notes) into the new one: a save replaces the router, not the folder's other
    contents (``add-model`` deleted a calibration before)."""
    if not (folder / "router.json").is_file():
        return
    for entry in folder.iterdir():
        if entry.name in ROUTER_ENTRIES:
            continue
        if entry.is_symlink():
            shutil.copy2(entry, tmp / entry.name, follow_symlinks=False)  # the link itself
        elif entry.is_dir():
            shutil.copytree(entry, tmp / entry.name, symlinks=True)
        elif entry.is_file():
            shutil.copy2(entry, tmp / entry.name)
        else:  # a pipe or a socket cannot be copied; its reader or server is bound to the old
            logger.warning("%s: not kept in the saved router folder (not a file or folder)",
                           entry)
        if entry.name == "calibration.json":
            logger.warning("%s: kept calibration.json; if this save changed the router's models, "
                           "encoder or pool, serve refuses it until calibrate runs again", folder)


#: Parameters the fitted predictor was built with: a loaded router rebuilds it from the saved
#: parameters, so a value changed by ``set_params`` after the fit would load as another router.
#: (``tune_folds`` and ``tune_calibration`` are checked against the tuned predictor's
#: ``folds_by`` and ``calibration`` likewise, ``tune``
#: against whether there is one, ``encoder`` against the pool's, and ``seed`` against the
#: added models' own.)
_PREDICTOR_PARAMS = ("k", "weights", "index_factory")


def _check_fitted_params(router: Router) -> None:
    """Refuse to save parameters the fitted pool was not built with (before anything is
    written): the saved router would route differently from this one once loaded."""
    changed = changed_since_fit(router)
    if changed:
        what = "; ".join(f"{name} is {new!r}, the fitted pool uses {old!r}"
                         for name, (old, new) in changed.items())
        raise BenchrouteError(f"Router.save: parameters changed after the fit ({what}); refit "
                              "(fit or fit_arrays) or set them back before saving")


def changed_since_fit(router: Router) -> dict[str, tuple[object, object]]:
    """{parameter: (the fitted pool's value, the router's)} for each parameter changed since
    the fit (``set_params`` warns of them, ``save`` refuses them)."""
    changed: dict[str, tuple[object, object]] = {
        name: (getattr(router.predictor_, name), getattr(router, name))
        for name in _PREDICTOR_PARAMS if getattr(router.predictor_, name) != getattr(router, name)}
    tuned = router.per_input_
    if tuned is not None and tuned.folds_by != router.tune_folds:
        changed["tune_folds"] = (tuned.folds_by, router.tune_folds)
    if tuned is not None and tuned.calibration != router.tune_calibration:
        changed["tune_calibration"] = (tuned.calibration, router.tune_calibration)
    if (tuned is not None) != bool(router.tune):  # the tuned predictor exists exactly when tune
        changed["tune"] = (tuned is not None, router.tune)
    name = router.encoder_mismatch()
    if name is not None:
        changed["encoder"] = (router.encoder_id_, name)
    # added models are refitted on load with the saved seed (their folds and λ₀'s sample)
    seeds = {a.predictor.seed for a in getattr(router, "added_", {}).values()}
    if seeds and seeds != {router.seed}:
        changed["seed"] = (min(seeds - {router.seed}), router.seed)
    return changed


def _refresh_derived(router: Router) -> None:
    """What the fit derived from the pool's vectors, computed again as a fit would: for a
    router loaded from a save of before 2026-12-05 (its vectors made exact, its ties ordered
    by row), whose stored pairs and OOD scores the next load would find different."""
    from benchroute.pool_state import pool_reference

    router.reference_ = pool_reference(router)  # also its OOD reference
    router.__dict__.pop("shift_reference_", None)  # recomputed when written
    router._derived_stale = False  # type: ignore[attr-defined]


def _write(router: Router, folder: Path) -> None:
    costs = getattr(router, "costs_", None)
    if costs is not None:  # what load accepts back: finite costs >= 0
        cost_vector(list(costs), costs)
    texts = getattr(router, "texts_", None)
    # NumPy's text arrays drop trailing NULs, so what pool.npz keeps as text (texts, model
    # names, task names) would load as something else
    for what, values in (("pool text", texts or ()), ("pool model name", router.pool_models_),
                         ("task name", router.tasks_)):
        ends_nul = [i for i, t in enumerate(values) if str(t).endswith("\x00")]
        if ends_nul:
            raise BenchrouteError(f"Router.save: {len(ends_nul)} {what}(s) end in a NUL character "
                                  f"(first: index {ends_nul[0]}, {values[ends_nul[0]]!r:.60}), which "
                                  "pool.npz cannot keep; strip them from the data and fit again")
    arrays: dict[str, np.ndarray] = {"Y": router.Y_,
                                     "models": np.asarray(router.pool_models_, dtype=str)}
    if texts is not None:
        arrays["texts"] = np.asarray(texts, dtype=str)
    ood = getattr(router, "ood_reference_", None)
    if ood is not None and ood.predictor is router.predictor_ \
            and ood.sample == router.reference_.sample:
        # the pool's OOD scores (those of the pairs' sample), so a load need not search for them
        rows = _ood_rows(router.predictor_.datasets_, ood.sample)
        arrays["ood_rows"], arrays["ood_scores"] = rows, ood.scores[rows]
    shift = shift_reference_of(router)  # computed here when no selection has needed it yet
    if shift is not None:
        arrays.update(shift.arrays())
    np.savez(folder / "pool.npz", **arrays)  # type: ignore[arg-type]
    added = list(getattr(router, "added_", {}).values())
    if added:
        per_model = {f"{key}{i}": arr for i, a in enumerate(added)
                     for key, arr in (("X", a.X), ("y", a.y))}
        np.savez(folder / ADDED_FILE, **per_model)
    router.predictor_.index_.save(folder / "index", encoder_id=router.encoder_id_)
    ref = router.reference_
    # numpy scalars (np.int64(5) passes the checks) as the JSON numbers they stand for
    params: dict[str, Any] = {k: v.item() if isinstance(v, np.generic) else v
                              for k, v in router.get_params().items()}
    params["alphas"] = [float(a) for a in params["alphas"]]
    params["cache_dir"] = None  # a machine-local folder: never carried in the file
    if not isinstance(params["encoder"], str):
        params["encoder"] = router.encoder_id_
    meta: dict[str, object] = {
        "format_version": ROUTER_FORMAT_VERSION,
        "params": params,
        "models": list(router.pool_models_),
        "added": [{"name": a.name, "n_labels": int(len(a.y))} for a in added],
        "encoder": router.encoder_id_,
        "task_accuracy": _split_table(router.task_accuracy_[router.pool_models_]),
        "reference": {"u": ref.u.tolist(),
                      "p": [[None if np.isnan(v) else float(v) for v in row] for row in ref.p],
                      "task": [str(t) for t in ref.task], "alpha": ref.alpha.tolist(),
                      "touched": {t: sorted(v) for t, v in ref.touched.items()},
                      "fallback": sorted(ref.fallback),
                      **({} if ref.e is None else {"e": [
                          [None if np.isnan(v) else float(v) for v in row] for row in ref.e]}),
                      **({} if ref.sample is None else {"sample": list(ref.sample)}),
                      **({} if ref.params is None else {"params": ref.params.to_dict()})},
        "checksums": {name: sha256_file(folder / name)
                      for name in DATA_FILES + ((ADDED_FILE,) if added else ())},
        "routing": _routing_state(router),
    }
    write_signed_meta(folder, meta)


def _fail(path: Path, field: str, expected: str) -> BenchrouteError:
    return BenchrouteError(f"{path}: field {field!r} is invalid; expected {expected}")


def _read_meta(folder: Path) -> dict[str, object]:
    if folder.exists() and not folder.is_dir():
        raise BenchrouteError(f"{folder}: is a file, not a saved router folder")
    if not folder.exists():
        raise BenchrouteError(f"{folder}: no such folder (a saved router is a folder written by "
                              "Router.save or `benchroute fit --out`)")
    path = folder / "router.json"
    meta = read_versioned_json(path, ROUTER_FORMAT_VERSION, "router", oldest=OLDEST_ROUTER_FORMAT,
                               required=True, remake="it predates checksummed router.json; fit "
                               "it again")
    digest = meta.get("digest")
    if not isinstance(digest, str) or digest != canonical_digest(meta):
        raise BenchrouteError(f"{path}: field 'digest' does not match the file's content; "
                              "router.json was modified after saving")
    sums = meta.get("checksums")
    files = set(DATA_FILES) | ({ADDED_FILE} if meta.get("added") else set())
    if not isinstance(sums, dict) or set(sums) != files \
            or not all(isinstance(v, str) and HEX64.fullmatch(v) for v in sums.values()):
        raise _fail(path, "checksums", f"exactly {sorted(files)} with SHA-256 hex digests")
    return meta


def _str_list(path: Path, field: str, value: object, unique: bool = False) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, field, "a list of strings")
    if unique and (len(set(value)) != len(value) or not value):
        raise _fail(path, field, "a non-empty list of distinct names")
    return list(value)


def _floats(path: Path, field: str, value: object, lo: float, hi: float, null: bool = False
            ) -> np.ndarray:
    def ok(v: object) -> bool:
        if v is None:
            return null
        return isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi

    if not isinstance(value, list) or not all(ok(v) for v in value):
        raise _fail(path, field, f"a list of numbers in [{lo}, {hi}]" + (" or null" if null else ""))
    return np.asarray([np.nan if v is None else v for v in value], dtype=float)


def _reference(path: Path, r: object, models: list[str], tasks: list[str],
               params: dict[str, Any]) -> ReferencePairs:
    if not isinstance(r, dict):
        raise _fail(path, "reference", "an object")
    u = _floats(path, "reference.u", r.get("u"), 0.0, 2.0)
    p_rows = r.get("p")
    if not isinstance(p_rows, list) or len(p_rows) != len(u) \
            or not all(isinstance(row, list) and len(row) == len(models) for row in p_rows):
        raise _fail(path, "reference.p", f"{len(u)} rows of {len(models)} values")
    p = np.vstack([_floats(path, "reference.p", row, 0.0, 1.0, null=True) for row in p_rows]) \
        if p_rows else np.zeros((0, len(models)))
    task = _str_list(path, "reference.task", r.get("task"))
    alpha = _floats(path, "reference.alpha", r.get("alpha"), 0.0, 1.0)
    if len(task) != len(u) or len(alpha) != len(u) or not set(task) <= set(tasks):
        raise _fail(path, "reference.task/alpha", f"{len(u)} entries naming pool tasks")
    touched = r.get("touched")
    if not isinstance(touched, dict) or not set(touched) <= set(tasks):
        raise _fail(path, "reference.touched", "an object from pool tasks to lists of tasks")
    fallback = _str_list(path, "reference.fallback", r.get("fallback"))
    # the self-estimates: absent in routers saved before they existed (p̂ is then the kernel
    # estimate, as when that router was saved)
    e_rows = r.get("e")
    e = None
    if e_rows is not None:
        if not isinstance(e_rows, list) or len(e_rows) != len(u) or not all(
                isinstance(row, list) and len(row) == len(models) for row in e_rows):
            raise _fail(path, "reference.e", f"{len(u)} rows of {len(models)} values")
        e = np.vstack([_floats(path, "reference.e", row, 0.0, 1.0, null=True)
                       for row in e_rows]).reshape(-1, len(models)) if e_rows \
            else np.zeros((0, len(models)))
    sample = r.get("sample")  # absent: every input of each task was scored
    if sample is not None and not (
            isinstance(sample, list) and len(sample) == 2 and all(is_int(v) for v in sample)
            and sample[0] >= 2 and 0 <= sample[1] < 2**63):
        raise _fail(path, "reference.sample", "absent, or [max_task_queries >= 2, seed >= 0]")
    return ReferencePairs(u, p.reshape(-1, len(models)), np.asarray(task, dtype=object), alpha,
                          {t: frozenset(_str_list(path, "reference.touched", v))
                           for t, v in touched.items()}, frozenset(fallback), e,
                          None if sample is None else (int(sample[0]), int(sample[1])),
                          _pair_params(path, r.get("params"), params, sample, task, alpha))


def _pair_params(path: Path, value: object, router_params: dict[str, Any],
                 sample: list[int] | None, task: list[str], alpha: np.ndarray) -> PairParams:
    """The parameters the saved pairs were computed with, checked against the pairs (their α
    values, their rows per task and α, their sample's seed). Absent (routers saved before they
    were recorded): the router's saved parameters, which were the fit's unless ``set_params``
    came between the fit and the save, with the seed of the pairs' sample when there is one."""
    field = "reference.params"
    if value is None:
        value = {k: router_params[k] for k in ("alphas", "repeats", "seed", "n_neighbours",
                                               "threshold")}
        if sample is not None:
            value["seed"] = sample[1]
    if not isinstance(value, dict) or set(value) != set(PairParams.__dataclass_fields__):
        raise _fail(path, field, "an object with exactly alphas, repeats, seed, n_neighbours, "
                    "threshold")
    check_router_params({**router_params, **value}, f"{path}: {field}")
    pp = PairParams.of(value["alphas"], value["repeats"], value["seed"], value["n_neighbours"],
                       value["threshold"])
    most = int(pd.DataFrame({"task": task, "alpha": alpha}).value_counts().max()) if task else 0
    if not set(np.unique(alpha).tolist()) <= set(pp.alphas) or most > pp.repeats:
        raise _fail(path, field, f"the parameters of the pairs (alphas {sorted(set(pp.alphas))} "
                    f"holding every reference.alpha, at most {pp.repeats} pair(s) per task and "
                    "alpha)")
    if sample is not None and sample[1] != pp.seed:
        raise _fail(path, field, f"the seed of reference.sample ({sample[1]})")
    return pp


def _split_table(table: pd.DataFrame) -> dict[str, object]:
    """A float table in pandas' 'split' form with Python's floats, whose repr reads back
    exactly: pandas writes at most 15 decimals (1/3 came back 3e-16 off, and two models tied
    on average could swap as the best after a load)."""
    return {"columns": [str(c) for c in table.columns], "index": [str(i) for i in table.index],
            "data": [[None if v != v else float(v) for v in row]
                     for row in table.to_numpy(dtype=float).tolist()]}


def _task_accuracy(path: Path, split: object, models: list[str]) -> pd.DataFrame:
    if not isinstance(split, dict):
        raise _fail(path, "task_accuracy", "a table in pandas 'split' form")
    index = _str_list(path, "task_accuracy.index", split.get("index"), unique=True)
    if _str_list(path, "task_accuracy.columns", split.get("columns")) != models:
        raise _fail(path, "task_accuracy.columns", f"the model list {models}")
    data = split.get("data")
    if not isinstance(data, list) or len(data) != len(index) \
            or not all(isinstance(row, list) and len(row) == len(models) for row in data):
        raise _fail(path, "task_accuracy.data", f"{len(index)} rows of {len(models)} values")
    rows = [_floats(path, "task_accuracy.data", row, 0.0, 1.0, null=True) for row in data]
    return pd.DataFrame(rows, index=pd.Index(index, name="dataset"), columns=models, dtype=float)


#: parameters added after format 2, with the value a router saved without them behaves as
_LATER_PARAMS: dict[str, object] = {"max_task_queries": None, "tune_folds": "task",
                                    "tune_calibration": "auto"}


def load_router(folder: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None,
                cls: type[Router], mmap: bool = False) -> Router:
    """Read a router saved by :func:`save_router` into a new ``cls`` (:meth:`Router.load` passes
    its class, so this module never imports the router); any bad file or field is a
    BenchrouteError naming the file and the field."""
    klass = cls
    folder = Path(folder)
    recover_interrupted_save(folder)
    meta = _read_meta(folder)
    path = folder / "router.json"
    for name, digest in meta["checksums"].items():  # type: ignore[attr-defined]
        file = folder / name
        if not file.is_file():
            raise BenchrouteError(f"{file}: missing from the saved router")
        if sha256_file(file) != digest:
            raise BenchrouteError(f"{file}: checksum mismatch; the router files were modified "
                                  "or truncated after saving")
    params = meta.get("params")
    if isinstance(params, dict):  # routers saved before a parameter existed have its default
        params = {**_LATER_PARAMS, **params}
    if not isinstance(params, dict) or set(params) != set(klass._param_names()):
        raise _fail(path, "params", f"an object with exactly {klass._param_names()}")
    if params["cache_dir"] is not None:
        raise _fail(path, "params.cache_dir", "null (a saved router never names a cache folder)")
    try:
        check_router_params(params, f"{path}: params")
    except KeyError as exc:
        raise _fail(path, f"params.{exc.args[0]}", "a value") from exc
    if not known_encoder_name(params["encoder"]):
        raise _fail(path, "params.encoder", "an encoder name benchroute knows "
                    "(all-mpnet-base-v2 or hashing-<dim>-<lo><hi>), not a path or hub name")
    models = _str_list(path, "models", meta.get("models"), unique=True)
    encoder = meta.get("encoder")
    if not isinstance(encoder, str):
        raise _fail(path, "encoder", "the encoder identifier string")
    task_accuracy = _task_accuracy(path, meta.get("task_accuracy"), models)
    index = VectorIndex.load(folder / "index", mmap=mmap)
    if index.encoder_id != encoder:
        raise _fail(path, "encoder", f"the index's encoder {index.encoder_id!r}")
    Y, npz_models, texts, ood, shift = _read_pool(folder / "pool.npz", len(index), len(models))
    if npz_models != models:
        raise _fail(path, "models", f"the model list stored in pool.npz ({npz_models})")
    if (~np.isnan(Y) & ((Y < 0) | (Y > 1))).any() or np.isnan(Y).all():
        raise BenchrouteError(f"{folder / 'pool.npz'}: field 'Y' must be (n, {len(models)}) "
                              f"labels in [0, 1] or NaN, at least one a label; got shape {Y.shape}")
    _check_encoder(path, params["encoder"], encoder, index.dimension)
    if params["index_factory"] != index.factory:
        raise _fail(path, "params.index_factory", f"the saved index's factory "
                    f"({index.factory!r}, index/index.json)")
    _check_task_accuracy(path, task_accuracy, Y, index.datasets_, models)
    router = klass(**{**params, "alphas": tuple(params["alphas"]), "cache_dir": cache_dir})
    router._loaded_from = (str(folder.resolve()), str(meta["digest"]))  # save checks it
    router.predictor_ = KNNCorrectnessPredictor(
        router.k, router.weights, router.index_factory, router.nprobe, router.ef_search
    ).attach(index, Y)
    router.texts_ = texts
    router.models_ = models
    router.pool_models_ = list(models)
    router.added_ = {}
    tasks = sorted(set(index.datasets_.tolist()))
    router.task_accuracy_ = task_accuracy
    router.encoder_id_ = encoder
    router.reference_ = _reference(path, meta.get("reference"), models, tasks, params)
    _check_reference_nulls(path, router.reference_, Y, index.datasets_, models)
    known = _ood_scores(folder / "pool.npz", ood, router)
    try:
        _check_derived(folder, router, known, shift)
        stale = False
    except BenchrouteError:
        # saved before searches ordered tied neighbours by row (2026-12-05): what the fit
        # stored came from FAISS's own order, so check it in that order; a save recomputes it
        index.exact_order = False
        try:
            _check_derived(folder, router, known, shift)
        finally:
            index.exact_order = True
        stale = True
    # after the checks, which recompute what the fit stored from the vectors as they were saved
    stale = bool(index.make_exact()) or stale
    router._derived_stale = stale  # type: ignore[attr-defined]
    router.per_input_ = None
    added = _added_names(path, meta.get("added"), models)
    _restore_routing(path, router, meta.get("routing"), models + list(added),
                     int(meta["format_version"]))  # type: ignore[call-overload]
    if added:
        _restore_added(folder / ADDED_FILE, router, added, index.dimension)
    return router


# ---------------------------------------------------------------------- across files
# router.json's digest has no key: whoever rewrites a file can recompute every checksum. These
# checks need no key: each file must agree with the others as fit leaves them.
def _check_encoder(path: Path, name: str, identifier: str, dimension: int) -> None:
    """``params.encoder`` (what embeds new texts) must name the encoder the index was built
    with (``encoder``, the index's), of the index's dimension, before anything is embedded."""
    from benchroute.embedding.backends import parse_mpnet_suffix
    from benchroute.embedding.names import resolve_encoder_name

    if not known_encoder_name(identifier):
        raise _fail(path, "encoder", "an encoder identifier benchroute knows")
    ours = resolve_encoder_name(name, allow_download=False)
    if ours.kind == "hashing":
        dim = ours.dimension
    else:
        dim = 256 if parse_mpnet_suffix(name)[0] == "static" else 768
    if not same_vectors(name, identifier):
        raise _fail(path, "params.encoder", f"the encoder the index was built with "
                    f"({identifier!r}), not {name!r}")
    if dim != dimension:
        raise _fail(path, "params.encoder", f"an encoder of the index's dimension {dimension} "
                    f"({name!r} gives {dim})")


def _check_task_accuracy(path: Path, table: pd.DataFrame, Y: np.ndarray, datasets: np.ndarray,
                         models: list[str]) -> None:
    """The per-task accuracies (the BMA) are the pool's mean labels per task, as fit stores
    them: a pool or a table from another router disagrees."""
    problem = task_accuracy_problem(table, Y, datasets, models)
    if problem is not None:
        raise _fail(path, f"task_accuracy.{problem[0]}", problem[1])


def _check_reference_nulls(path: Path, ref: ReferencePairs, Y: np.ndarray, datasets: np.ndarray,
                           models: list[str]) -> None:
    """A pair's p is null for a model exactly when the model has no label on the inputs of the
    pair's task that the pairs score (at α = 0, where every scored input is a query; above it
    only the labelled inputs left may be none). With ``max_task_queries`` those are each task's
    seeded sample, so a model labelled on part of a task may have none among them."""
    if not len(ref.u):
        return
    rows = _ood_rows(datasets, ref.sample)
    labelled = pd.DataFrame(~np.isnan(Y[rows]), columns=models).groupby(datasets[rows]).any()
    has = labelled.reindex(index=ref.task).to_numpy(dtype=bool)
    null = np.isnan(ref.p)
    if (~null & ~has).any() or (null & has & (ref.alpha == 0)[:, None]).any():
        raise _fail(path, "reference.p", "null exactly where a model has no label on the "
                    "pair's task (at alpha 0)")


def _ood_rows(datasets: np.ndarray, sample: tuple[int, int] | None) -> np.ndarray:
    """The rows an OOD reference with this sample key scores, ascending (every row of every
    task when ``sample`` is None: the seed then plays no part)."""
    cap, seed = sample if sample is not None else (None, 0)
    parts = list(scored_rows(datasets, cap, seed).values())
    return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)


def _pairs_sample(router: Router) -> tuple[int | None, int]:
    """(max_queries, seed) of the sample the loaded pairs were computed on."""
    ref = router.reference_
    assert ref.params is not None  # _reference always records them
    return (ref.sample[0], ref.sample[1]) if ref.sample is not None else (None, ref.params.seed)


def _ood_scores(path: Path, ood: dict[str, np.ndarray] | None, router: Router
                ) -> np.ndarray | None:
    """The saved OOD scores as one entry per pool row (NaN where not scored), checked: the rows
    must be those the pairs' sample scores, the scores cosine distances."""
    if ood is None:
        return None  # a router saved before they were: computed on first use
    ds = router.predictor_.datasets_
    want = _ood_rows(ds, router.reference_.sample)
    rows, scores = ood["ood_rows"], ood["ood_scores"]
    if len(rows) != len(want) or not np.array_equal(rows, want):
        raise BenchrouteError(f"{path}: field 'ood_rows' must list the {len(want)} pool rows the "
                              "OOD reference scores (each task's sampled inputs), ascending")
    ok = np.isnan(scores) | ((scores >= -1e-3) & (scores <= 2.0 + 1e-3))  # NaN: no neighbour
    if not ok.all():
        raise BenchrouteError(f"{path}: field 'ood_scores' must hold cosine distances in [0, 2] "
                              "(or NaN)")
    out = np.full(len(ds), np.nan)
    out[rows] = scores
    return out


def _check_derived(folder: Path, router: Router, known: np.ndarray | None,
                   shift: dict[str, np.ndarray] | None) -> None:
    """The load-time spot checks of what the fit derived from the pool's vectors (reference
    pairs, OOD scores, the form-shift reference), which also set the router's OOD and shift
    references."""
    _spot_check_reference(folder / "router.json", router, known)
    if known is not None:
        cap, seed = _pairs_sample(router)
        router.ood_reference_ = OODReference(router.predictor_, cap, seed, known=known)
    if shift is not None:
        router.shift_reference_ = _shift_reference(folder / "pool.npz", shift, router)


def _smallest_task(datasets: np.ndarray, tasks: list[str]) -> str:
    """The task of fewest pool inputs (then by name): the spot checks' one search stays cheap."""
    return min(set(tasks), key=lambda t: (int((datasets == t).sum()), t))


def _spot_check_reference(path: Path, router: Router, ood: np.ndarray | None = None) -> None:
    """The α = 0 pair of the smallest task, computed again from the loaded index and pool, must
    be the stored one: an index or pool from another router (or vectors moved between rows)
    gives other neighbours. The same search checks that task's saved OOD scores (``ood``). One
    task's search, so loading stays cheap."""
    from benchroute.reference import task_pairs

    ref = router.reference_
    at_zero = ref.alpha == 0
    if not at_zero.any():
        return
    ds = router.predictor_.datasets_
    task = _smallest_task(ds, ref.task[at_zero].tolist())
    # the sample and parameters the pairs were computed with, whatever the router's parameters
    # became after the fit
    pp = ref.params
    assert pp is not None  # _reference always records them
    cap, seed = _pairs_sample(router)
    again = task_pairs(router.predictor_, task, (0.0,), 1, seed, pp.n_neighbours,
                       pp.threshold, max_queries=cap)
    row = int(np.flatnonzero(at_zero & (ref.task == task))[0])
    same_p = np.allclose(again.p[0], ref.p[row], atol=1e-6, equal_nan=True)
    same_e = ref.e is None or (again.e is not None
                               and np.allclose(again.e[0], ref.e[row], atol=1e-6, equal_nan=True))
    if not (len(again.u) and abs(again.u[0] - ref.u[row]) <= 1e-6 and same_p and same_e):
        raise _fail(path, "reference", f"the pairs the pool and index give (task {task!r} at "
                    "alpha 0 differs; the files come from different routers?)")
    if ood is not None and again.rows is not None and again.ood is not None \
            and not np.allclose(ood[again.rows], again.ood, rtol=0, atol=1e-6, equal_nan=True):
        raise BenchrouteError(f"{path.parent / 'pool.npz'}: field 'ood_scores' differs from "
                              f"what the index gives for task {task!r}'s inputs (the files come "
                              "from different routers?)")


def _shift_reference(path: Path, arrays: dict[str, np.ndarray], router: Router
                     ) -> ShiftReference:
    """The saved form-shift reference, checked against the loaded pool: the pool's tasks in
    order (none for a pool of one task, whose reference is empty), finite values, no task's
    neighbours from itself, and, for the smallest task (one search, as for the pairs), its
    difference and neighbour tasks again from the index, and the fingerprints of its inputs,
    of their neighbours and of 256 seeded pool rows again from the texts. Like the pairs' and
    the OOD scores' spot checks, this catches files of different routers put together, not
    every edit: the other tasks' values are not recomputed (that is the search the saved
    reference spares)."""
    texts = router.texts_
    if texts is None:
        raise BenchrouteError(f"{path}: field 'shift_features' is saved without the pool's "
                              "'texts' it is computed from")
    ds = router.predictor_.datasets_
    pool = sorted(set(ds.tolist()))
    tasks = [str(t) for t in arrays["shift_tasks"]]
    if tasks != (pool if len(pool) >= 2 else []):
        raise BenchrouteError(f"{path}: field 'shift_tasks' must list the pool's {len(pool)} "
                              "tasks in sorted order (none for a pool of one task)")
    for name in ("shift_features", "shift_raw"):
        if not np.isfinite(arrays[name]).all():
            raise BenchrouteError(f"{path}: field {name!r} must be finite numbers")
    if np.diagonal(arrays["shift_touched"]).any():
        raise BenchrouteError(f"{path}: field 'shift_touched' says a task's neighbours came from "
                              "itself, but each task is scored with itself left out")
    ref = ShiftReference(router.predictor_, texts, router.n_neighbours, router.max_task_queries,
                         router.seed, saved=arrays)
    if not tasks:
        return ref
    task = _smallest_task(ds, tasks)
    again, touched, read = ref.task_difference(task)
    sample = np.random.default_rng(router.seed).choice(len(texts), min(256, len(texts)),
                                                       replace=False)
    check = np.union1d(read, sample)
    # equal up to rounding: NumPy's log1p differs in the last bit between CPUs (AVX-512 or not)
    if not np.allclose(fingerprints([texts[r] for r in check]), ref.F[check], rtol=0,
                       atol=1e-9):
        raise BenchrouteError(f"{path}: field 'shift_features' differs from the fingerprints of "
                              "the saved texts")
    if not (np.allclose(again, ref.raw[task], rtol=0, atol=1e-9) and touched == ref.touched[task]):
        raise BenchrouteError(f"{path}: fields 'shift_raw' and 'shift_touched' differ from what "
                              f"the index gives for task {task!r} (the files come from different "
                              "routers?)")
    return ref


def _added_names(path: Path, value: object, models: list[str]) -> dict[str, int]:
    """The added models' names (distinct, none a pool model) and label counts, in order."""
    if value is None:
        return {}
    if not isinstance(value, list) or not all(
            isinstance(v, dict) and isinstance(v.get("name"), str) and v["name"]
            and is_int(v.get("n_labels")) and v["n_labels"] >= 1 for v in value):
        raise _fail(path, "added", "a list of {name: model name, n_labels: int >= 1}")
    names = [v["name"] for v in value]
    if len(set(names)) != len(names) or set(names) & set(models):
        raise _fail(path, "added", "distinct names that are not pool models")
    return {v["name"]: int(v["n_labels"]) for v in value}


def _restore_added(path: Path, router: Router, n_labels: dict[str, int], dim: int) -> None:
    """Refit each added model on its saved labels (the estimator is deterministic, so this
    gives the saved router's P(new, x)); every array is checked first: as many labels as
    router.json declares, and the unit float32 vectors that were saved (vectors renormalised
    here would give another P)."""
    from benchroute.new_models import fit_added, pool_penalty
    from benchroute.pool_state import restore_added

    names = list(n_labels)
    expected = {f"{key}{i}" for i in range(len(names)) for key in ("X", "y")}
    try:
        found = {m.removesuffix(".npy") for m in _members(path)}
        if found != expected:
            raise BenchrouteError(f"{path}: arrays {sorted(found)}; expected {sorted(expected)}")
        arrays = read_npz(path, {f"{key}{i}": shape for i in range(len(names))
                                 for key, shape in (("X", (f"L{i}", dim)), ("y", (f"L{i}",)))},
                          kinds={f"{key}{i}": "f" for i in range(len(names)) for key in "Xy"})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise BenchrouteError(f"{path}: unreadable or incomplete ({exc}); field 'X<i>' must be "
                              f"(L, {dim}) floats and 'y<i>' L labels, one pair per added "
                              "model") from exc
    added = {}
    prior = pool_penalty(router) if names else None  # the pool's λ₀, once for all of them
    for i, name in enumerate(names):
        X, y = arrays[f"X{i}"], arrays[f"y{i}"]
        if X.ndim != 2 or X.shape[1] != dim or X.dtype != np.float32 or not np.isfinite(X).all() \
                or unit_norm_rows(X, NORM_TOL, normalise=False)[2].any():
            raise BenchrouteError(f"{path}: field 'X{i}' ({name}) must be finite float32 unit "
                                  f"vectors (L, {dim}), as saved; got {X.dtype} {X.shape}")
        if len(y) != n_labels[name]:
            raise BenchrouteError(f"{path.parent / 'router.json'}: field 'added[{i}].n_labels' "
                                  f"is {n_labels[name]}, but {path.name} holds {len(y)} labels "
                                  f"of {name!r}")
        if y.shape != (len(X),) or not np.issubdtype(y.dtype, np.floating) \
                or not ((y >= 0) & (y <= 1)).all():
            raise BenchrouteError(f"{path}: field 'y{i}' ({name}) must be {len(X)} labels in "
                                  f"[0, 1]; got {y.dtype} {y.shape}")
        X = unit_norm_rows(X, NORM_TOL)[0]  # to float32's precision, as fit_added is given
        added[name] = fit_added(router, name, X, y.astype(np.float64), prior)
    restore_added(router, added)


def _restore_routing(path: Path, router: Router, state: object, models: list[str],
                     version: int = ROUTER_FORMAT_VERSION) -> None:
    """The tuned per-input predictor's chosen values and the store's costs, checked."""
    if state is None:
        state = {}
    if not isinstance(state, dict) or set(state) - {"per_input", "costs"}:
        raise _fail(path, "routing", "an object with 'per_input' and 'costs'")
    costs = state.get("costs")
    if costs is not None and (
            not isinstance(costs, dict) or not set(costs) <= set(models)
            or not all(is_real(v) and v >= 0 for v in costs.values())):
        raise _fail(path, "routing.costs", "null or {model: cost >= 0} for models of the router")
    desc = state.get("per_input")
    if router.tune != (desc is not None):
        raise _fail(path, "routing.per_input", "the tuned predictor exactly when params.tune")
    if desc is not None:
        ok = (isinstance(desc, dict) and is_int(desc.get("k")) and desc["k"] >= 1
              and desc.get("weights") in ("uniform", "distance")
              and is_real(desc.get("prior")) and desc["prior"] >= 0)
        # format 5 always writes the calibration (an identity map as empty lists): a missing
        # one would load as uncalibrated and predict otherwise
        ok = ok and _is_calibration(desc.get("calibration")) \
            and (version < 5 or desc.get("calibration") is not None)
        if not ok:
            raise _fail(path, "routing.per_input", "{k: int >= 1, weights: 'uniform' or "
                        "'distance', prior: number >= 0, calibration: {x, y} in [0, 1], x "
                        "increasing, y non-decreasing}")
        if version >= 5 and set(desc) - _PER_INPUT_KEYS:
            raise _fail(path, "routing.per_input", f"an object with keys among "
                        f"{sorted(_PER_INPUT_KEYS)} (not {sorted(set(desc) - _PER_INPUT_KEYS)})")
        _check_stack(path, desc, router.Y_.shape[1], version,
                     router.predictor_.index_.dimension,
                     set(router.predictor_.index_.datasets_.tolist()))
        if desc.setdefault("folds_by", router.tune_folds) != router.tune_folds:
            raise _fail(path, "routing.per_input.folds_by", f"params.tune_folds "
                        f"({router.tune_folds!r}): the folds the predictor was tuned on")
        if str(desc.get("method", "knn")).startswith("task") and desc["folds_by"] != "random":
            raise _fail(path, "routing.per_input.method", "no task family on task folds (the "
                        "classifier's out-of-fold T would be noise; fit refuses it)")
        # saved before the rule was kept: the map in the file is what the rule gave then
        if desc.setdefault("calibration_rule", router.tune_calibration) != router.tune_calibration:
            raise _fail(path, "routing.per_input.calibration_rule", f"params.tune_calibration "
                        f"({router.tune_calibration!r}): the rule that chose the saved map")
        _check_maps_follow_rule(path, desc)
    router.costs_ = state.get("costs")
    if desc is not None:
        router.per_input_ = PerInputPredictor.from_description(desc, None, router.Y_)


#: What ``PerInputPredictor.describe`` writes (format 5 onward): a key outside it is refused
#: rather than ignored, as the ``routing`` object and the ``stack`` are checked for theirs.
_PER_INPUT_KEYS = frozenset({"k", "weights", "prior", "calibration", "method", "folds_by",
                             "calibration_rule", "stack", "calibration_knn", "fallback",
                             "tuning"})


def _check_maps_follow_rule(path: Path, desc: dict[str, object]) -> None:
    """Rule "none" keeps no map (empty lists): a map it could not have made would be applied
    anyway, and saved again as if the rule had made it. ("isotonic" keeps one fitted on every
    labelled input, which is none when a capped sample scored no label, so any map passes.)"""
    if desc["calibration_rule"] != "none":
        return
    for name in ["calibration"] + (["calibration_knn"] if desc.get("stack") is not None else []):
        cal = desc.get(name)
        if isinstance(cal, dict) and len(cal["x"]):
            raise _fail(path, f"routing.per_input.{name}", "what calibration_rule 'none' "
                        "keeps: no map (empty lists)")


def _is_calibration(cal: object) -> bool:
    """None, or an isotonic map: breakpoints strictly increasing, values never decreasing."""
    return cal is None or (
        isinstance(cal, dict) and isinstance(cal.get("x"), list)
        and isinstance(cal.get("y"), list) and len(cal["x"]) == len(cal["y"])
        and all(is_real(v) and 0 <= v <= 1 for v in cal["x"] + cal["y"])
        and bool(np.all(np.diff(cal["x"]) > 0)) and bool(np.all(np.diff(cal["y"]) >= 0)))


def _check_task_classifier(path: Path, clf: object, coef: object, dim: int,
                           n_models: int, pool_tasks: set[str]) -> None:
    """The task family's classifier (``coef`` dim x tasks, ``intercept``, ``tasks`` names,
    distinct, tasks of the pool: it was fitted on pool inputs) and its (tasks, models)
    weights."""
    where = "routing.per_input.stack.task_classifier"
    if not isinstance(clf, dict) or set(clf) != {"coef", "intercept", "tasks"}:
        raise _fail(path, where, "an object with exactly ['coef', 'intercept', 'tasks']")
    tasks = clf["tasks"]
    if not (isinstance(tasks, list) and tasks and all(isinstance(t, str) for t in tasks)
            and len(set(tasks)) == len(tasks)):
        raise _fail(path, f"{where}.tasks", "a non-empty list of distinct task names")
    if not set(tasks) <= pool_tasks:
        raise _fail(path, f"{where}.tasks", f"tasks of the pool (not "
                    f"{sorted(set(tasks) - pool_tasks)[:5]})")
    T = len(tasks)
    if not is_real_rows(clf["coef"], dim, T):
        raise _fail(path, f"{where}.coef", f"a {dim} x {T} list of finite numbers (one row per "
                    "vector dimension, one column per task)")
    if not is_real_list(clf["intercept"], T):
        raise _fail(path, f"{where}.intercept", f"{T} finite numbers (one per task)")
    if not is_real_rows(coef, T, n_models):
        raise _fail(path, "routing.per_input.stack.task_coef", f"a {T} x {n_models} list of "
                    "finite numbers (one row per task, one column per pool model)")


def _check_stack(path: Path, desc: dict[str, object], n_models: int, version: int,
                 dim: int, pool_tasks: set[str]) -> None:
    """The linear map of the tuned predictor: absent (format 2, or the kNN chosen) or a map for
    the pool models, as JSON numbers, its weight on the kNN matching the method (a blend:
    strictly between 0 and 1; the stack or the logistic regression: 0), with a (dim, models)
    ``vector_coef`` exactly for the logistic (format 4) and the task family, and a task
    classifier and its (tasks, models) ``task_coef`` exactly for the task family (format 5)."""
    method = desc.get("method", "knn")
    stack = desc.get("stack")
    if version < 3 and (stack is not None or method != "knn"):
        raise _fail(path, "routing.per_input.stack", "absent in format 2 (a stacked router is "
                    "format 3)")
    if method not in METHOD_NAMES or (method == "knn") != (stack is None) or (
            version < 4 and method.startswith("logistic")) or (
            version < 5 and method.startswith("task")):
        raise _fail(path, "routing.per_input.method", "'knn' without a 'stack', or 'blend', "
                    "'stack', 'logistic_blend', 'logistic' (format 4), 'task_blend' or 'task' "
                    "(format 5) with one")
    if not (desc.get("fallback") is None or isinstance(desc["fallback"], str)):
        raise _fail(path, "routing.per_input.fallback", "null or a string")
    if stack is None:
        return
    logistic, task = method.startswith("logistic"), method.startswith("task")
    keys = {"coef", "intercept", "knn_weight"} | ({"vector_coef"} if logistic or task else set()) | (
        {"task_classifier", "task_coef"} if task else set())
    if not isinstance(stack, dict) or set(stack) != keys:
        raise _fail(path, "routing.per_input.stack", f"an object with exactly {sorted(keys)} "
                    f"for method {method!r}")
    vec = stack.get("vector_coef")
    if (logistic or task) and not is_real_rows(vec, dim, n_models):
        raise _fail(path, "routing.per_input.stack.vector_coef", f"a {dim} x {n_models} list "
                    "of finite numbers (one row per vector dimension, one column per pool model)")
    if task:
        _check_task_classifier(path, stack["task_classifier"], stack["task_coef"], dim, n_models,
                               pool_tasks)
    coef, icpt, w = stack["coef"], stack["intercept"], stack["knn_weight"]
    if not is_real_rows(coef, n_models, n_models):
        raise _fail(path, "routing.per_input.stack.coef", f"a {n_models} x {n_models} list of "
                    "finite numbers (one row and one column per pool model)")
    if not is_real_list(icpt, n_models):
        raise _fail(path, "routing.per_input.stack.intercept", f"{n_models} finite numbers "
                    "(one per pool model)")
    if not (is_real(w) and (0 < w < 1 if method.endswith("blend") else w == 0)):
        raise _fail(path, "routing.per_input.stack.knn_weight", "a number in (0, 1) for a "
                    "blend, 0 for the stack")
    # format 5 always writes it with a map: a missing one would load as the identity, which
    # routing switches to when the pool's models change (remove_model, add_results)
    if not _is_calibration(desc.get("calibration_knn")) or (
            version >= 5 and desc.get("calibration_knn") is None):
        raise _fail(path, "routing.per_input.calibration_knn", "{x, y} in [0, 1], x "
                    "increasing, y non-decreasing")


def _routing_state(router: Router) -> dict[str, object]:
    """What a saved router keeps of the tuned predictor (its chosen values and calibration; the
    pool is the router's own) and of the fit store's costs, JSON-ready."""
    tuned = router.per_input_
    return {"per_input": None if tuned is None else tuned.describe(), "costs": router.costs_}


def _read_pool(path: Path, n_rows: int, n_models: int
               ) -> tuple[np.ndarray, list[str], list[str] | None, dict[str, np.ndarray] | None,
                          dict[str, np.ndarray] | None]:
    """Labels (n_rows, n_models), model names, the pool's texts, OOD scores and form-shift
    reference when saved, their shapes checked from the headers against the index and
    router.json before anything is decompressed."""
    shapes: dict[str, tuple[int | str, ...]] = {"Y": (n_rows, n_models), "models": (n_models,)}
    nf = len(FEATURES)
    try:
        members = _members(path)
        if "texts.npy" in members:
            shapes["texts"] = (n_rows,)
        if "ood_rows.npy" in members or "ood_scores.npy" in members:
            shapes.update(ood_rows=("r",), ood_scores=("r",))
        if any(f"{name}.npy" in members for name in SAVED_ARRAYS):
            shapes.update(shift_features=(n_rows, nf), shift_tasks=("t",), shift_raw=("t", nf),
                          shift_touched=("t", "t"))
        z = read_npz(path, shapes, kinds={"Y": "f", "models": "U", "texts": "U",
                                          "ood_rows": "iu", "ood_scores": "f",
                                          "shift_features": "f", "shift_tasks": "U",
                                          "shift_raw": "f", "shift_touched": "b"})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise BenchrouteError(f"{path}: unreadable or incomplete ({exc}); field 'Y' must be "
                              f"({n_rows}, {n_models}) floats (the index's rows, router.json's "
                              "models), 'models' their names, 'texts' (optional) one string "
                              "per row, 'ood_rows' and 'ood_scores' (optional, together) integers "
                              "and floats of one length, 'shift_features' (N, "
                              f"{nf}), 'shift_tasks' (T,), 'shift_raw' (T, {nf}) and "
                              "'shift_touched' (T, T) booleans (optional, together)") from exc
    texts = [str(t) for t in z["texts"]] if "texts" in z else None
    ood = {k: z[k] for k in ("ood_rows", "ood_scores")} if "ood_rows" in z else None
    shift = {k: z[k] for k in SAVED_ARRAYS} if "shift_raw" in z else None
    return z["Y"].astype(np.float32), [str(m) for m in z["models"]], texts, ood, shift


def _members(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()
