"""Series caps against a real gateway: a message that would create too many series at
once, or push the database past its cap, is dead-lettered with the reason; existing
series keep flowing, across a restart too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import (
    Broker,
    GatewayProcess,
    count,
    db_rows,
    publish_many,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration


def series_count(db: Path) -> int:
    return count(db, "series")


def reasons(db: Path) -> list[str]:
    return [str(r[0]) for r in db_rows(db, "SELECT reason FROM dead_letters ORDER BY id")]


def replay(cfg: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "dead-letters", "replay", "--all", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_10000_key_message_is_dead_lettered_not_10000_series(
    broker: Broker, tmp_path: Path
) -> None:
    """The finding: one 99 KB JSON object with 10,000 keys made 10,166 series."""
    db = tmp_path / "wide.db"
    # Dead letters keep the whole 129 KB payload here (default 64 KB), so it can be replayed;
    # write_config puts ``extra`` right after [storage]'s path.
    cfg = write_config(
        tmp_path / "wide.toml",
        broker.port,
        db,
        client_id="tidegate-wide",
        extra="dead_letter_max_payload = 262144\n",
    )
    gateway = GatewayProcess(cfg, tmp_path / "wide.log").start()
    now_ms = int(time.time() * 1000)
    wide = {f"k{i}": i for i in range(10_000)} | {"ts": now_ms}
    normal = {"temperature": 21.5, "humidity": 40, "ts": now_ms}
    try:
        publish_many(
            broker.port,
            [
                ("sensors/wide", json.dumps(wide).encode()),
                ("sensors/kitchen", json.dumps(normal).encode()),
            ],
            client_id="wide-pub",
        )
        wait_for(lambda: count(db, "dead_letters") >= 1 and count(db) >= 2, 30, what="both handled")
        assert series_count(db) == 2
        assert count(db) == 2
        (reason,) = reasons(db)
        assert reason == (
            "message would create 10000 new series, more than storage.max_new_series_per_message = 1000"
        )
        # A replay keeps the caps: it still fails until the limit is raised.
        assert "1 still fail" in replay(cfg, {})
        assert series_count(db) == 2
        raised = {"TIDEGATE_STORAGE__MAX_NEW_SERIES_PER_MESSAGE": "20000"}
        assert "10000 reading(s), 10000 new" in replay(cfg, raised)
        assert series_count(db) == 10_002 and count(db, "dead_letters") == 0
    finally:
        assert gateway.terminate() == 0, gateway.log_text()


def test_the_total_cap_refuses_new_series_only_and_survives_a_restart(
    broker: Broker, tmp_path: Path
) -> None:
    db = tmp_path / "cap.db"
    # write_config puts ``extra`` right after [storage]'s path: this line is in [storage].
    cfg = write_config(
        tmp_path / "cap.toml", broker.port, db, client_id="tidegate-cap", extra="max_series = 50\n"
    )
    gateway = GatewayProcess(cfg, tmp_path / "cap.log").start()
    base = int(time.time() * 1000) - 60_000

    def message(sensor: int, i: int) -> tuple[str, bytes]:
        return (f"sensors/s{sensor}/t", json.dumps({"value": i, "ts": base + i}).encode())

    try:
        publish_many(broker.port, [message(s, s) for s in range(60)], client_id="cap-pub1")
        wait_for(lambda: count(db) + count(db, "dead_letters") >= 60, 30, what="60 handled")
        assert series_count(db) == 50 and count(db) == 50
        refused = reasons(db)
        assert len(refused) == 10
        assert all("storage.max_series = 50" in r and "already holds 50" in r for r in refused)
        # Existing series keep flowing.
        publish_many(broker.port, [message(s, 100 + s) for s in range(50)], client_id="cap-pub2")
        wait_for(lambda: count(db) >= 100, 30, what="existing series stored")
    finally:
        assert gateway.terminate() == 0, gateway.log_text()

    gateway = GatewayProcess(cfg, tmp_path / "cap.log").start()
    try:
        publish_many(broker.port, [message(7, 200), message(99, 201)], client_id="cap-pub3")
        wait_for(
            lambda: count(db) >= 101 and count(db, "dead_letters") >= 11, 30, what="after restart"
        )
        assert series_count(db) == 50 and count(db) == 101
        assert "storage.max_series = 50" in reasons(db)[-1]
    finally:
        assert gateway.terminate() == 0, gateway.log_text()
