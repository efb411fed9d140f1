"""Shared fixtures: a private Mosquitto per test session (restartable), a private
PostgreSQL per test session with a fresh database per test, temp dirs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import MOSQUITTO, Broker
from tests.support.postgres import PostgresServer, PostgresUnavailable


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL (initdb into a temp dir, a free loopback port), one per pytest
    process. Tests that stop or kill it must start it again before they end."""
    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's PostgreSQL, dropped afterwards."""
    name = postgres.new_database_name(request.node.name)
    url = postgres.create_database(name)
    yield url
    if postgres.postmaster_pid() is not None:
        postgres.drop_database(name)
