"""Shared fixtures: a private Mosquitto per test session (restartable), temp dirs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import MOSQUITTO, Broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A private Mosquitto on a free loopback port, persistence on."""
    if not Path(MOSQUITTO).exists():
        pytest.fail(
            "mosquitto binary not found: run `make test` (it installs it) or apt-get install mosquitto"
        )
    with Broker(tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of the test's own, for tests that restart or kill it."""
    with Broker(tmp_path / "mosquitto") as running:
        yield running
