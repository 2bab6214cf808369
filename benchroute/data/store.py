"""The canonical store: one long table of per-sample benchmark results.

Every loader ends here, and everything downstream (embedding, router, experiments) reads
benchmark results only through :class:`BenchmarkData`, so that a HELM tree, a MixInstruct file
and a RouterDC table look the same to the method. What a frame must hold to become a store (and
what is dropped, counted or refused on the way) is :mod:`benchroute.data.store_checks`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchroute._persist import check_format_version, parse_json, write_file_atomic
from benchroute.data.store_checks import OPTIONAL_COLUMNS as OPTIONAL_COLUMNS
from benchroute.data.store_checks import REQUIRED_COLUMNS as REQUIRED_COLUMNS
from benchroute.data.store_checks import describe_difference, validate_frame, warn_degenerate
from benchroute.data.store_checks import row_key as row_key
from benchroute.data.text import normalize_text
from benchroute.exceptions import DataError
from benchroute.scoring import labelled_right

logger = logging.getLogger(__name__)

STORE_FORMAT_VERSION = 1


@dataclass
class LoadReport:
    """What a loader read, dropped and skipped, so that nothing is lost silently.

    ``skipped`` holds ``(what, why)`` pairs (a run directory, a file, a record); ``counts``
    holds counted drops such as ``perturbed_skipped`` or ``nan_dropped``. ``metrics`` maps each
    dataset to the metric its labels come from, ``scales`` each dataset to where that metric's
    range came from (``"declared"``, ``"known"``, ``"caller"``, ``"binary"`` or ``"guessed"``), and
    ``warnings`` holds what the user must act on (degenerate labels, guessed scales, conflicts).
    """

    sources: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, str] = field(default_factory=dict)
    scales: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Record a warning in the report and the log, once."""
        if message not in self.warnings:
            self.warnings.append(message)
            logger.warning("%s", message)

    def count(self, key: str, n: int = 1) -> None:
        if n:
            self.counts[key] = self.counts.get(key, 0) + int(n)

    def merge(self, other: LoadReport) -> LoadReport:
        out = LoadReport(
            sources=self.sources + other.sources,
            skipped=self.skipped + other.skipped,
            counts=dict(self.counts),
            notes=self.notes + other.notes,
            metrics={**self.metrics, **other.metrics},
            scales={**self.scales, **other.scales},
            warnings=self.warnings + [w for w in other.warnings if w not in self.warnings],
        )
        for key, n in other.counts.items():
            out.count(key, n)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadReport:
        return cls(
            sources=list(d.get("sources", [])),
            skipped=[(str(a), str(b)) for a, b in d.get("skipped", [])],
            counts={str(k): int(v) for k, v in d.get("counts", {}).items()},
            notes=list(d.get("notes", [])),
            metrics={str(k): str(v) for k, v in d.get("metrics", {}).items()},
            scales={str(k): str(v) for k, v in d.get("scales", {}).items()},
            warnings=[str(w) for w in d.get("warnings", [])],
        )


def binarize(scores: np.ndarray | pd.Series, threshold: float | np.ndarray) -> np.ndarray:
    """0/1 correctness from a score on [0, 1]; NaN stays NaN so missing results stay missing.
    ``threshold`` may be one value per score (per-dataset thresholds)."""
    arr = np.asarray(scores, dtype=float)
    out = labelled_right(arr, threshold).astype(float)
    out[np.isnan(arr)] = np.nan
    return out


class BenchmarkData:
    """Per-sample results, one row per (dataset, instance, model).

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns ``dataset, instance_id, text, model, score, correct`` and optionally
        ``metric, split, cost, logprob``. ``correct`` lies in [0, 1]: 0/1 after binarisation, or a
        continuous quality score for per-instance routing.
    report : LoadReport, optional
        What the loader dropped or skipped; extended here with the rows dropped on validation.
    source : str, optional
        Named in error messages so that a user knows which file was bad.
    strict : bool, default False
        Texts are compared after :func:`~benchroute.data.text.normalize_text` (line endings,
        surrounding whitespace). An instance whose models still disagree on its text is skipped
        and counted (``text_conflict_skipped``, with an example in ``report.skipped``); with
        ``strict=True`` it is an error.

    Raises
    ------
    DataError
        Missing columns, duplicate (dataset, instance_id, model) rows, ``correct`` outside [0, 1],
        or (``strict``) a text that differs between models for the same instance. Rows with a NaN
        score or correctness, or no text, are dropped and counted in ``report.counts`` instead.
    """

    def __init__(
        self, frame: pd.DataFrame, report: LoadReport | None = None, source: str = "<frame>",
        strict: bool = False,
    ) -> None:
        self.report = report if report is not None else LoadReport(sources=[source])
        self.strict = strict
        self.frame = validate_frame(frame, source, self.report, strict)
        warn_degenerate(self.frame, self.report)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return (
            f"BenchmarkData({len(self.datasets)} datasets, {len(self.models)} models, "
            f"{self.n_instances} instances, {len(self.frame)} results)"
        )

    @property
    def datasets(self) -> list[str]:
        return sorted(self.frame["dataset"].unique().tolist())

    @property
    def models(self) -> list[str]:
        return sorted(self.frame["model"].unique().tolist())

    @property
    def n_instances(self) -> int:
        return int(self.frame[["dataset", "instance_id"]].drop_duplicates().shape[0])

    def instances(self) -> pd.DataFrame:
        """Unique inputs as ``dataset, instance_id, text``, sorted by dataset then instance_id.

        This order is the row order of :meth:`correctness_matrix` and of every pool built from
        the store, so embeddings and labels line up by position.
        """
        inst = self.frame[["dataset", "instance_id", "text"]].drop_duplicates(
            ["dataset", "instance_id"]
        )
        return inst.sort_values(["dataset", "instance_id"], kind="stable").reset_index(drop=True)

    def correctness_matrix(
        self, dataset: str | None = None, column: str = "correct"
    ) -> pd.DataFrame:
        """Instances × models matrix of ``correct`` (or ``score``), NaN where a model has no result.

        Rows are indexed by ``(dataset, instance_id)`` in :meth:`instances` order; columns are
        :attr:`models` (all models of the store, also for a single dataset).
        """
        df = self.frame if dataset is None else self.frame[self.frame["dataset"] == dataset]
        if dataset is not None and df.empty:
            raise DataError(f"unknown dataset {dataset!r}; known: {self.datasets}")
        mat = df.pivot(index=["dataset", "instance_id"], columns="model", values=column)
        mat = mat.reindex(columns=self.models)
        mat.columns.name = None
        return mat.sort_index(kind="stable")

    def dataset_accuracy(self) -> pd.DataFrame:
        """Datasets × models mean correctness (NaN where a model has no result on a dataset)."""
        acc = self.frame.pivot_table(
            index="dataset", columns="model", values="correct", aggfunc="mean"
        )
        acc.columns.name = None
        return acc.reindex(columns=self.models)

    def model_accuracy(self) -> pd.Series:
        """Per-model accuracy as the unweighted mean over datasets (the paper's BMA criterion)."""
        return self.dataset_accuracy().mean(axis=0).sort_values(ascending=False)

    def missing_cells(self) -> pd.DataFrame:
        """Per model: instances it has no result for, out of the union over models."""
        mat = self.correctness_matrix()
        missing = mat.isna()
        rows = []
        for model in mat.columns:
            miss = missing[model]
            if miss.any():
                datasets = sorted({d for d, _ in miss[miss].index})
                rows.append({"model": model, "missing": int(miss.sum()), "datasets": datasets})
        return pd.DataFrame(rows, columns=["model", "missing", "datasets"])

    # ------------------------------------------------------------------ transforms
    def subset(
        self, datasets: Iterable[str] | None = None, models: Iterable[str] | None = None
    ) -> BenchmarkData:
        """A store restricted to some datasets and/or models; unknown names are an error."""
        df = self.frame
        if datasets is not None:
            wanted = list(datasets)
            _check_known(wanted, self.datasets, "dataset")
            df = df[df["dataset"].isin(wanted)]
        if models is not None:
            wanted_m = list(models)
            _check_known(wanted_m, self.models, "model")
            df = df[df["model"].isin(wanted_m)]
        return BenchmarkData(df, report=_copy_report(self.report))

    def exclude(self, datasets: Iterable[str]) -> BenchmarkData:
        drop = list(datasets)
        _check_known(drop, self.datasets, "dataset")
        return BenchmarkData(
            self.frame[~self.frame["dataset"].isin(drop)], report=_copy_report(self.report)
        )

    @classmethod
    def concat(cls, parts: Sequence[BenchmarkData]) -> BenchmarkData:
        """Several sources in one store; overlapping keys are an error, as within one source."""
        if not parts:
            raise DataError("concat needs at least one BenchmarkData")
        report = LoadReport()
        for p in parts:
            report = report.merge(p.report)
        frame = pd.concat([p.frame for p in parts], ignore_index=True)
        return cls(frame, report=report, source="concatenated stores")

    def strip_common_prefix(self, datasets: Iterable[str] | None = None) -> BenchmarkData:
        """A store whose inputs, per dataset, lack the prefix shared by all of its inputs.

        Few-shot prompts repeat the same instructions and worked examples before each question;
        the encoder reads only the first 384 word pieces, so the question is cut off and distinct
        inputs get one vector. Stripping the shared prefix (on a line boundary, see
        :func:`~benchroute.data.text.common_prefix`) keeps what tells the inputs apart. The
        stripped length per dataset goes into ``report.notes``; datasets sharing no prefix are
        unchanged.
        """
        from benchroute.data.text import common_prefix

        names = self.datasets if datasets is None else list(datasets)
        _check_known(names, self.datasets, "dataset")
        report = _copy_report(self.report)
        frame = self.frame.copy()
        for ds in names:
            rows = frame["dataset"] == ds
            prefix = common_prefix(frame.loc[rows, "text"].unique().tolist())
            if prefix:
                frame.loc[rows, "text"] = [normalize_text(t[len(prefix):])
                                           for t in frame.loc[rows, "text"]]
                report.notes.append(
                    f"dataset {ds!r}: stripped a common prefix of {len(prefix)} characters")
                report.count("common_prefix_stripped")
        return BenchmarkData(frame, report=report, strict=self.strict)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the store as parquet; the load report and format version go in its metadata."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        table = pa.Table.from_pandas(self.frame, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[b"benchroute"] = json.dumps(
            {"format_version": STORE_FORMAT_VERSION, "report": self.report.to_dict()}
        ).encode()
        table = table.replace_schema_metadata(meta)
        return write_file_atomic(path, lambda tmp: pq.write_table(table, tmp), "store",
                                 DataError)

    @classmethod
    def load(cls, path: str | Path) -> BenchmarkData:
        """Read a store written by :meth:`save`."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
        raw = (table.schema.metadata or {}).get(b"benchroute")
        report = LoadReport(sources=[str(path)]) if raw is None else _stored_report(path, raw)
        return cls(table.to_pandas(), report=report, source=str(path))


def _stored_report(path: Path, raw: bytes) -> LoadReport:
    """The load report in a saved store's ``benchroute`` metadata, every field checked."""
    def bad(what: str) -> DataError:
        return DataError(f"{path}: parquet metadata 'benchroute' is invalid: {what}; save the "
                         "store again with BenchmarkData.save")

    where = f"{path}: parquet metadata 'benchroute'"
    try:
        meta = parse_json(raw, where, DataError, strict=True, unique_keys=True)
        if isinstance(meta, dict):
            check_format_version(meta, where, STORE_FORMAT_VERSION, "store", DataError)
    except DataError as exc:  # a newer format is a FormatVersionError: it passes
        raise DataError(f"{exc}; save the store again with BenchmarkData.save") from exc
    if not isinstance(meta, dict):
        raise bad(f"expected an object, got {type(meta).__name__}")
    d = meta.get("report", {})
    lists = ("sources", "notes", "warnings", "skipped")
    ok = isinstance(d, dict) \
        and all(isinstance(d.get(k, []), list) for k in lists) \
        and all(isinstance(d.get(k, {}), dict) for k in ("counts", "metrics", "scales")) \
        and all(isinstance(v, list) and len(v) == 2 for v in d.get("skipped", [])) \
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for v in d.get("counts", {}).values())
    if not ok:
        raise bad("field 'report' must hold lists (sources, notes, warnings, [what, why] "
                  "skipped pairs), objects (metrics, scales) and integer counts >= 0")
    return LoadReport.from_dict(d)


def resolve_repeated(
    df: pd.DataFrame, report: LoadReport, source: str, strict: bool = False
) -> pd.DataFrame:
    """Repeated (dataset, instance_id) keys in a loader's long frame, resolved by the store's
    text-identity rule before the store sees them.

    Exports reuse ids (a ``sample_id`` repeated with another prompt, an item listed twice):
    exact repeats of a row (same normalised text and score) are merged and counted
    (``duplicate_rows_merged``); an id whose texts differ, or whose repeated model results
    disagree, is skipped and reported (``text_conflict_skipped`` / ``duplicate_conflict_skipped``)
    or, with ``strict=True``, is an error.
    """
    keys = ["dataset", "instance_id", "model"]
    dup = df.duplicated(keys, keep=False)
    if not dup.any():
        return df
    work = df.assign(_norm=df["text"].map(lambda t: normalize_text(t) if isinstance(t, str) else t))
    rep = work.loc[dup]
    n_texts = rep.groupby(["dataset", "instance_id"], sort=False)["_norm"].nunique(dropna=False)
    n_scores = rep.groupby(keys, sort=False)["score"].nunique(dropna=False)
    bad_text = set(n_texts[n_texts > 1].index)
    bad_score = {k[:2] for k in n_scores[n_scores > 1].index} - bad_text
    for bad, key, why in ((bad_text, "text_conflict_skipped", "texts differ"),
                          (bad_score, "duplicate_conflict_skipped", "scores differ")):
        if not bad:
            continue
        ds, iid = sorted(bad)[0]
        variants = rep.loc[(rep["dataset"] == ds) & (rep["instance_id"] == iid)]
        texts = [str(t) for t in variants["_norm"].unique()[:2]]
        detail = (describe_difference(texts[0], texts[1]) if len(texts) > 1
                  else f"scores {sorted(map(float, variants['score'].dropna().unique()))[:3]}")
        message = (f"dataset={ds!r} instance_id={iid!r} appears more than once and its {why} "
                   f"({detail})")
        if strict:
            raise DataError(f"{source}: {message}; one id must name one input")
        report.count(key, len(bad))
        report.skipped.append((f"{source}: {len(bad)} repeated id(s)", message))
        report.warn(f"{source}: skipped {len(bad)} repeated id(s) whose {why}, e.g. {message}; "
                    "pass strict=True to make this an error")
    drop = bad_text | bad_score
    if drop:
        pairs = pd.MultiIndex.from_frame(work[["dataset", "instance_id"]])
        work = work.loc[~pairs.isin(list(drop))]
    merged = work.duplicated(keys, keep="first")
    report.count("duplicate_rows_merged", int(merged.sum()))
    return work.loc[~merged].drop(columns="_norm")


def _check_known(names: list[str], known: list[str], what: str) -> None:
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise DataError(f"unknown {what}(s) {unknown}; known: {known}")


def _copy_report(report: LoadReport) -> LoadReport:
    return LoadReport().merge(report)
