"""The size cap and free-disk guard: purge_oldest shrinks the database from its oldest
raw data, stop holds writes (backpressure, nothing acked, nothing lost) and resumes by
itself, and purge_oldest falls back to stop when nothing may go."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import PipelineConfig
from gateway.errors import StorageFull
from gateway.models import Envelope, Reading
from gateway.pipeline import Pipeline
from gateway.storage.sqlite import wear
from gateway.storage.sqlite.guard import Guard, Usage
from gateway.storage.sqlite.retention import PageStats
from tests.support.storage import DAY, HOUR, T0, Clock, Rig, make_rig


def three_days(sensors: int = 2, every_ms: int = 5000) -> list[Reading]:
    """Dense enough that raw readings dominate (12 a minute per series)."""
    return [
        Reading(f"s{s}", "t", T0 + i * every_ms, float(i % 60))
        for i in range(3 * DAY // every_ms)
        for s in range(sensors)
    ]


@pytest.fixture
async def purge_rig(tmp_path: Path) -> AsyncIterator[Rig]:
    made = await make_rig(tmp_path, Clock(T0 + 3 * DAY + HOUR), full_policy="purge_oldest")
    try:
        yield made
    finally:
        await made.sink.close()


@pytest.fixture
async def stop_rig(tmp_path: Path) -> AsyncIterator[Rig]:
    made = await make_rig(tmp_path, Clock(T0 + 3 * DAY + HOUR), full_policy="stop")
    try:
        yield made
    finally:
        await made.sink.close()


def count(rig: Rig, sql: str) -> int:
    with rig.conn() as conn:
        return int(conn.execute(sql).fetchone()[0])


async def test_purge_oldest_shrinks_the_database_from_its_oldest_raw_data(purge_rig: Rig) -> None:
    rig = purge_rig
    await rig.sink.write_batch(three_days(), [])
    await rig.maintenance.roll_up(rig.clock())
    hours_before = count(rig, "SELECT count(*) FROM rollup_1h")
    await rig.maintenance._step(wear.truncate_wal)  # measure the data, not a full WAL
    usage = await rig.maintenance.measure()
    assert usage.wal_bytes == 0
    rig.maintenance.guard.max_size = usage.database_bytes // 2

    await rig.maintenance.enforce_limits()

    after = await rig.maintenance.measure()
    assert after.database_bytes <= usage.database_bytes // 2 * 0.95
    assert rig.maintenance.guard.paused_reason is None
    assert rig.metrics.storage.purged_for_space_rows > 0
    # The newest raw data and every rollup stayed; the oldest raw data went first.
    assert count(rig, "SELECT max(ts) FROM readings") == T0 + 3 * DAY - 5000
    assert count(rig, "SELECT min(ts) FROM readings") > T0 + HOUR
    assert count(rig, "SELECT count(*) FROM rollup_1h") == hours_before
    await rig.sink.write_batch([Reading("s0", "t", T0 + 3 * DAY, 1.0)], [])  # still writable


async def test_purge_oldest_never_purges_what_is_not_rolled_up_and_then_stops(
    purge_rig: Rig,
) -> None:
    rig = purge_rig
    await rig.sink.write_batch(three_days(), [])  # no rollup has run: nothing may go
    rig.maintenance.guard.max_size = 4096
    await rig.maintenance.enforce_limits()
    assert rig.metrics.storage.paused
    assert "nothing older than the rollups" in rig.metrics.storage.pause_reason
    assert count(rig, "SELECT count(*) FROM readings") == len(three_days())
    with pytest.raises(StorageFull, match=r"storage\.max_size"):
        await rig.sink.write_batch([Reading("s0", "t", T0, 1.0)], [])


async def test_stop_holds_writes_acks_nothing_and_resumes_by_itself(stop_rig: Rig) -> None:
    rig = stop_rig
    await rig.sink.write_batch(three_days(1), [])
    usage = await rig.maintenance.measure()
    guard = rig.maintenance.guard
    guard.max_size = usage.database_bytes - 1
    await rig.maintenance.enforce_limits()
    assert rig.metrics.storage.paused

    pipeline = Pipeline(rig.sink, PipelineConfig(retry_max_s=0.05, queue_size=50), rig.metrics)
    pipeline.start()
    acked: list[int] = []
    for i in range(40):
        reading = Reading("new", "t", T0 + 4 * DAY + i, float(i))
        await pipeline.submit(Envelope([reading], ack=lambda i=i: acked.append(i)))
    for _ in range(100):
        if rig.metrics.write_errors >= 2:
            break
        await asyncio.sleep(0.01)
    assert acked == [] and not rig.metrics.storage_ok
    assert "ingestion paused" in rig.metrics.storage_error

    guard.max_size = usage.database_bytes * 4  # e.g. the cap was raised
    await rig.maintenance.enforce_limits()
    assert not rig.metrics.storage.paused
    assert await pipeline.stop(10)
    assert sorted(acked) == list(range(40))
    assert rig.metrics.storage_ok
    assert count(rig, "SELECT count(*) FROM readings r JOIN series s ON s.id = r.series_id"
                      " WHERE s.sensor_id = 'new'") == 40  # fmt: skip


async def test_low_free_disk_is_pressure_too(stop_rig: Rig) -> None:
    rig = stop_rig
    rig.maintenance.guard.min_free_disk = 10**18
    await rig.maintenance.enforce_limits()
    assert "below storage.min_free_disk" in rig.metrics.storage.pause_reason
    rig.maintenance.guard.min_free_disk = 1
    await rig.maintenance.enforce_limits()
    assert not rig.metrics.storage.paused


def usage(used_pages: int, free_disk: int) -> Usage:
    return Usage(PageStats(1000, used_pages, 0, 2), wal_bytes=0, disk_free=free_disk)


def test_pressure_and_relief_have_a_gap() -> None:
    guard = Guard(Path("x.db"), max_size=100_000, min_free_disk=10_000, policy="stop")
    assert guard.pressure(usage(100, 50_000)) is None
    assert "over storage.max_size" in (guard.pressure(usage(101, 50_000)) or "")
    assert "below storage.min_free_disk" in (guard.pressure(usage(10, 9_999)) or "")
    # Between 95 % and 100 % of the cap: no new pressure, but not relieved either.
    assert guard.pressure(usage(97, 50_000)) is None
    assert guard.pressure(usage(97, 50_000), relief=0.05) is not None
    assert guard.pressure(usage(94, 50_000), relief=0.05) is None
    assert not Guard(Path("x.db"), 0, 0, "stop").enabled
