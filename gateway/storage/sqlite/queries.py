"""The SQL of the read side: plain synchronous functions over one sqlite3 connection.

Every function takes a read-only ``sqlite3.Connection`` (see
:func:`gateway.storage.sqlite.connection.open_readonly`), uses parameterised SQL only,
and streams rows (generators), so an export never loads a whole result into memory.
Requests come checked (:mod:`gateway.request`). No query refuses because too many
series match: series are listed in keyset pages (``after``/``limit``), and readings
and aggregates walk the series they need as they go (``docs/decisions/0156``).
:class:`.reader.SqliteReader` runs these on worker threads behind the
:class:`gateway.storage.base.ReadStore` interface.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import operator
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from gateway.request import AggregateQuery, ReadingsQuery, SeriesCursor
from gateway.storage.base import Bucket, Latest, Overview, ReadingRow, SeriesInfo, Stats
from gateway.storage.sqlite import tiers
from gateway.storage.sqlite.schema import COLD, HOT, has_hot_table, tags_from_text

SeriesRow = tuple[int, str, str, str | None, dict[str, str]]
"""``(id, sensor_id, metric, unit, tags)``."""


def _series_filter(
    sensor: str | None,
    metric: str | None,
    prefix: str,
    match: str | None = None,
    after: SeriesCursor | None = None,
) -> tuple[str, list[object]]:
    """A `` WHERE …`` clause (or ``""``) on the series columns, and its parameters:
    exact ``sensor``/``metric``, ``match`` (case-insensitive substring of either) and
    the keyset position ``after`` in ``(sensor_id, metric, id)`` order."""
    where: list[str] = []
    params: list[object] = []
    if sensor is not None:
        where.append(f"{prefix}sensor_id = ?")
        params.append(sensor)
    if metric is not None:
        where.append(f"{prefix}metric = ?")
        params.append(metric)
    if match:
        where.append(f"(instr(lower({prefix}sensor_id), ?) OR instr(lower({prefix}metric), ?))")
        params.extend((match.lower(), match.lower()))
    if after is not None:
        where.append(f"({prefix}sensor_id, {prefix}metric, {prefix}id) > (?, ?, ?)")
        params.extend(after)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def _series_row(r: tuple[int, str, str, str, str]) -> SeriesRow:
    return (r[0], r[1], r[2], r[3] or None, tags_from_text(r[4]))


def find_series(
    conn: sqlite3.Connection,
    sensor: str | None = None,
    metric: str | None = None,
    *,
    match: str | None = None,
    after: SeriesCursor | None = None,
    limit: int = 0,
) -> Iterator[SeriesRow]:
    """Series matching the filters in ``(sensor_id, metric, id)`` order, after
    ``after``, at most ``limit`` (0: all), streamed."""
    where, params = _series_filter(sensor, metric, "", match, after)
    sql = (
        f"SELECT id, sensor_id, metric, unit, tags FROM series{where}"
        " ORDER BY sensor_id, metric, id"
    )
    if limit:
        sql += " LIMIT ?"
        params.append(limit)
    cursor = conn.execute(sql, params)
    while chunk := cursor.fetchmany(1000):
        yield from map(_series_row, chunk)


class _Names:
    """series id → :data:`SeriesRow`, looked up as rows arrive (a page of readings
    names a few series; there may be 100,000 in all)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.known: dict[int, SeriesRow] = {}

    def resolve(self, ids: Iterable[int]) -> None:
        missing = sorted({i for i in ids if i not in self.known})
        for start in range(0, len(missing), 500):
            part = missing[start : start + 500]
            sql = (
                "SELECT id, sensor_id, metric, unit, tags FROM series"
                f" WHERE id IN ({','.join('?' * len(part))})"
            )
            for row in self.conn.execute(sql, part):
                self.known[row[0]] = _series_row(row)


class HotSnapshot:
    """The whole hot table, read once, indexed by series: for a snapshot (one read
    transaction) that reads many series. The hot table is keyed by time, so reading one
    series from it scans it; within one snapshot it cannot change, so one pass serves
    every later call (``tidegate-sim verify`` over thousands of series)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._rows: dict[int, tuple[list[int], list[float]]] = {}
        for series_id, ts, value in conn.execute(
            f"SELECT series_id, ts, value FROM {HOT} ORDER BY series_id, ts"
        ):
            stamps, values = self._rows.setdefault(series_id, ([], []))
            stamps.append(ts)
            values.append(value)

    def summary(self) -> dict[int, tuple[int, int, float, int]]:
        """series id → (first ts, last ts, last value, count)."""
        return {
            sid: (stamps[0], stamps[-1], values[-1], len(stamps))
            for sid, (stamps, values) in self._rows.items()
        }

    def rows(
        self, wanted: set[int] | None, since_ms: int | None, until_ms: int | None
    ) -> Iterator[tuple[int, int, float]]:
        """``(ts, series_id, value)`` of the ``wanted`` series (None: all) in
        ``[since, until)``, series by series."""
        for series_id in self._rows if wanted is None else wanted:
            yield from self.between(series_id, since_ms, until_ms)

    def between(
        self, series_id: int, since_ms: int | None, until_ms: int | None
    ) -> Iterator[tuple[int, int, float]]:
        """``(ts, series_id, value)`` of one series in ``[since, until)``, by time."""
        found = self._rows.get(series_id)
        if found is None:
            return
        stamps, values = found
        lo = 0 if since_ms is None else bisect.bisect_left(stamps, since_ms)
        hi = len(stamps) if until_ms is None else bisect.bisect_left(stamps, until_ms)
        for i in range(lo, hi):
            yield stamps[i], series_id, values[i]


def readings(
    conn: sqlite3.Connection,
    query: ReadingsQuery,
    hot: HotSnapshot | None = None,
    gateway_id: str = "",
) -> Iterator[ReadingRow]:
    """Readings ordered by ``(ts, series_id)`` within ``[since, until)`` (see
    :class:`~gateway.request.ReadingsQuery`); ``limit`` 0 means all rows (streamed).

    With ``hot`` (the hot table of the same snapshot), only the per-series table is
    read with SQL and the hot rows come from ``hot``, merged in order. Rows carry
    ``gateway_id`` (the local gateway's)."""
    split = hot is not None and has_hot_table(conn)
    filtered = query.sensor is not None or query.metric is not None
    series_where, series_params = _series_filter(query.sensor, query.metric, "")
    # Series by a subquery, never a list of ids: any number may match. The subquery also
    # makes SQLite seek each series' range in the per-series table.
    where = [f"series_id IN (SELECT id FROM series{series_where})"]
    params: list[object] = list(series_params)
    if query.since_ms is not None:
        where.append("ts >= ?")
        params.append(query.since_ms)
    if query.until_ms is not None:
        where.append("ts < ?")
        params.append(query.until_ms)
    descending = query.descending
    if query.after is not None:
        where.append("(ts, series_id) < (?, ?)" if descending else "(ts, series_id) > (?, ?)")
        params.extend(query.after)
    order = "DESC" if descending else "ASC"
    sql = (
        f"SELECT ts, series_id, value FROM {COLD if split else 'readings'} WHERE "
        + " AND ".join(where)
        + f" ORDER BY ts {order}, series_id {order}"
    )
    if query.limit:
        sql += " LIMIT ?"
        params.append(query.limit)
    cursor = conn.execute(sql, params)
    rows: Iterator[tuple[int, int, float]] = itertools.chain.from_iterable(
        iter(lambda: cursor.fetchmany(1000), [])
    )
    if split:
        assert hot is not None
        wanted = (
            {row[0] for row in find_series(conn, query.sensor, query.metric)} if filtered else None
        )
        after = query.after
        extra = sorted(
            (
                row
                for row in hot.rows(wanted, query.since_ms, query.until_ms)
                if after is None
                or ((row[0], row[1]) < after if descending else (row[0], row[1]) > after)
            ),
            reverse=descending,
        )
        rows = heapq.merge(rows, extra, key=_KEY, reverse=descending)
        if query.limit:
            rows = itertools.islice(rows, query.limit)
    names = _Names(conn)
    for chunk in _batched(rows, 1000):
        names.resolve(row[1] for row in chunk)
        for ts_ms, series_id, value in chunk:
            _sid, sensor_id, metric_name, unit, tags = names.known[series_id]
            yield ReadingRow(
                sensor_id, metric_name, ts_ms, value, unit, tags, series_id, gateway_id
            )


def _batched(
    rows: Iterator[tuple[int, int, float]], size: int
) -> Iterator[list[tuple[int, int, float]]]:
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


_KEY = operator.itemgetter(0, 1)


def series(
    conn: sqlite3.Connection,
    sensor: str | None = None,
    metric: str | None = None,
    with_counts: bool = True,
    hot_snapshot: HotSnapshot | None = None,
    *,
    after: SeriesCursor | None = None,
    limit: int = 0,
    gateway_id: str = "",
) -> Iterator[SeriesInfo]:
    """Every matching series with count, first/last timestamp and last value, in
    ``(sensor_id, metric, id)`` order after ``after``, at most ``limit`` (0: all).

    Counting scans each series' rows; pass ``with_counts=False`` on huge databases.
    ``hot_snapshot``: the hot table of the same snapshot, read already.
    """
    cold = _raw_table(conn)
    if cold == "readings":
        hot = {}
    elif hot_snapshot is not None:
        hot = hot_snapshot.summary()
    else:
        hot = _hot_summary(conn)
    for series_id, sensor_id, metric_name, unit, tags in find_series(
        conn, sensor, metric, after=after, limit=limit
    ):
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
            metric_name,
            unit,
            tags,
            count,
            first[0] if first else None,
            last[0] if last else None,
            last[1] if last else None,
            gateway_id,
        )


def _raw_table(conn: sqlite3.Connection) -> str:
    """Where a series' older readings are found by ``(series_id, ts)``: ``readings_cold``
    (schema 3+, whose newest readings are in ``readings_hot``), else ``readings``."""
    return COLD if has_hot_table(conn) else "readings"


def _hot_summary(conn: sqlite3.Connection) -> dict[int, tuple[int, int, float, int]]:
    """series id → (first ts, last ts, last value, count) over the hot table, in one
    pass over it (it holds only the last seconds to minutes of data)."""
    out: dict[int, tuple[int, int, float, int]] = {}
    for series_id, first, last, count in conn.execute(
        f"SELECT series_id, min(ts), max(ts), count(*) FROM {HOT} GROUP BY series_id"
    ):
        value = conn.execute(
            f"SELECT value FROM {HOT} WHERE ts = ? AND series_id = ?", (last, series_id)
        ).fetchone()[0]
        out[series_id] = (first, last, value, count)
    return out


def file_sizes(path: Path) -> tuple[int, int]:
    """``(database_bytes, wal_bytes)`` of the file at ``path`` (0 when missing)."""
    path = Path(path)
    wal = Path(f"{path}-wal")
    return (
        path.stat().st_size if path.exists() else 0,
        wal.stat().st_size if wal.exists() else 0,
    )


def stats(conn: sqlite3.Connection, path: Path) -> Stats:
    """Totals for ``tidegate stats`` and ``/api/v1/stats``."""
    readings_count = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    series_count, sensor_count = conn.execute(
        "SELECT count(*), count(DISTINCT sensor_id) FROM series"
    ).fetchone()
    dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    oldest, newest = time_bounds(conn)
    database_bytes, wal_bytes = file_sizes(path)
    return Stats(
        readings_count,
        series_count,
        sensor_count,
        dead,
        database_bytes,
        wal_bytes,
        oldest,
        newest,
    )


def overview(conn: sqlite3.Connection, path: Path) -> Overview:
    """Sizes, series and time bounds by index seeks only (every metrics scrape)."""
    oldest, newest = time_bounds(conn)
    series_count = int(conn.execute("SELECT count(*) FROM series").fetchone()[0])
    database_bytes, wal_bytes = file_sizes(path)
    return Overview(series_count, database_bytes, wal_bytes, oldest, newest)


def aggregate(
    conn: sqlite3.Connection, query: AggregateQuery, gateway_id: str = ""
) -> Iterator[Bucket]:
    """Per-series time buckets ``[start, start + bucket)`` with the chosen aggregates.

    Each bucket comes from the coarsest rollup tier that answers it exactly, else from
    raw readings, and says which in :attr:`Bucket.tier`; ``query.tier`` forces ``raw``,
    ``1m`` or ``1h`` (see :mod:`gateway.storage.sqlite.tiers`)."""
    planner = tiers.Planner(conn, query.since_ms, query.until_ms, query.bucket_ms, query.tier)
    aggs = query.aggregates
    for series_id, sensor_id, metric_name, _unit, _tags in find_series(
        conn, query.sensor, query.metric
    ):
        segments = planner.segments(series_id)
        for start, tier, values in tiers.aggregate_series(
            conn, series_id, segments, query.bucket_ms
        ):
            yield Bucket(
                sensor_id, metric_name, start, {a: values[a] for a in aggs}, tier, gateway_id
            )


def latest(
    conn: sqlite3.Connection,
    sensor: str | None = None,
    metric: str | None = None,
    *,
    match: str | None = None,
    after: SeriesCursor | None = None,
    limit: int = 0,
    gateway_id: str = "",
) -> list[Latest]:
    """The newest reading of every matching series, in ``(sensor_id, metric, id)``
    order after ``after``, at most ``limit`` (0: all): an index seek per series in the
    per-series table, then a walk back from the newest end of the hot table until every
    series of the page was seen (:func:`_hot_latest`)."""
    cold = _raw_table(conn)
    sql = (
        "SELECT s.id, s.sensor_id, s.metric, s.unit, s.tags, r.ts, r.value FROM series s"
        f" LEFT JOIN {cold} r ON r.series_id = s.id"
        f" AND r.ts = (SELECT max(ts) FROM {cold} WHERE series_id = s.id)"
    )
    where, params = _series_filter(sensor, metric, "s.", match, after)
    sql += f"{where} ORDER BY s.sensor_id, s.metric, s.id"
    if limit:
        sql += " LIMIT ?"
        params.append(limit)
    rows = conn.execute(sql, params).fetchall()
    hot = _hot_latest(conn, {r[0] for r in rows}) if cold != "readings" and rows else {}
    out: list[Latest] = []
    for r in rows:
        ts, value = r[5], r[6]
        newest_hot = hot.get(r[0])
        if newest_hot is not None and (ts is None or newest_hot[0] > ts):
            ts, value = newest_hot  # usually; a late reading can be hot and older
        out.append(
            Latest(r[0], r[1], r[2], r[3] or None, tags_from_text(r[4]), ts, value, gateway_id)
        )
    return out


def _hot_latest(conn: sqlite3.Connection, wanted: set[int]) -> dict[int, tuple[int, float]]:
    """series id → (ts, value) of its newest hot reading, for the ``wanted`` series that
    have one. Walks the time-keyed hot table from its newest end and stops once every
    wanted series was seen: a fleet that reports regularly is found within its last
    reporting interval; series without hot readings cost a walk of the whole (bounded)
    table."""
    found: dict[int, tuple[int, float]] = {}
    cursor = conn.execute(f"SELECT series_id, ts, value FROM {HOT} ORDER BY ts DESC")
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
        first = conn.execute(f"SELECT ts FROM {HOT} ORDER BY ts LIMIT 1").fetchone()
        last = conn.execute(f"SELECT ts FROM {HOT} ORDER BY ts DESC LIMIT 1").fetchone()
        if first is not None:
            oldest = first[0] if oldest is None else min(oldest, first[0])
            newest = last[0] if newest is None else max(newest, last[0])
    return oldest, newest
