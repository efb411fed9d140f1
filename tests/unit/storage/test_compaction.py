"""The hot/cold readings layout (schema 3): routing, compaction, exactly-once across
both tables, the v2 → v3 upgrade, and the read path over both tables."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.models import Reading
from gateway.storage.sqlite import queries
from gateway.storage.sqlite.compaction import Compactor, compact_all, compact_below, compact_step
from gateway.storage.sqlite.connection import open_readonly
from gateway.storage.sqlite.rollups import WATERMARK, RollupJob, get_state
from gateway.storage.sqlite.schema import (
    CEILING_KEY,
    MIGRATIONS,
    SCHEMA_VERSION,
    cold_ceiling,
    migrate,
)
from gateway.storage.sqlite.writer import BatchWriter
from tests.support.storage import MINUTE, T0, open_writer, write
from tests.support.storage import readings as read_rows


def counts(conn: sqlite3.Connection) -> tuple[int, int]:
    hot = conn.execute("SELECT count(*) FROM readings_hot").fetchone()[0]
    cold = conn.execute("SELECT count(*) FROM readings_cold").fetchone()[0]
    return int(hot), int(cold)


def assert_split(conn: sqlite3.Connection) -> None:
    """The layout's invariants: cold rows below the ceiling, no key in both tables."""
    ceiling = cold_ceiling(conn)
    cold_max = conn.execute("SELECT max(ts) FROM readings_cold").fetchone()[0]
    assert cold_max is None or cold_max < ceiling
    both = conn.execute(
        "SELECT count(*) FROM readings_hot h JOIN readings_cold c"
        " ON c.series_id = h.series_id AND c.ts = h.ts"
    ).fetchone()[0]
    assert both == 0


def readings(n: int, start: int, sensors: int = 3, step_ms: int = 1000) -> list[Reading]:
    return [
        Reading(f"s{i % sensors}", "t", start + (i // sensors) * step_ms, float(i))
        for i in range(n)
    ]


def test_every_reading_goes_to_the_hot_table_unless_its_key_is_cold(tmp_path: Path) -> None:
    conn, writer, _tracker = open_writer(tmp_path / "a.db")
    write(conn, writer, readings(30, T0))
    assert counts(conn) == (30, 0)
    moved = compact_below(conn, T0 + 5000)
    assert moved == 15 and counts(conn) == (15, 15)
    assert cold_ceiling(conn) == T0 + 5000
    # Older than the ceiling: a new key still goes to the hot table (cheap), a key the
    # cold table holds is a duplicate.
    result = writer.write(
        conn, [Reading("s0", "t", T0 + 500, 9.0), Reading("s0", "t", T0, 8.0)], []
    )
    assert (result.stored, result.duplicates) == (1, 1)
    assert counts(conn) == (16, 15)
    assert_split(conn)
    # The next move takes it along.
    compact_below(conn, T0 + 6000)
    assert counts(conn) == (12, 19)
    assert_split(conn)
    conn.close()


def test_redeliveries_are_ignored_in_either_table(tmp_path: Path) -> None:
    conn, writer, _tracker = open_writer(tmp_path / "b.db")
    batch = readings(60, T0)
    write(conn, writer, batch)
    compact_below(conn, T0 + 10_000)
    again = [r._replace(value=r.value + 100) for r in batch]
    result = writer.write(conn, again, [])
    assert (result.stored, result.duplicates) == (0, 60)
    compact_all(conn, T0 + 60_000)
    result = writer.write(conn, again, [])
    assert (result.stored, result.duplicates) == (0, 60)
    values = [v for (v,) in conn.execute("SELECT value FROM readings ORDER BY ts, series_id")]
    assert values == [r.value for r in sorted(batch, key=lambda r: (r.ts_ms, r.sensor_id))]
    conn.close()


def test_a_step_waits_for_a_chunk_or_for_age(tmp_path: Path) -> None:
    conn, writer, _tracker = open_writer(tmp_path / "c.db")
    now = T0 + 10 * MINUTE
    write(conn, writer, readings(300, now - 40_000, sensors=10, step_ms=1000))  # 30 s of data
    # 100 rows are older than the lag, fewer than a chunk, and young: nothing moves.
    assert compact_step(conn, now, chunk_rows=1000) == 0
    # A chunk's worth is due: about that many of the oldest move (the 10 readings that
    # share the 50th one's timestamp wait for the next step).
    moved = compact_step(conn, now, chunk_rows=50)
    assert moved == 40
    assert_split(conn)
    # Old enough (past max age): everything older than the lag moves, the rest waits.
    moved = compact_step(conn, now + 200_000, chunk_rows=100_000, max_age_ms=120_000)
    assert counts(conn) == (0, 300) and moved == 260
    conn.close()


def test_future_readings_stay_hot_until_their_time(tmp_path: Path) -> None:
    conn, writer, _tracker = open_writer(tmp_path / "f.db")
    now = T0 + MINUTE
    write(conn, writer, [Reading("s", "t", now + 3_600_000, 1.0), Reading("s", "t", T0, 2.0)])
    compact_step(conn, now + 10 * MINUTE, chunk_rows=1000)
    assert counts(conn) == (1, 1)
    assert_split(conn)
    conn.close()


def test_rollups_stop_at_the_oldest_hot_reading(tmp_path: Path) -> None:
    conn, writer, tracker = open_writer(tmp_path / "r.db")
    write(conn, writer, readings(600, T0, sensors=1))  # 10 minutes, 1 per second
    compact_below(conn, T0 + 4 * MINUTE + 30_000)
    job = RollupJob(tracker)
    while not job.step(conn, T0 + 60 * MINUTE, 1.0).caught_up:
        pass
    assert get_state(conn, WATERMARK["1m"]) == T0 + 4 * MINUTE
    # A late reading in an already rolled-up minute: marked dirty at once, recomputed
    # only once it is cold (the rollup reads the cold table).
    write(conn, writer, [Reading("s0", "t", T0 + 1500, 100.0)])
    assert counts(conn) == (331, 270)
    while not job.step(conn, T0 + 60 * MINUTE, 1.0).caught_up:
        pass
    assert conn.execute("SELECT count(*) FROM rollup_dirty").fetchone()[0] == 1
    assert conn.execute("SELECT vmax FROM rollup_1m WHERE bucket = ?", (T0,)).fetchone()[0] < 100
    compact_step(conn, T0 + 60 * MINUTE, chunk_rows=1000)
    while not job.step(conn, T0 + 60 * MINUTE, 1.0).caught_up:
        pass
    assert conn.execute("SELECT count(*) FROM rollup_dirty").fetchone()[0] == 0
    assert conn.execute("SELECT vmax FROM rollup_1m WHERE bucket = ?", (T0,)).fetchone()[0] == 100
    assert counts(conn) == (0, 601)
    conn.close()


def test_a_round_is_cut_into_short_steps_and_stays_exact(tmp_path: Path) -> None:
    conn, writer, _tracker = open_writer(tmp_path / "s.db")
    now = T0 + 10 * MINUTE
    batch = readings(20_000, T0, sensors=100)  # 200 s of 100 sensors, all older than the lag
    write(conn, writer, batch)
    compactor = Compactor(chunk_rows=10_000, step_rows=1000)
    moved = compactor.step(conn, now)
    assert compactor.in_round and 0 < moved <= 1500
    assert cold_ceiling(conn) == T0 + 99_000  # the 10,000th oldest reading's second
    assert_split(conn)
    # Mid-round, everything arrives again: moved or not, each key is a duplicate.
    result = writer.write(conn, [r._replace(value=-1.0) for r in batch], [])
    assert (result.stored, result.duplicates) == (0, 20_000)
    steps = 1
    while compactor.in_round:
        moved += compactor.step(conn, now)
        steps += 1
        assert_split(conn)
    assert moved == 9_900 and 9 <= steps <= 11  # that second's readings wait
    assert counts(conn) == (10_100, 9_900)
    assert conn.execute("SELECT count(*) FROM readings WHERE value < 0").fetchone()[0] == 0
    conn.close()


batch_st = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 600), st.integers(0, 1000)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(batch_st, min_size=1, max_size=8),
    clocks=st.lists(st.integers(0, 900), min_size=8, max_size=8),
    chunk=st.integers(1, 50),
    step_rows=st.integers(1, 20),
)
def test_every_key_is_stored_once_whatever_the_order(
    batches: list[list[tuple[int, int, int]]], clocks: list[int], chunk: int, step_rows: int
) -> None:
    """Batches with repeated keys (redeliveries with other values) and timestamps in any
    order, compaction steps at arbitrary clocks in between — often in the middle of a
    round, with some series moved and others not: each distinct key is stored exactly
    once, with the value that arrived first, and the invariants hold at every commit."""
    first: dict[tuple[str, int], float] = {}
    compactor = Compactor(chunk, max_age_ms=60_000, step_rows=step_rows)
    with tempfile.TemporaryDirectory() as tmp:
        conn, writer, _tracker = open_writer(Path(tmp) / "p.db")
        try:
            for batch, clock in zip(batches, clocks, strict=False):
                rows = [Reading(f"s{s}", "m", T0 + sec * 1000, float(v)) for s, sec, v in batch]
                for r in rows:
                    first.setdefault((r.sensor_id, r.ts_ms), r.value)
                writer.write(conn, rows, [])
                compactor.step(conn, T0 + clock * 1000)
                assert_split(conn)
            stored = {
                (sensor, ts): value
                for sensor, ts, value in conn.execute(
                    "SELECT s.sensor_id, r.ts, r.value FROM readings r JOIN series s"
                    " ON s.id = r.series_id"
                )
            }
            assert sum(counts(conn)) == len(first)
            assert stored == first
        finally:
            conn.close()


def version2_database(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for version in (0, 1):
        for statement in MIGRATIONS[version].split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO series (sensor_id, metric, created_at) VALUES ('a', 't', 0)")
    conn.execute("INSERT INTO series (sensor_id, metric, created_at) VALUES ('b', 't', 0)")
    conn.executemany(
        "INSERT INTO readings VALUES (?, ?, ?)",
        [(1 + i % 2, T0 + i * 1000, float(i)) for i in range(100)],
    )
    conn.execute("INSERT INTO storage_state VALUES ('rollup_1m.watermark', ?)", (T0 + 10 * MINUTE,))
    conn.close()


def test_upgrading_a_version2_database_keeps_its_data_cold(tmp_path: Path) -> None:
    db = tmp_path / "v2.db"
    version2_database(db)
    conn = sqlite3.connect(db, isolation_level=None)
    assert migrate(conn) == 2
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert counts(conn) == (0, 100)
    assert cold_ceiling(conn) == T0 + 99 * 1000 + 1  # just above the newest reading
    writer = BatchWriter(1024, 100, 1000)
    writer.load(conn)
    result = writer.write(
        conn, [Reading("a", "t", T0, 5.0), Reading("a", "t", T0 + 11 * MINUTE, 6.0)], []
    )
    assert (result.stored, result.duplicates) == (1, 1)  # the first is an old key
    assert counts(conn) == (1, 100)
    assert_split(conn)
    conn.close()


def test_the_readings_view_routes_inserts_and_deletes(tmp_path: Path) -> None:
    conn, _writer, _tracker = open_writer(tmp_path / "v.db")
    conn.execute("INSERT INTO series (sensor_id, metric, created_at) VALUES ('a', 't', 0)")
    conn.execute("INSERT INTO readings_cold VALUES (1, ?, 1.0)", (T0 - 1000,))
    conn.execute("INSERT OR REPLACE INTO storage_state VALUES (?, ?)", (CEILING_KEY, T0))
    conn.executemany(
        "INSERT OR IGNORE INTO readings VALUES (1, ?, ?)",
        [(T0 - 1000, 5.0), (T0 - 2000, 2.0), (T0, 3.0), (T0, 4.0)],
    )
    assert counts(conn) == (2, 1)  # the cold key and the repeated hot key were skipped
    assert_split(conn)
    conn.execute("DELETE FROM readings WHERE ts IN (?, ?)", (T0 - 1000, T0))
    assert counts(conn) == (1, 0)
    conn.close()


def test_queries_see_both_tables(tmp_path: Path) -> None:
    conn, writer, _tracker = open_writer(tmp_path / "q.db")
    write(conn, writer, readings(90, T0, sensors=3))  # 30 readings each, 1 s apart
    compact_below(conn, T0 + 10_000)
    write(conn, writer, [Reading("s9", "t", T0 + 5000, 7.0)])
    compact_below(conn, T0 + 10_000)  # s9's reading is cold now
    write(conn, writer, [Reading("s9", "t", T0 + 2000, 6.0)])  # late: hot, but older
    conn.close()
    ro = open_readonly(tmp_path / "q.db")
    try:
        latest = {(r.sensor_id, r.last_ts_ms, r.last_value) for r in queries.latest(ro)}
        assert latest == {
            ("s0", T0 + 29_000, 87.0),
            ("s1", T0 + 29_000, 88.0),
            ("s2", T0 + 29_000, 89.0),
            ("s9", T0 + 5000, 7.0),
        }
        only = queries.latest(ro, sensor="s1")
        assert [(r.last_ts_ms, r.last_value) for r in only] == [(T0 + 29_000, 88.0)]
        info = {s.sensor_id: s for s in queries.series(ro)}
        assert (info["s0"].count, info["s0"].first_ts_ms, info["s0"].last_ts_ms) == (
            30,
            T0,
            T0 + 29_000,
        )
        assert (info["s9"].count, info["s9"].last_value) == (2, 7.0)
        assert (info["s9"].first_ts_ms, info["s9"].last_ts_ms) == (T0 + 2000, T0 + 5000)
        assert queries.time_bounds(ro) == (T0, T0 + 29_000)
        # A late reading waiting in the hot table is not the latest.
        assert [(r.last_ts_ms, r.last_value) for r in queries.latest(ro, sensor="s9")] == [
            (T0 + 5000, 7.0)
        ]
        rows = read_rows(ro, sensor="s0", limit=0)
        assert [r.ts_ms for r in rows] == [T0 + i * 1000 for i in range(30)]
        assert queries.stats(ro, tmp_path / "q.db").readings == 92
    finally:
        ro.close()
