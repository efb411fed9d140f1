"""Ingest through a real Mosquitto into SQLite with an in-process gateway: garbage mixed
with valid traffic, MQTT 5 sessions, payload shapes, the read commands."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.config import Settings, load_settings
from tests.support import Broker, count, db_rows, publish_many, write_config

pytestmark = pytest.mark.integration


def settings_for(
    tmp_path: Path,
    broker: Broker,
    client_id: str,
    pipeline: str = "",
    env: dict[str, str] | None = None,
) -> Settings:
    cfg = write_config(
        tmp_path / "gw.toml",
        broker.port,
        tmp_path / "gw.db",
        client_id=client_id,
        pipeline=pipeline,
    )
    return load_settings(cfg, environ=env or {})


class Running:
    def __init__(self, gateway: Gateway, task: asyncio.Task[bool]) -> None:
        self.gateway = gateway
        self.task = task

    async def stop(self) -> bool:
        self.gateway.request_stop()
        return await asyncio.wait_for(self.task, 30)


async def run_gateway(settings: Settings) -> Running:
    gateway = Gateway(settings)
    task = asyncio.create_task(gateway.run())
    await asyncio.wait_for(gateway.started.wait(), 10)
    assert await gateway.source.wait_connected(10)
    return Running(gateway, task)


@pytest.fixture
async def running_factory() -> AsyncIterator[Callable[[Settings], asyncio.Future[Running]]]:
    started: list[Running] = []

    async def factory(settings: Settings) -> Running:
        running = await run_gateway(settings)
        started.append(running)
        return running

    yield factory  # type: ignore[misc]
    for running in started:
        if not running.task.done():
            await running.stop()


async def wait_db(db: Path, predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out; readings={count(db)} dead={count(db, 'dead_letters')}")


async def publish(port: int, messages: list[tuple[str, bytes]], client_id: str = "pub") -> None:
    await asyncio.to_thread(publish_many, port, messages, 1, client_id)


async def test_garbage_mixed_into_valid_traffic(
    broker: Broker, tmp_path: Path, running_factory
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, broker, "garbage", pipeline="max_payload_bytes = 2048")
    running = await running_factory(settings)
    now_ms = int(time.time() * 1000)
    valid = [
        (
            f"sensors/s{i % 5}/temperature",
            json.dumps({"value": i, "ts": now_ms - 10_000 + i}).encode(),
        )
        for i in range(200)
    ]
    garbage = [
        ("sensors/s1/temperature", b"{not json"),  # invalid JSON
        ("sensors/s1/temperature", b'{"value": "warm"}'),  # wrong type
        ("sensors/s1/temperature", b'{"value": NaN}'),  # NaN
        ("sensors/s1/temperature", b'{"value": 1e999}'),  # Inf
        ("sensors/s1/temperature", b'{"value": 1, "ts": 12}'),  # absurd timestamp
        ("sensors/s1/temperature", b'{"value": 1, "ts": "2999-01-01T00:00:00Z"}'),  # future
        ("sensors/s1/temperature", b'{"value": ' + b"1" * 3000 + b"}"),  # oversize
        ("sensors/s1/temperature", bytes(range(256))),  # binary junk
        ("sensors/s1/temperature", b"\xff\xfe\x00\x01"),  # invalid UTF-8
        ("sensors/s1/temperature", b""),  # empty
        ("sensors/s1", b"[1, 2, 3]"),  # array of non-objects
        ("sensors/s1/temperature", b'{"value": 1, "sensor_id": "a\\u0000b"}'),  # control character
        ("sensors/s1/temperature", b'{"value": 1, "sensor_id": "' + b"x" * 200 + b'"}'),  # too long
    ]
    skipped = [  # well-formed, nothing storable: counted and acked, not dead letters
        ("sensors/s9", b'{"state": "ON", "linkquality": "high"}'),
        ("sensors/s9", b'"just a string"'),
    ]
    mixed: list[tuple[str, bytes]] = []
    for i, message in enumerate(valid):
        mixed.append(message)
        if i % 14 == 0 and garbage:
            mixed.append(garbage.pop())
    mixed.extend(garbage)
    mixed.extend(skipped)
    await publish(broker.port, mixed)
    db = settings.storage.path
    await wait_db(db, lambda: count(db) >= 200 and count(db, "dead_letters") >= 13)
    await asyncio.sleep(0.3)
    assert count(db) == 200
    reasons = [r[0] for r in db_rows(db, "SELECT reason FROM dead_letters")]
    assert len(reasons) == 13
    assert all(reasons), "every dead letter has a reason"
    assert any("invalid JSON" in r for r in reasons)
    assert any("max_payload_bytes" in r for r in reasons)
    assert any("finite" in r for r in reasons)
    assert any("before" in r for r in reasons) and any("future" in r for r in reasons)
    metrics = running.gateway.metrics
    assert metrics.messages_empty == 2
    assert metrics.messages_dead_lettered == 13
    # Still ingesting after the garbage.
    await publish(broker.port, [("sensors/after/temperature", b'{"value": 1}')], client_id="pub2")
    await wait_db(db, lambda: count(db) == 201)
    assert await running.stop()


async def test_payload_shapes_and_topic_mapping(
    broker: Broker, tmp_path: Path, running_factory
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, broker, "shapes")
    await running_factory(settings)
    ts = int(time.time()) - 60
    await publish(
        broker.port,
        [
            (
                "sensors/kitchen",
                json.dumps({"temperature": 21.5, "humidity": 40.2, "ts": ts}).encode(),
            ),
            ("sensors/kitchen/co2", json.dumps({"value": 415, "ts": ts, "unit": "ppm"}).encode()),
            (
                "sensors/x/y",
                json.dumps(
                    [
                        {"sensor_id": "garage", "metric": "door", "value": True, "ts": ts * 1000},
                        {
                            "sensor_id": "garage",
                            "metric": "door",
                            "value": False,
                            "ts": ts * 1000 + 1,
                        },
                    ]
                ).encode(),
            ),
        ],
        client_id="pub-shapes",
    )
    db = settings.storage.path
    await wait_db(db, lambda: count(db) >= 5)
    rows = db_rows(
        db,
        "SELECT s.sensor_id, s.metric, s.unit, r.ts, r.value FROM readings r JOIN series s ON s.id = r.series_id"
        " ORDER BY s.sensor_id, s.metric, r.ts",
    )
    assert rows == [
        ("garage", "door", "", ts * 1000, 1.0),
        ("garage", "door", "", ts * 1000 + 1, 0.0),
        ("kitchen", "co2", "ppm", ts * 1000, 415.0),
        ("kitchen", "humidity", "", ts * 1000, 40.2),
        ("kitchen", "temperature", "", ts * 1000, 21.5),
    ]


async def test_mqtt5_persistent_session(broker: Broker, tmp_path: Path, running_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, broker, "v5", env={"TIDEGATE_MQTT__PROTOCOL": "5"})
    first = await running_factory(settings)
    assert await first.stop()
    now_ms = int(time.time() * 1000) - 5000
    messages = [
        (f"sensors/v5s{i % 3}/t", json.dumps({"value": i, "ts": now_ms + i}).encode())
        for i in range(300)
    ]
    await publish(broker.port, messages, client_id="pub-v5")
    running = await running_factory(settings)
    db = settings.storage.path
    await wait_db(db, lambda: count(db) >= 300)
    assert await running.stop()
    assert count(db) == 300


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


async def test_read_commands(broker: Broker, tmp_path: Path, running_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, broker, "cli")
    running = await running_factory(settings)
    base = int(time.time() * 1000) - 3_600_000
    messages = [
        (
            f"sensors/room {i % 2}/temperature",
            json.dumps({"value": i, "ts": base + i * 1000, "unit": "°C"}).encode(),
        )
        for i in range(50)
    ]
    await publish(broker.port, messages, client_id="pub-cli")
    db = settings.storage.path
    await wait_db(db, lambda: count(db) >= 50)
    assert await running.stop()

    out = cli("query", "--db", str(db), "--sensor", "room 1", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 25
    assert set(rows[0]) == {"gateway", "sensor_id", "metric", "ts", "value", "unit"}
    assert rows[0]["ts"].endswith("Z") and rows[0]["unit"] == "°C"
    assert [r["value"] for r in rows] == [float(i) for i in range(1, 50, 2)]

    out = cli("query", "--db", str(db), "--limit", "0", "--format", "csv", "--since", "2h")
    assert out.returncode == 0 and len(out.stdout.strip().splitlines()) == 51
    out = cli("query", "--db", str(db), "--limit", "3")
    assert out.returncode == 0 and len(out.stdout.strip().splitlines()) == 5  # header, rule, 3 rows
    assert "showing the first 3 rows; more match" in out.stderr
    out = cli("query", "--db", str(db), "--since", "yesterday-ish")
    assert out.returncode == 1 and "bad time" in out.stderr
    out = cli("sensors", "--db", str(db), "--format", "json")
    sensors = json.loads(out.stdout)
    assert [(s["sensor_id"], s["count"], s["last_value"]) for s in sensors] == [
        ("room 0", 25, 48.0),
        ("room 1", 25, 49.0),
    ]
    out = cli("stats", "--db", str(db))
    assert out.returncode == 0 and "readings      50" in out.stdout
    out = cli("stats", "--db", str(tmp_path / "missing.db"))
    assert out.returncode == 1 and "not found" in out.stderr


async def test_shutdown_is_bounded_while_writes_keep_failing(
    broker: Broker, tmp_path: Path
) -> None:
    """SIGTERM during a storage outage (disk full): the gateway still exits within its
    shutdown timeout, acks nothing it did not commit, and the broker redelivers it all."""
    from gateway.storage.memory import MemoryStore

    env = {"TIDEGATE_PIPELINE__QUEUE_SIZE": "5", "TIDEGATE_PIPELINE__SHUTDOWN_TIMEOUT_S": "2",
           "TIDEGATE_PIPELINE__RETRY_MAX_S": "0.2"}  # fmt: skip
    settings = settings_for(tmp_path, broker, "outage", env=env)
    running = await run_gateway(settings)
    failing = MemoryStore()
    failing.fail_next = 10**9  # every write fails, like a full disk
    running.gateway.pipeline.sink = failing
    now_ms = int(time.time() * 1000) - 5000
    messages = [
        (f"sensors/o{i % 3}/t", json.dumps({"value": i, "ts": now_ms + i}).encode())
        for i in range(60)
    ]
    await publish(broker.port, messages, client_id="pub-outage")
    metrics = running.gateway.metrics
    deadline = time.monotonic() + 20
    while metrics.write_errors < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert metrics.write_errors >= 3
    started = time.monotonic()
    running.gateway.request_stop()
    clean = await asyncio.wait_for(running.task, 25)
    assert clean is False  # could not commit: said so instead of hanging
    assert time.monotonic() - started < 15
    assert metrics.acks_sent == 0 and failing.stored == {}
    # Nothing was acked, so the broker hands everything to the next run.
    again = await run_gateway(settings)
    db = settings.storage.path
    await wait_db(db, lambda: count(db) >= 60)
    assert await again.stop()
    assert count(db) == 60
