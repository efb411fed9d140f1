"""Helpers for the storage lifecycle tests: a synchronous writer over a real file, a
controlled clock, and direct aggregates of raw readings to compare rollups against."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.config import StorageConfig
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.parsing import parse_size
from gateway.request import AggregateQuery, ReadingsQuery
from gateway.storage.base import Bucket, ReadingRow
from gateway.storage.sqlite import queries
from gateway.storage.sqlite.connection import apply_pragmas
from gateway.storage.sqlite.guard import Guard
from gateway.storage.sqlite.maintenance import Maintenance
from gateway.storage.sqlite.rollups import LateDataTracker
from gateway.storage.sqlite.schema import prepare_database
from gateway.storage.sqlite.writer import BatchWriter, SqliteSink

HOUR = 3_600_000
MINUTE = 60_000
DAY = 24 * HOUR
T0 = 1_732_000_000_000 - 1_732_000_000_000 % HOUR
"""An hour-aligned base time (2024-11-19T07:00Z)."""


class Clock:
    """A controlled clock in epoch ms."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


def open_writer(path: Path) -> tuple[sqlite3.Connection, BatchWriter, LateDataTracker]:
    """The gateway's batch writer on a plain connection, with late-data tracking."""
    conn = sqlite3.connect(path, isolation_level=None)
    apply_pragmas(conn, "NORMAL", 5000)
    prepare_database(conn)
    writer = BatchWriter(1024, 1000, 10_000)
    writer.load(conn)
    tracker = LateDataTracker()
    writer.after_insert = tracker
    return conn, writer, tracker


def write(conn: sqlite3.Connection, writer: BatchWriter, readings: Iterable[Reading]) -> None:
    writer.write(conn, list(readings), [])


def direct(
    conn: sqlite3.Connection, size_ms: int
) -> dict[tuple[int, int], tuple[float, float, float, int, float, int]]:
    """(series_id, bucket) → (min, max, sum, count, last, last_ts) straight from raw rows."""
    out: dict[tuple[int, int], tuple[float, float, float, int, float, int]] = {}
    for sid, ts, value in conn.execute(
        "SELECT series_id, ts, value FROM readings ORDER BY series_id, ts"
    ):
        key = (sid, ts - ts % size_ms)
        prev = out.get(key)
        if prev is None:
            out[key] = (value, value, value, 1, value, ts)
        else:
            vmin, vmax, vsum, n, _last, _last_ts = prev
            out[key] = (min(vmin, value), max(vmax, value), vsum + value, n + 1, value, ts)
    return out


def stored(
    conn: sqlite3.Connection, table: str
) -> dict[tuple[int, int], tuple[float, float, float, int, float, int]]:
    return {
        (sid, b): (vmin, vmax, vsum, n, vlast, last_ts)
        for sid, b, vmin, vmax, vsum, n, vlast, last_ts in conn.execute(
            f"SELECT series_id, bucket, vmin, vmax, vsum, n, vlast, last_ts FROM {table}"
        )
    }


def close(a: float | int | None, b: float | int | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def assert_same(
    got: dict[tuple[int, int], tuple[float, float, float, int, float, int]],
    want: dict[tuple[int, int], tuple[float, float, float, int, float, int]],
) -> None:
    assert got.keys() == want.keys(), (sorted(set(got) ^ set(want)))[:10]
    for key, row in want.items():
        other = got[key]
        assert all(close(x, y) for x, y in zip(other, row, strict=True)), (key, other, row)


def aggregate(conn: sqlite3.Connection, **fields: Any) -> list[Bucket]:
    """The read side's aggregate SQL on a plain connection (an
    :class:`~gateway.request.AggregateQuery` built from ``fields``)."""
    return list(queries.aggregate(conn, AggregateQuery(**fields)))


def readings(conn: sqlite3.Connection, **fields: Any) -> list[ReadingRow]:
    """The read side's readings SQL on a plain connection (a
    :class:`~gateway.request.ReadingsQuery` built from ``fields``)."""
    return list(queries.readings(conn, ReadingsQuery(**fields)))


class Rig:
    """A real sink plus the maintenance service, driven by a controlled clock."""

    def __init__(self, sink: SqliteSink, maintenance: Maintenance, clock: Clock) -> None:
        self.sink = sink
        self.maintenance = maintenance
        self.clock = clock
        self.metrics = maintenance.metrics

    def conn(self) -> sqlite3.Connection:
        return sqlite3.connect(self.sink.path)


async def make_rig(tmp_path: Path, clock: Clock, **storage: object) -> Rig:
    storage.setdefault("min_free_disk", "0")  # the test machine's disk is not the subject
    config = StorageConfig(path=tmp_path / "r.db", **storage)  # type: ignore[arg-type]
    sink = SqliteSink(config.path)
    tracker = LateDataTracker()
    sink.writer.after_insert = tracker
    await sink.open()
    metrics = Metrics()
    guard = Guard(
        config.path,
        parse_size(config.max_size),
        parse_size(config.min_free_disk),
        config.full_policy,
    )
    sink.admission = guard.admission
    return Rig(sink, Maintenance(sink, config, metrics, guard, tracker, clock), clock)
