"""A mixed fleet — JSON, SenML JSON and CBOR, line protocol, raw values, auto-detected
traffic and garbage — through a real Mosquitto into SQLite, with exact counts."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import cbor2
import pytest

from gateway.app import Gateway
from gateway.config import load_settings
from tests.support import HOST, Broker, count, db_rows, publish_many

pytestmark = pytest.mark.integration

P = "fleet4"  # topic prefix of this test on the shared session broker

CONFIG = f"""
[mqtt]
host = "{HOST}"
port = %(port)d
client_id = "tidegate-mixed-fleet"
reconnect_min_s = 0.1
reconnect_max_s = 1.0

[[subscriptions]]
topic = "{P}/json/+"
format = "json"
topic_template = "{P}/json/{{sensor_id}}"

[[subscriptions]]
topic = "{P}/senml/+"
format = "senml"
topic_template = "{P}/senml/{{gateway}}"

[[subscriptions]]
topic = "{P}/senmlc/+"
format = "senml-cbor"
topic_template = "{P}/senmlc/{{gateway}}"

[[subscriptions]]
topic = "{P}/influx/+"
format = "influx"
topic_template = "{P}/influx/{{site}}"
influx_precision = "ms"

[[subscriptions]]
topic = "{P}/raw/+/+"
format = "raw"
topic_template = "{P}/raw/{{sensor_id}}/{{metric}}"

[[subscriptions]]
topic = "{P}/auto/#"
format = "auto"
topic_template = "{P}/auto/{{sensor_id}}/#"

[storage]
path = "%(db)s"
"""


def fleet(base_ms: int) -> tuple[list[tuple[str, bytes]], int, int]:
    """(messages, readings expected, dead letters expected)."""
    msgs: list[tuple[str, bytes]] = []
    readings = 0
    for i in range(20):  # JSON multi-metric, Zigbee2MQTT style: 2 numbers + 1 state
        body = {"temperature": 20 + i / 10, "humidity": 40 + i, "state": "ON", "ts": base_ms + i}
        msgs.append((f"{P}/json/z{i % 4}", json.dumps(body).encode()))
        readings += 2
    for i in range(10):  # SenML JSON: 3 records with base name/time and relative offsets
        pack = [
            {
                "bn": f"urn:dev:senml{i % 3}:",
                "bt": (base_ms + 1000 * i) / 1000,
                "n": "temp",
                "v": 21.0,
            },
            {"n": "temp", "t": 0.5, "v": 21.5},
            {"n": "hum", "u": "%RH", "v": 55},
        ]
        msgs.append((f"{P}/senml/gw1", json.dumps(pack).encode()))
        readings += 3
    for i in range(10):  # SenML CBOR: 2 records, integer labels
        pack_c = [
            {-2: f"cbor{i % 2}/", -3: (base_ms + 2000 * i) / 1000, 0: "volt", 1: "V", 2: 3.3},
            {0: "open", 4: True},
        ]
        msgs.append((f"{P}/senmlc/gw2", cbor2.dumps(pack_c)))
        readings += 2
    for i in range(10):  # line protocol: 2 lines x 2 numeric fields, 1 string field skipped
        lines = "\n".join(
            f'weather,host=st{k},unit=C temp={10 + i}.5,wind={i}i,note="x" {base_ms + i}'
            for k in range(2)
        )
        msgs.append((f"{P}/influx/north", lines.encode()))
        readings += 4
    for i in range(20):  # raw values on ESPHome-like topics (receive time: one series each)
        msgs.append((f"{P}/raw/esp{i % 5}/t{i}", f"{18 + i * 0.25}".encode()))
        readings += 1
    for i in range(5):  # auto: one of each kind per round, 1 reading each
        ts = base_ms + 10_000 + i
        msgs += [
            (f"{P}/auto/a{i}/json", json.dumps({"value": i, "ts": ts, "metric": "j"}).encode()),
            (f"{P}/auto/a{i}/senml", json.dumps([{"n": "s", "v": i, "t": ts / 1000}]).encode()),
            (f"{P}/auto/a{i}/cbor", cbor2.dumps([{0: "c", 2: i, 6: ts / 1000}])),
            (f"{P}/auto/a{i}/lp", f"lp f={i} {ts * 1_000_000}".encode()),
            (f"{P}/auto/a{i}/raw", str(i).encode()),
        ]
        readings += 5
    garbage = [
        (f"{P}/json/z0", b"{bad json"),
        (f"{P}/json/z0", b'{"value": "warm"}'),
        (f"{P}/senml/gw1", b'[{"n": "x"}]'),  # a record with no value
        (f"{P}/senml/gw1", b'[{"n": "x", "v": 1, "bver": 99}]'),
        (f"{P}/senmlc/gw2", b"\x81\x01"),
        (f"{P}/senmlc/gw2", bytes(range(256))),
        (f"{P}/influx/north", b"not line protocol"),
        (f"{P}/influx/north", b"m f=1i2"),
        (f"{P}/raw/esp0/temperature", b"ON"),
        (f"{P}/raw/esp0/temperature", b"\xff\xfe"),
        (f"{P}/auto/a0/x", b"\x00\x01 garbage"),
        (f"{P}/auto/a0/x", b"[{oops"),
    ]
    nothing_storable = [(f"{P}/json/z1", b'{"state": "OFF"}'), (f"{P}/auto/a1/x", b'"idle"')]
    mixed: list[tuple[str, bytes]] = []
    for index, message in enumerate(msgs):  # spread garbage through the valid traffic
        mixed.append(message)
        if index % 9 == 0 and garbage:
            mixed.append(garbage.pop())
    mixed += garbage + nothing_storable
    return mixed, readings, 12


async def test_mixed_fleet_exact_counts(broker: Broker, tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(CONFIG % {"port": broker.port, "db": db})
    settings = load_settings(cfg, environ={})
    gateway = Gateway(settings)
    task = asyncio.create_task(gateway.run())
    try:
        await asyncio.wait_for(gateway.started.wait(), 10)
        assert await gateway.source.wait_connected(10)
        base_ms = int(time.time() * 1000) - 600_000
        messages, want_readings, want_dead = fleet(base_ms)
        assert want_readings == 175
        await asyncio.to_thread(publish_many, broker.port, messages, 1, "fleet-pub")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if count(db) >= want_readings and count(db, "dead_letters") >= want_dead:
                break
            await asyncio.sleep(0.05)
        metrics = gateway.metrics
        deadline = time.monotonic() + 10
        while metrics.messages_received < len(messages) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        gateway.request_stop()
        assert await asyncio.wait_for(task, 30)

    assert count(db) == want_readings
    assert count(db, "dead_letters") == want_dead
    assert metrics.messages_received == len(messages)
    assert metrics.messages_empty == 2
    # Skipped leaves: 20 + 1 JSON states, 20 line-protocol strings, 1 auto JSON string.
    assert metrics.leaves_skipped == 42

    per_prefix = dict(
        db_rows(
            db,
            "SELECT substr(s.sensor_id, 1, 4), count(*) FROM readings r"
            " JOIN series s ON s.id = r.series_id GROUP BY 1",
        )
    )
    assert per_prefix == {
        **{f"z{k}": 10 for k in range(4)},
        "urn:": 30,
        "cbor": 20,
        "st0": 20,
        "st1": 20,
        **{f"esp{k}": 4 for k in range(5)},
        **{f"a{k}": 5 for k in range(5)},
    }
    influx = db_rows(
        db,
        "SELECT DISTINCT s.metric, s.unit, s.tags FROM series s WHERE s.sensor_id = 'st0'"
        " ORDER BY s.metric",
    )
    assert influx == [
        ("weather.temp", "C", '{"site":"north"}'),
        ("weather.wind", "C", '{"site":"north"}'),
    ]
    senml = db_rows(
        db,
        "SELECT s.metric, s.unit, s.tags FROM series s WHERE s.sensor_id = 'urn:dev:senml0'"
        " ORDER BY s.metric",
    )
    assert senml == [("hum", "%RH", '{"gateway":"gw1"}'), ("temp", "", '{"gateway":"gw1"}')]
    reasons = [r[0] for r in db_rows(db, "SELECT reason FROM dead_letters")]
    assert any("no value" in r for r in reasons)
    assert any("version 99" in r for r in reasons)
    assert any(r.startswith("auto-detected") for r in reasons)
    assert any("line 1" in r for r in reasons)
