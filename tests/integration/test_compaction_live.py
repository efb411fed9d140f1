"""Compaction in a running gateway: readings move from the hot table to the per-series
table while ingestion goes on, and keys already moved are still stored only once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import (
    Broker,
    GatewayProcess,
    count,
    db_rows,
    iter_json_messages,
    publish_many,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration


def tables(db: Path) -> tuple[int, int]:
    """(hot rows, cold rows)."""
    return count(db, "readings_hot"), count(db, "readings_cold")


def test_moved_readings_stay_exactly_once(broker: Broker, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    cfg = write_config(tmp_path / "c.toml", broker.port, db, client_id="tidegate-compaction")
    gateway = GatewayProcess(
        cfg, tmp_path / "c.log", env={"TIDEGATE_STORAGE__COMPACTION_ROWS": "1000"}
    ).start()
    try:
        # Stamped an hour ago: all of it is older than the lag and may move at once.
        start = int(time.time() * 1000) - 3_600_000
        messages = list(iter_json_messages(3000, start_ms=start, prefix="sensors"))
        publish_many(broker.port, messages[:2000], client_id="pub-1")
        wait_for(lambda: count(db) >= 2000, 60, what="first 2,000 readings")
        wait_for(lambda: tables(db) == (0, 2000), 30, what="the hot table emptied")
        # The same keys again (as a redelivery would bring them), then new ones.
        publish_many(broker.port, messages, client_id="pub-2")
        wait_for(lambda: count(db) >= 3000, 60, what="all 3,000 readings")
        wait_for(lambda: tables(db)[0] == 0, 30, what="the hot table emptied again")
        assert gateway.terminate() == 0
        assert tables(db) == (0, 3000)
        assert db_rows(db, "SELECT count(DISTINCT value) FROM readings")[0][0] == 3000
        assert "ERROR" not in (tmp_path / "c.log").read_text()
    finally:
        gateway.ensure_stopped()
