"""Central ingest against a real PostgreSQL: series ids, day partitions, COPY."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway.storage.postgresql.ingest import (
    DAY_MS,
    CentralSeries,
    PartitionCache,
    SeriesKey,
    copy_readings,
    ensure_partitions,
    existing_partitions,
    is_missing_partition,
    partition_name,
)
from gateway.storage.postgresql.schema import migrate

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
T0 = 1_764_460_800_000  # 2025-11-30T00:00:00Z


def ms_of(ts: dt.datetime) -> int:
    delta = ts - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


@pytest.fixture
async def conn(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_url)
    await migrate(connection)
    yield connection
    await connection.close()


async def test_series_ids_are_created_once_and_cached(conn: asyncpg.Connection) -> None:
    series = CentralSeries(cache_size=100)
    keys = [
        SeriesKey("s1", "temp", "C"),
        SeriesKey("s1", "hum"),
        SeriesKey("s2", "t", "", '{"a":"b"}'),
    ]
    first = await series.ids(conn, "gw", keys)
    assert sorted(first) == sorted(keys) and len(set(first.values())) == 3
    assert series.created == 3
    again = await CentralSeries().ids(conn, "gw", keys)  # a fresh cache: found, not created
    assert again == first
    other = await series.ids(conn, "gw2", keys[:1])  # another gateway: another series
    assert other[keys[0]] not in first.values()
    assert await conn.fetchval("SELECT count(*) FROM tidegate.series") == 4


async def test_concurrent_ids_from_two_connections_agree(pg_url: str) -> None:
    conns = [await asyncpg.connect(pg_url) for _ in range(3)]
    try:
        await migrate(conns[0])
        keys = [SeriesKey(f"s{i}", "m") for i in range(300)]

        # Each writer asks for an overlapping set in its own order, in its own transaction.
        async def resolve(conn: asyncpg.Connection, order: list[SeriesKey]) -> dict[SeriesKey, int]:
            async with conn.transaction():
                found = await CentralSeries().ids(conn, "gw", order)
                await asyncio.sleep(0.05)  # hold the rows' locks a moment
                return found

        results = await asyncio.gather(
            resolve(conns[0], keys), resolve(conns[1], keys[::-1]), resolve(conns[2], keys[100:])
        )
        assert results[0] == results[1]
        assert all(results[2][k] == results[0][k] for k in keys[100:])
        assert await conns[0].fetchval("SELECT count(*) FROM tidegate.series") == 300
    finally:
        for conn in conns:
            await conn.close()


async def test_an_id_made_in_a_rolled_back_transaction_is_not_cached(
    conn: asyncpg.Connection,
) -> None:
    series = CentralSeries()
    key = SeriesKey("gone", "m")
    tx = conn.transaction()
    await tx.start()
    lost = (await series.ids(conn, "gw", [key]))[key]
    await tx.rollback()
    assert ("gw", key) not in series.cache
    now = (await series.ids(conn, "gw", [key]))[key]
    assert now != lost and series.cache[("gw", key)] == now


async def test_the_same_rows_twice_store_nothing_the_second_time(conn: asyncpg.Connection) -> None:
    sid = (await CentralSeries().ids(conn, "gw", [SeriesKey("s", "m")]))[SeriesKey("s", "m")]
    rows = [(sid, T0 + i * 1000, float(i)) for i in range(5000)]
    async with conn.transaction():
        assert await copy_readings(conn, rows) == 5000
    async with conn.transaction():
        assert await copy_readings(conn, rows) == 0
    # duplicates within one batch, and a mix of new and old
    assert await copy_readings(conn, [rows[0], rows[0], (sid, T0 - 1, 1.0)]) == 1
    assert await conn.fetchval("SELECT count(*) FROM tidegate.readings") == 5001
    # the staging table is empty after each commit
    assert await conn.fetchval("SELECT count(*) FROM pg_temp.tidegate_staging") == 0


async def test_timestamps_round_trip_to_the_millisecond(conn: asyncpg.Connection) -> None:
    sid = (await CentralSeries().ids(conn, "gw", [SeriesKey("s", "m")]))[SeriesKey("s", "m")]
    stamps = [T0 + 1, T0 + 999, T0 + 123_457, 946_684_800_001, 4_102_444_799_999]
    await copy_readings(conn, [(sid, ts, 0.5) for ts in stamps])
    rows = await conn.fetch("SELECT ts FROM tidegate.readings_data ORDER BY ts")
    assert [ms_of(r[0]) for r in rows] == sorted(stamps)
    # ... also computed in SQL, and the microseconds are exactly zero
    exact = await conn.fetchval(
        "SELECT bool_and(extract(microseconds FROM ts)::bigint % 1000 = 0)"
        " FROM tidegate.readings_data"
    )
    assert exact is True


async def test_partitions_are_made_on_demand_across_a_day_boundary(
    conn: asyncpg.Connection,
) -> None:
    sid = (await CentralSeries().ids(conn, "gw", [SeriesKey("s", "m")]))[SeriesKey("s", "m")]
    cache = PartitionCache()
    rows = [(sid, T0 - 1, 1.0), (sid, T0, 2.0), (sid, T0 + DAY_MS + 5, 3.0)]
    async with conn.transaction():
        assert await copy_readings(conn, rows, partitions=cache) == 3
    assert cache.created == 3  # 29 Nov, 30 Nov, 1 Dec
    found = await existing_partitions(conn)
    assert sorted(found.values()) == [
        "readings_data_p20251129",
        "readings_data_p20251130",
        "readings_data_p20251201",
    ]
    by_partition = await conn.fetch(
        "SELECT tableoid::regclass::text, count(*) FROM tidegate.readings_data GROUP BY 1 ORDER BY 1"
    )
    assert [tuple(r) for r in by_partition] == [
        ("tidegate.readings_data_p20251129", 1),
        ("tidegate.readings_data_p20251130", 1),
        ("tidegate.readings_data_p20251201", 1),
    ]
    assert await ensure_partitions(conn, T0 - 1, T0 + DAY_MS) == 0  # idempotent
    assert partition_name(T0 // DAY_MS) == "readings_data_p20251130"


async def test_two_writers_creating_one_partition_in_their_transactions(pg_url: str) -> None:
    conns = [await asyncpg.connect(pg_url) for _ in range(2)]
    try:
        await migrate(conns[0])
        key = SeriesKey("s", "m")
        sid = (await CentralSeries().ids(conns[0], "gw", [key]))[key]

        async def write(conn: asyncpg.Connection, offset: int) -> int:
            async with conn.transaction():
                stored = await copy_readings(conn, [(sid, T0 + 10 * DAY_MS + offset, 1.0)])
                await asyncio.sleep(0.1)
                return stored

        assert await asyncio.gather(write(conns[0], 1), write(conns[1], 2)) == [1, 1]
        assert len(await existing_partitions(conns[0])) == 1
    finally:
        for conn in conns:
            await conn.close()


async def test_pending_marks_one_per_series_and_minute(conn: asyncpg.Connection) -> None:
    ids = await CentralSeries().ids(conn, "gw", [SeriesKey("a", "m"), SeriesKey("b", "m")])
    a, b = ids[SeriesKey("a", "m")], ids[SeriesKey("b", "m")]
    rows = [(a, T0 + i * 1000, 1.0) for i in range(120)] + [(b, T0 + 59_999, 2.0)]
    await copy_readings(conn, rows)
    marks = await conn.fetch("SELECT series_id, bucket FROM tidegate.rollup_pending ORDER BY 1, 2")
    assert [(r[0], ms_of(r[1])) for r in marks] == [(a, T0), (a, T0 + 60_000), (b, T0)]


async def test_a_stale_partition_cache_fails_clearly_and_recovers(
    conn: asyncpg.Connection,
) -> None:
    sid = (await CentralSeries().ids(conn, "gw", [SeriesKey("s", "m")]))[SeriesKey("s", "m")]
    cache = PartitionCache()
    await copy_readings(conn, [(sid, T0, 1.0)], partitions=cache)
    await conn.execute(f"DROP TABLE tidegate.{partition_name(T0 // DAY_MS)}")  # retention
    with pytest.raises(asyncpg.CheckViolationError) as info:
        await copy_readings(conn, [(sid, T0 + 1, 1.0)], partitions=cache)
    assert is_missing_partition(info.value)
    cache.forget()
    assert await copy_readings(conn, [(sid, T0 + 1, 1.0)], partitions=cache) == 1
