"""Build small HELM suites on disk, laid out as ``helm-run``/``helm-summarize`` write them
(shared HELM_FORMAT.md §2), for the HELM loader's tests."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def stat(name: str, mean: Any, split: str = "test") -> dict[str, Any]:
    return {"name": {"name": name, "split": split}, "count": 1, "sum": mean, "mean": mean}


def write_run(
    suite: Path,
    scenario: str,
    model: str,
    scores: Mapping[str, Mapping[str, Any]],
    texts: Mapping[str, str] | None = None,
    groups: Sequence[str] | None = None,
    deployment: str | None = None,
    instance_file: str = "scenario_state.json",
    raw: Mapping[str, str] | None = None,
) -> Path:
    """One run: ``scores`` maps instance id to ``{stat name: mean}``; ``texts`` id to input
    (default ``"question <id>"``). ``raw`` replaces whole files with the given text."""
    name = f"{scenario},model={model.replace('/', '_')}" if ":" in scenario else \
        f"{scenario}:model={model.replace('/', '_')}"
    run = suite / name
    run.mkdir(parents=True)
    adapter: dict[str, Any] = {"method": "generation", "model": model}
    if deployment:
        adapter["model_deployment"] = deployment
    spec = {"name": name, "scenario_spec": {"class_name": "x.Scenario", "args": {}},
            "adapter_spec": adapter, "metric_specs": [],
            "groups": list(groups) if groups is not None else [scenario.partition(":")[0]]}
    stats = [{"instance_id": iid, "train_trial_index": 0,
              "stats": [stat(k, v) for k, v in by_name.items()]}
             for iid, by_name in scores.items()]
    texts = dict(texts or {})
    instances = [{"id": iid, "input": {"text": texts.get(iid, f"question {iid}")},
                  "references": [], "split": "test"} for iid in scores]
    files: dict[str, Any] = {"run_spec.json": spec, "per_instance_stats.json": stats}
    if instance_file == "scenario_state.json":
        files["scenario_state.json"] = {"adapter_spec": adapter, "request_states": [
            {"instance": inst, "train_trial_index": 0,
             "request": {"model": model, "prompt": inst["input"]["text"]},
             "result": {"success": True, "completions": [{"text": " A", "logprob": -0.5,
                                                          "tokens": []}]}}
            for inst in instances]}
    elif instance_file == "instances.json":
        files["instances.json"] = instances
    for fname, obj in files.items():
        (run / fname).write_text(json.dumps(obj))
    for fname, text in (raw or {}).items():
        (run / fname).write_text(text, encoding="utf-8", errors="surrogatepass")
    return run


def write_schema(folder: Path, main: Mapping[str, str],
                 metrics: Sequence[Mapping[str, Any]] = (), name: str = "schema.json") -> Path:
    """A schema with one run group per ``main`` entry (group → main metric), each with the
    usual ``accuracy`` metric group that refers to ``${main_name}``."""
    schema = {
        "metrics": [{"name": "num_prompt_tokens", "display_name": "# prompt tokens"},
                    *metrics],
        "perturbations": [],
        "metric_groups": [{"name": "accuracy", "display_name": "Accuracy",
                           "metrics": [{"name": "${main_name}", "split": "${main_split}"}]}],
        "run_groups": [{"name": "core_scenarios", "environment": {}, "metric_groups": [],
                        "subgroups": list(main)}]
        + [{"name": g, "metric_groups": ["accuracy"],
            "environment": {"main_name": m, "main_split": "test"}} for g, m in main.items()],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(schema))
    return path
