"""Query timings on a generated database, through tidegate's own read path.

The database has ``SERIES`` series (sensor ``s00000`` … metric ``temperature``) with
readings every ``step`` ms up to now, in tidegate's schema, written with plain
``sqlite3.executemany`` in key order (fast to generate; the row layout is the same as
the gateway writes). It is cached under ``bench/results/`` by row count.

Timed through the read interface the CLI and the HTTP API use
(:class:`gateway.storage.base.ReadStore`, here the SQLite reader: a worker thread and
one read transaction per call), as the guide's targets say (medians of repeated runs on a warm cache, plus
the first, cold-ish run):

* hourly averages of one sensor over the last day — ``ReadStore.aggregate``;
* the latest value of every one of the 10,000 sensors — ``ReadStore.latest``;
* one sensor's raw readings of the last 15 minutes (no target: it shows what a
  per-series read of recent data costs with the hot table in its steady state).

The newest ``HOT_SECONDS`` of 1 Hz readings of every series are in the hot table, as in
a gateway ingesting a 10,000-sensor fleet (the rest was compacted).
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.request import AggregateQuery, ReadingsQuery
from gateway.storage.sqlite.connection import apply_pragmas
from gateway.storage.sqlite.reader import SqliteReader
from gateway.storage.sqlite.schema import SCHEMA_VERSION, prepare_database

SERIES = 10_000
HOT_SECONDS = 35
"""Seconds of 1 Hz readings of every series left in the hot table (350,000 rows)."""
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass
class QueryTiming:
    name: str
    rows: int
    first_ms: float
    median_ms: float
    target_ms: float


def _layout(total_rows: int) -> tuple[int, int]:
    """(readings per series, step ms) so that each series spans a bit over a day."""
    per_series = max(1, total_rows // SERIES)
    step = max(1, (DAY_MS + HOUR_MS) // per_series)
    return per_series, step


def _rows(per_series: int, step: int, end_ms: int) -> Iterator[tuple[int, int, float]]:
    start = end_ms - per_series * step
    for series_id in range(1, SERIES + 1):
        base = start + series_id % step  # sensors do not tick in lockstep
        for k in range(per_series):
            yield (series_id, base + k * step, ((series_id + k) * 7919 % 10_000) / 100)


def generate(path: Path, total_rows: int) -> float:
    """Write the database (replacing a partial one); returns seconds taken."""
    started = time.monotonic()
    tmp = path.with_suffix(".partial")
    for stale in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        stale.unlink(missing_ok=True)
    per_series, step = _layout(total_rows)
    end_ms = int(time.time() * 1000) // HOUR_MS * HOUR_MS
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        apply_pragmas(conn, "OFF", 5000)
        prepare_database(conn)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO series (id, sensor_id, metric, unit, tags, created_at)"
            " VALUES (?, ?, 'temperature', 'Cel', '', 0)",
            [(i, f"s{i - 1:05d}") for i in range(1, SERIES + 1)],
        )
        # Straight into the per-series table, as compaction leaves it; the hot table
        # stays empty (the hot table's share of a query is measured by the tests'
        # sizes, not here).
        conn.executemany(
            "INSERT INTO readings_cold (series_id, ts, value) VALUES (?, ?, ?)",
            _rows(per_series, step, end_ms),
        )
        conn.execute(
            "INSERT OR REPLACE INTO storage_state (key, value) VALUES ('cold_ceiling', ?)",
            (end_ms + 1,),
        )
        # The steady state of a 1 Hz fleet: the last HOT_SECONDS of readings are still in
        # the time-ordered hot table (the compaction lag plus a chunk being collected).
        conn.executemany(
            "INSERT INTO readings_hot (ts, series_id, value) VALUES (?, ?, ?)",
            (
                (end_ms + sec * 1000 + series_id % 1000, series_id, (series_id + sec) % 100 / 4)
                for sec in range(1, HOT_SECONDS + 1)
                for series_id in range(1, SERIES + 1)
            ),
        )
        conn.execute("CREATE TABLE bench_meta (end_ms INTEGER)")
        conn.execute("INSERT INTO bench_meta VALUES (?)", (end_ms + (HOT_SECONDS + 1) * 1000,))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("ANALYZE")
    finally:
        conn.close()
    tmp.replace(path)
    return time.monotonic() - started


def ensure_database(cache_dir: Path, total_rows: int) -> tuple[Path, float]:
    """The cached database for ``total_rows`` (generated if missing); (path, gen seconds)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"query-{total_rows}-v{SCHEMA_VERSION}-hot{HOT_SECONDS}.db"
    if path.exists():
        return path, 0.0
    return path, generate(path, total_rows)


async def _time(fn: Callable[[], Awaitable[int]], repeat: int) -> tuple[int, float, float]:
    timings: list[float] = []
    rows = 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = await fn()
        timings.append((time.perf_counter() - started) * 1000)
    return rows, timings[0], statistics.median(timings[1:] or timings)


def run_queries(path: Path, repeat: int = 11) -> list[QueryTiming]:
    """Time the guide's two target queries on ``path``."""
    with asyncio.Runner() as runner:
        return runner.run(_run_queries(path, repeat))


async def _run_queries(path: Path, repeat: int) -> list[QueryTiming]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        end_ms = int(conn.execute("SELECT end_ms FROM bench_meta").fetchone()[0])
    finally:
        conn.close()
    sensor = f"s{SERIES // 2:05d}"
    store = SqliteReader(path, threads=1, timeout_s=None)
    try:

        async def hourly() -> int:
            # The raw read path (rollup tiers, where they exist, are empty here).
            query = AggregateQuery(
                sensor=sensor,
                metric="temperature",
                since_ms=end_ms - DAY_MS,
                until_ms=end_ms,
                bucket_ms=HOUR_MS,
                aggregates=("avg",),
                tier="raw",
            )
            return len(await store.aggregate(query))

        async def latest() -> int:
            return len(await store.latest())

        async def recent() -> int:
            query = ReadingsQuery(
                sensor=sensor, metric="temperature", since_ms=end_ms - 15 * 60_000, limit=0
            )
            return len(await store.readings(query))

        out = []
        rows, first, median = await _time(hourly, repeat)
        out.append(QueryTiming("hourly averages, 1 sensor, last 24 h", rows, first, median, 50))
        rows, first, median = await _time(latest, max(3, repeat // 3))
        out.append(QueryTiming(f"latest value of {SERIES:,} sensors", rows, first, median, 100))
        rows, first, median = await _time(recent, repeat)
        out.append(QueryTiming("raw readings, 1 sensor, last 15 min", rows, first, median, 0))
        return out
    finally:
        await store.close()


def bytes_per_reading(path: Path) -> float:
    """File size over readings."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
    finally:
        conn.close()
    return path.stat().st_size / rows if rows else 0.0
