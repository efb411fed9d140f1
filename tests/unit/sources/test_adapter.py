"""The private-API adapter refuses libraries it was not checked against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from gateway.cli.main import main
from gateway.errors import IncompatibleLibrary
from gateway.sources import _paho_adapter as adapter


async def test_installed_libraries_are_compatible() -> None:
    adapter.check_compatible()


@pytest.fixture
def paho_2_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """paho 2.1 named the keepalive timestamp ``_last_msg_in``: writing
    ``_last_bytes_received`` there silently does nothing."""
    original = paho.Client.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._last_msg_in = self._last_bytes_received
        del self._last_bytes_received

    monkeypatch.setattr(paho.Client, "__init__", init)


@pytest.mark.usefixtures("paho_2_1")
async def test_a_missing_private_attribute_refuses_to_start() -> None:
    with pytest.raises(IncompatibleLibrary) as info:
        adapter.check_compatible()
    message = str(info.value)
    assert "paho Client._last_bytes_received" in message
    assert "paho-mqtt>=2.2,<2.3" in message


@pytest.mark.usefixtures("paho_2_1")
def test_tidegate_run_refuses_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "db"}"\n[api]\nenabled = false\n')
    assert main(["run", "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "_last_bytes_received" in err[0], err
    assert not (tmp_path / "db").exists()  # refused before opening anything
