"""``tidegate --version`` reports the installed distribution's version."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import gateway
from gateway.cli.main import main

ROOT = Path(__file__).resolve().parents[3]


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert gateway.__version__ == declared
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tidegate {declared}"
