"""Central maintenance against a real PostgreSQL: rollup math, late data, one process
at a time, retention by whole days, and exact rollups while writers keep writing."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway.storage.postgresql.ingest import (
    DAY_MS,
    CentralSeries,
    SeriesKey,
    copy_readings,
    existing_partitions,
    partition_name,
)
from gateway.storage.postgresql.maintenance import (
    MAINTENANCE_LOCK,
    Retention,
    maintain_once,
)
from gateway.storage.postgresql.schema import migrate

NOW = 1_764_504_000_000  # 2025-11-30T12:00:00Z
KEEP = Retention(raw_ms=14 * DAY_MS, rollup_1m_ms=90 * DAY_MS, rollup_1h_ms=None)
EPOCH_MS = "(extract(epoch FROM {0}) * 1000)::bigint"


@pytest.fixture
async def conn(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_url)
    await migrate(connection)
    yield connection
    await connection.close()


async def series_id(conn: asyncpg.Connection, name: str = "s") -> int:
    key = SeriesKey(name, "m")
    return (await CentralSeries().ids(conn, "gw", [key]))[key]


async def rollups(conn: asyncpg.Connection, table: str) -> list[tuple[object, ...]]:
    rows = await conn.fetch(
        f"SELECT series_id, {EPOCH_MS.format('bucket')}, vmin, vmax, vsum, n, vlast,"
        f" {EPOCH_MS.format('last_ts')} FROM tidegate.{table} ORDER BY 1, 2"
    )
    return [_rounded(tuple(r)) for r in rows]


def _rounded(row: tuple[object, ...]) -> tuple[object, ...]:
    """vsum rounded: a sum's last bits depend on the order of addition."""
    return (*row[:4], round(float(row[4]), 6), *row[5:])  # type: ignore[arg-type]


def expected(rows: list[tuple[int, int, float]], size_ms: int) -> list[tuple[object, ...]]:
    buckets: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for sid, ts, value in rows:
        buckets.setdefault((sid, ts - ts % size_ms), []).append((ts, value))
    out = []
    for (sid, bucket), points in sorted(buckets.items()):
        values = [v for _t, v in points]
        last = max(points)
        row = (sid, bucket, min(values), max(values), sum(values), len(values), last[1], last[0])
        out.append(_rounded(row))
    return out


async def test_rollups_match_the_raw_readings_and_late_data_updates_them(
    conn: asyncpg.Connection,
) -> None:
    sid = await series_id(conn)
    base = NOW - 3 * 3_600_000
    rows = [(sid, base + i * 7_000, float((i * 37) % 101)) for i in range(2000)]  # ~3.9 h
    await copy_readings(conn, rows)
    result = await maintain_once(conn, KEEP, NOW, step_rows=50)
    assert result.ran and result.marks_done == len({ts // 60_000 for _s, ts, _v in rows})
    assert await conn.fetchval("SELECT count(*) FROM tidegate.rollup_pending") == 0
    assert await rollups(conn, "rollup_1m") == expected(rows, 60_000)
    assert await rollups(conn, "rollup_1h") == expected(rows, 3_600_000)
    # a late reading, newest of its minute, and a duplicate of a stored one
    late = [(sid, base + 59_999, 500.0), rows[3]]
    assert await copy_readings(conn, late) == 1
    await maintain_once(conn, KEEP, NOW)
    rows.append(late[0])
    assert await rollups(conn, "rollup_1m") == expected(rows, 60_000)
    assert await rollups(conn, "rollup_1h") == expected(rows, 3_600_000)


async def test_one_process_at_a_time(pg_url: str, conn: asyncpg.Connection) -> None:
    holder = await asyncpg.connect(pg_url)
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK)
        assert not (await maintain_once(conn, KEEP, NOW)).ran
    finally:
        await holder.close()  # a dead process releases it with its connection
    assert (await maintain_once(conn, KEEP, NOW)).ran


async def test_partitions_ahead_and_retention_by_whole_days(conn: asyncpg.Connection) -> None:
    sid = await series_id(conn)
    old_day = NOW - 20 * DAY_MS
    await copy_readings(conn, [(sid, old_day, 1.0), (sid, NOW - DAY_MS, 2.0), (sid, NOW, 3.0)])
    await conn.execute(
        "INSERT INTO tidegate.rollup_1m VALUES ($1, timestamptz 'epoch' + $2 * interval '1 ms',"
        " 1, 1, 1, 1, 1, timestamptz 'epoch' + $2 * interval '1 ms')",
        sid,
        NOW - 100 * DAY_MS,
    )
    result = await maintain_once(conn, KEEP, NOW)
    # the expired day's mark is too late (its raw data is going), the others rolled up
    assert result.too_late == 1 and result.minutes_written == 2
    assert result.partitions_dropped == [partition_name(old_day // DAY_MS)]
    assert result.rollups_deleted == 1
    days = sorted(await existing_partitions(conn))
    assert days == [NOW // DAY_MS + k for k in (-1, 0, 1, 2)]
    assert await conn.fetchval("SELECT count(*) FROM tidegate.readings") == 2


async def test_rollups_stay_exact_while_writers_keep_writing(pg_url: str) -> None:
    conns = [await asyncpg.connect(pg_url) for _ in range(3)]
    try:
        await migrate(conns[0])
        ids = [await series_id(conns[0], f"s{i}") for i in range(5)]
        written: list[tuple[int, int, float]] = []
        stop = asyncio.Event()

        async def writer(conn: asyncpg.Connection, seed: int) -> None:
            rng = random.Random(seed)
            for _round in range(40):
                batch = [
                    (rng.choice(ids), NOW - rng.randrange(0, 300_000), rng.random())
                    for _ in range(50)
                ]
                async with conn.transaction():
                    await copy_readings(conn, batch)
                    await asyncio.sleep(rng.random() * 0.01)  # commit a little later
                written.extend(batch)
            stop.set()

        async def maintainer(conn: asyncpg.Connection) -> None:
            while not stop.is_set():
                await maintain_once(conn, KEEP, NOW, step_rows=7)

        await asyncio.gather(writer(conns[0], 1), writer(conns[1], 2), maintainer(conns[2]))
        await maintain_once(conns[2], KEEP, NOW)
        raw = await conns[0].fetch(
            f"SELECT series_id, {EPOCH_MS.format('ts')}, value FROM tidegate.readings_data"
        )
        stored = [tuple(r) for r in raw]
        assert len(stored) == len({(s, t) for s, t, _v in written})
        assert await rollups(conns[0], "rollup_1m") == expected(stored, 60_000)  # type: ignore[arg-type]
        assert await rollups(conns[0], "rollup_1h") == expected(stored, 3_600_000)  # type: ignore[arg-type]
    finally:
        for conn in conns:
            await conn.close()


async def test_dead_letters_are_capped_per_gateway_newest_kept(conn: asyncpg.Connection) -> None:
    for gateway, n in (("a", 5), ("b", 2)):
        for i in range(n):
            await conn.execute(
                "INSERT INTO tidegate.dead_letters (gateway_id, received_at, subscription,"
                " topic, payload, payload_size, reason) VALUES ($1, now(), '', $2, '', 0, 'x')",
                gateway,
                f"t{i}",
            )
    result = await maintain_once(conn, Retention(None, None, None, dead_letter_max_rows=3), NOW)
    assert result.dead_letters_deleted == 2
    rows = await conn.fetch("SELECT gateway_id, topic FROM tidegate.dead_letters ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("a", "t2"),
        ("a", "t3"),
        ("a", "t4"),
        ("b", "t0"),
        ("b", "t1"),
    ]
