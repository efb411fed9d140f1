"""Backpressure without flapping: a long storage outage under load keeps one broker
connection, memory stays bounded, and afterwards everything is stored exactly once.

The outage is a test fault (every batch write fails with a storage error for
``OUTAGE_S`` seconds — what the pipeline sees of a full disk, the size guard's
``stop`` or a dead SD card). Why 60 s and not the issue's 5 minutes: the failure being
guarded against is periodic in the keepalive — with the socket unread, paho saw no
PINGRESP and dropped the connection every ~2 × keepalive, and each new connection's
first read went past the buffer bound. With ``keepalive = 5`` a 60 s outage spans 12
keepalive periods (6 of the old flap cycles); a 5-minute outage would only repeat them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.verify import render, verify
from tests.support import HOST, Broker, GatewayProcess, count, free_port, wait_for
from tests.support.mqtt import gateway_config, http_text, metric_value, peak_rss_kib, rss_kib

pytestmark = [pytest.mark.integration, pytest.mark.isolated, pytest.mark.slow]

OUTAGE_S = 60
KEEPALIVE_S = 5
RATE_HZ = 20
SENSORS = 50  # 1,000 msg/s offered throughout the outage
RSS_GROWTH_BOUND_KIB = 48 * 1024
"""The gateway holds at most the broker's in-flight window (1,000 messages here) plus
its queue while writes fail; the rest waits at the broker."""


@pytest.mark.parametrize(
    ("case", "outage_s", "mqtt"),
    [
        # A queue smaller than the broker's in-flight window (1,000): the readers stop
        # at the full queue while the rest of the window arrives and waits in the
        # connection's buffer — the socket is still read, PINGRESP with it.
        ("socket read", OUTAGE_S, ""),
        # A buffer bound below the window: the socket itself is held (TCP backpressure)
        # and the adapter keeps paho's keepalive from counting the unread PINGRESPs.
        ("socket held", 20, "buffer_bytes = 65536"),
    ],
)
def test_a_long_storage_outage_keeps_one_connection_and_loses_nothing(
    fresh_broker: Broker, tmp_path: Path, case: str, outage_s: int, mqtt: str
) -> None:
    db, cfg = tmp_path / "gw.db", tmp_path / "gw.toml"
    api_port = free_port()
    gateway_config(
        cfg,
        fresh_broker.port,
        db,
        client_id="tg-outage",
        keepalive=KEEPALIVE_S,
        mqtt=mqtt,
        pipeline="retry_max_s = 1\nqueue_size = 200",
        api_port=api_port,
    )
    gateway = GatewayProcess(
        cfg, tmp_path / "gw.log", env={"TIDEGATE_TEST_FAULTS": f"storage-outage=3:{outage_s}"}
    )
    report = tmp_path / "sim.json"
    sim = None
    try:
        gateway.start()
        assert gateway.proc is not None
        time.sleep(1.0)
        before = rss_kib(gateway.proc.pid)
        samples = (outage_s + 15) * RATE_HZ
        sim = subprocess.Popen(
            [sys.executable, "-m", "simulators", "run", "--host", HOST,
             "--port", str(fresh_broker.port), "--sensors", str(SENSORS),
             "--rate", str(RATE_HZ), "--count", str(samples), "--connections", "5",
             "--metrics", "temperature", "--format", "json-reading", "--seed", "5",
             "--report", str(report), "--no-progress", "-q"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

        def scrape(name: str) -> float | None:
            return metric_value(http_text(api_port, "/metrics"), name)

        wait_for(lambda: scrape("tidegate_storage_ok") == 0, 30, what="the outage to begin")
        stored_at_start = count(db)
        # The whole outage: writes fail, nothing is stored, the connection stays.
        wait_for(
            lambda: scrape("tidegate_storage_ok") == 1, outage_s + 30, what="the outage to end"
        )
        assert sim.wait(outage_s + 120) == 0, sim.stderr.read().decode() if sim.stderr else ""
        acked = json.loads(report.read_text())["totals"]["readings_acked"]
        wait_for(lambda: count(db) >= acked, 120, what="the backlog to drain")
        reconnects = scrape("tidegate_reconnects_total")
        waits = scrape("tidegate_queue_full_waits_total")
        held = scrape("tidegate_paused_reads_total")
        growth = peak_rss_kib(gateway.proc.pid) - before
        assert gateway.terminate() == 0
    finally:
        gateway.ensure_stopped()
        if sim is not None and sim.poll() is None:
            sim.kill()
            sim.wait(10)
    text = gateway.log_text()
    print(
        f"outage {case}: {outage_s}s, reconnects {reconnects}, queue-full waits {waits},"
        f" socket held {held}, acked {acked}, stored {count(db)}, peak RSS +{growth} KiB"
    )
    assert reconnects == 0, text
    assert text.count("] ready: ") == 1
    assert "connection lost" not in text
    assert text.count("write failed, retrying") == 1
    assert waits is not None and waits > 0  # the readers did wait: backpressure
    assert held == 0 if case == "socket read" else held is not None and held > 0
    assert growth < RSS_GROWTH_BOUND_KIB, f"peak RSS grew {growth} KiB"
    assert stored_at_start < acked / 2, "the outage came too late to test anything"
    broker_log = fresh_broker.log.read_text(errors="replace")
    assert "tg-outage has exceeded timeout" not in broker_log
    verdict = verify(report, db)
    assert verdict.ok, render(verdict)
    assert verdict.published == verdict.stored == count(db) == acked
