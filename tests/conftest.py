"""Shared fixtures: the real data in ../shared (unpacked once per session) and a fast encoder."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

# A Ray that a test starts listens on loopback only (Ray's default is the address other machines
# reach it at). The variable is Ray's own, read when ray is first imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# Property tests draw the same examples on every run (CI must not pass or fail by chance), and
# keep no example database in the checkout. BENCHROUTE_HYPOTHESIS=explore draws new ones each
# run, for a campaign that looks for more.
try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # the property tests skip themselves without it
    pass
else:
    _hypothesis_settings.register_profile("benchroute", derandomize=True, database=None,
                                          deadline=None)
    _hypothesis_settings.register_profile("explore", derandomize=False, deadline=None)
    _hypothesis_settings.load_profile(
        "explore" if os.environ.get("BENCHROUTE_HYPOTHESIS") == "explore" else "benchroute")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BENCHROUTE_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
EMBEDDINGS = SHARED / "embeddings"


@pytest.fixture(scope="session", autouse=True)
def _temporary_home(tmp_path_factory: pytest.TempPathFactory):
    """The tests never write into the user's ``$BENCHROUTE_HOME`` (embeddings, routers): they
    get a temporary one whose ``models/`` is the real one's, so the tests of the real model
    find it installed (they read it; installing and exporting are tested in folders of
    their own)."""
    from benchroute.embedding.install import HOME_ENV, benchroute_home

    real = benchroute_home()
    home = tmp_path_factory.mktemp("benchroute-home")
    if (real / "models").is_dir():
        (home / "models").symlink_to(real / "models", target_is_directory=True)
    before = os.environ.get(HOME_ENV)
    os.environ[HOME_ENV] = str(home)
    yield home
    if before is None:
        os.environ.pop(HOME_ENV, None)
    else:
        os.environ[HOME_ENV] = before


def _unpack(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = DATA / name
    if not folder.is_dir():
        pytest.skip(f"shared data {folder} is not available (set BENCHROUTE_SHARED)")
    dest = tmp_path_factory.mktemp(name)
    for archive in sorted(folder.glob("*.tar.xz")):
        with tarfile.open(archive, "r:xz") as tar:
            tar.extractall(dest, filter="data")
    return dest


@pytest.fixture(scope="session")
def helm_mmlu_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpack("helm_mmlu_llama3", tmp_path_factory) / "runs"


@pytest.fixture(scope="session")
def helm_fixtures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpack("helm_offline_fixtures", tmp_path_factory)


@pytest.fixture(scope="session")
def routerdc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpack("routerdc", tmp_path_factory)


@pytest.fixture(scope="session")
def routellm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpack("routellm_evals", tmp_path_factory)


@pytest.fixture(scope="session")
def helm_mmlu(helm_mmlu_dir: Path):
    from benchroute import load_helm

    return load_helm(helm_mmlu_dir)


@pytest.fixture(scope="session")
def shared_embeddings() -> Path:
    if not EMBEDDINGS.is_dir():
        pytest.skip(f"shared embeddings {EMBEDDINGS} are not available")
    return EMBEDDINGS


@pytest.fixture(scope="session")
def mpnet_installed() -> None:
    """Skip unless the all-mpnet-base-v2 weights are installed (CI installs them)."""
    from benchroute.embedding.install import installed_model
    from benchroute.exceptions import ModelNotInstalledError

    try:
        installed_model()
    except ModelNotInstalledError as exc:
        pytest.skip(f"{exc} (CI installs it; run `benchroute model install`)")
