"""HELM's ``schema.json``: each run group's main metric and each metric's declared direction.

``helm-summarize`` writes the schema it used beside the runs (``runs/<suite>/schema.json``, and
``releases/<release>/schema.json`` for a release). A run group names its main metric in
``environment.main_name`` (and its split in ``main_split``); metric groups refer to it as
``${main_name}``; a run belongs to run groups through ``run_spec.json``'s ``groups``. Reading
the schema is what lets a judge-scored or rubric-scored suite load with the metric its own
leaderboard uses, instead of the first exact-match stat that happens to be there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchroute.data._io import read_json
from benchroute.data.metrics import MetricScale, parse_range
from benchroute.exceptions import DataError

logger = logging.getLogger(__name__)

__all__ = ["HelmSchema", "read_schema", "find_schema_files", "schema_for"]

_NONE = frozenset({"", "none", "null"})


@dataclass(frozen=True)
class HelmSchema:
    """The parts of one or more schema files that decide labels.

    ``main`` maps a run group to its main metric, ``splits`` to its main split; ``scales`` holds
    metrics whose schema entry declares a range (``min``/``max``) and ``lower_is_better`` the
    direction HELM declares for each metric; ``sources`` names the files read.
    """

    main: dict[str, str] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    scales: dict[str, MetricScale] = field(default_factory=dict)
    lower_is_better: dict[str, bool] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def main_metrics(self, groups: Sequence[str]) -> list[str]:
        """Main metrics of a run's groups, most specific first.

        HELM lists a run's general group before its specific one (``synthetic_reasoning``,
        ``synthetic_reasoning_natural``), so the groups are read from the last.
        """
        out: list[str] = []
        for g in reversed(groups):
            m = self.main.get(g)
            if m is not None and m not in out:
                out.append(m)
        return out

    def merged(self, other: HelmSchema) -> HelmSchema:
        """``self`` completed by ``other``: the nearer schema file wins on every name."""
        return HelmSchema(
            main={**other.main, **self.main},
            splits={**other.splits, **self.splits},
            scales={**other.scales, **self.scales},
            lower_is_better={**other.lower_is_better, **self.lower_is_better},
            sources=self.sources + tuple(s for s in other.sources if s not in self.sources),
        )


def read_schema(path: Path) -> tuple[HelmSchema, list[str]]:
    """Parse one schema file; malformed entries are left out and described in the second value.

    Raises
    ------
    DataError
        The file is not JSON, not an object, or nests too deeply to parse.
    """
    raw = read_json(path, dict)
    problems: list[str] = []
    main: dict[str, str] = {}
    splits: dict[str, str] = {}
    for i, g in _named_entries(raw, "run_groups", path, problems):
        env = g.get("environment", {})
        if not isinstance(env, dict):
            problems.append(f"{path}: run_groups[{i}] ({g['name']}) field 'environment' is not "
                            "an object")
            continue
        name = _resolve(env.get("main_name"), env)
        if name is not None:
            main[g["name"]] = name
        split = _resolve(env.get("main_split"), env)
        if split is not None:
            splits[g["name"]] = split
        if g["name"] not in main:
            # No environment.main_name: a metric group of this run group may still name the
            # metric outright (``accuracy: [{name: exact_match}]``).
            named = _accuracy_metric(raw.get("metric_groups"), g.get("metric_groups"), env)
            if named is not None:
                main[g["name"]] = named
    scales: dict[str, MetricScale] = {}
    lower: dict[str, bool] = {}
    for i, m in _named_entries(raw, "metrics", path, problems):
        lib = m.get("lower_is_better")
        if isinstance(lib, bool):
            lower[m["name"]] = lib
        if "min" in m or "max" in m:
            try:
                lo, hi = parse_range((m.get("min"), m.get("max")), f"{path}: metrics[{i}] min/max")
            except DataError as exc:
                problems.append(str(exc))
                continue
            scales[m["name"]] = MetricScale(lo, hi, bool(lib), source="declared")
    return HelmSchema(main, splits, scales, lower, (str(path),)), problems


def _named_entries(raw: dict[str, Any], field: str, path: Path,
                   problems: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """The objects with a string ``name`` in the list ``raw[field]``; the others are problems."""
    items = raw.get(field, [])
    if not isinstance(items, list):
        problems.append(f"{path}: field {field!r} is not a list")
        return []
    out = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            out.append((i, item))
        else:
            problems.append(f"{path}: {field}[{i}] has no string 'name'")
    return out


def _resolve(value: Any, env: dict[str, Any]) -> str | None:
    """A schema string with ``${key}`` references to the run group's environment resolved."""
    for _ in range(4):  # references may chain; a cycle stops here
        if not isinstance(value, str):
            return None
        if value.startswith("${") and value.endswith("}"):
            value = env.get(value[2:-1])
            continue
        break
    if not isinstance(value, str) or value.strip().lower() in _NONE or "${" in value:
        return None
    return value


def _accuracy_metric(metric_groups: Any, names: Any, env: dict[str, Any]) -> str | None:
    """The first metric of the run group's ``accuracy`` metric group, references resolved."""
    if not isinstance(metric_groups, list) or not isinstance(names, list):
        return None
    for mg in metric_groups:
        if not isinstance(mg, dict) or mg.get("name") != "accuracy" or "accuracy" not in names:
            continue
        for m in mg.get("metrics") or []:
            if isinstance(m, dict):
                resolved = _resolve(m.get("name"), env)
                if resolved is not None:
                    return resolved
    return None


def find_schema_files(run: Path, root: Path) -> list[Path]:
    """Schema files that apply to ``run``, nearest first.

    Looked for in the run's suite folder and each folder above it up to ``root`` (or the suite
    folder when ``root`` is the run itself): ``schema.json``, then ``schema_*.json``, then
    ``releases/*/schema.json`` of a ``benchmark_output`` folder.
    """
    folders: list[Path] = []
    here = run.parent
    stop = root if root != run else run.parent
    while True:
        folders.append(here)
        if here == stop or here.parent == here or stop not in here.parents:
            break
        here = here.parent
    found: list[Path] = []
    for folder in folders:
        found.extend(_schema_files_in(folder))
        if (folder / "releases").is_dir():
            for rel in sorted((folder / "releases").iterdir()):
                found.extend(_schema_files_in(rel))
    return found


def _schema_files_in(folder: Path) -> Iterable[Path]:
    if (folder / "schema.json").is_file():
        yield folder / "schema.json"
    yield from sorted(p for p in folder.glob("schema_*.json") if p.is_file())


def schema_for(files: Sequence[Path], cache: dict[Path, HelmSchema | None],
               problems: list[tuple[str, str]]) -> HelmSchema | None:
    """The schemas in ``files`` merged, nearest first; unreadable files are skipped into
    ``problems`` as ``(file, message)`` (the runs still load, with the fallback metric rule)."""
    out: HelmSchema | None = None
    for f in files:
        if f not in cache:
            try:
                schema, bad = read_schema(f)
            except DataError as exc:
                problems.append((str(f), f"{exc}; this schema is ignored"))
                cache[f] = None
                continue
            problems.extend((str(f), b) for b in bad)
            cache[f] = schema
        s = cache[f]
        if s is not None:
            out = s if out is None else out.merged(s)
    return out
