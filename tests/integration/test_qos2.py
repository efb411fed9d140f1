"""QoS 2 against a real Mosquitto and a real gateway process: PUBREC only after the
commit, PUBREL answered with PUBCOMP for any packet id (also ids a restarted gateway
never saw), and kill -9 anywhere — mid-stream, or between PUBREC and PUBCOMP — loses
and duplicates nothing. Publishers keep at most 20 QoS 2 messages in flight: Debian
12's Mosquitto 2.0.11 acknowledges more but never delivers them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from simulators.verify import render, verify
from tests.support import HOST, Broker, GatewayProcess, count, db_rows, free_port, wait_for
from tests.support.mqtt import gateway_config, http_text, metric_value, sub_block

pytestmark = pytest.mark.integration

QOS2 = sub_block("sensors/+/+", "sensors/{sensor_id}/{metric}", qos=2)
IN_FLIGHT = 20


def publish_qos2(port: int, first: int, n: int, client_id: str) -> None:
    """``n`` distinct readings (values first … first+n-1) at QoS 2, ≤ 20 in flight,
    waiting for every PUBCOMP."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_inflight_messages_set(IN_FLIGHT)
    client.max_queued_messages_set(0)
    client.connect(HOST, port)
    client.loop_start()
    base = int(time.time() * 1000) - 3_600_000
    try:
        infos = [
            client.publish(
                f"sensors/s{i % 10}/temperature",
                json.dumps({"value": i, "ts": base + i}),
                qos=2,
            )
            for i in range(first, first + n)
        ]
        for info in infos:
            info.wait_for_publish(120)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def distinct_values(db: Path) -> int:
    return int(db_rows(db, "SELECT count(DISTINCT value) FROM readings")[0][0])


def test_pubrel_for_ids_a_restarted_gateway_never_saw_is_completed(
    tmp_path: Path,
) -> None:
    """The broker's window (20) is filled with flows stuck between PUBREC and PUBCOMP
    (the gateway holds its PUBCOMPs: test fault), then the gateway is killed. The
    restarted one answers the 20 re-sent PUBRELs — ids it never saw — so the window
    frees and 200 more messages arrive; nothing of the first 20 is stored twice."""
    broker = Broker(tmp_path / "mosquitto", extra_conf="max_inflight_messages 20\n")
    api_port = free_port()
    db, cfg = tmp_path / "gw.db", tmp_path / "gw.toml"
    with broker:
        gateway_config(
            cfg, broker.port, db, client_id="tg-q2", subscriptions=QOS2, api_port=api_port
        )
        held = GatewayProcess(
            cfg, tmp_path / "held.log", env={"TIDEGATE_TEST_FAULTS": "hold-pubcomp"}
        )
        restarted = GatewayProcess(cfg, tmp_path / "gw.log")
        try:
            held.start()
            publish_qos2(broker.port, 0, IN_FLIGHT, "pub-1")
            wait_for(lambda: count(db) == IN_FLIGHT, 30, what="the first 20 committed")
            # Committed and PUBREC'd (acks are counted when sent, after the commit).
            wait_for(
                lambda: (
                    metric_value(http_text(api_port, "/metrics"), "tidegate_acks_sent_total")
                    == IN_FLIGHT
                ),
                10,
                what="20 PUBRECs",
            )
            time.sleep(0.5)  # the broker's PUBRELs arrive and stay unanswered
            held.kill9()
            restarted.start()
            publish_qos2(broker.port, IN_FLIGHT, 200, "pub-2")
            wait_for(lambda: count(db) == 220, 60, what="all 220 readings")
            assert restarted.terminate() == 0
        finally:
            held.ensure_stopped()
            restarted.ensure_stopped()
    assert count(db) == 220
    assert distinct_values(db) == 220
    assert count(db, "dead_letters") == 0


def test_kill9_mid_stream_at_qos2_loses_and_duplicates_nothing(
    fresh_broker: Broker, tmp_path: Path
) -> None:
    """tidegate-sim --qos 2 (≤ 20 in flight per connection) publishes 3,000 readings;
    the gateway is killed with SIGKILL three times while they arrive and restarted;
    verify is exact."""
    db, cfg = tmp_path / "gw.db", tmp_path / "gw.toml"
    gateway_config(cfg, fresh_broker.port, db, client_id="tg-q2-kill", subscriptions=QOS2)
    report = tmp_path / "sim.json"
    gateway = GatewayProcess(cfg, tmp_path / "gw.log")
    sim = None
    try:
        gateway.start()
        sim = subprocess.Popen(
            [sys.executable, "-m", "simulators", "run", "--host", HOST,
             "--port", str(fresh_broker.port), "--sensors", "20", "--rate", "25",
             "--count", "150", "--qos", "2", "--connections", "2",
             "--metrics", "temperature", "--format", "json-reading", "--seed", "11",
             "--report", str(report), "--no-progress", "-q"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        kills = 0
        for threshold in (500, 1300, 2100):
            wait_for(lambda t=threshold: count(db) >= t, 60, what=f"{threshold} stored")
            gateway.kill9()
            kills += 1
            gateway.start()
        assert sim.wait(120) == 0, sim.stderr.read().decode() if sim.stderr else ""
        acked = json.loads(report.read_text())["totals"]["readings_acked"]
        assert acked >= 3000  # every sample (a few ticks may carry two)
        wait_for(lambda: count(db) >= acked, 60, what="every acknowledged reading")
        assert gateway.terminate() == 0
    finally:
        gateway.ensure_stopped()
        if sim is not None and sim.poll() is None:
            sim.kill()
            sim.wait(10)
    assert kills == 3
    verdict = verify(report, db)
    assert verdict.ok, render(verdict)
    assert verdict.published == verdict.stored == count(db) == acked
    assert verdict.missing == verdict.duplicates_stored == 0


def test_qos2_publisher_thread_and_gateway_sigterm_is_exact(
    fresh_broker: Broker, tmp_path: Path
) -> None:
    """A graceful stop in the middle of a QoS 2 stream: what was committed is
    completed, the rest is redelivered to the next run; exact."""
    db, cfg = tmp_path / "gw.db", tmp_path / "gw.toml"
    gateway_config(cfg, fresh_broker.port, db, client_id="tg-q2-term", subscriptions=QOS2)
    gateway = GatewayProcess(cfg, tmp_path / "gw.log")
    try:
        gateway.start()
        publisher = threading.Thread(target=publish_qos2, args=(fresh_broker.port, 0, 2000, "p"))
        publisher.start()
        wait_for(lambda: count(db) >= 700, 60, what="700 stored")
        assert gateway.terminate() == 0
        gateway.start()
        publisher.join(120)
        assert not publisher.is_alive()
        wait_for(lambda: count(db) >= 2000, 60, what="every reading")
        assert gateway.terminate() == 0
    finally:
        gateway.ensure_stopped()
    assert count(db) == 2000
    assert distinct_values(db) == 2000
