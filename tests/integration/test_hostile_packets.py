"""Large and hostile messages against a real Mosquitto and a real gateway process: a
60 MB payload is skipped as it streams in, dead-lettered with topic, size and reason,
acked, and costs no memory; a flood of 60 KB topics is dead-lettered without being
cached; MQTT 5 announces a Maximum Packet Size the broker honours. Exact counts; the
memory bound uses the kernel's peak-RSS mark (VmHWM), not timing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from tests.support import HOST, Broker, GatewayProcess, count, db_rows, wait_for
from tests.support.mqtt import gateway_config, peak_rss_kib, rss_kib

pytestmark = [pytest.mark.integration, pytest.mark.isolated]

MIB = 1024
"""KiB per MiB (RSS figures are KiB)."""
RSS_GROWTH_BOUND_KIB = 16 * MIB
"""What one huge message or a flood of long topics may add to the gateway's peak RSS.
Before the streaming reader a 60 MB payload raised it by ~170 MB."""


def publish_raw(port: int, messages: list[tuple[str, bytes]], client_id: str) -> None:
    """Publish at QoS 1 (at most 100 in flight), wait for every PUBACK."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_inflight_messages_set(100)
    client.connect(HOST, port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(120)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def marker(i: int) -> tuple[str, bytes]:
    ts = int(time.time() * 1000) - 60_000 + i
    return (f"sensors/marker{i}/temperature", json.dumps({"value": i, "ts": ts}).encode())


def settle(gateway: GatewayProcess) -> int:
    """RSS after start-up settled (imports, first batches), KiB."""
    assert gateway.proc is not None
    time.sleep(1.0)
    return rss_kib(gateway.proc.pid)


def test_a_60_mb_payload_is_skipped_dead_lettered_and_acked(
    fresh_broker: Broker, tmp_path: Path
) -> None:
    db, cfg = tmp_path / "gw.db", tmp_path / "gw.toml"
    gateway_config(cfg, fresh_broker.port, db, client_id="tg-big")
    gateway = GatewayProcess(cfg, tmp_path / "gw.log")
    try:
        gateway.start()
        assert gateway.proc is not None
        before = settle(gateway)
        size = 60_000_000
        publish_raw(
            fresh_broker.port,
            [("sensors/cam/snapshot", b"\x00" * size), marker(1)],
            "pub-big",
        )
        wait_for(lambda: count(db) == 1, 120, what="the reading behind the big message")
        wait_for(lambda: count(db, "dead_letters") == 1, 20, what="the dead letter")
        growth = peak_rss_kib(gateway.proc.pid) - before
        assert growth < RSS_GROWTH_BOUND_KIB, f"peak RSS grew {growth} KiB"
        topic, payload, reason = db_rows(db, "SELECT topic, payload, reason FROM dead_letters")[0]
        assert topic == "sensors/cam/snapshot"
        assert payload == b""
        assert reason == (
            "payload of 60,000,000 bytes exceeds max_payload_bytes=262,144"
            " (skipped as it arrived, not stored)"
        )
        # Acked: a restart gets no redelivery of it.
        assert gateway.terminate() == 0
        gateway.start()
        publish_raw(fresh_broker.port, [marker(2)], "pub-big-2")
        wait_for(lambda: count(db) == 2, 30, what="the second marker")
        assert count(db, "dead_letters") == 1
        assert gateway.terminate() == 0
    finally:
        gateway.ensure_stopped()


def test_long_topics_are_dead_lettered_without_being_cached(
    fresh_broker: Broker, tmp_path: Path
) -> None:
    db, cfg = tmp_path / "gw.db", tmp_path / "gw.toml"
    gateway_config(
        cfg,
        fresh_broker.port,
        db,
        client_id="tg-topics",
        subscriptions='[[subscriptions]]\ntopic = "sensors/#"\n'
        'topic_template = "sensors/{sensor_id}/{metric}/#"\n',
    )
    gateway = GatewayProcess(cfg, tmp_path / "gw.log")
    try:
        gateway.start()
        assert gateway.proc is not None
        before = settle(gateway)
        n = 1000
        messages = [(f"sensors/s{i}/" + "x" * 60_000, b'{"value": 1}') for i in range(n)]
        publish_raw(fresh_broker.port, [*messages, marker(1)], "pub-topics")
        wait_for(lambda: count(db) == 1, 120, what="the marker behind the long topics")
        wait_for(lambda: count(db, "dead_letters") == n, 30, what="every long topic")
        growth = peak_rss_kib(gateway.proc.pid) - before
        assert growth < RSS_GROWTH_BOUND_KIB, f"peak RSS grew {growth} KiB"
        rows = db_rows(db, "SELECT reason, topic FROM dead_letters")
        expected = {
            (f"topic of {len(t):,} bytes exceeds max_topic_bytes=1,024", t[:1024] + "…")
            for t, _payload in messages
        }
        assert set(rows) == expected
        assert gateway.terminate() == 0
    finally:
        gateway.ensure_stopped()


def test_mqtt5_maximum_packet_size_is_announced_and_honoured(
    fresh_broker: Broker, tmp_path: Path
) -> None:
    """Between max_payload_bytes (256 KiB) and the announced Maximum Packet Size (1 MiB)
    a message is delivered and dead-lettered; beyond it the broker does not send it."""
    db, cfg = tmp_path / "gw.db", tmp_path / "gw.toml"
    gateway_config(
        cfg,
        fresh_broker.port,
        db,
        client_id="tg-v5",
        mqtt='protocol = "5"\nmax_packet_size = 1048576',
    )
    gateway = GatewayProcess(cfg, tmp_path / "gw.log")
    try:
        gateway.start()
        publish_raw(
            fresh_broker.port,
            [
                ("sensors/a/blob", b"\x01" * 300_000),
                ("sensors/a/huge", b"\x02" * 2_000_000),
                marker(1),
            ],
            "pub-v5",
        )
        wait_for(lambda: count(db) == 1, 60, what="the marker")
        rows = db_rows(db, "SELECT topic, reason FROM dead_letters")
        assert rows == [
            ("sensors/a/blob", "payload of 300,000 bytes exceeds max_payload_bytes=262,144")
        ]
        assert gateway.terminate() == 0
    finally:
        gateway.ensure_stopped()
