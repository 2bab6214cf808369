"""Download public HELM per-run outputs over HTTPS, resumably.

HELM publishes every run of a release in a public Google Cloud Storage bucket; a run is a folder
of JSON files (``run_spec.json``, ``scenario_state.json``, ``per_instance_stats.json``, ...), the
same files ``helm-run`` writes locally.

Layout: ``<base>/runs/<suite>/<url-encoded run name>/<file>.json`` and
``<base>/releases/<release>/runs_to_run_suites.json``, where ``<base>`` is e.g.
``https://storage.googleapis.com/crfm-helm-public/lite/benchmark_output``.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from benchroute._persist import parse_json
from benchroute.exceptions import BenchrouteError

logger = logging.getLogger(__name__)

REQUIRED = ("run_spec.json", "per_instance_stats.json")
# inputs: instances.json is much smaller than scenario_state.json and enough for the loader
TEXT_FILES = ("instances.json", "scenario_state.json")


# A hostile or broken server could send an endless body; HELM's largest per-run files
# (scenario_state.json) are a few hundred MB.
MAX_FILE_BYTES = 2 << 30


def _get(url: str, timeout: float, max_bytes: int = MAX_FILE_BYTES) -> bytes | None:
    """The body (at most ``max_bytes``), or None on 404; other failures raise with the URL."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http(s) only)
            body = bytes(resp.read(max_bytes + 1))
            if len(body) > max_bytes:
                raise BenchrouteError(f"GET {url}: the body is larger than {max_bytes} bytes; "
                                      "refused (raise max_file_bytes if the server is trusted)")
            return body
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


# A name the server sends becomes one folder name: no separators, no parent/current references,
# no drive letter, no control characters (NUL included), and not so long a file system refuses it.
# Colons elsewhere are allowed: HELM run names are "mmlu:subject=...,model=...".
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]|^[A-Za-z]:")


def safe_component(name: object, what: str) -> str:
    """``name`` if it is a single safe path component, else a :class:`BenchrouteError`.

    Run and suite names come from the server, which is not trusted: a name such as ``../x`` or
    ``/etc`` would otherwise put downloaded files outside the destination folder.
    """
    if not isinstance(name, str):
        raise BenchrouteError(f"{what} {name!r} is a {type(name).__name__}, expected a string")
    bad = _UNSAFE.search(name)
    why = None
    if not name:
        why = "is empty"
    elif name in (".", ".."):
        why = "is a relative reference"
    elif bad:
        why = f"contains {bad.group()!r}"
    elif name != name.strip():
        why = "has leading or trailing spaces"
    elif any("\ud800" <= c <= "\udfff" for c in name):
        why = "contains a lone surrogate"
    elif len(name.encode("utf-8")) > 255:
        why = "is longer than 255 bytes"
    if why is not None:
        raise BenchrouteError(f"{what} {name!r} {why}; expected a single folder name "
                              "(no '/', '\\', drive letter, '..' or control characters)")
    return name


def release_runs(base_url: str, release: str, timeout: float = 60) -> dict[str, str]:
    """``{run name: suite}`` from a release's ``runs_to_run_suites.json``."""
    base = _check_url(base_url)
    url = f"{base}/releases/{quote(release)}/runs_to_run_suites.json"
    body = _get(url, timeout)
    if body is None:
        raise BenchrouteError(f"{url}: not found (is the release name right?)")
    mapping = parse_json(body, url)
    if not isinstance(mapping, dict):
        raise BenchrouteError(f"{url}: expected a JSON object of run name -> suite")
    for name, suite in mapping.items():
        if not isinstance(suite, str):
            raise BenchrouteError(f"{url}: run {name!r} has suite {suite!r}, expected a string")
    return dict(mapping)


def fetch_helm_runs(base_url: str, runs: Mapping[str, str], dest: str | os.PathLike[str],
                    timeout: float = 60, progress: bool = True,
                    max_file_bytes: int = MAX_FILE_BYTES) -> dict[str, int]:
    """Download ``{run name: suite}`` runs into ``dest/runs/<suite>/<run>/`` for :func:`load_helm`.

    Files already on disk are skipped, and each file is written to a ``.part`` name and renamed,
    so an interrupted fetch resumes where it stopped. Returns counts of files ``downloaded``,
    ``skipped`` (already there) and ``missing`` (runs lacking a required file are reported).

    Every run and suite name must be a single safe folder name (see :func:`safe_component`);
    the names are checked before anything is downloaded, so a hostile mapping writes nothing.
    A file larger than ``max_file_bytes`` (default 2 GiB) is refused before it is written.
    """
    from tqdm.auto import tqdm

    base = _check_url(base_url)
    root = Path(dest) / "runs"
    if not isinstance(runs, Mapping):
        raise BenchrouteError(f"runs must map run name -> suite, got a {type(runs).__name__}")
    for name, suite in runs.items():
        safe_component(name, "run name")
        safe_component(suite, f"suite of run {name!r}")
    counts = {"downloaded": 0, "skipped": 0, "missing": 0}
    for name, suite in tqdm(sorted(runs.items()), desc="HELM runs", unit="run", disable=not progress):
        folder = root / suite / name
        folder.mkdir(parents=True, exist_ok=True)
        remote = f"{base}/runs/{quote(suite)}/{quote(name, safe='')}"
        for group in ([f] for f in REQUIRED):
            _fetch_first(remote, folder, group, timeout, counts, max_file_bytes)
        _fetch_first(remote, folder, list(TEXT_FILES), timeout, counts, max_file_bytes)
    return counts


def _fetch_first(remote: str, folder: Path, candidates: list[str], timeout: float,
                 counts: dict[str, int], max_bytes: int = MAX_FILE_BYTES) -> None:
    """Fetch the first of ``candidates`` the server has (skip if one is already on disk)."""
    if any((folder / c).is_file() for c in candidates):
        counts["skipped"] += 1
        return
    for name in candidates:
        body = _get(f"{remote}/{name}", timeout, max_bytes)
        if body is None:
            continue
        part = folder / f"{name}.part"
        part.write_bytes(body)
        os.replace(part, folder / name)
        counts["downloaded"] += 1
        return
    counts["missing"] += 1
    logger.warning("%s: none of %s on the server", remote, candidates)
