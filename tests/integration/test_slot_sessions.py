"""Slot mode of the MQTT source (gateway.sources.mqtt + gateway.sources.slots) against a
real Mosquitto and real PostgreSQL locks, two members in one event loop, each with its
own pipeline into an in-memory store:

* the members split the slots and every message is received once;
* a member whose lock session is cut (``pg_terminate_backend``: PostgreSQL restarted or
  a partition, as that member sees it) drops its slots at once, the other takes them
  over without a fight over the broker sessions, and the first comes back for its share;
* sessions of slots above a lowered ``mqtt.slots`` are retired: what was queued there is
  received, and they take no share afterwards.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import pytest

from gateway.config import MqttConfig, PipelineConfig, SubscriptionConfig, ValidationConfig
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.router import Router
from gateway.sources.mqtt import MqttSource
from gateway.storage.memory import MemoryStore
from gateway.storage.postgresql.schema import migrate
from gateway.storage.postgresql.slot_locks import PostgresSlotLocks
from tests.support import HOST, Broker, publish_many

pytestmark = [pytest.mark.integration]

SUBS = [
    SubscriptionConfig(topic="sensors/+/+", topic_template="sensors/{sensor_id}/{metric}", qos=1)
]
BASE_MS = 1_764_000_000_000


@dataclass
class Member:
    metrics: Metrics
    store: MemoryStore
    pipeline: Pipeline
    source: MqttSource
    locks: PostgresSlotLocks

    @property
    def held(self) -> tuple[int, ...]:
        assert self.metrics.slots is not None
        return self.metrics.slots.held


def messages(metric: str, n: int) -> list[tuple[str, bytes]]:
    return [
        (f"sensors/s{i % 25}/{metric}", json.dumps({"value": i, "ts": BASE_MS + i}).encode())
        for i in range(n)
    ]


@asynccontextmanager
async def member(broker: Broker, url: str, slots: int) -> AsyncIterator[Member]:
    config = MqttConfig(
        host=HOST,
        port=broker.port,
        client_id="tg-slots",
        shared_group="g",
        slots=slots,
        slot_claim_interval_s=0.2,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
        keepalive=10,
    )
    metrics = Metrics()
    store = MemoryStore()
    pipeline = Pipeline(store, PipelineConfig(), metrics)
    router = Router(SUBS, ValidationConfig().limits(), 65536)
    locks = PostgresSlotLocks(lambda: asyncpg.connect(url), config.client_id, keepalive_s=5)
    source = MqttSource(config, SUBS, router, pipeline, metrics, slot_locks=locks)
    await store.open()
    pipeline.start()
    source.start()
    try:
        yield Member(metrics, store, pipeline, source, locks)
    finally:
        await source.stop_reading()
        await pipeline.stop(5)
        await source.close()
        await store.close()


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def stored(*members: Member) -> list[tuple[object, int]]:
    """Every stored reading of ``members`` as (series key, ts), repeats across members
    kept (each store ignores its own duplicates)."""
    out: list[tuple[object, int]] = []
    for m in members:
        out.extend(m.store.stored)
    return out


async def publish(broker: Broker, batch: list[tuple[str, bytes]]) -> None:
    await asyncio.to_thread(publish_many, broker.port, batch)


@pytest.fixture
async def url(pg_url: str) -> str:
    conn = await asyncpg.connect(pg_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return pg_url


async def test_two_members_split_the_slots_and_receive_each_message_once(
    fresh_broker: Broker, url: str
) -> None:
    async with member(fresh_broker, url, 4) as a, member(fresh_broker, url, 4) as b:
        await until(lambda: len(a.held) == 2 and len(b.held) == 2 and a.source.connected)
        assert sorted(a.held + b.held) == [0, 1, 2, 3]
        await publish(fresh_broker, messages("t", 2000))
        await until(lambda: len(stored(a, b)) >= 2000)
        await asyncio.sleep(0.3)
        got = stored(a, b)
        assert len(got) == 2000 and len(set(got)) == 2000
        assert a.metrics.messages_committed > 200 and b.metrics.messages_committed > 200


async def test_a_member_that_loses_its_locks_lets_go_and_comes_back(
    fresh_broker: Broker, url: str
) -> None:
    async with member(fresh_broker, url, 4) as a, member(fresh_broker, url, 4) as b:
        await until(lambda: len(a.held) == 2 and len(b.held) == 2 and b.source.connected)
        b_reconnects = b.metrics.reconnects
        conn = a.locks._live()
        async with a.locks._busy:  # the member's manager uses this connection too
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        admin = await asyncpg.connect(url)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        assert a.metrics.slots is not None and b.metrics.slots is not None
        await until(lambda: a.metrics.slots is not None and a.metrics.slots.drops == 2)
        await until(lambda: len(b.held) == 4)
        # Back: a rejoins and the group settles again (b hands two slots over).
        await until(lambda: len(a.held) == 2 and len(b.held) == 2 and a.source.connected)
        assert b.metrics.slots.releases == 2
        # b's own slot connections were never kicked off their sessions.
        assert b.metrics.reconnects == b_reconnects
        await publish(fresh_broker, messages("u", 1000))
        await until(lambda: len(stored(a, b)) >= 1000)
        await asyncio.sleep(0.3)
        got = stored(a, b)
        assert len(got) == 1000 and len(set(got)) == 1000


async def test_sessions_above_a_lowered_slot_count_are_emptied_and_retired(
    fresh_broker: Broker, url: str
) -> None:
    async with member(fresh_broker, url, 4) as a:
        await until(lambda: len(a.held) == 4 and a.source.connected)
        await asyncio.sleep(0.3)  # the records are written in the background
    await publish(fresh_broker, messages("v", 800))  # queued over 4 offline sessions
    async with member(fresh_broker, url, 2) as b:
        await until(lambda: len(stored(b)) >= 800, timeout=30)
        await until(lambda: len(b.held) == 2)
        records = await b.locks.recorded()
        await until(lambda: b.metrics.slots is not None and b.metrics.slots.claims >= 2)
        assert records <= {0, 1, 2, 3}
        async with asyncio.timeout(20):
            while await b.locks.recorded() != {0, 1}:
                await asyncio.sleep(0.1)
        await publish(fresh_broker, messages("w", 400))
        await until(lambda: len(stored(b)) >= 1200)
        await asyncio.sleep(0.5)
        got = stored(b)
        assert len(got) == 1200 and len(set(got)) == 1200
