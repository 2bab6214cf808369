"""Reading HELM run folders: finding the runs under a path, and parsing one run's files
(``run_spec.json`` for the scenario and model, ``per_instance_stats.json`` for the per-instance
metrics, ``scenario_state.json`` / ``instances.json`` for the input texts) into a :class:`Run`.

What the metrics mean, which one to use and how a run becomes store rows is
:mod:`benchroute.data.helm`'s job.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchroute.data._io import read_json
from benchroute.data.helm_schema import HelmSchema, find_schema_files, schema_for
from benchroute.data.metrics import short_repr
from benchroute.data.store import LoadReport
from benchroute.exceptions import DataError

_MAX_TRIALS = 1_000_000
_SURROGATE = re.compile("[\ud800-\udfff]")
# Run-name components that vary with the model, not with the scenario: a run name is
# ``<scenario>:<arg>=<value>,...``, and these args name the model or how it was called.
_MODEL_SPECIFIC_ARGS = frozenset(
    {"model", "model_deployment", "data_augmentation", "stop", "num_output_tokens",
     "increase_max_tokens"}
)
_RUN_FILES = ("run_spec.json", "per_instance_stats.json", "scenario_state.json", "scenario.json",
              "instances.json")
_NOT_RUNS = frozenset({"eval_cache", "scenarios", "scenario_instances", "groups", "releases",
                       "prod_env"})


Key = tuple[str, str, int]  # (instance id, perturbation as canonical JSON or "", trial)


def find_runs(path: Path) -> list[Path]:
    """Run directories at or below ``path`` (a run, a suite, ``runs/`` or ``benchmark_output/``)."""
    if any((path / f).is_file() for f in _RUN_FILES):
        return [path]
    runs = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _NOT_RUNS)
        here = Path(root)
        if here == path:
            continue
        if any(f in files for f in _RUN_FILES) or ("model=" in here.name and not dirs):
            runs.append(here)
            dirs[:] = []
    return runs


def dataset_key(run_name: str) -> str:
    """The run name without its model-specific components, so that models line up."""
    head, sep, tail = run_name.partition(":")
    if not sep:
        return run_name
    keep = [a for a in tail.split(",") if a and a.split("=", 1)[0] not in _MODEL_SPECIFIC_ARGS]
    return f"{head}:{','.join(keep)}" if keep else head


@dataclass
class Run:
    path: Path
    shown: str
    dataset: str
    scenario: str
    groups: tuple[str, ...]
    model: str
    deployment: str
    stats: dict[Key, dict[str, float]]
    texts: dict[tuple[str, str], str]
    splits: dict[str, str]
    logprobs: dict[tuple[str, str], float]
    schema: HelmSchema | None


@dataclass
class Schemas:
    """Schema files read once per load: per file, and the files that apply per suite folder."""

    parsed: dict[Path, HelmSchema | None] = field(default_factory=dict)
    files: dict[Path, list[Path]] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def for_run(self, run: Path, root: Path) -> HelmSchema | None:
        files = self.files.get(run.parent)
        if files is None:
            files = self.files[run.parent] = find_schema_files(run, root)
        return schema_for(files, self.parsed, self.problems)


def parse_run(run: Path, root: Path, report: LoadReport, schemas: Schemas) -> Run:
    for required in ("run_spec.json", "per_instance_stats.json"):
        if not (run / required).is_file():
            raise DataError(f"incomplete run: {required} is missing")
    spec_path = run / "run_spec.json"
    spec = read_json(spec_path, dict)
    adapter = spec.get("adapter_spec")
    if not isinstance(adapter, dict):
        raise DataError(f"{spec_path}: field 'adapter_spec' is missing or not an object")
    name = clean_text(spec["name"]) if isinstance(spec.get("name"), str) else clean_text(run.name)
    model = adapter.get("model")
    if not isinstance(model, str) or not model:
        model = _model_from_run_name(name)
        if model is None:
            raise DataError(f"{spec_path}: no 'adapter_spec.model' and no model= in name")
    deployment = adapter.get("model_deployment")
    groups = spec.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise DataError(f"{spec_path}: field 'groups' must be a list of strings, got "
                        f"{short_repr(groups)}")
    stats = _merged_stats(run / "per_instance_stats.json")
    if not stats:
        raise DataError(f"{run / 'per_instance_stats.json'}: no per-instance entries (an empty "
                        "list)")
    texts, splits, logprobs = _instance_texts(run, report)
    schema = schemas.for_run(run, root)
    return Run(
        path=run, shown=shown_name(run, root), dataset=dataset_key(name),
        scenario=name.partition(":")[0], groups=tuple(clean_text(g) for g in groups),
        model=clean_text(model), deployment=deployment if isinstance(deployment, str) else "",
        stats=stats, texts=texts, splits=splits,
        logprobs=logprobs, schema=schema,
    )


def shown_name(run: Path, root: Path) -> str:
    """The run as the user would name it: relative to the path they passed."""
    return clean_text(str(Path(root.name) / run.relative_to(root)) if run != root else str(run))


def _model_from_run_name(name: str) -> str | None:
    for part in name.partition(":")[2].split(","):
        k, _, v = part.partition("=")
        if k == "model" and v:
            return v.replace("_", "/", 1)
    return None


def clean_text(text: str) -> str:
    """Lone surrogates (from ``\\udXXX`` escapes in JSON) cannot be encoded, hashed or saved:
    each becomes U+FFFD, the replacement character."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _pert_key(p: Any, where: str) -> str:
    if p is None:
        return ""
    if not isinstance(p, dict):
        raise DataError(f"{where} field 'perturbation' must be an object, got {short_repr(p)}")
    return json.dumps(p, sort_keys=True) if p else ""


def perturbation_label(pert: str) -> str:
    p = json.loads(pert)
    label = clean_text(str(p.get("name", "perturbed")))[:80]
    return f"{label}:{short_repr(p['seed'], 40)}" if "seed" in p else label


def _trial(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_TRIALS:
        raise DataError(f"{where} field 'train_trial_index' must be an integer in "
                        f"[0, {_MAX_TRIALS}), got {short_repr(value)}")
    return value


def _instance_id(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise DataError(f"{where} field {field!r} must be a non-empty string, got "
                        f"{short_repr(value)}")
    return clean_text(value)


def _merged_stats(path: Path) -> dict[Key, dict[str, float]]:
    """Per-instance stats merged by key: one key appears once per Metric class in HELM."""
    entries = read_json(path, list)
    merged: dict[Key, dict[str, float]] = defaultdict(dict)
    for i, entry in enumerate(entries):
        where = f"{path}: entry {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("instance_id"), str):
            raise DataError(f"{where} has no string 'instance_id'")
        stats = entry.get("stats")
        if not isinstance(stats, list):
            raise DataError(f"{where} field 'stats' is not a list")
        key = (_instance_id(entry["instance_id"], where, "instance_id"),
               _pert_key(entry.get("perturbation"), where),
               _trial(entry.get("train_trial_index"), where))
        for stat in stats:
            name = stat.get("name") if isinstance(stat, dict) else None
            if not isinstance(name, dict) or not isinstance(name.get("name"), str):
                raise DataError(f"{where} has a stat without a string 'name.name'")
            count = stat.get("count", 1)
            if count == 0 or stat.get("mean") is None:
                continue
            mean = stat["mean"]
            if not isinstance(mean, (int, float)) or isinstance(mean, bool):
                raise DataError(f"{where} stat {short_repr(clean_text(name['name']), 60)} has a "
                                f"non-numeric mean {short_repr(mean)}")
            try:
                merged[key][clean_text(name["name"])] = float(mean)
            except OverflowError as exc:
                raise DataError(f"{where} stat {short_repr(clean_text(name['name']), 60)} has a mean "
                                f"too large for a float ({short_repr(mean)})") from exc
    return dict(merged)


def _text_of(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"]
    return None


def _object(value: Any, where: str, field: str, required: bool = False) -> dict[str, Any]:
    """``value`` when it is an object; ``{}`` when absent and optional; else an error naming
    the file and field (HELM leaves out None fields but never writes a non-object there)."""
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise DataError(f"{where} field {field!r} must be an object, got {short_repr(value)}")
    return value


def _instance_texts(run: Path, report: LoadReport) -> tuple[
        dict[tuple[str, str], str], dict[str, str], dict[tuple[str, str], float]]:
    """(id, perturbation) → input text, id → split, and (id, perturbation) → first completion's
    log-probability (joint/generation runs), from the richest instance file there."""
    texts: dict[tuple[str, str], str] = {}
    splits: dict[str, str] = {}
    logprobs: dict[tuple[str, str], float] = {}
    instances: list[tuple[str, Any]] = []
    if (run / "scenario_state.json").is_file():
        path = run / "scenario_state.json"
        states = read_json(path, dict).get("request_states")
        if not isinstance(states, list):
            raise DataError(f"{path}: field 'request_states' is not a list")
        for i, rs in enumerate(states):
            where = f"{path}: request_states[{i}]"
            rs = _object(rs, where, "request_states[]", required=True)
            inst = _object(rs.get("instance"), where, "instance", required=True)
            instances.append((where, inst))
            result = _object(rs.get("result"), where, "result")
            comps = result.get("completions", [])
            if not isinstance(comps, list):
                raise DataError(f"{where} field 'result.completions' must be a list, got "
                                f"{short_repr(comps)}")
            if not comps or rs.get("reference_index") is not None:
                continue
            first = _object(comps[0], where, "result.completions[0]", required=True)
            lp = first.get("logprob")
            if isinstance(lp, (int, float)) and not isinstance(lp, bool) and isinstance(
                    inst.get("id"), str):
                key = (clean_text(inst["id"]), _pert_key(inst.get("perturbation"), where))
                logprobs.setdefault(key, float(lp))
    elif (run / "instances.json").is_file():
        path = run / "instances.json"
        instances = [(f"{path}: instance {i}", inst)
                     for i, inst in enumerate(read_json(path, list))]
    elif (run / "display_requests.json").is_file():
        path = run / "display_requests.json"
        for i, req in enumerate(read_json(path, list)):
            where = f"{path}: entry {i}"
            req = _object(req, where, "entry", required=True)
            if req.get("instance_id") is None:
                continue
            iid = _instance_id(req.get("instance_id"), where, "instance_id")
            prompt = _text_of(_object(req.get("request"), where, "request").get("prompt"))
            if prompt is not None:
                texts.setdefault((iid, _pert_key(req.get("perturbation"), where)), clean_text(prompt))
        return texts, splits, logprobs
    else:
        raise DataError("no scenario_state.json, instances.json or display_requests.json")
    for where, inst in instances:
        inst = _object(inst, where, "instance", required=True)
        if inst.get("id") is None:
            report.count("instances_without_id")
            continue
        iid = _instance_id(inst.get("id"), where, "id")
        text = _text_of(inst.get("input"))
        if text is not None:
            texts.setdefault((iid, _pert_key(inst.get("perturbation"), where)), clean_text(text))
            split = inst.get("split", "")
            splits.setdefault(iid, clean_text(split) if isinstance(split, str) else "")
    return texts, splits, logprobs
