"""The direct-mode write side against a real PostgreSQL: commits, duplicates, dead
letters, a server restart between batches, ids shared by a group."""

from __future__ import annotations

import asyncpg
import pytest

from gateway.config import PostgresConfig, StorageConfig
from gateway.errors import StorageError
from gateway.metrics import Metrics
from gateway.models import DeadLetter, Reading
from gateway.series_gate import SeriesGate
from gateway.storage.postgresql.store import PostgresStore
from tests.support.postgres import PostgresServer

T0 = 1_764_460_800_000


def storage(url: str, **extra: object) -> StorageConfig:
    return StorageConfig(
        backend="postgresql",
        postgresql=PostgresConfig(url=url, statement_timeout_s=5, connect_timeout_s=3),
        **extra,  # type: ignore[arg-type]
    )


def readings(n: int, start: int = 0) -> list[Reading]:
    return [
        Reading(
            f"s{i % 7}",
            "temp",
            T0 + i * 1000,
            float(i),
            "C" if i % 2 else None,
            (("room", "a"),) if i % 3 == 0 else (),
        )
        for i in range(start, start + n)
    ]


async def test_batches_commit_once_and_dead_letters_are_kept(pg_url: str) -> None:
    gate = SeriesGate(0, 0)
    store = PostgresStore(storage(pg_url), Metrics(), "gw-a", series_gate=gate)
    # (the router admits series into the gate; the store only seeds it at open)
    await store.open()
    try:
        first = await store.write_batch(
            readings(500), [DeadLetter(T0, "t/1", b"\xff" * 10, "bad json", "sub")]
        )
        assert (first.stored, first.duplicates, first.dead_letters) == (500, 0, 1)
        again = await store.write_batch(readings(600), [])  # 500 repeated, 100 new
        assert (again.stored, again.duplicates) == (100, 500)
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_url)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM tidegate.readings WHERE gateway_id = 'gw-a'")
            == 600
        )
        row = await conn.fetchrow(
            "SELECT unit, value FROM tidegate.readings WHERE sensor_id = 's1' ORDER BY ts LIMIT 1"
        )
        assert tuple(row) == ("C", 1.0)
        tags = await conn.fetch(
            "SELECT tags FROM tidegate.series WHERE sensor_id = 's0' AND unit = '' ORDER BY 1"
        )
        assert [t[0] for t in tags] == ["", '{"room":"a"}']
        dead = await conn.fetchrow(
            "SELECT gateway_id, topic, payload_size, reason FROM tidegate.dead_letters"
        )
        assert tuple(dead) == ("gw-a", "t/1", 10, "bad json")
        assert (
            await conn.fetchval("SELECT mode FROM tidegate.gateways WHERE gateway_id = 'gw-a'")
            == "direct"
        )
    finally:
        await conn.close()
    # a second process of the same group sees the series (the gate is seeded with them)
    gate2 = SeriesGate(0, 0)
    other = PostgresStore(storage(pg_url), Metrics(), "gw-a", series_gate=gate2)
    await other.open()
    try:
        assert gate2.series == len({(r.sensor_id, r.metric, r.unit, r.tags) for r in readings(600)})
        assert (await other.write_batch(readings(10), [])).duplicates == 10
    finally:
        await other.close()


async def test_an_edge_gateway_id_is_refused(pg_url: str) -> None:
    store = PostgresStore(storage(pg_url), Metrics(), "gw-a")
    await store.open()
    await store.close()
    conn = await asyncpg.connect(pg_url)
    await conn.execute("INSERT INTO tidegate.gateways (gateway_id, mode) VALUES ('edge-1', 'edge')")
    await conn.close()
    with pytest.raises(StorageError, match="edge gateway"):
        await PostgresStore(storage(pg_url), Metrics(), "edge-1").open()


async def test_a_restarted_server_fails_one_attempt_then_the_retry_commits(
    postgres: PostgresServer, pg_url: str
) -> None:
    store = PostgresStore(storage(pg_url), Metrics(), "gw")
    await store.open()
    try:
        await store.write_batch(readings(100), [])
        postgres.stop("immediate")
        with pytest.raises(StorageError):
            await store.write_batch(readings(100, 100), [])
        with pytest.raises(StorageError):  # still down: the reconnect fails too
            await store.write_batch(readings(100, 100), [])
        postgres.start()
        result = await store.write_batch(readings(100, 100), [])
        assert result.stored == 100 and store.reconnects == 1
    finally:
        if postgres.postmaster_pid() is None:
            postgres.start()
        await store.close()
