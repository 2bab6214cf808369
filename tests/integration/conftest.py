"""Fixtures shared by the integration modules."""

from __future__ import annotations

import pytest

from benchroute.router import Router
from tests.unit.test_router import synthetic


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory):
    """A saved router of the synthetic pool and the hashing encoder, for the jobs that load a
    router folder in other processes."""
    folder = tmp_path_factory.mktemp("saved-router")
    data, _ = synthetic(5)
    Router(alphas=(0.0, 0.2), encoder="hashing-64-12",
           cache_dir=str(folder / "cache")).fit(data).save(folder / "r")
    return folder / "r"
