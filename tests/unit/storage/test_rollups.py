"""Rollups: equal to a direct aggregate of the raw data (property test), late data,
duplicates, the version 1 → 2 upgrade with data, tier selection, bounded steps."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli.main import main
from gateway.models import Reading
from gateway.request import AGGREGATES
from gateway.storage.sqlite.compaction import compact_below, compact_step
from gateway.storage.sqlite.rollups import GRACE_MS, RollupJob, rollup_all
from gateway.storage.sqlite.schema import MIGRATIONS, SCHEMA_VERSION
from gateway.storage.sqlite.tiers import plan, summary
from gateway.storage.sqlite.writer import SqliteSink
from tests.support.storage import (
    HOUR,
    MINUTE,
    T0,
    aggregate,
    assert_same,
    close,
    direct,
    open_writer,
    stored,
    write,
)

SENSORS = ("a", "b", "c")


def hot_rows(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM readings_hot").fetchone()[0])


def settle(conn: sqlite3.Connection, job: RollupJob, now: int) -> None:
    """What the storage service does each round: move what is due out of the hot
    table, then roll up until caught up."""
    compact_step(conn, now, chunk_rows=1000)
    while not job.step(conn, now, 1.0).caught_up:
        pass


def check_rollups(conn: sqlite3.Connection) -> None:
    assert_same(stored(conn, "rollup_1m"), direct(conn, MINUTE))
    assert_same(stored(conn, "rollup_1h"), direct(conn, HOUR))


def check_queries(conn: sqlite3.Connection, since: int, until: int, bucket: int) -> set[str]:
    auto = list(
        aggregate(
            conn,
            sensor=None,
            metric=None,
            since_ms=since,
            until_ms=until,
            bucket_ms=bucket,
            aggregates=AGGREGATES,
        )
    )
    raw = list(
        aggregate(
            conn,
            sensor=None,
            metric=None,
            since_ms=since,
            until_ms=until,
            bucket_ms=bucket,
            aggregates=AGGREGATES,
            tier="raw",
        )
    )
    assert [(b.sensor_id, b.start_ms) for b in auto] == [(b.sensor_id, b.start_ms) for b in raw]
    for x, y in zip(auto, raw, strict=True):
        assert all(close(x.values[k], y.values[k]) for k in AGGREGATES), (x, y)
    return {b.tier for b in auto}


reading_st = st.tuples(
    st.integers(0, len(SENSORS) - 1),
    st.integers(0, 3 * HOUR // 1000),  # seconds after T0: about three hours
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.integers(0, 4),  # the batch it arrives in: any order, so often late
    st.sampled_from((None, None, None, 0, 2, 4)),  # redelivered in this batch, if any
)
step_st = st.tuples(st.integers(HOUR // 2, 4 * HOUR), st.sampled_from((0.0, 0.0001, 1.0)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    readings=st.lists(reading_st, min_size=10, max_size=200),
    steps=st.lists(step_st, min_size=5, max_size=5),
)
def test_rollups_equal_a_direct_aggregate_of_raw_data(
    readings: list[tuple[int, int, float, int, int | None]],
    steps: list[tuple[int, float]],
) -> None:
    """Five batches with readings in any order (late data) and redelivered duplicates
    carrying other values, while the job runs at increasing clock times with budgets
    from one statement to everything."""
    batches: list[list[Reading]] = [[] for _ in range(5)]
    for s, sec, value, batch, again in readings:
        reading = Reading(SENSORS[s], "m", T0 + sec * 1000, value)
        batches[batch].append(reading)
        if again is not None:
            # A redelivery with another value: the stored (first) value must win.
            batches[again].append(reading._replace(value=value + 1))
    steps = sorted(steps)
    with tempfile.TemporaryDirectory() as tmp:
        conn, writer, tracker = open_writer(Path(tmp) / "p.db")
        job = RollupJob(tracker)
        try:
            for batch, (at, budget) in zip(batches, steps, strict=True):
                write(conn, writer, batch)
                for _ in range(3):
                    # As the storage service does: move what is due out of the hot
                    # table (small chunks here), then roll up what is cold.
                    compact_step(conn, T0 + at, chunk_rows=7)
                    job.step(conn, T0 + at, budget)
            end = T0 + 4 * HOUR + GRACE_MS + HOUR
            for _ in range(100_000):
                compact_step(conn, end, chunk_rows=7)
                if job.step(conn, end, 0.0005).caught_up and not hot_rows(conn):
                    break
            check_rollups(conn)
            for bucket in (MINUTE, 5 * MINUTE, HOUR, 2 * HOUR, 7_000):
                check_queries(conn, T0 - HOUR + 12_345, end, bucket)
            assert check_queries(conn, T0, T0 + 3 * HOUR, HOUR) <= {"1h"}
        finally:
            conn.close()


def test_late_data_changes_min_max_sum_count_and_last_only_if_newer(tmp_path: Path) -> None:
    conn, writer, tracker = open_writer(tmp_path / "l.db")
    job = RollupJob(tracker)
    minute = T0 + 10 * MINUTE
    write(conn, writer, [Reading("s", "t", minute + i * 10_000, float(i)) for i in range(1, 5)])
    now = T0 + 3 * HOUR
    rollup_all(conn, now, tracker)
    row = stored(conn, "rollup_1m")[(1, minute)]
    assert row == (1.0, 4.0, 10.0, 4, 4.0, minute + 40_000)

    # Older than the last reading: extends min/max, sum and count; last stays.
    write(conn, writer, [Reading("s", "t", minute + 5_000, 100.0)])
    write(conn, writer, [Reading("s", "t", minute + 6_000, -100.0)])
    assert conn.execute("SELECT count(*) FROM rollup_dirty").fetchone()[0] == 1
    settle(conn, job, now)
    assert stored(conn, "rollup_1m")[(1, minute)] == (-100.0, 100.0, 10.0, 6, 4.0, minute + 40_000)
    assert stored(conn, "rollup_1h")[(1, T0)] == (-100.0, 100.0, 10.0, 6, 4.0, minute + 40_000)

    # Newer than the last reading (still late for the rollup): it becomes last.
    write(conn, writer, [Reading("s", "t", minute + 50_000, 7.0)])
    settle(conn, job, now)
    assert stored(conn, "rollup_1m")[(1, minute)] == (-100.0, 100.0, 17.0, 7, 7.0, minute + 50_000)

    # A redelivered duplicate changes nothing.
    write(conn, writer, [Reading("s", "t", minute + 50_000, 999.0)])
    settle(conn, job, now)
    check_rollups(conn)
    assert stored(conn, "rollup_1h")[(1, T0)][3] == 7
    conn.close()


def test_queries_stay_exact_while_late_data_waits_for_its_rollup(tmp_path: Path) -> None:
    conn, writer, tracker = open_writer(tmp_path / "p.db")
    write(conn, writer, [Reading(s, "t", T0 + i * MINUTE, 1.0) for i in range(180) for s in "xy"])
    rollup_all(conn, T0 + 4 * HOUR, tracker)
    write(conn, writer, [Reading("x", "t", T0 + 30_000, 500.0)])  # late; not rolled up yet
    buckets = list(
        aggregate(
            conn, sensor=None, metric="t", since_ms=T0, until_ms=T0 + 3 * HOUR,
            bucket_ms=HOUR, aggregates=("max", "count"),
        )
    )  # fmt: skip
    by_series = {
        (b.sensor_id, b.start_ms): (b.values["max"], b.values["count"], b.tier) for b in buckets
    }
    assert by_series[("x", T0)] == (500.0, 61, "raw")  # x reads raw from its dirty minute on
    assert by_series[("y", T0)] == (1.0, 60, "1h")  # y is unaffected
    check_queries(conn, T0, T0 + 3 * HOUR, HOUR)
    conn.close()


def test_late_reading_just_below_the_watermark(tmp_path: Path) -> None:
    conn, writer, tracker = open_writer(tmp_path / "w.db")
    write(conn, writer, [Reading("s", "t", T0 + i * 1000, 1.0) for i in range(600)])
    now = T0 + 20 * MINUTE + 45_000
    rollup_all(conn, now, tracker)
    mark = conn.execute(
        "SELECT value FROM storage_state WHERE key = 'rollup_1m.watermark'"
    ).fetchone()[0]
    assert mark == T0 + 20 * MINUTE
    write(conn, writer, [Reading("s", "t", mark - 1, 50.0), Reading("s", "t", mark, 60.0)])
    rollup_all(conn, now + MINUTE, tracker)
    assert_same(stored(conn, "rollup_1m"), direct(conn, MINUTE))  # the hour is still open
    assert stored(conn, "rollup_1m")[(1, mark - MINUTE)][1] == 50.0
    conn.close()


def make_version1_database(path: Path, n: int) -> None:
    """A database as tidegate's first schema wrote it, with data."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.executemany(
        "INSERT INTO series (sensor_id, metric, created_at) VALUES (?, 'temp', 0)",
        [("s1",), ("s2",)],
    )
    conn.executemany(
        "INSERT INTO readings VALUES (?, ?, ?)",
        [(1 + i % 2, T0 - 5 * HOUR + i * 7_000, float(i % 97)) for i in range(n)],
    )
    conn.close()


async def test_upgrading_a_version1_database_with_data(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    make_version1_database(db, 3000)
    sink = SqliteSink(db)
    await sink.open()
    try:
        # New writes after the upgrade use the same series ids.
        await sink.write_batch([Reading("s1", "temp", T0 + 1, 5.0)], [])
    finally:
        await sink.close()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 3001
        assert conn.execute("SELECT count(*) FROM series").fetchone()[0] == 2
        # The old data is rolled up in the background after the upgrade.
        rollup_all(conn, T0 + 2 * HOUR)
        check_rollups(conn)
        assert check_queries(conn, T0 - 5 * HOUR, T0 + HOUR, HOUR) == {"1h"}
    finally:
        conn.close()


def test_each_bucket_says_which_tier_answered(tmp_path: Path) -> None:
    conn, writer, tracker = open_writer(tmp_path / "t.db")
    write(conn, writer, [Reading("s", "t", T0 + i * 30_000, float(i)) for i in range(6 * 120)])
    now = T0 + 5 * HOUR + 30 * MINUTE + 40_000  # rollups: minutes to 5:30, hours to 5:00
    rollup_all(conn, now, tracker)
    assert summary(plan(conn, T0, T0 + 5 * HOUR, HOUR)) == "1h"
    assert summary(plan(conn, T0, T0 + 5 * HOUR, 5 * MINUTE)) == "1m"
    assert summary(plan(conn, T0, T0 + 5 * HOUR, 30_000)) == "raw"
    # Unaligned start: the first bucket comes from raw readings; the open hour from
    # minutes, its last seconds from raw.
    assert summary(plan(conn, T0 + 1234, now, HOUR)) == "1h+raw"
    assert summary(plan(conn, T0 + MINUTE, T0 + 5 * HOUR + 20 * MINUTE, HOUR)) == "1h+1m"
    assert summary(plan(conn, T0, T0 + 6 * HOUR, HOUR, tier="raw")) == "raw"
    assert summary(plan(conn, T0, T0 + 2 * HOUR, HOUR, tier="1m")) == "1m"
    check_queries(conn, T0 + 1234, now, HOUR)

    # Raw data gone (retention): old buckets are still answered, from the rollups.
    conn.execute("DELETE FROM readings WHERE ts < ?", (T0 + 2 * HOUR,))
    buckets = list(
        aggregate(
            conn,
            sensor="s",
            metric="t",
            since_ms=T0,
            until_ms=T0 + 2 * HOUR,
            bucket_ms=HOUR,
            aggregates=("count", "avg", "last"),
        )
    )
    assert [(b.tier, b.values["count"]) for b in buckets] == [("1h", 120), ("1h", 120)]
    assert buckets[0].values["last"] == 119.0
    conn.close()


def test_cli_aggregate_reports_the_tier(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    conn, writer, tracker = open_writer(db)
    write(conn, writer, [Reading("s", "t", T0 + i * 60_000, float(i)) for i in range(180)])
    rollup_all(conn, T0 + 4 * HOUR, tracker)
    conn.close()
    out = io.StringIO()
    args = ["aggregate", "--db", str(db), "--since", str(T0 // 1000), "--until",
            str((T0 + 3 * HOUR) // 1000), "--bucket", "1h", "--agg", "avg,max", "-f", "json"]  # fmt: skip
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    rows = json.loads(out.getvalue())
    assert [(r["tier"], r["max"]) for r in rows] == [("1h", 59.0), ("1h", 119.0), ("1h", 179.0)]
    assert rows[0]["avg"] == pytest.approx(29.5)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main([*args[:-4], "--agg", "median"]) == 1
    assert "unknown aggregate 'median'" in err.getvalue()


def test_steps_stay_within_budget_and_resume(tmp_path: Path) -> None:
    conn, writer, tracker = open_writer(tmp_path / "b.db")
    for s in range(20):
        write(conn, writer, [Reading(f"s{s}", "t", T0 + i * 10_000, float(i)) for i in range(720)])
    compact_below(conn, T0 + 3 * HOUR)
    job = RollupJob(tracker)
    steps = 0
    while not job.step(conn, T0 + 3 * HOUR, 0.0).caught_up:  # one statement per step
        steps += 1
        assert steps < 10_000
    assert steps > 20  # it really was cut into pieces
    check_rollups(conn)
    conn.close()
