"""Overload you can see: a gateway that cannot take messages as fast as they come,
against a private Mosquitto with a small per-client queue, reports the broker's drops —
and every message is either stored or counted as dropped, exactly.

The gateway is made slow by a 3 s storage outage (test fault): it stops acknowledging, the
broker fills its in-flight window (20) and queue (100) for the gateway, then drops what
the publisher keeps sending. Mosquitto publishes its counters every second here
(``sys_interval 1``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.status import read_status, status_path
from tests.support import (
    Broker,
    GatewayProcess,
    count,
    db_rows,
    free_port,
    iter_json_messages,
    publish_many,
    wait_for,
)
from tests.support.mqtt import gateway_config, http_json, http_text, metric_value

pytestmark = [pytest.mark.integration, pytest.mark.isolated]

PUBLISHED = 3000
THRESHOLD_S = 10


def test_broker_drops_are_reported_and_everything_is_accounted_for(tmp_path: Path) -> None:
    broker = Broker(
        tmp_path / "mosquitto",
        extra_conf="max_inflight_messages 20\nmax_queued_messages 100\nsys_interval 1\n",
    )
    api_port = free_port()
    db, cfg = tmp_path / "gw.db", tmp_path / "gw.toml"
    messages = list(iter_json_messages(PUBLISHED, start_ms=int(time.time() * 1000)))
    with broker:
        gateway_config(
            cfg,
            broker.port,
            db,
            client_id="tg-overload",
            pipeline=f"retry_max_s = 0.5\nlag_threshold_s = {THRESHOLD_S}",
            api_port=api_port,
        )
        gateway = GatewayProcess(
            cfg, tmp_path / "gw.log", env={"TIDEGATE_TEST_FAULTS": "storage-outage=0:3"}
        )

        def scrape(name: str) -> float | None:
            return metric_value(http_text(api_port, "/metrics"), name)

        try:
            gateway.start()
            # The first write starts the outage (it fails at once, for 6 s).
            publish_many(broker.port, messages[:1], client_id="pub-first")
            wait_for(lambda: scrape("tidegate_storage_ok") == 0, 20, what="the outage")
            publish_many(broker.port, messages[1:], client_id="pub-rest")
            wait_for(lambda: scrape("tidegate_storage_ok") == 1, 30, what="writes to recover")
            # Drops are reported once the broker published its counter (every second).
            wait_for(
                lambda: (
                    (scrape("tidegate_broker_messages_dropped_since_start") or 0) + count(db)
                    == PUBLISHED
                ),
                30,
                what="stored + dropped == published",
            )
            dropped = scrape("tidegate_broker_messages_dropped_since_start")
            assert scrape("tidegate_broker_messages_dropped") == dropped
            status, body = http_json(api_port, "/readyz")
            assert status == 200 and body["status"] == "degraded", body
            assert "the broker dropped" in body["reasons"][0]
            assert scrape("tidegate_falling_behind") == 1
            # The status file follows readiness within a second (gateway.status).
            wait_for(
                lambda: (read_status(status_path(db)) or {}).get("status") == "degraded",
                10,
                what="the status file to say degraded",
            )
            stats = subprocess.run(
                [sys.executable, "-m", "gateway", "stats", "--db", str(db), "--format", "json"],
                capture_output=True, text=True, timeout=60, check=True,
            )  # fmt: skip
            live = json.loads(stats.stdout)["live"]
            assert live["live"] and live["status"] == "degraded"
            assert live["broker"]["dropped_since_start"] == dropped
            # Quiet for a threshold period: caught up.
            wait_for(
                lambda: http_json(api_port, "/readyz")[1]["status"] == "ready",
                THRESHOLD_S + 10,
                what="caught up",
            )
            assert gateway.terminate() == 0
        finally:
            gateway.ensure_stopped()
    stored = count(db)
    print(f"overload: published {PUBLISHED}, stored {stored}, broker dropped {dropped}")
    assert dropped is not None and dropped > 0
    assert stored + dropped == PUBLISHED
    # Stored messages are exactly once each (distinct values).
    assert db_rows(db, "SELECT count(DISTINCT value) FROM readings")[0][0] == stored
    text = gateway.log_text()
    assert text.count("falling behind:") == 1
    assert text.count("caught up after") == 1
    broker_log = broker.log.read_text(errors="replace")
    assert "Outgoing messages are being dropped for client tg-overload" in broker_log
    after = json.loads(
        subprocess.run(
            [sys.executable, "-m", "gateway", "stats", "--db", str(db), "--format", "json"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    )["live"]  # fmt: skip
    assert after["live"] is False and after["status"] == "stopped"
