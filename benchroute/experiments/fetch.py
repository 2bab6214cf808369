"""Download public HELM per-run outputs over HTTPS, resumably (HELM_FORMAT.md §8).

Layout: ``<base>/runs/<suite>/<url-encoded run name>/<file>.json`` and
``<base>/releases/<release>/runs_to_run_suites.json``, where ``<base>`` is e.g.
``https://storage.googleapis.com/crfm-helm-public/lite/benchmark_output``.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from benchroute.exceptions import BenchrouteError

logger = logging.getLogger(__name__)

REQUIRED = ("run_spec.json", "per_instance_stats.json")
# inputs: instances.json is much smaller than scenario_state.json and enough for the loader
TEXT_FILES = ("instances.json", "scenario_state.json")


def _get(url: str, timeout: float) -> bytes | None:
    """The body, or None on 404; other failures raise with the URL."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http(s) only)
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise BenchrouteError(f"GET {url} failed: HTTP {exc.code}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise BenchrouteError(f"GET {url} failed: {exc}") from exc


def _check_url(base: str) -> str:
    if not base.startswith(("http://", "https://")):
        raise BenchrouteError(f"base URL must start with http:// or https://, got {base!r}")
    return base.rstrip("/")


def release_runs(base_url: str, release: str, timeout: float = 60) -> dict[str, str]:
    """``{run name: suite}`` from a release's ``runs_to_run_suites.json``."""
    base = _check_url(base_url)
    url = f"{base}/releases/{quote(release)}/runs_to_run_suites.json"
    body = _get(url, timeout)
    if body is None:
        raise BenchrouteError(f"{url}: not found (is the release name right?)")
    try:
        mapping = json.loads(body)
    except json.JSONDecodeError as exc:
        raise BenchrouteError(f"{url}: invalid JSON ({exc.msg})") from exc
    if not isinstance(mapping, dict):
        raise BenchrouteError(f"{url}: expected a JSON object of run name -> suite")
    return {str(k): str(v) for k, v in mapping.items()}


def fetch_helm_runs(base_url: str, runs: Mapping[str, str], dest: str | os.PathLike[str],
                    timeout: float = 60, progress: bool = True) -> dict[str, int]:
    """Download ``{run name: suite}`` runs into ``dest/runs/<suite>/<run>/`` for :func:`load_helm`.

    Files already on disk are skipped, and each file is written to a ``.part`` name and renamed,
    so an interrupted fetch resumes where it stopped. Returns counts of files ``downloaded``,
    ``skipped`` (already there) and ``missing`` (runs lacking a required file are reported).
    """
    from tqdm.auto import tqdm

    base = _check_url(base_url)
    root = Path(dest) / "runs"
    counts = {"downloaded": 0, "skipped": 0, "missing": 0}
    for name, suite in tqdm(sorted(runs.items()), desc="HELM runs", unit="run", disable=not progress):
        folder = root / suite / name
        folder.mkdir(parents=True, exist_ok=True)
        remote = f"{base}/runs/{quote(suite)}/{quote(name, safe='')}"
        for group in ([f] for f in REQUIRED):
            _fetch_first(remote, folder, group, timeout, counts)
        _fetch_first(remote, folder, list(TEXT_FILES), timeout, counts)
    return counts


def _fetch_first(remote: str, folder: Path, candidates: list[str], timeout: float,
                 counts: dict[str, int]) -> None:
    """Fetch the first of ``candidates`` the server has (skip if one is already on disk)."""
    if any((folder / c).is_file() for c in candidates):
        counts["skipped"] += 1
        return
    for name in candidates:
        body = _get(f"{remote}/{name}", timeout)
        if body is None:
            continue
        part = folder / f"{name}.part"
        part.write_bytes(body)
        os.replace(part, folder / name)
        counts["downloaded"] += 1
        return
    counts["missing"] += 1
    logger.warning("%s: none of %s on the server", remote, candidates)
