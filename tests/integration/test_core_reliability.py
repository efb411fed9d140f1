"""The core guarantees against a real Mosquitto and a real gateway process, with exact
counts: kill -9 in flight, downtime, broker restarts, SIGTERM under load."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.support import (
    Broker,
    count,
    db_rows,
    iter_json_messages,
    publish_many,
    start_gateway,
    wait_for,
)

pytestmark = pytest.mark.integration


def assert_exactly(db: Path, n: int, sensors: int = 10) -> None:
    assert count(db) == n
    assert count(db, "dead_letters") == 0
    # Every message's value is unique: a duplicate would need a second (series, ts) key.
    assert db_rows(db, "SELECT count(DISTINCT value) FROM readings")[0][0] == n
    assert db_rows(db, "SELECT count(*) FROM series")[0][0] == sensors


def test_kill9_in_flight_then_restart_stores_everything_exactly_once(
    fresh_broker: Broker, tmp_path: Path
) -> None:
    n = 8000
    gateway = start_gateway(tmp_path, fresh_broker)
    db = gateway.db
    assert db is not None
    try:
        publisher = threading.Thread(
            target=publish_many, args=(fresh_broker.port, list(iter_json_messages(n)))
        )
        publisher.start()
        wait_for(lambda: count(db) >= 1500, 60, what="first readings stored")
        gateway.kill9()  # messages are delivered and queued but not yet committed right now
        killed_at = count(db)
        publisher.join(120)
        assert not publisher.is_alive()
        assert killed_at < n, "the kill came too late to test anything"
        gateway.start()
        wait_for(lambda: count(db) >= n, 90, what=f"{n} readings after restart")
        assert gateway.terminate() == 0
        assert_exactly(db, n)
    finally:
        gateway.ensure_stopped()


def test_messages_published_while_gateway_is_down_are_stored(
    fresh_broker: Broker, tmp_path: Path
) -> None:
    gateway = start_gateway(tmp_path, fresh_broker)
    db = gateway.db
    assert db is not None
    try:
        assert gateway.terminate() == 0  # the broker keeps the persistent session
        publish_many(fresh_broker.port, list(iter_json_messages(700)))
        gateway.start()
        wait_for(lambda: count(db) >= 700, 60, what="backlog stored")
        assert gateway.terminate() == 0
        assert_exactly(db, 700)
    finally:
        gateway.ensure_stopped()


def test_broker_restarted_twice_mid_stream_loses_nothing(
    fresh_broker: Broker, tmp_path: Path
) -> None:
    messages = list(iter_json_messages(3000))
    gateway = start_gateway(tmp_path, fresh_broker)
    db = gateway.db
    assert db is not None
    try:
        publish_many(fresh_broker.port, messages[:1000], client_id="pub-a")
        fresh_broker.restart()
        publish_many(fresh_broker.port, messages[1000:2000], client_id="pub-b")
        fresh_broker.restart()
        publish_many(fresh_broker.port, messages[2000:], client_id="pub-c")
        wait_for(lambda: count(db) >= 3000, 90, what="all readings after two broker restarts")
        assert gateway.terminate() == 0
        assert_exactly(db, 3000)
        assert "connection lost" in gateway.log_text()
    finally:
        gateway.ensure_stopped()


def test_sigterm_under_load_drains_and_exits_0(fresh_broker: Broker, tmp_path: Path) -> None:
    n = 8000
    gateway = start_gateway(tmp_path, fresh_broker)
    db = gateway.db
    assert db is not None
    try:
        publisher = threading.Thread(
            target=publish_many, args=(fresh_broker.port, list(iter_json_messages(n)))
        )
        publisher.start()
        wait_for(lambda: count(db) >= 1000, 60, what="first readings stored")
        assert gateway.terminate(timeout=30) == 0
        log = gateway.log_text()
        assert "shutting down" in log and "stopped:" in log
        publisher.join(120)
        gateway.start()
        wait_for(lambda: count(db) >= n, 90, what="remaining readings after restart")
        assert gateway.terminate() == 0
        assert_exactly(db, n)
    finally:
        gateway.ensure_stopped()
