"""Loader for HELM ``benchmark_output`` run trees: ``runs/<suite>/<run name>/`` folders, each
with ``run_spec.json`` (the scenario and model), ``scenario_state.json`` (the prompts and
completions) and ``per_instance_stats.json`` (per-instance metrics such as ``exact_match``).

Reading the run folders is :mod:`benchroute.data.helm_runs`; this module interprets them: which
metric, on which scale, thresholded how, and the rows each run gives. The core parses HELM's JSON
directly: crfm-helm is a 6 GB install whose codec imports spacy and
torch, while the files themselves are plain, stable JSON.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchroute.data.helm_runs import (
    Run,
    Schemas,
    clean_text,
    find_runs,
    parse_run,
    perturbation_label,
    shown_name,
)
from benchroute.data.metrics import (
    LOWER_IS_BETTER,
    MetricScale,
    check_range,
    guess_scale,
    known_scale,
    parse_range,
    short_repr,
    to_unit,
)
from benchroute.data.prices import Price, PricesLike, resolve_prices
from benchroute.data.store import BenchmarkData, LoadReport, binarize, resolve_repeated
from benchroute.exceptions import DataError

logger = logging.getLogger(__name__)

# Order of preference when the caller names no metric: exact matches first, then the other
# per-instance correctness metrics HELM writes to ``per_instance_stats.json``.
METRIC_PRIORITY = (
    "exact_match",
    "quasi_exact_match",
    "prefix_exact_match",
    "quasi_prefix_exact_match",
    "quasi_leave_articles_exact_match",
    "exact_match_indicator",
    "final_number_exact_match",
    "math_equiv",
    "math_equiv_chain_of_thought",
    "chain_of_thought_correctness",
    "exact_set_match",
    "code_eval_acc",
    "pass",
    "ifeval_strict_accuracy",
    "omni_math_accuracy",
    "wildbench_score_rescaled",
    "safety_score",
    "f1_set_match",
    "iou_set_match",
    "f1_score",
    "rouge_l",
    "bleu_4",
)
# Stats that are never correctness (listed last in error messages).
_NOT_METRICS = frozenset({"logprob", "max_prob", "predicted_index", "inference_runtime",
                          "batch_size", "prompt_truncated", "training_co2_cost",
                          "training_energy_cost"})


def load_helm(
    path: str | os.PathLike[str],
    metric: str | Mapping[str, str] | None = "main",
    threshold: float | Mapping[str, float] | None = 0.5,
    include_perturbed: bool = False,
    *,
    score_range: tuple[float, float] | Mapping[str, tuple[float, float]] | None = None,
    prices: PricesLike | None = None,
    strict: bool = False,
) -> BenchmarkData:
    """Load per-instance correctness from HELM runs.

    Parameters
    ----------
    path : path-like
        A run directory, a suite directory, or a ``runs/`` / ``benchmark_output/`` root.
    metric : str or mapping, default "main"
        ``"main"``: each run's main metric from the suite's ``schema.json`` (its run groups'
        ``environment.main_name``), falling back to the first of :data:`METRIC_PRIORITY` present
        when there is no schema or its main metric is not among the per-instance stats. A metric
        name applies to every run; a mapping from dataset, scenario or run-group name to a metric
        (or ``"main"``) sets it per dataset. Every model of one dataset is scored by one metric.
    threshold : float or mapping, default 0.5
        Binarisation threshold in (0, 1] on the metric's range mapped to [0, 1] (1 the best);
        a mapping sets it per dataset, scenario or run group (others keep 0.5); None is 0.5.
    include_perturbed : bool
        Keep perturbed copies (robustness/fairness augmentations) as extra instances with ids
        ``"<id>|<perturbation>"``. They are skipped, and counted, by default.
    score_range : (min, max) or mapping, optional
        The raw range of the metric, overriding the schema and the package's table of known
        metrics; needed for a metric none of them declares (otherwise the range is guessed from
        the values, with a warning).
    prices : path or mapping, optional
        A price table (see :func:`benchroute.load_prices`) or ``{model: (input, output)}`` in
        USD per 1M tokens; adds a ``cost`` column from HELM's token counts.
    strict : bool
        Make an instance whose text differs between models an error instead of a reported skip.

    Returns
    -------
    BenchmarkData
        One row per (dataset, instance, model); ``dataset`` is the run name without its
        model-specific parts; ``score`` is the raw metric value, ``correct`` its binary label;
        ``prompt_tokens``/``completion_tokens`` (and ``cost``) where HELM counted tokens.
        ``report.metrics`` and ``report.scales`` name each dataset's metric and where its range
        came from. Runs that cannot be read are skipped and listed in ``report.skipped``.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such file or directory")
    if not root.is_dir():
        raise DataError(f"{root}: a HELM path must be a directory (a run, a suite or a runs root)")
    metric = "main" if metric is None else metric
    threshold = 0.5 if threshold is None else threshold
    _check_metric_arg(metric, score_range)
    _check_threshold_arg(threshold)
    _check_range_arg(score_range)
    price_table = resolve_prices(prices)
    runs = find_runs(root)
    if not runs:
        raise DataError(
            f"{root}: no HELM runs found (no directory with run_spec.json or "
            "per_instance_stats.json below it)"
        )
    report = LoadReport(sources=[str(root)])
    schemas = Schemas()
    parsed: list[Run] = []
    for run in runs:
        try:
            parsed.append(parse_run(run, root, report, schemas))
        except DataError as exc:
            _skip(report, shown_name(run, root), str(exc))
    _warn_grouped(report, "schema problems (main metrics fall back where they matter)",
                  list(dict.fromkeys(schemas.problems)))
    if parsed:
        _check_mapping_keys(parsed, metric, threshold, score_range)
    by_dataset: dict[str, list[Run]] = defaultdict(list)
    for r in parsed:
        by_dataset[r.dataset].append(r)
    rows: list[dict[str, Any]] = []
    for ds in sorted(by_dataset):
        rows.extend(_dataset_rows(ds, by_dataset[ds], metric, threshold, score_range,
                                  include_perturbed, price_table, report))
    if report.skipped:
        _warn_grouped(report, f"of {len(runs)} HELM runs skipped", report.skipped)
    if not rows:
        raise DataError(
            f"{root}: none of {len(runs)} HELM runs could be read: "
            + "; ".join(f"{Path(r).name}: {_short_text(why, 600)}"
                        for r, why in report.skipped[:3])
            + (f"; and {len(report.skipped) - 3} more" if len(report.skipped) > 3 else "")
        )
    frame = pd.DataFrame(rows)
    # An augmented run repeats its base run's unperturbed instances: a row is such a copy when
    # a run whose name differs from its own by the augmentation alone has the same instance,
    # the base kept (no augmentation, then "canonical", then the first read). Any other
    # repeat, such as one run name in two suites (HELM classic names even its base runs
    # "data_augmentation=canonical") or two runs that differ by another argument, follows the
    # store's rule: exact repeats merged, a conflict skipped and reported or, strict, an
    # error (the second suite's results were dropped silently; found by fuzzing and reviews).
    aug = frame["_run"].map(_augmentation)
    rank = np.where(aug == "", 0, np.where(aug == "canonical", 1, 2))
    frame = frame.assign(_base=frame["_run"].map(_without_augmentation), _aug=aug, _rank=rank)
    frame = frame.sort_values("_rank", kind="stable")
    keys = ["dataset", "instance_id", "model"]
    first_aug = frame.groupby([*keys, "_base"], sort=False)["_aug"].transform("first")
    copy = (frame["_aug"] != first_aug).to_numpy()
    report.count("duplicate_rows_merged", int(copy.sum()))
    frame = frame.drop(columns=["_base", "_aug", "_rank"])
    frame = resolve_repeated(frame.loc[~copy].drop(columns="_run"), report,
                             str(root), strict)
    # Token columns only where HELM counted tokens: an all-empty column says nothing.
    frame = frame.drop(columns=[c for c in ("prompt_tokens", "completion_tokens")
                                if frame[c].isna().all()])
    if price_table is not None:
        _report_prices(frame, price_table, report)
    return BenchmarkData(frame, report=report, source=str(root), strict=strict)


# ---------------------------------------------------------------------------- arguments
def _check_metric_arg(metric: object, score_range: object) -> None:
    values = list(metric.values()) if isinstance(metric, Mapping) else [metric]
    if not isinstance(metric, (str, Mapping)):
        raise DataError(f"metric must be a name, 'main' or a mapping of dataset to metric, got "
                        f"{type(metric).__name__}")
    for v in values:
        if not isinstance(v, str) or not v:
            raise DataError(f"metric mapping values must be metric names, got {short_repr(v)}")
        if v in LOWER_IS_BETTER and known_scale(v) is None and score_range is None:
            raise DataError(f"metric {v!r} is lower-is-better with no known range; pick a "
                            "correctness metric or pass score_range=(min, max)")


def _check_threshold_arg(threshold: object) -> None:
    values = list(threshold.values()) if isinstance(threshold, Mapping) else [threshold]
    for v in values:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1
        if not ok:
            raise DataError(f"threshold must be a number in (0, 1] (or a mapping of dataset to "
                            f"such numbers), got {short_repr(v)}")


def _check_range_arg(score_range: object) -> None:
    if score_range is None:
        return
    if isinstance(score_range, Mapping):
        for k, v in score_range.items():
            parse_range(v, f"score_range[{short_repr(k)}]")
    else:
        parse_range(score_range, "score_range")


def _names(runs: Sequence[Run]) -> list[str]:
    """The names a caller's mapping may use for these runs, most specific first."""
    out = [runs[0].dataset, runs[0].scenario]
    for r in runs:
        out.extend(g for g in reversed(r.groups) if g not in out)
    return out


def _lookup(arg: object, names: Sequence[str]) -> Any:
    if not isinstance(arg, Mapping):
        return arg
    return next((arg[n] for n in names if n in arg), None)


def _check_mapping_keys(runs: Sequence[Run], *args: object) -> None:
    """A mapping key that names no dataset, scenario or run group is a typo, not a no-op."""
    known = {n for r in runs for n in (r.dataset, r.scenario, *r.groups)}
    for arg, what in zip(args, ("metric", "threshold", "score_range")):
        if isinstance(arg, Mapping):
            unknown = sorted(str(k) for k in arg if k not in known)
            if unknown:
                raise DataError(
                    f"{what} mapping names {short_repr(unknown)}, which match no dataset, scenario or "
                    f"run group here; known: {short_repr(sorted(known), 400)}"
                )


# ---------------------------------------------------------------------------- one run


# ---------------------------------------------------------------------------- metric choice
def _plain_names(run: Run) -> set[str]:
    keys = [k for k in run.stats if not k[1]] or list(run.stats)
    return {n for k in keys for n in run.stats[k]}


def _default_metric(run: Run) -> tuple[str | None, str]:
    """The run's main metric from its schema, else the fallback list; and how it was chosen."""
    present = _plain_names(run)
    declared = run.schema.main_metrics(run.groups) if run.schema is not None else []
    for m in declared:
        if m in present:
            return m, "schema"
    fallback = next((m for m in METRIC_PRIORITY if m in present), None)
    if fallback is None:
        # Then any metric the package's table knows (rubrics, judge ``*_score``s).
        judged = sorted(m for m in present if m not in LOWER_IS_BETTER
                        and known_scale(m) is not None)
        fallback = judged[0] if judged else None
    how = (f"schema main metric {declared[0]!r} is not a per-instance stat; fallback"
           if declared else "fallback")
    return fallback, how


def _available(run: Run) -> str:
    """Every stat of the run, likely correctness metrics (declared, known or in [0, 1]) first."""
    values: dict[str, list[float]] = defaultdict(list)
    for by_name in run.stats.values():
        for n, v in by_name.items():
            values[n].append(v)
    declared = set(run.schema.main.values()) | set(run.schema.scales) if run.schema else set()

    def likely(n: str) -> bool:
        if n in _NOT_METRICS or n.startswith(("num_", "finish_reason_")):
            return False
        vals = np.array(values[n])
        return n in declared or known_scale(n) is not None or bool(
            np.all((vals >= 0) & (vals <= 1)))

    names = sorted(values)
    first = [n for n in names if likely(n)]
    rest = [n for n in names if not likely(n)]
    likely_part = ", ".join(first) if first else "no likely correctness metric"
    return likely_part + (f"; other stats: {', '.join(rest)}" if rest else "")


_AUGMENTATION = re.compile(r"(?:^|(?<=[:,]))data_augmentation=([^,]*),?")


def _augmentation(run_name: str) -> str:
    """The run name's ``data_augmentation`` value ('' for none)."""
    found = _AUGMENTATION.search(run_name)
    return found.group(1) if found else ""


def _without_augmentation(run_name: str) -> str:
    """The run name without its ``data_augmentation`` argument: the runs it tells apart repeat
    one base run's instances."""
    return _AUGMENTATION.sub("", run_name).rstrip(",")


def _dataset_rows(
    ds: str, runs: list[Run], metric: str | Mapping[str, str],
    threshold: float | Mapping[str, float],
    score_range: tuple[float, float] | Mapping[str, tuple[float, float]] | None,
    include_perturbed: bool, prices: dict[str, Price] | None, report: LoadReport,
) -> list[dict[str, Any]]:
    """Rows of one dataset: one metric and one scale for all its models."""
    names = _names(runs)
    wanted = _lookup(metric, names) or "main"
    choices: dict[str, tuple[str | None, str]] = {}
    for r in runs:
        choices[r.shown] = (wanted, "caller") if wanted != "main" else _default_metric(r)
    chosen = _agree(runs, choices)
    keep: list[Run] = []
    for r in runs:
        own = choices[r.shown][0]
        if chosen is None or chosen not in {n for s in r.stats.values() for n in s}:
            _skip(report, r, _no_metric_reason(r, own, chosen, runs, choices))
            continue
        if own != chosen:
            report.count("runs_rescored_to_dataset_metric")
            report.notes.append(f"{r.shown}: scored by {chosen!r} like the other models of {ds!r} "
                                f"(its own choice was {own!r})")
        elif choices[r.shown][1].startswith("schema main metric"):
            report.notes.append(f"{r.shown}: {choices[r.shown][1]} to {chosen!r}")
        keep.append(r)
    if not keep or chosen is None:
        return []
    scale = _scale(ds, chosen, keep, score_range, names, report)
    if scale is None:
        return []
    t = _lookup(threshold, names)
    t = 0.5 if t is None else float(t)
    rows: list[dict[str, Any]] = []
    for r in keep:
        try:
            rows.extend(_run_rows(r, chosen, scale, t, include_perturbed, prices, report))
        except DataError as exc:
            _skip(report, r.shown, str(exc))
    if rows:
        report.metrics[ds] = chosen
        report.scales[ds] = scale.source
    return rows


def _agree(runs: list[Run], choices: dict[str, tuple[str | None, str]]) -> str | None:
    """The dataset's metric: the choice that most runs can be scored by, then the most common."""
    counts: dict[str, int] = defaultdict(int)
    for c, _ in choices.values():
        if c is not None:
            counts[c] += 1
    if not counts:
        return None
    every = [{n for s in r.stats.values() for n in s} for r in runs]
    return max(counts, key=lambda m: (sum(m in e for e in every), counts[m]))


def _no_metric_reason(run: Run, own: str | None, chosen: str | None, runs: list[Run],
                      choices: dict[str, tuple[str | None, str]]) -> str:
    has = f"has: {_available(run)}"
    if own is None:
        also = f"; the other models of this dataset use {chosen!r}" if chosen else ""
        return f"no correctness metric among per-instance stats ({has}){also}"
    others = sorted({r.model for r in runs if choices[r.shown][0] == chosen})
    if own == chosen or not others:
        return f"metric {chosen!r} is not among this run's per-instance stats ({has})"
    return (f"dataset {run.dataset!r} is scored by {chosen!r} (models {short_repr(others, 200)}); "
            f"this run has no {chosen!r} (it would use {own!r}); {has}")


def _scale(ds: str, metric: str, runs: list[Run], score_range: Any, names: list[str],
           report: LoadReport) -> MetricScale | None:
    """The metric's range: the caller's, the schema's, the package's table, or (last) a guess
    from all models' values of this dataset, which is warned about."""
    rng = _lookup(score_range, names)
    lower = next((r.schema.lower_is_better[metric] for r in runs
                  if r.schema is not None and metric in r.schema.lower_is_better), None)
    known = known_scale(metric)
    if lower is None:
        lower = known.lower_is_better if known is not None else metric in LOWER_IS_BETTER
    if rng is not None:
        lo, hi = parse_range(rng, f"score_range for {ds!r}")
        return MetricScale(lo, hi, lower, source="caller")
    declared = next((r.schema.scales[metric] for r in runs
                     if r.schema is not None and metric in r.schema.scales), None)
    if declared is not None:
        return declared
    if known is not None:
        return MetricScale(known.lo, known.hi, lower, source="known")
    if lower:
        for r in runs:
            _skip(report, r, f"metric {metric!r} is lower-is-better and no range is known; pass "
                             "score_range=(min, max)")
        return None
    values = np.array([v for r in runs for s in r.stats.values() for n, v in s.items()
                       if n == metric])
    guess = guess_scale(values)
    if guess is None:
        finite = values[np.isfinite(values)]
        for r in runs:
            _skip(report, r, f"metric {metric!r} has values in [{finite.min():g}, "
                             f"{finite.max():g}], outside [0, 1], 1–5 and 1–10 and no range is "
                             "declared; name another metric or pass score_range=(min, max)")
        return None
    report.warn(
        f"dataset {ds!r}: the range of metric {metric!r} is declared nowhere (schema, the "
        f"package's table of HELM metrics, score_range=); guessed {guess.describe()} from the "
        "values. Pass score_range= to make it explicit"
    )
    return guess


def _skip(report: LoadReport, run: Run | str, why: str) -> None:
    """Record a skipped run; folder names that are not UTF-8 (surrogate escapes) are made
    printable, so that the CLI and the log can show the reason."""
    shown = run.shown if isinstance(run, Run) else run
    report.skipped.append((clean_text(shown), clean_text(why)))


def _run_rows(run: Run, metric: str, scale: MetricScale, threshold: float,
              include_perturbed: bool, prices: dict[str, Price] | None,
              report: LoadReport) -> list[dict[str, Any]]:
    # Average trials of one (instance, perturbation) before binarising.
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    prompt: dict[tuple[str, str], list[float]] = defaultdict(list)
    completion: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (iid, pert, _trial_index), by_name in run.stats.items():
        if metric in by_name:
            scores[(iid, pert)].append(by_name[metric])
            if "num_prompt_tokens" in by_name:
                prompt[(iid, pert)].append(by_name["num_prompt_tokens"])
            out = by_name.get("num_completion_tokens", by_name.get("num_output_tokens"))
            if out is not None:
                completion[(iid, pert)].append(out)
    if not scores:
        raise DataError(f"metric {metric!r} is not among this run's per-instance stats")
    n_perturbed = sum(1 for _, p in scores if p)
    if include_perturbed:
        report.count("perturbed_included", n_perturbed)
    else:
        report.count("perturbed_skipped", n_perturbed)
        scores = {k: v for k, v in scores.items() if not k[1]}
        if not scores:
            raise DataError(f"metric {metric!r} is present only on perturbed instances")
    report.count("trials_averaged", sum(len(v) - 1 for v in scores.values()))

    values = np.array([_mean(v) for v in scores.values()])
    check_range(values, scale, metric)
    correct = binarize(to_unit(values, scale), threshold)
    price = _price_of(run, prices)

    rows: list[dict[str, Any]] = []
    missing_text = 0
    for ((iid, pert), val), ok in zip(zip(scores, values), correct):
        text = run.texts.get((iid, pert))
        if text is None:
            missing_text += 1
            continue
        p_tok = _mean(prompt[(iid, pert)]) if prompt.get((iid, pert)) else np.nan
        c_tok = _mean(completion[(iid, pert)]) if completion.get((iid, pert)) else np.nan
        row = {
            "dataset": run.dataset,
            "instance_id": f"{iid}|{perturbation_label(pert)}" if pert else iid,
            "text": text,
            "model": run.model,
            "score": float(val),
            "correct": float(ok),
            "metric": metric,
            "split": run.splits.get(iid, ""),
            "logprob": run.logprobs.get((iid, pert), np.nan),
            "prompt_tokens": p_tok,
            "completion_tokens": c_tok,
            "_run": run.path.name,
        }
        if prices is not None:
            row["cost"] = float(price.cost(np.array(p_tok), np.array(c_tok))) if price else np.nan
        rows.append(row)
    if not rows:
        raise DataError(
            "per_instance_stats.json and the instance files share no instance ids "
            f"({len(scores)} scored instances, none with an input text)"
        )
    if missing_text:
        report.count("instances_without_text", missing_text)
        report.notes.append(f"{run.shown}: {missing_text} scored instances had no input text")
    if any(_is_hidden(r["text"]) for r in rows):
        raise DataError("input texts are redacted or encrypted; nothing to embed")
    return rows


def _price_of(run: Run, prices: dict[str, Price] | None) -> Price | None:
    """A price table entry by model name, else by deployment name (``together/…``)."""
    if prices is None:
        return None
    return prices.get(run.model) or (prices.get(run.deployment) if run.deployment else None)


def _report_prices(frame: pd.DataFrame, prices: dict[str, Price], report: LoadReport) -> None:
    if "prompt_tokens" not in frame.columns:
        report.warn("prices were given but these HELM runs have no token counts "
                    "(num_prompt_tokens); no cost can be computed")
        return
    unpriced = sorted(frame.loc[frame["cost"].isna() & frame["prompt_tokens"].notna(),
                                "model"].unique())
    if unpriced:
        report.warn(f"no price for model(s) {short_repr(unpriced, 300)} in the price table "
                    f"({len(prices)} models); their cost is left empty")
    no_tokens = sorted(frame.loc[frame["prompt_tokens"].isna(), "model"].unique())
    if no_tokens:
        report.warn(f"HELM has no token counts for some results of model(s) "
                    f"{short_repr(no_tokens, 300)}; their cost is left empty")


def _warn_grouped(report: LoadReport, what: str, items: Sequence[tuple[str, str]]) -> None:
    """One warning line per reason, with a count and at most three examples, so that 283
    skipped runs make a few readable lines instead of one 10 kB line."""
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for where, why in items:
        groups[_reason_key(why)].append((where, why))
    for members in sorted(groups.values(), key=len, reverse=True):
        shown = list(dict.fromkeys(_short_text(Path(w).name, 100) for w, _ in members))
        examples = ", ".join(shown[:3])
        more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
        report.warn(f"{len(members)} {what}: {_short_text(members[0][1], 300)} "
                    f"(e.g. {examples}{more})")


def _reason_key(why: str) -> str:
    """A skip reason without what differs per run (paths, numbers, quoted names)."""
    why = re.sub(r"\S*/", "", why)  # path components
    why = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", why)
    return re.sub(r"\d+", "N", why)[:120]


def _short_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit - 1]}…"


def _is_hidden(text: str) -> bool:
    return text == "[redacted]" or text.startswith("[encrypted_text_")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
