"""The SQL of the central store's read side: plain async functions over one connection.

Every function takes an asyncpg connection set up by :func:`setup_connection` (on such a
connection every ``timestamptz`` — result or parameter — is an ``int`` of epoch
milliseconds, see there) inside the caller's read transaction, uses parameterised SQL
only, and mirrors the SQLite reader (:mod:`gateway.storage.sqlite.queries`) exactly:
the same orders, keyset cursors, limits and totals, with the gateway as one more
column and filter (``tidegate.series.gateway_id``).

Text is ordered and compared ``COLLATE "C"`` (bytes, as SQLite and Python order it),
whatever collation the central database was created with, so a keyset cursor from
one backend means the same position in the other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Protocol

from gateway.errors import QueryError
from gateway.request import AggregateQuery, ReadingsQuery, SeriesCursor
from gateway.storage.base import (
    Bucket,
    DeadLetterRow,
    Forwarding,
    GatewayInfo,
    Latest,
    ReadingRow,
    ReasonGroup,
    Selection,
    SeriesInfo,
    Stats,
)
from gateway.storage.postgresql import tiers

PG_EPOCH_US = 946_684_800_000_000
"""2000-01-01T00:00Z (PostgreSQL's own epoch) in Unix microseconds."""
SERIES_PAGE = 1000
"""Series per query when a read walks many series (aggregates, names of a page)."""
AGGREGATE_ROWS_PER_QUERY = 50_000
"""Buckets one aggregate query may return at most (series per query = this / buckets)."""


class Connection(Protocol):
    """The part of ``asyncpg.Connection`` these queries use (asyncpg ships no types)."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


def _decode_ts(value: tuple[int]) -> int:
    # Floor division: a value stored with sub-millisecond digits (now() in
    # tidegate.gateways) floors like the edge's integer milliseconds.
    return (value[0] + PG_EPOCH_US) // 1000


def _encode_ts(ms: int) -> tuple[int]:
    return (int(ms) * 1000 - PG_EPOCH_US,)


async def setup_connection(conn: Any) -> None:
    """Make ``timestamptz`` an int of epoch ms both ways on ``conn`` (asyncpg's binary
    "tuple" format: microseconds since 2000-01-01): exact (a float epoch or
    ``to_timestamp(ms / 1000.0)`` is not), and no datetime objects per row."""
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=_encode_ts,
        decoder=_decode_ts,
        format="tuple",
    )


def tags_from_text(text: str) -> dict[str, str]:
    """``tidegate.series.tags`` (the edge's canonical JSON text, ``''`` for none) → dict."""
    loaded: dict[str, str] = json.loads(text) if text else {}
    return loaded


class Params:
    """Numbered parameters (``$1``, ``$2``, …) collected while a query is built."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def add(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def series_where(
    p: Params,
    sensor: str | None = None,
    metric: str | None = None,
    *,
    gateway: str | None = None,
    match: str | None = None,
    after: SeriesCursor | None = None,
    prefix: str = "s.",
) -> list[str]:
    """Conditions on the series columns: exact ``gateway``/``sensor``/``metric``,
    ``match`` (case-insensitive substring of the sensor id or the metric) and the keyset
    position ``after`` in ``(sensor_id, metric, id)`` order."""
    where: list[str] = []
    if gateway is not None:
        where.append(f"{prefix}gateway_id = {p.add(gateway)}")
    if sensor is not None:
        where.append(f"{prefix}sensor_id = {p.add(sensor)}")
    if metric is not None:
        where.append(f"{prefix}metric = {p.add(metric)}")
    if match:
        needle = p.add(match.lower())
        where.append(
            f"(strpos(lower({prefix}sensor_id), {needle}) > 0"
            f" OR strpos(lower({prefix}metric), {needle}) > 0)"
        )
    if after is not None:
        sensor_after, metric_after, id_after = after
        where.append(
            f'({prefix}sensor_id COLLATE "C", {prefix}metric COLLATE "C", {prefix}id)'
            f" > ({p.add(sensor_after)}, {p.add(metric_after)}, {p.add(int(id_after))})"
        )
    return where


def _where(clauses: Sequence[str]) -> str:
    return " WHERE " + " AND ".join(clauses) if clauses else ""


SERIES_ORDER = 's.sensor_id COLLATE "C", s.metric COLLATE "C", s.id'
_SERIES_COLUMNS = "s.id, s.gateway_id, s.sensor_id, s.metric, s.unit, s.tags"
_LAST = (
    " LEFT JOIN LATERAL (SELECT ts, value FROM tidegate.readings_data"
    " WHERE series_id = s.id ORDER BY ts DESC LIMIT 1) AS l ON true"
)


async def series(
    conn: Connection,
    sensor: str | None = None,
    metric: str | None = None,
    *,
    counts: bool = True,
    after: SeriesCursor | None = None,
    limit: int = 0,
    gateway: str | None = None,
) -> list[SeriesInfo]:
    """Matching series with count (``-1`` without ``counts``), first and last reading, in
    ``(sensor_id, metric, id)`` order after ``after``, at most ``limit`` (0: all)."""
    p = Params()
    where = series_where(p, sensor, metric, gateway=gateway, after=after)
    count = (
        "(SELECT count(*) FROM tidegate.readings_data WHERE series_id = s.id)" if counts else "-1"
    )
    sql = (
        f"SELECT {_SERIES_COLUMNS}, l.ts, l.value,"
        " (SELECT ts FROM tidegate.readings_data WHERE series_id = s.id ORDER BY ts LIMIT 1),"
        f" {count} FROM tidegate.series s{_LAST}{_where(where)} ORDER BY {SERIES_ORDER}"
    )
    if limit:
        sql += f" LIMIT {p.add(limit)}"
    return [
        SeriesInfo(
            r[0],
            r[2],
            r[3],
            r[4] or None,
            tags_from_text(r[5]),
            int(r[9]),
            r[8],
            r[6],
            r[7],
            r[1],
        )
        for r in await conn.fetch(sql, *p.values)
    ]


async def latest(
    conn: Connection,
    sensor: str | None = None,
    metric: str | None = None,
    *,
    match: str | None = None,
    after: SeriesCursor | None = None,
    limit: int = 0,
    gateway: str | None = None,
) -> list[Latest]:
    """The newest reading of every matching series (by timestamp, not by arrival), in
    ``(sensor_id, metric, id)`` order after ``after``, at most ``limit`` (0: all)."""
    p = Params()
    where = series_where(p, sensor, metric, gateway=gateway, match=match, after=after)
    sql = (
        f"SELECT {_SERIES_COLUMNS}, l.ts, l.value FROM tidegate.series s{_LAST}"
        f"{_where(where)} ORDER BY {SERIES_ORDER}"
    )
    if limit:
        sql += f" LIMIT {p.add(limit)}"
    return [
        Latest(r[0], r[2], r[3], r[4] or None, tags_from_text(r[5]), r[6], r[7], r[1])
        for r in await conn.fetch(sql, *p.values)
    ]


async def find_series(
    conn: Connection,
    sensor: str | None,
    metric: str | None,
    gateway: str | None,
    after: SeriesCursor | None,
    limit: int,
) -> list[tuple[int, str, str, str]]:
    """``(id, gateway_id, sensor_id, metric)`` of matching series in listing order."""
    p = Params()
    where = series_where(p, sensor, metric, gateway=gateway, after=after)
    sql = (
        f"SELECT s.id, s.gateway_id, s.sensor_id, s.metric FROM tidegate.series s"
        f"{_where(where)} ORDER BY {SERIES_ORDER} LIMIT {p.add(limit)}"
    )
    return [(r[0], r[1], r[2], r[3]) for r in await conn.fetch(sql, *p.values)]


async def readings(conn: Connection, query: ReadingsQuery) -> list[ReadingRow]:
    """Readings in ``[since, until)`` ordered by ``(ts, series_id)`` (descending with
    ``query.descending``), after the keyset ``query.after``, at most ``query.limit``
    (0: all)."""
    p = Params()
    where = series_where(p, query.sensor, query.metric, gateway=query.gateway)
    if query.since_ms is not None:
        where.append(f"r.ts >= {p.add(query.since_ms)}")
    if query.until_ms is not None:
        where.append(f"r.ts < {p.add(query.until_ms)}")
    order = "DESC" if query.descending else "ASC"
    if query.after is not None:
        ts_after, id_after = query.after
        op = "<" if query.descending else ">"
        ts_param = p.add(ts_after)
        where.append(f"(r.ts, r.series_id) {op} ({ts_param}, {p.add(int(id_after))})")
        # Implied by the row comparison, but only a plain bound on ts prunes partitions and
        # narrows each series' index range (every chunk of an export has a cursor).
        where.append(f"r.ts {op}= {ts_param}")
    sql = (
        "SELECT r.ts, r.series_id, r.value, s.gateway_id, s.sensor_id, s.metric, s.unit, s.tags"
        " FROM tidegate.readings_data r JOIN tidegate.series s ON s.id = r.series_id"
        f"{_where(where)} ORDER BY r.ts {order}, r.series_id {order}"
    )
    if query.limit:
        sql += f" LIMIT {p.add(query.limit)}"
    tags: dict[str, dict[str, str]] = {}
    out = []
    for r in await conn.fetch(sql, *p.values):
        text = r[7]
        parsed = tags.get(text)
        if parsed is None:
            parsed = tags[text] = tags_from_text(text)
        out.append(ReadingRow(r[4], r[5], r[0], r[2], r[6] or None, dict(parsed), r[1], r[3]))
    return out


# --- aggregates -----------------------------------------------------------------------


async def _marks(
    conn: Connection, ids: list[int], since_ms: int, until_ms: int
) -> dict[int, list[int]]:
    """series id → its pending minutes in ``[since, until)``, sorted."""
    rows = await conn.fetch(
        "SELECT series_id, bucket FROM tidegate.rollup_pending"
        " WHERE series_id = ANY($1::bigint[]) AND bucket >= $2 AND bucket < $3"
        " ORDER BY series_id, bucket",
        ids,
        since_ms - since_ms % tiers.MINUTE_MS,
        until_ms,
    )
    out: dict[int, list[int]] = {}
    for series_id, minute in rows:
        out.setdefault(series_id, []).append(minute)
    return out


async def _segment_rows(
    conn: Connection, ids: list[int], segment: tiers.Segment, bucket_ms: int
) -> list[Any]:
    stride = timedelta(milliseconds=bucket_ms)
    if segment.tier == "raw":
        return await conn.fetch(tiers.RAW_SQL, ids, stride, segment.lo, segment.hi)
    sql, size = tiers.tier_sql(segment.tier)
    return await conn.fetch(sql, ids, stride, segment.lo, segment.hi, timedelta(milliseconds=size))


async def aggregate_series(
    conn: Connection,
    query: AggregateQuery,
    planner: tiers.Planner,
    found: Sequence[tuple[int, str, str, str]],
) -> list[Bucket]:
    """Every bucket of the series ``found`` (``(id, gateway_id, sensor_id, metric)`` in
    listing order), series by series, each in time order."""
    ids = [f[0] for f in found]
    marks = await _marks(conn, ids, query.since_ms, query.until_ms) if planner.uses_tiers else {}
    # Series sharing the common plan are asked together, one query per segment; a series
    # with pending marks has a plan (and queries) of its own.
    plans: dict[int, list[tiers.Segment]] = {}
    groups: list[tuple[list[int], list[tiers.Segment]]] = []
    common = [i for i in ids if i not in marks]
    if common:
        groups.append((common, planner.common))
    for series_id, minutes in marks.items():
        own = planner.segments(minutes)
        groups.append(([series_id], own))
    results: dict[int, dict[int, tuple[str, Any]]] = {i: {} for i in ids}
    for members, segments in groups:
        for series_id in members:
            plans[series_id] = segments
        for segment in segments:
            for row in await _segment_rows(conn, members, segment, query.bucket_ms):
                results[row[0]][row[1]] = (segment.tier, row)
    aggs = query.aggregates
    out: list[Bucket] = []
    for series_id, gateway_id, sensor_id, metric in found:
        buckets = results[series_id]
        for start in sorted(buckets):
            tier, (_sid, _b, vmin, vmax, vsum, n, vlast) = buckets[start]
            every: dict[str, float | int | None] = {
                "min": vmin,
                "max": vmax,
                "avg": vsum / n,
                "sum": vsum,
                "count": int(n),
                "last": vlast,
            }
            out.append(
                Bucket(sensor_id, metric, start, {a: every[a] for a in aggs}, tier, gateway_id)
            )
    return out


def series_per_query(query: AggregateQuery) -> int:
    """How many series one aggregate step asks for (bounded buckets per step)."""
    buckets = max(1, -(-(query.until_ms - query.since_ms) // query.bucket_ms) + 1)
    return max(1, min(SERIES_PAGE, AGGREGATE_ROWS_PER_QUERY // buckets))


async def aggregate_step(
    conn: Connection, query: AggregateQuery, after: SeriesCursor | None
) -> tuple[list[Bucket], SeriesCursor | None]:
    """The buckets of the next few series after ``after`` (in listing order), and the
    cursor of the last of them (None: no series left)."""
    planner = tiers.Planner(query.since_ms, query.until_ms, query.bucket_ms, query.tier)
    found = await find_series(
        conn, query.sensor, query.metric, query.gateway, after, series_per_query(query)
    )
    if not found:
        return [], None
    buckets = await aggregate_series(conn, query, planner, found)
    last = found[-1]
    return buckets, (last[2], last[3], last[0])


async def aggregate(conn: Connection, query: AggregateQuery) -> list[Bucket]:
    """Buckets in series order then time, at most ``query.limit`` (0: all)."""
    out: list[Bucket] = []
    after: SeriesCursor | None = None
    while True:
        buckets, after = await aggregate_step(conn, query, after)
        out.extend(buckets)
        if after is None or (query.limit and len(out) >= query.limit):
            break
    return out[: query.limit] if query.limit else out


# --- totals ---------------------------------------------------------------------------


async def partitions(conn: Connection) -> list[str]:
    """The raw readings' partitions, oldest first (``readings_data_pYYYYMMDD``)."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'tidegate.readings_data'::regclass ORDER BY c.relname"
    )
    return [r[0] for r in rows]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def time_bounds(
    conn: Connection, gateway: str | None = None
) -> tuple[int | None, int | None]:
    """``(oldest_ts_ms, newest_ts_ms)`` over the readings (of one gateway), without
    scanning them: the oldest and the newest non-empty partition, then one index seek
    per series in each (the primary key is ``(series_id, ts)``; no index leads by time).
    """
    names = await partitions(conn)
    p = Params()
    where = _where(series_where(p, gateway=gateway))

    async def bound(name: str, direction: str, agg: str) -> int | None:
        table = f"tidegate.{_ident(name)}"
        value: int | None = await conn.fetchval(
            f"SELECT {agg}(x.ts) FROM tidegate.series s CROSS JOIN LATERAL"
            f" (SELECT ts FROM {table} WHERE series_id = s.id ORDER BY ts {direction} LIMIT 1)"
            f" AS x{where}",
            *p.values,
        )
        return value

    oldest = newest = None
    for name in names:
        oldest = await bound(name, "ASC", "min")
        if oldest is not None:
            break
    if oldest is not None:
        for name in reversed(names):
            newest = await bound(name, "DESC", "max")
            if newest is not None:
                break
    return oldest, newest


async def relation_bytes(conn: Connection) -> int:
    """Bytes of every table of the ``tidegate`` schema with its indexes and TOAST (a
    partitioned table has no storage of its own: its partitions are counted)."""
    value = await conn.fetchval(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'tidegate' AND c.relkind IN ('r', 'm')"
    )
    return int(value)


async def stats(conn: Connection, gateway: str | None = None) -> Stats:
    """Totals (of one gateway's series and dead letters with ``gateway``): counts every
    row. ``sensors`` counts (gateway, sensor) pairs: the same id at two sites is two
    devices. Sizes are the whole store's; the WAL is the server's, not reported (0)."""
    p = Params()
    series_cond = _where(series_where(p, gateway=gateway))
    row = await conn.fetchrow(
        "SELECT count(*), count(DISTINCT (s.gateway_id, s.sensor_id))"
        f" FROM tidegate.series s{series_cond}",
        *p.values,
    )
    if gateway is None:
        total = await conn.fetchval("SELECT count(*) FROM tidegate.readings_data")
    else:
        total = await conn.fetchval(
            "SELECT count(*) FROM tidegate.readings_data WHERE series_id IN"
            " (SELECT id FROM tidegate.series WHERE gateway_id = $1)",
            gateway,
        )
    q = Params()
    dead_cond = _where([f"gateway_id = {q.add(gateway)}"] if gateway is not None else [])
    dead = await conn.fetchval(f"SELECT count(*) FROM tidegate.dead_letters{dead_cond}", *q.values)
    oldest, newest = await time_bounds(conn, gateway)
    return Stats(
        int(total),
        int(row[0]),
        int(row[1]),
        int(dead),
        await relation_bytes(conn),
        0,
        oldest,
        newest,
    )


async def series_count(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM tidegate.series"))


async def gateways(conn: Connection) -> list[GatewayInfo]:
    """Every gateway with series or a row in ``tidegate.gateways``, by id; an edge's
    forward position as :class:`Forwarding` (a direct-mode group has none)."""
    rows = await conn.fetch(
        """
        SELECT k.gateway_id, coalesce(c.series, 0), coalesce(c.sensors, 0),
               g.mode, g.forwarded, g.backlog, g.oldest_pending,
               coalesce(g.last_forward, g.updated_at)
        FROM (SELECT gateway_id FROM tidegate.series
              UNION SELECT gateway_id FROM tidegate.gateways) AS k
        LEFT JOIN (SELECT gateway_id, count(*) AS series, count(DISTINCT sensor_id) AS sensors
                   FROM tidegate.series GROUP BY gateway_id) AS c USING (gateway_id)
        LEFT JOIN tidegate.gateways AS g USING (gateway_id)
        ORDER BY k.gateway_id COLLATE "C"
        """
    )
    out = []
    for gateway_id, n_series, n_sensors, mode, forwarded, backlog, oldest, last in rows:
        forwarding = (
            Forwarding(int(forwarded), int(backlog), oldest, int(last)) if mode == "edge" else None
        )
        out.append(GatewayInfo(gateway_id, int(n_series), int(n_sensors), forwarding))
    return out


# --- dead letters -----------------------------------------------------------------------

_DEAD_COLUMNS = "id, received_at, subscription, topic, payload, payload_size, reason, gateway_id"


def selection_where(p: Params, selection: Selection) -> list[str]:
    """Conditions for ``selection`` (parameters only, never spliced user text)."""
    where: list[str] = []
    if selection.ids:
        where.append(f"id = ANY({p.add(list(selection.ids))}::bigint[])")
    if selection.reason is not None:
        where.append(f"strpos(lower(reason), lower({p.add(selection.reason)})) > 0")
    if selection.since_ms is not None:
        where.append(f"received_at >= {p.add(selection.since_ms)}")
    if selection.before_ms is not None:
        where.append(f"received_at < {p.add(selection.before_ms)}")
    if selection.payload_contains is not None:
        where.append(f"position({p.add(selection.payload_contains)}::bytea in payload) > 0")
    if selection.gateway is not None:
        where.append(f"gateway_id = {p.add(selection.gateway)}")
    return where


def _dead_row(r: Any) -> DeadLetterRow:
    return DeadLetterRow(int(r[0]), r[1], r[2], r[3], bytes(r[4]), int(r[5]), r[6], r[7])


async def dead_letter_groups(conn: Connection, selection: Selection) -> list[ReasonGroup]:
    """Selected dead letters grouped by reason, most frequent first."""
    p = Params()
    rows = await conn.fetch(
        "SELECT reason, count(*), min(received_at), max(received_at) FROM tidegate.dead_letters"
        f"{_where(selection_where(p, selection))}"
        ' GROUP BY reason ORDER BY count(*) DESC, reason COLLATE "C"',
        *p.values,
    )
    return [ReasonGroup(r[0], int(r[1]), r[2], r[3]) for r in rows]


async def dead_letters_page(
    conn: Connection, selection: Selection, before_id: int | None, limit: int
) -> list[DeadLetterRow]:
    """Selected dead letters newest (highest id) first, below ``before_id``."""
    p = Params()
    where = selection_where(p, selection)
    if before_id is not None:
        where.append(f"id < {p.add(before_id)}")
    rows = await conn.fetch(
        f"SELECT {_DEAD_COLUMNS} FROM tidegate.dead_letters{_where(where)}"
        f" ORDER BY id DESC LIMIT {p.add(limit)}",
        *p.values,
    )
    return [_dead_row(r) for r in rows]


async def dead_letter(conn: Connection, ident: int) -> DeadLetterRow:
    """One dead letter; :class:`QueryError` if there is no such id."""
    if not 0 <= ident <= 2**63 - 1:
        raise QueryError(f"no dead letter with id {ident}")
    row = await conn.fetchrow(
        f"SELECT {_DEAD_COLUMNS} FROM tidegate.dead_letters WHERE id = $1", ident
    )
    if row is None:
        raise QueryError(f"no dead letter with id {ident}")
    return _dead_row(row)
