"""Retention with a controlled clock: each tier purged on its own schedule, never ahead
of the rollups, in bounded chunks; purged space returned by incremental vacuum."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import RetentionConfig
from gateway.models import Reading
from gateway.request import AGGREGATES
from gateway.storage.sqlite import integrity
from gateway.storage.sqlite.retention import Purger, page_stats
from gateway.storage.sqlite.rollups import rollup_all
from tests.support.storage import (
    DAY,
    HOUR,
    MINUTE,
    T0,
    Clock,
    Rig,
    aggregate,
    make_rig,
    open_writer,
    write,
)


def readings_over(days: int, every_ms: int = 5 * MINUTE, sensors: int = 2) -> list[Reading]:
    return [
        Reading(f"s{s}", "t", T0 + i * every_ms, float(i % 50))
        for i in range(days * DAY // every_ms)
        for s in range(sensors)
    ]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    made = await make_rig(
        tmp_path,
        Clock(T0 + 5 * DAY),
        retention=RetentionConfig(raw="2d", rollup_1m="3d", rollup_1h="forever"),
    )
    try:
        yield made
    finally:
        await made.sink.close()


def oldest(conn: sqlite3.Connection, table: str, column: str) -> int:
    return int(conn.execute(f"SELECT min({column}) FROM {table}").fetchone()[0])


async def test_each_tier_is_purged_after_its_retention(rig: Rig) -> None:
    await rig.sink.write_batch(readings_over(5), [])
    with rig.conn() as conn:
        before = [
            (b.start_ms, b.values)
            for b in aggregate(
                conn, sensor="s0", metric="t", since_ms=T0, until_ms=T0 + 4 * DAY,
                bucket_ms=6 * HOUR, aggregates=AGGREGATES, tier="raw",
            )
        ]  # fmt: skip
    await rig.maintenance.run_once()
    await rig.maintenance.run_once()  # a second round finds nothing more to do
    now = rig.clock()
    conn = rig.conn()
    try:
        assert oldest(conn, "readings", "ts") >= now - 2 * DAY
        assert oldest(conn, "readings", "ts") < now - 2 * DAY + 5 * MINUTE
        assert oldest(conn, "rollup_1m", "bucket") >= now - 3 * DAY - HOUR
        assert oldest(conn, "rollup_1h", "bucket") == T0  # kept forever
        after = [
            (b.start_ms, b.values, b.tier)
            for b in aggregate(
                conn, sensor="s0", metric="t", since_ms=T0, until_ms=T0 + 4 * DAY,
                bucket_ms=6 * HOUR, aggregates=AGGREGATES,
            )
        ]  # fmt: skip
        # History older than the raw retention is still there, from the rollups.
        assert [(s, v) for s, v, _tier in after] == before
        assert {tier for *_rest, tier in after} == {"1h"}
    finally:
        conn.close()
    purged = rig.metrics.storage.purged_rows
    assert purged["raw"] == 2 * (3 * DAY // (5 * MINUTE))
    assert purged["1m"] > 0 and "1h" not in purged
    assert rig.metrics.storage.maintenance_step.count > 0


async def test_nothing_is_purged_before_it_is_rolled_up(rig: Rig) -> None:
    await rig.sink.write_batch(readings_over(5), [])
    await rig.maintenance.purge_expired(rig.clock())  # the rollups have not run yet
    with rig.conn() as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 2 * 5 * 288
    await rig.maintenance.roll_up(rig.clock())
    await rig.maintenance.purge_expired(rig.clock())
    with rig.conn() as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] < 2 * 5 * 288


def test_purge_runs_in_bounded_chunks(tmp_path: Path) -> None:
    conn, writer, tracker = open_writer(tmp_path / "c.db")
    write(conn, writer, [Reading("s", "t", T0 + i * 1000, 1.0) for i in range(1000)])
    rollup_all(conn, T0 + HOUR, tracker)
    purger = Purger("raw", chunk_rows=50)
    purger.start(conn, T0 + 900_000)
    per_step = []
    while purger.active:
        per_step.append(purger.step(conn, 0.0))  # zero budget: one chunk per step
        assert len(per_step) < 100
    assert max(per_step) <= 50 and sum(per_step) == 900
    assert conn.execute("SELECT min(ts) FROM readings").fetchone()[0] == T0 + 900_000
    conn.close()


async def test_purged_space_goes_back_to_the_disk(rig: Rig) -> None:
    await rig.sink.write_batch(readings_over(5, every_ms=MINUTE, sensors=3), [])
    await rig.maintenance.roll_up(rig.clock())
    with rig.conn() as conn:
        pages_before = page_stats(conn).page_count
    await rig.maintenance.purge_expired(rig.clock())
    await rig.maintenance.vacuum()  # more than a quarter of the file is free: worth it
    with rig.conn() as conn:
        stats = page_stats(conn)
    assert stats.auto_vacuum == 2
    assert stats.freelist_count < 256
    assert rig.metrics.storage.vacuumed_pages > 0
    assert stats.page_count < pages_before * 0.75  # the file shrinks at the next checkpoint


def test_an_old_database_is_switched_to_incremental_vacuum(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
    conn.commit()
    conn.close()
    monkeypatch.setattr(integrity, "AUTO_CONVERT_MAX_BYTES", 0)
    with caplog.at_level(logging.WARNING):
        assert integrity.ensure_incremental_vacuum(db) is False  # too big: only a warning
    assert "tidegate vacuum" in caplog.text
    monkeypatch.undo()
    assert integrity.ensure_incremental_vacuum(db) is True
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1000
