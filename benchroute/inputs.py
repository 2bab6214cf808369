"""Checks at the router's boundary: its parameters (the same checks on ``fit`` and on loading a
saved router), vectors, labels, task texts and few-shot label records."""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from benchroute.data.metrics import short_repr
from benchroute.data.store import BenchmarkData
from benchroute.data.text import is_blank, normalize_text
from benchroute.embedding.base import NORM_TOL, unit_norm_rows
from benchroute.exceptions import BenchrouteError
from benchroute.index import is_search_knob
from benchroute.sampling import is_cap
from benchroute.tuning import CALIBRATIONS, FOLDS_BY

Texts = str | Sequence[str] | BenchmarkData
LabeledRecords = pd.DataFrame | Iterable[Mapping[str, object]]


def is_int(v: object) -> bool:
    """An integer, not a bool (JSON's true would otherwise pass as 1)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_real(v: object) -> bool:
    """A finite real number, not a bool or a string: the one test of the package's parameters,
    labels and costs."""
    if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:  # an int beyond a float's range: 10**309
        return False


def is_real_list(value: object, n: int | None = None) -> bool:
    """A JSON list of finite real numbers (``n`` of them when given): a saved file's vector.
    NumPy's conversion would take "0.5" and true for numbers."""
    return isinstance(value, list) and (n is None or len(value) == n) and all(
        is_real(v) for v in value)


def is_real_rows(value: object, rows: int | None, cols: int) -> bool:
    """A JSON list of ``rows`` lists (any number but none when None) of ``cols`` finite
    numbers: a saved file's matrix."""
    if not isinstance(value, list) or (len(value) != rows if rows is not None else not value):
        return False
    return all(is_real_list(row, cols) for row in value)


def are_fractions(values: object, distinct: bool = False) -> bool:
    """A non-empty list, tuple or array of fractions in [0, 1) (few-shot shares), distinct when
    asked."""
    if not isinstance(values, (list, tuple, np.ndarray)) or len(values) == 0 \
            or not all(is_real(a) and 0.0 <= float(a) < 1.0 for a in values):
        return False
    return not distinct or len({float(a) for a in values}) == len(values)


def check_router_params(params: Mapping[str, object], where: str = "Router") -> None:
    """Raise a BenchrouteError naming ``where`` and the field for any bad router parameter."""
    def need(ok: bool, name: str, expected: str) -> None:
        if not ok:
            raise BenchrouteError(f"{where}: {name} == {params.get(name)!r}, expected {expected}")

    p = params
    for name, top in (("k", 10_000), ("n_neighbours", 10_000), ("n_draws", 10_000_000),
                      ("repeats", 10_000)):
        need(is_int(p[name]) and 1 <= int(p[name]) <= top, name,  # type: ignore[call-overload]
             f"an integer >= 1 (at most {top:,})")
    need(is_int(p["seed"]) and 0 <= int(p["seed"]) < 2**63, "seed", "an integer >= 0")  # type: ignore[call-overload]
    need(is_real(p["threshold"]) and 0.0 <= float(p["threshold"]) <= 1.0,  # type: ignore[arg-type]
         "threshold", "a number in [0, 1]")
    need(is_real(p["bandwidth"]) and float(p["bandwidth"]) > 0, "bandwidth", "a number > 0")  # type: ignore[arg-type]
    need(is_real(p["eta"]) and 0.0 <= float(p["eta"]) <= 1.0, "eta", "a number in [0, 1]")  # type: ignore[arg-type]
    need(isinstance(p.get("tune", True), bool), "tune", "true or false")
    need(is_cap(p.get("max_task_queries")), "max_task_queries", "null or an integer >= 2")
    need(p.get("tune_folds", "task") in FOLDS_BY, "tune_folds", " or ".join(map(repr, FOLDS_BY)))
    need(p.get("tune_calibration", "auto") in CALIBRATIONS, "tune_calibration",
         ", ".join(map(repr, CALIBRATIONS[:-1])) + f" or {CALIBRATIONS[-1]!r}")
    need(is_real(p["prior_strength"]) and float(p["prior_strength"]) >= 0,  # type: ignore[arg-type]
         "prior_strength", "a number >= 0")
    need(are_fractions(p["alphas"], distinct=True), "alphas",
         "a non-empty list of distinct fractions in [0, 1)")
    need(p["weights"] in ("uniform", "distance"), "weights", "'uniform' or 'distance'")
    factory = p["index_factory"]
    # FAISS aborts the process (a C++ assertion, no exception) on an HNSW graph of M < 2
    need(isinstance(factory, str) and bool(factory.strip())
         and all(int(m) >= 2 for m in re.findall(r"HNSW(\d+)", factory, re.ASCII)),
         "index_factory", "a FAISS index-factory string (HNSW<M> with M >= 2)")
    for name in ("nprobe", "ef_search"):
        need(is_search_knob(p[name]), name, "null or an integer in [1, 2**31)")
    need(p["cache_dir"] is None or isinstance(p["cache_dir"], (str, os.PathLike)), "cache_dir",
         "null or a folder path")
    enc = p["encoder"]
    need(isinstance(enc, str) and bool(enc) or hasattr(enc, "identifier"), "encoder",
         "an encoder name or object")




def known_encoder_name(name: object) -> bool:
    """Whether a saved router's encoder name is one the package resolves by itself: the default
    sentence model (short or hub form) with at most one backend (``@torch``, ``@onnx``,
    ``@static``) and one word-piece cap (``@max<N>``), or a ``hashing-<dim>-<lo><hi>`` encoder;
    never a path or another hub name. Decided by the same resolver and suffix parser as
    :func:`~benchroute.embedding.get_encoder`, without loading anything."""
    from benchroute.embedding.backends import parse_mpnet_suffix
    from benchroute.embedding.names import resolve_encoder_name

    if not isinstance(name, str):
        return False
    try:
        resolved = resolve_encoder_name(name, allow_download=False)
        if resolved.kind == "default":
            parse_mpnet_suffix(name)
    except BenchrouteError:
        return False
    return resolved.kind in ("hashing", "default")


def same_vectors(name: str, identifier: str) -> bool:
    """Whether the encoder ``name`` gives vectors that compare with those of the encoder
    ``identifier`` (a router's pool's). Hashing encoders only as named; the default sentence
    model through any backend (torch and a verified ONNX export share vectors), but neither
    across the static tier nor across word-piece caps. Names the package does not resolve by
    itself agree only when equal."""
    from benchroute.embedding.backends import DEFAULT_MAX_SEQ_LENGTH, parse_mpnet_suffix
    from benchroute.embedding.names import resolve_encoder_name

    if name == identifier:
        return True
    if not (known_encoder_name(name) and known_encoder_name(identifier)):
        return False
    ours, built = (resolve_encoder_name(n, allow_download=False) for n in (name, identifier))
    if ours.kind != "default" or built.kind != "default":
        return False  # hashing: equal names only
    (b1, c1), (b2, c2) = parse_mpnet_suffix(name), parse_mpnet_suffix(identifier)
    return (b1 == "static") == (b2 == "static") \
        and (c1 or DEFAULT_MAX_SEQ_LENGTH) == (c2 or DEFAULT_MAX_SEQ_LENGTH)


def check_vectors(X: np.ndarray, what: str) -> np.ndarray:
    """(n, d) float32 unit vectors: NaN/inf or zero rows are refused; rows whose norm is off 1
    by more than :data:`NORM_TOL` are normalised with a warning (cosine distances need unit
    vectors), those off by less silently (:func:`unit_norm_rows`)."""
    try:
        given = np.asarray(X)
        with np.errstate(over="ignore"):  # a value past float32's range is named below
            X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:  # text, ragged rows, objects
        raise BenchrouteError(f"{what}: expected an array of numbers (n, d), got "
                              f"{type(X).__name__} ({str(exc):.100})") from None
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise BenchrouteError(f"{what}: expected a 2-D array (n, d), got shape {X.shape}")
    out, broken, off = unit_norm_rows(X, NORM_TOL)
    if broken.any():
        row = int(np.flatnonzero(broken)[0])
        problem = "has NaN or infinite values" if not np.isfinite(X[row]).all() else "is all zeros"
        if given.shape == X.shape and given.dtype.kind == "f":  # finite before float32?
            was = given.reshape(X.shape)[row]
            if np.isfinite(was).all() and not np.isfinite(X[row]).all():
                problem = "has values past float32's range (3.4e38); scale it"
            elif np.isfinite(was).all() and was.any() and not X[row].any():
                problem = "is all zeros at float32's precision (values under 1e-45); scale it"
        raise BenchrouteError(f"{what}: row {row} {problem}; expected finite unit vectors")
    if off.any():
        row = int(np.flatnonzero(off)[0])
        warnings.warn(f"{what}: {int(off.sum())} vector(s) are not unit-norm (e.g. row "
                      f"{row}: norm {np.linalg.norm(X[row]):.4f}); normalised",
                      UserWarning, stacklevel=3)
    return np.ascontiguousarray(out, dtype=np.float32)


def check_labels(Y: np.ndarray, what: str, n_models: int | None = None) -> np.ndarray:
    """(n, M) float32 labels in [0, 1], NaN for a missing result. Text is no label: NumPy
    reads ``"1"`` as 1.0, which ``select_model``'s records refuse (found by a review)."""
    raw = np.asarray(Y)
    if raw.dtype.kind in "USV" or (raw.dtype.kind == "O" and any(
            isinstance(v, (str, bytes)) for v in raw.ravel())):
        raise BenchrouteError(f"{what}: labels are text ({raw.dtype}); expected numbers in "
                              "[0, 1] or NaN (no result)")
    Y = np.asarray(raw, dtype=np.float32)
    if Y.ndim != 2 or (n_models is not None and Y.shape[1] != n_models):
        raise BenchrouteError(f"{what}: expected shape (n, {n_models or 'M'}), got {Y.shape}")
    bad = ~np.isnan(Y) & ((Y < 0) | (Y > 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise BenchrouteError(f"{what}: label [{r}, {c}] is {float(Y[r, c]):g}; expected a number in "
                              "[0, 1] or NaN (no result)")
    return Y


def check_candidates(candidates: Iterable[str] | str | None, models: Sequence[str]) -> np.ndarray:
    """Sorted column indices in ``models`` of the named candidates (all of them for None)."""
    if candidates is None:
        return np.arange(len(models))
    if not isinstance(candidates, str | Iterable):
        raise BenchrouteError(f"candidates == {short_repr(candidates, 60)}; expected model "
                              "names (a list of strings, or one string)")
    names = [candidates] if isinstance(candidates, str) else list(candidates)
    twice = sorted({str(c) for c in names if names.count(c) > 1})
    if twice:  # the gateway listed the model twice; a typo for another model, most likely
        raise BenchrouteError(f"candidates name {twice[:5]} twice; name each model once")
    unknown = [c for c in names if c not in models]
    if unknown:
        raise BenchrouteError(f"unknown model(s) {unknown}; known models: {list(models)}")
    if not names:
        raise BenchrouteError("candidates is empty; name at least one model")
    return np.array(sorted({list(models).index(c) for c in names}))


def check_model_name(name: object, where: str = "name") -> str:
    """A model's name as every surface can carry it: the command line's lists, the saved files,
    the gateway's headers and metrics. Printable, no leading or trailing spaces (``"m1 "``
    beside ``"m1"`` could not be told apart on the command line)."""
    if not isinstance(name, str) or not name.strip() or name != name.strip() \
            or not name.isprintable():
        raise BenchrouteError(f"{where} == {short_repr(name, 80)}, expected a model name: "
                              "printable, without leading or trailing spaces")
    return name


def check_distinct_names(names: Sequence[str], known: Sequence[str] = ()) -> None:
    """No two model names (among ``names``, or one of them and one ``known``) that differ only
    in how Unicode writes the same text ("é" and "e" + a combining accent): a gateway client,
    a terminal and a file can each turn one into the other (found by fuzzing)."""
    import unicodedata

    seen = {unicodedata.normalize("NFC", k): k for k in known}
    for name in names:
        key = unicodedata.normalize("NFC", name)
        if key in seen and seen[key] != name:
            raise BenchrouteError(f"model names {seen[key]!r:.80} and {name!r:.80} are the same "
                                  "text written two ways (Unicode normalisation); use one")
        seen.setdefault(key, name)


def check_flag(name: str, flag: object) -> bool:
    """A True/False option; anything else is refused (``"no"`` or ``"false"`` would read as
    True)."""
    if not isinstance(flag, (bool, np.bool_)):
        raise BenchrouteError(f"{name} must be True or False, got {flag!r:.40}")
    return bool(flag)


def check_fit_arrays(X: np.ndarray, Y: np.ndarray, datasets: Iterable[object],
                     models: Sequence[object]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The arrays ``Router.fit_arrays`` learns from, checked together: unit vectors, labels in
    [0, 1] with at least one result, one task name per row and distinct model names."""
    names = [check_model_name(str(m), "model name") for m in models]
    if len(set(names)) != len(names):
        raise BenchrouteError(f"models: duplicated names in {names}")
    check_distinct_names(names)
    X = check_vectors(X, "fit X")
    Y = check_labels(Y, "fit Y", len(names))
    if Y.size and np.isnan(Y).all():
        raise BenchrouteError("fit Y: every label is NaN (no result); nothing to learn from")
    empty = [n for n, col in zip(names, Y.T) if len(col) and np.isnan(col).all()]
    if empty:
        # its P would be an invented 1/2 on every input, and routing would send inputs to it
        raise BenchrouteError(f"fit Y: model(s) {empty} have no result on any pool input; leave "
                              "them out of the pool (Router.add_model adds a model from a few "
                              "labelled inputs)")
    ds = np.asarray([_task_name(t) for t in datasets], dtype=object)
    if len(X) != len(Y) or len(ds) != len(X):
        raise BenchrouteError(f"fit: X, Y and datasets must have the same rows; got "
                              f"{len(X)}, {len(Y)}, {len(ds)}")
    return X, Y, ds, names


def _task_name(task: object) -> str:
    """A task's name: a text, or an integer as its digits (``np.repeat(np.arange(6), 20)``
    failed deep in the reference pass); anything else is refused by name."""
    if isinstance(task, str):
        return str(task)
    if isinstance(task, (int, np.integer)) and not isinstance(task, (bool, np.bool_)):
        return str(int(task))
    raise BenchrouteError(f"fit datasets: task {task!r:.60} is a {type(task).__name__}; each "
                          "row's task is named by a text (or an integer)")


def check_instance_ids(instance_ids: Iterable[object] | None, datasets: np.ndarray
                       ) -> list[str] | None:
    """One id per row, unique within its task, as a store's (dataset, instance_id) key: ids of
    another length were accepted and failed later (or saved a router that load refused)."""
    if instance_ids is None:
        return None
    if not is_items(instance_ids):
        raise BenchrouteError(f"fit instance_ids is a {type(instance_ids).__name__}; expected "
                              "one id per row")
    ids = [str(i) for i in instance_ids]
    if len(ids) != len(datasets):
        raise BenchrouteError(f"fit instance_ids: {len(ids)} ids for {len(datasets)} rows")
    keys = pd.Series(ids).groupby(np.asarray(datasets)).apply(lambda s: s.duplicated().any())
    if keys.any():
        raise BenchrouteError(f"fit instance_ids: repeated within task(s) "
                              f"{sorted(keys[keys].index)[:5]}; each row of a task is one input")
    return ids


def task_accuracy_problem(table: object, Y: np.ndarray, datasets: np.ndarray,
                          models: Sequence[str]) -> tuple[str, str] | None:
    """(field, what it must be) where ``table`` is not the per-task accuracies a fit keeps, else
    None. They are the pool's mean labels per task (the best model on average is read from
    them): a table of other tasks, other models or other values would decide otherwise than
    the pool, and a saved router holding one is refused on load."""
    means = pd.DataFrame(Y, columns=list(models)).groupby(np.asarray(datasets)).mean()
    if not isinstance(table, pd.DataFrame):
        return "", "a DataFrame, tasks × models"
    missing = [m for m in models if m not in table.columns]
    if missing:
        return "columns", f"the pool's models (missing {missing[:5]})"
    if sorted(map(str, table.index)) != sorted(map(str, means.index)):
        return "index", f"the pool's tasks ({len(means)})"
    try:
        stored = table.set_axis(table.index.map(str)).reindex(
            index=means.index, columns=list(models)).to_numpy(dtype=float)
    except (TypeError, ValueError):
        return "data", "numbers"
    pool = means.to_numpy(dtype=float)
    if not ((np.isnan(stored) & np.isnan(pool)) | (np.abs(stored - pool) <= 1e-4)).all():
        return "data", ("the mean label of each model on each task of the pool (the files come "
                        "from different routers?)")
    return None


def is_items(value: object) -> bool:
    """An iterable of items: not a text, bytes, a mapping or a DataFrame, which iterate as
    characters, ints, keys or column names and are never what a caller meant by a list of
    texts or records; not a 0-d array, which does not iterate."""
    if isinstance(value, np.ndarray):
        return value.ndim >= 1
    return isinstance(value, Iterable) \
        and not isinstance(value, (str, bytes, Mapping, pd.DataFrame))


def parse_texts(task_examples: Texts, what: str = "task_examples") -> list[str]:
    if isinstance(task_examples, BenchmarkData):
        texts = task_examples.instances()["text"].tolist()
    elif isinstance(task_examples, str):
        texts = [task_examples]
    elif not is_items(task_examples):
        raise BenchrouteError(f"{what} is a {type(task_examples).__name__}; expected a text, a "
                              "list of texts or a BenchmarkData")
    else:
        texts = list(task_examples)
    if not texts:
        raise BenchrouteError(f"{what} is empty; give at least one input text")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        check_text(texts[bad], bad, what)
    for i, t in enumerate(texts):
        check_text(t, i, what)
    return texts


def check_text(text: object, i: int, what: str = "task_examples") -> str:
    """One input text, ``what[i]``: a str that is not blank (:func:`~benchroute.data.text.
    is_blank`, as the loaders decide: a blank text is no input, nothing to embed or route)."""
    if not isinstance(text, str):
        raise BenchrouteError(f"{what}[{i}] is a {type(text).__name__}, expected str")
    if is_blank(text):
        raise BenchrouteError(f"{what}[{i}] is empty or only whitespace and invisible "
                              "characters; give a text to route")
    return text


def label_value(v: object) -> float:
    """A label: a real number or a bool (JSON's ``"correct": true``); None, NaN of any float
    type, text, bytes, dates, ints beyond a float and complex numbers with an imaginary part
    are none (NaN: a missing label, or refused by the caller). A complex of zero imaginary part
    is its real part: pandas makes a column of mixed numbers complex when one of them is."""
    if isinstance(v, complex) and v.imag == 0:
        v = v.real
    return float(v) if isinstance(v, (bool, np.bool_)) or is_real(v) else float("nan")  # type: ignore[arg-type]


def parse_labeled(labeled: LabeledRecords, models: list[str]) -> tuple[list[str], np.ndarray]:
    """Few-shot labels as (texts, Y (L, M)) from a DataFrame or ``{"text", "labels"}`` records.

    Every record gives at least one label, and one input (its normalised text) has at most one
    label per model, as ``add_model``'s results: a record of empty labels counted as labelled
    and dropped its input from the task examples, and two contradictory labels of one input
    counted as two (found by fuzzing)."""
    if isinstance(labeled, pd.DataFrame):
        cols = labeled.columns
        if isinstance(cols, pd.MultiIndex) or cols.has_duplicates:
            twice = sorted({str(c) for c in cols[cols.duplicated()]})[:5]
            raise BenchrouteError("labeled DataFrame: " + (
                "MultiIndex columns; expected 'text' and one column per model (or 'labels')"
                if isinstance(cols, pd.MultiIndex) else f"column(s) {twice} appear twice"))
        if "labels" in cols:
            extra = [str(c) for c in cols if c not in ("text", "labels")]
            if extra:
                raise BenchrouteError(f"labeled DataFrame has a 'labels' column and other "
                                      f"columns {extra[:5]}; give the labels one way")
            records: Sequence[object] = labeled.to_dict(orient="records")
        else:
            if "text" not in cols:
                raise BenchrouteError("labeled DataFrame needs a 'text' column")
            records = [{"text": r["text"], "labels": {k: v for k, v in r.items() if k != "text"}}
                       for r in labeled.to_dict(orient="records")]
    elif is_items(labeled):
        records = list(labeled)
    else:
        raise BenchrouteError(f"labeled is a {type(labeled).__name__}; expected a DataFrame or "
                              "a list of {'text': str, 'labels': {model: 0/1}} records")
    texts, rows = [], []
    seen: dict[tuple[str, str], int] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping) or not isinstance(rec.get("text"), str) \
                or not isinstance(rec.get("labels"), Mapping):
            raise BenchrouteError(f"labeled[{i}] must be {{'text': str, 'labels': {{model: 0/1}}}}")
        labels: Mapping[str, object] = rec["labels"]
        unknown = [m for m in labels if m not in models]
        if unknown:
            raise BenchrouteError(f"labeled[{i}] names unknown model(s) {unknown}; known "
                                  f"models: {models}")
        if is_blank(rec["text"]):
            raise BenchrouteError(f"labeled[{i}] text is empty or only whitespace and invisible "
                                  "characters")
        row = np.full(len(models), np.nan, dtype=np.float32)
        for m, v in labels.items():
            # one rule with add_model's results: bools are 0/1, NaN of any type is no label
            if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
                continue
            value = label_value(v)
            if not 0 <= value <= 1:  # NaN included: text, dates, out of range
                raise BenchrouteError(f"labeled[{i}] label for {m!r} is {short_repr(v, 60)}; expected "
                                      "a number in [0, 1]")
            key = (normalize_text(rec["text"]), m)
            if key in seen:
                raise BenchrouteError(f"labeled[{seen[key]}] and labeled[{i}] both label {m!r} "
                                      "on the same input; give each input's label once")
            seen[key] = i
            row[models.index(m)] = value
        if np.isnan(row).all():
            raise BenchrouteError(f"labeled[{i}] gives no label (each value is empty or NaN); "
                                  "leave it out, or pass its text as a task example")
        texts.append(rec["text"])
        rows.append(row)
    if not rows:
        return [], np.zeros((0, len(models)), dtype=np.float32)
    return texts, np.vstack(rows)
