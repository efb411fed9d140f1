"""The read path shared by the CLI and the HTTP API.

Every function takes a read-only ``sqlite3.Connection`` (see
:func:`gateway.sinks.sqlite.open_readonly`), uses parameterised SQL only, and streams
rows (generators), so ``--limit 0`` never loads a whole result into memory. Bad
requests raise :class:`~gateway.errors.QueryError`.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import DecodeError, QueryError
from gateway.sinks.sqlite import has_hot_table, tags_from_text
from gateway.storage import tiers
from gateway.validation import parse_iso_ms

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

MAX_SERIES_PER_QUERY = 10_000


def parse_duration_ms(text: str) -> int:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"14d"``, ``"1w"`` → milliseconds."""
    match = _RELATIVE.match(text)
    if match is None:
        raise QueryError(f"bad duration {text!r}: use a number with ms, s, m, h, d or w (e.g. 2h)")
    return round(float(match.group(1)) * _UNIT_MS[match.group(2)])


def parse_time_ms(text: str, now_ms: int | None = None) -> int:
    """A point in time: ``now``, a duration ago (``2h``), ISO 8601, or epoch s/ms → ms."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    text = text.strip()
    if text == "now":
        return now_ms
    if _RELATIVE.match(text):
        return now_ms - parse_duration_ms(text)
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return round(number * 1000) if abs(number) < 1e11 else round(number)
    try:
        return parse_iso_ms(text)
    except DecodeError:
        raise QueryError(
            f"bad time {text!r}: use ISO 8601, epoch seconds, 'now' or a duration like 2h"
        ) from None


@dataclass(frozen=True, slots=True)
class ReadingRow:
    """One stored reading as the read path returns it."""

    sensor_id: str
    metric: str
    ts_ms: int
    value: float
    unit: str | None
    tags: dict[str, str] = field(default_factory=dict)
    series_id: int = 0


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """One series with its summary."""

    series_id: int
    sensor_id: str
    metric: str
    unit: str | None
    tags: dict[str, str]
    count: int
    first_ts_ms: int | None
    last_ts_ms: int | None
    last_value: float | None


def _series_filter(sensor: str | None, metric: str | None, prefix: str) -> tuple[str, list[object]]:
    """A `` WHERE …`` clause (or ``""``) on the series columns, and its parameters."""
    where: list[str] = []
    params: list[object] = []
    if sensor is not None:
        where.append(f"{prefix}sensor_id = ?")
        params.append(sensor)
    if metric is not None:
        where.append(f"{prefix}metric = ?")
        params.append(metric)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def find_series(
    conn: sqlite3.Connection, sensor: str | None = None, metric: str | None = None
) -> list[tuple[int, str, str, str | None, dict[str, str]]]:
    """Series matching the filters: ``(id, sensor_id, metric, unit, tags)``."""
    where, params = _series_filter(sensor, metric, "")
    sql = f"SELECT id, sensor_id, metric, unit, tags FROM series{where} ORDER BY sensor_id, metric, id"
    rows = conn.execute(sql, params).fetchmany(MAX_SERIES_PER_QUERY + 1)
    if len(rows) > MAX_SERIES_PER_QUERY:
        raise QueryError(
            f"more than {MAX_SERIES_PER_QUERY} series match; narrow with sensor or metric"
        )
    return [(r[0], r[1], r[2], r[3] or None, tags_from_text(r[4])) for r in rows]


def readings(
    conn: sqlite3.Connection,
    *,
    sensor: str | None = None,
    metric: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = 1000,
    after: tuple[int, int] | None = None,
    descending: bool = False,
) -> Iterator[ReadingRow]:
    """Readings ordered by ``(ts, series_id)`` within ``[since, until)``.

    ``limit`` 0 means all rows (streamed). ``after`` is a keyset cursor: the
    ``(ts_ms, series_id)`` of the last row of the previous page.
    """
    if limit < 0:
        raise QueryError("limit must be >= 0")
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise QueryError("the start of the time range must be before its end")
    series = find_series(conn, sensor, metric)
    if not series:
        return
    by_id = {s[0]: s for s in series}
    where = [f"series_id IN ({','.join('?' * len(by_id))})"]
    params: list[object] = list(by_id)
    if since_ms is not None:
        where.append("ts >= ?")
        params.append(since_ms)
    if until_ms is not None:
        where.append("ts < ?")
        params.append(until_ms)
    if after is not None:
        where.append("(ts, series_id) < (?, ?)" if descending else "(ts, series_id) > (?, ?)")
        params.extend(after)
    order = "DESC" if descending else "ASC"
    sql = (
        "SELECT series_id, ts, value FROM readings WHERE "
        + " AND ".join(where)
        + f" ORDER BY ts {order}, series_id {order}"
    )
    if limit:
        sql += " LIMIT ?"
        params.append(limit)
    cursor = conn.execute(sql, params)
    while True:
        chunk = cursor.fetchmany(1000)
        if not chunk:
            return
        for series_id, ts_ms, value in chunk:
            _sid, sensor_id, metric_name, unit, tags = by_id[series_id]
            yield ReadingRow(sensor_id, metric_name, ts_ms, value, unit, tags, series_id)


def sensors(
    conn: sqlite3.Connection, sensor: str | None = None, with_counts: bool = True
) -> Iterator[SeriesInfo]:
    """Every series with count, first/last timestamp and last value.

    Counting scans each series' rows; pass ``with_counts=False`` on huge databases.
    """
    cold = _raw_table(conn)
    hot = _hot_summary(conn) if cold != "readings" else {}
    for series_id, sensor_id, metric, unit, tags in find_series(conn, sensor):
        in_hot = hot.get(series_id)
        last = conn.execute(
            f"SELECT ts, value FROM {cold} WHERE series_id = ? ORDER BY ts DESC LIMIT 1",
            (series_id,),
        ).fetchone()
        first = conn.execute(
            f"SELECT ts FROM {cold} WHERE series_id = ? ORDER BY ts ASC LIMIT 1", (series_id,)
        ).fetchone()
        count = (
            conn.execute(
                f"SELECT count(*) FROM {cold} WHERE series_id = ?", (series_id,)
            ).fetchone()[0]
            if with_counts
            else -1
        )
        if in_hot is not None:
            # Usually newer than the cold rows, but a late reading can be hot too.
            hot_first, hot_last, hot_value, hot_count = in_hot
            if last is None or hot_last > last[0]:
                last = (hot_last, hot_value)
            if first is None or hot_first < first[0]:
                first = (hot_first,)
            count = count + hot_count if with_counts else -1
        yield SeriesInfo(
            series_id,
            sensor_id,
            metric,
            unit,
            tags,
            count,
            first[0] if first else None,
            last[0] if last else None,
            last[1] if last else None,
        )


def _raw_table(conn: sqlite3.Connection) -> str:
    """Where a series' older readings are found by ``(series_id, ts)``: ``readings_cold``
    (schema 3+, whose newest readings are in ``readings_hot``), else ``readings``."""
    return "readings_cold" if has_hot_table(conn) else "readings"


def _hot_summary(conn: sqlite3.Connection) -> dict[int, tuple[int, int, float, int]]:
    """series id → (first ts, last ts, last value, count) over the hot table, in one
    pass over it (it holds only the last seconds to minutes of data)."""
    out: dict[int, tuple[int, int, float, int]] = {}
    for series_id, first, last, count in conn.execute(
        "SELECT series_id, min(ts), max(ts), count(*) FROM readings_hot GROUP BY series_id"
    ):
        value = conn.execute(
            "SELECT value FROM readings_hot WHERE ts = ? AND series_id = ?", (last, series_id)
        ).fetchone()[0]
        out[series_id] = (first, last, value, count)
    return out


@dataclass(frozen=True, slots=True)
class Stats:
    """Database totals."""

    readings: int
    series: int
    sensors: int
    dead_letters: int
    database_bytes: int
    wal_bytes: int
    oldest_ts_ms: int | None
    newest_ts_ms: int | None


def stats(conn: sqlite3.Connection, path: Path) -> Stats:
    """Totals for ``tidegate stats`` and ``/api/v1/stats``."""
    readings_count = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    series_count, sensor_count = conn.execute(
        "SELECT count(*), count(DISTINCT sensor_id) FROM series"
    ).fetchone()
    dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    oldest, newest = time_bounds(conn)
    wal = Path(f"{path}-wal")
    return Stats(
        readings_count,
        series_count,
        sensor_count,
        dead,
        Path(path).stat().st_size if Path(path).exists() else 0,
        wal.stat().st_size if wal.exists() else 0,
        oldest,
        newest,
    )


AGGREGATES = ("min", "max", "avg", "sum", "count", "last")


@dataclass(frozen=True, slots=True)
class Bucket:
    """One time bucket of one series."""

    sensor_id: str
    metric: str
    start_ms: int
    values: dict[str, float | int | None]
    tier: str = "raw"
    """Which data answered this bucket: ``raw``, ``1m`` or ``1h`` (gateway.storage.tiers)."""


def aggregate(
    conn: sqlite3.Connection,
    *,
    sensor: str | None,
    metric: str | None,
    since_ms: int,
    until_ms: int,
    bucket_ms: int,
    aggs: Sequence[str] = ("avg",),
    max_buckets: int = 100_000,
    tier: str = "auto",
) -> Iterator[Bucket]:
    """Per-series time buckets ``[start, start + bucket)`` with the chosen aggregates.

    Each bucket comes from the coarsest rollup tier that answers it exactly, else from
    raw readings, and says which in :attr:`Bucket.tier`; ``tier`` forces ``raw``, ``1m``
    or ``1h`` (see :mod:`gateway.storage.tiers`)."""
    unknown = [a for a in aggs if a not in AGGREGATES]
    if unknown:
        raise QueryError(f"unknown aggregate {unknown[0]!r}; choose from {', '.join(AGGREGATES)}")
    if bucket_ms <= 0:
        raise QueryError("bucket must be positive")
    if since_ms >= until_ms:
        raise QueryError("the start of the time range must be before its end")
    if (until_ms - since_ms) // bucket_ms > max_buckets:
        raise QueryError(f"more than {max_buckets} buckets; use a larger bucket or a shorter range")
    # Buckets align to the epoch (hourly buckets start on the hour, UTC).
    planner = tiers.Planner(conn, since_ms, until_ms, bucket_ms, tier)
    for series_id, sensor_id, metric_name, _unit, _tags in find_series(conn, sensor, metric):
        segments = planner.segments(series_id)
        for start, source, values in tiers.aggregate_series(conn, series_id, segments, bucket_ms):
            yield Bucket(sensor_id, metric_name, start, {a: values[a] for a in aggs}, source)


@dataclass(frozen=True, slots=True)
class Latest:
    """One series with its newest reading (``None`` when it has none)."""

    series_id: int
    sensor_id: str
    metric: str
    unit: str | None
    tags: dict[str, str]
    last_ts_ms: int | None
    last_value: float | None


def latest(
    conn: sqlite3.Connection, sensor: str | None = None, metric: str | None = None
) -> list[Latest]:
    """The newest reading of every matching series, ordered by sensor and metric: an
    index seek per series in the per-series table, then a walk back from the newest end
    of the hot table until every series was seen (:func:`_hot_latest`). At most
    :data:`MAX_SERIES_PER_QUERY` series."""
    cold = _raw_table(conn)
    sql = (
        "SELECT s.id, s.sensor_id, s.metric, s.unit, s.tags, r.ts, r.value FROM series s"
        f" LEFT JOIN {cold} r ON r.series_id = s.id"
        f" AND r.ts = (SELECT max(ts) FROM {cold} WHERE series_id = s.id)"
    )
    where, params = _series_filter(sensor, metric, "s.")
    sql += f"{where} ORDER BY s.sensor_id, s.metric, s.id LIMIT ?"
    params.append(MAX_SERIES_PER_QUERY + 1)
    rows = conn.execute(sql, params).fetchall()
    if len(rows) > MAX_SERIES_PER_QUERY:
        raise QueryError(
            f"more than {MAX_SERIES_PER_QUERY} series match; narrow with sensor or metric"
        )
    hot = _hot_latest(conn, {r[0] for r in rows}) if cold != "readings" and rows else {}
    out: list[Latest] = []
    for r in rows:
        ts, value = r[5], r[6]
        newest_hot = hot.get(r[0])
        if newest_hot is not None and (ts is None or newest_hot[0] > ts):
            ts, value = newest_hot  # usually; a late reading can be hot and older
        out.append(Latest(r[0], r[1], r[2], r[3] or None, tags_from_text(r[4]), ts, value))
    return out


def _hot_latest(conn: sqlite3.Connection, wanted: set[int]) -> dict[int, tuple[int, float]]:
    """series id → (ts, value) of its newest hot reading, for the ``wanted`` series that
    have one. Walks the time-keyed hot table from its newest end and stops once every
    wanted series was seen: a fleet that reports regularly is found within its last
    reporting interval; series without hot readings cost a walk of the whole (bounded)
    table."""
    found: dict[int, tuple[int, float]] = {}
    cursor = conn.execute("SELECT series_id, ts, value FROM readings_hot ORDER BY ts DESC")
    while len(found) < len(wanted):
        chunk = cursor.fetchmany(4096)
        if not chunk:
            break
        for series_id, ts, value in chunk:
            if series_id in wanted and series_id not in found:
                found[series_id] = (ts, value)
    cursor.close()
    return found


def time_bounds(conn: sqlite3.Connection) -> tuple[int | None, int | None]:
    """``(oldest_ts_ms, newest_ts_ms)`` over all readings, by two index seeks per series
    rather than a scan of the readings table (cheap enough for every metrics scrape)."""
    cold = _raw_table(conn)
    row = conn.execute(
        f"SELECT min((SELECT min(ts) FROM {cold} WHERE series_id = s.id)),"
        f" max((SELECT max(ts) FROM {cold} WHERE series_id = s.id)) FROM series s"
    ).fetchone()
    oldest, newest = (row[0], row[1]) if row else (None, None)
    if cold != "readings":
        # The hot table is keyed by time: both ends are one seek each.
        first = conn.execute("SELECT ts FROM readings_hot ORDER BY ts LIMIT 1").fetchone()
        last = conn.execute("SELECT ts FROM readings_hot ORDER BY ts DESC LIMIT 1").fetchone()
        if first is not None:
            oldest = first[0] if oldest is None else min(oldest, first[0])
            newest = last[0] if newest is None else max(newest, last[0])
    return oldest, newest
