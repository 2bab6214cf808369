"""`benchroute --version` prints the package version and exits 0."""

from __future__ import annotations

import pytest

import benchroute
from benchroute.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"benchroute {benchroute.__version__}"
