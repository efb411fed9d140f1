"""Readings without a timestamp are never collapsed, even when a backlog arrives at once.

The gateway is down while devices that send no timestamp (ESPHome-style raw state
topics, line protocol without a time) publish; it starts, the broker delivers the
whole backlog in one burst, and every distinct message must be its own row.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import Broker, GatewayProcess, db_rows, publish_many, wait_for, write_config

pytestmark = [pytest.mark.integration]

SUBSCRIPTIONS = """
[[subscriptions]]
topic = "esphome/+/sensor/+/state"
format = "raw"
topic_template = "esphome/{sensor_id}/sensor/{metric}/state"

[[subscriptions]]
topic = "lines/#"
format = "influx"
"""


def _gateway(broker: Broker, tmp_path: Path, name: str) -> tuple[Path, Path]:
    db = tmp_path / "gw.db"
    config = write_config(
        tmp_path / "gw.toml", broker.port, db, client_id="tidegate-rx", extra=SUBSCRIPTIONS
    )
    # The first start creates the persistent session (and its subscriptions); then the
    # gateway goes away and the backlog piles up at the broker.
    first = GatewayProcess(config, tmp_path / f"{name}-first.log").start()
    assert first.terminate() == 0
    return config, db


def _stored(db: Path, sql: str = "SELECT count(*) FROM readings") -> int:
    rows = db_rows(db, sql)
    return int(rows[0][0]) if rows else 0


def _run_backlog(
    broker: Broker, tmp_path: Path, name: str, backlog: list[tuple[str, bytes]], expected: int
) -> Path:
    config, db = _gateway(broker, tmp_path, name)
    publish_many(broker.port, backlog, client_id=f"rx-pub-{name}")
    gateway = GatewayProcess(config, tmp_path / f"{name}.log").start()
    try:
        wait_for(lambda: _stored(db) >= expected, 20, what=f"{expected} readings stored")
        time.sleep(1.0)  # anything extra (there must be nothing) would show up by now
    finally:
        assert gateway.terminate() == 0, gateway.log_text()[-2000:]
    assert _stored(db) == expected
    return db


def test_20_raw_values_published_while_down_are_20_rows(broker: Broker, tmp_path: Path) -> None:
    backlog = [("esphome/node1/sensor/temperature/state", b"%d.5" % i) for i in range(20)]
    db = _run_backlog(broker, tmp_path, "raw20", backlog, 20)
    values = [row[0] for row in db_rows(db, "SELECT value FROM readings ORDER BY ts")]
    assert values == [i + 0.5 for i in range(20)]  # in arrival order, none lost


def test_burst_of_esphome_values_and_untimed_lines_is_12_rows(
    broker: Broker, tmp_path: Path
) -> None:
    backlog = [("esphome/node2/sensor/humidity/state", b"%d" % (40 + i)) for i in range(10)]
    backlog += [
        ("lines/attic", b"climate,sensor_id=attic temperature=19.5"),
        ("lines/attic", b"climate,sensor_id=attic temperature=19.75"),
    ]
    db = _run_backlog(broker, tmp_path, "burst12", backlog, 12)
    per_series = db_rows(
        db,
        "SELECT s.sensor_id, s.metric, count(*), count(DISTINCT r.ts) FROM readings r"
        " JOIN series s ON s.id = r.series_id GROUP BY s.id ORDER BY s.sensor_id",
    )
    assert per_series == [
        ("attic", "climate.temperature", 2, 2),
        ("node2", "humidity", 10, 10),
    ]
