"""Writing readings into the central store: series ids, day partitions, COPY.

Shared by the direct-mode store (:mod:`.store`) and the edge forwarder
(``gateway.upstream``); every function takes an asyncpg connection and raises the
driver's errors (convert them where they enter: :func:`.connection.convert_error`).

* :class:`CentralSeries` — get-or-create central series ids, race-safe with any number
  of writers: look up, ``INSERT … ON CONFLICT DO NOTHING`` (in key order, so two writers
  never wait on each other in a cycle), look up again (READ COMMITTED: the second look-up
  sees a row another writer committed while we waited on its key). A bounded LRU cache
  keeps the hot path free of round trips. An id created inside the caller's open
  transaction is cached only once it is known committed (a rolled-back batch must not
  leave a dangling id): resolve ids *before* opening the batch's transaction.
* :func:`ensure_partitions` — the daily partitions ``readings_data_pYYYYMMDD`` a range of
  timestamps needs: ``CREATE TABLE`` then ``ATTACH PARTITION`` (which takes only a SHARE
  UPDATE EXCLUSIVE lock on the parent, so inserts and reads go on; ``CREATE TABLE …
  PARTITION OF`` would lock them out), inside a savepoint when the caller is in a
  transaction; a concurrent creator's win is recognised, not an error.
* :func:`copy_readings` — ``(central_series_id, ts_ms, value)`` rows: binary COPY into a
  session-temporary staging table, then one ``INSERT … SELECT … ON CONFLICT DO NOTHING``
  in key order (idempotent: a replayed batch adds nothing), then the batch's distinct
  ``(series, minute)`` into ``rollup_pending`` — all in the caller's transaction. Why COPY
  and not a plain multi-row INSERT: ``docs/decisions/0111-central-ingest-by-copy.md``.

Timestamps are exact milliseconds both ways: ``timestamptz 'epoch' + ms * interval
'1 millisecond'`` in, ``extract(epoch …)`` never (``to_timestamp(ms / 1000.0)`` goes through
a double and can land a microsecond off).
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import asyncpg

DAY_MS = 86_400_000
MINUTE_MS = 60_000
STAGING = "tidegate_staging"
"""The session's temporary staging table (``pg_temp``), emptied at every commit."""

_STAGING_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} ("
    " series_id bigint NOT NULL, ts_ms bigint NOT NULL, value double precision NOT NULL"
    ") ON COMMIT DELETE ROWS"
)
_INSERT_FROM_STAGING = f"""
INSERT INTO tidegate.readings_data (series_id, ts, value)
SELECT series_id, timestamptz 'epoch' + ts_ms * interval '1 millisecond', value
FROM pg_temp.{STAGING} ORDER BY series_id, ts_ms
ON CONFLICT DO NOTHING
"""
# Floor to the minute also for (unusual) negative timestamps.
_MARK_PENDING = f"""
INSERT INTO tidegate.rollup_pending (series_id, bucket)
SELECT DISTINCT series_id,
       timestamptz 'epoch' + (ts_ms - ((ts_ms % {MINUTE_MS}) + {MINUTE_MS}) % {MINUTE_MS})
                             * interval '1 millisecond'
FROM pg_temp.{STAGING} ORDER BY 1, 2
ON CONFLICT DO NOTHING
"""


class SeriesKey(NamedTuple):
    """A central series within one gateway: ``unit`` and ``tags`` are ``''`` when absent;
    ``tags`` is the canonical JSON text of the edge's ``series.tags``
    (:func:`gateway.storage.sqlite.schema.tags_to_text`)."""

    sensor_id: str
    metric: str
    unit: str = ""
    tags: str = ""


_LOOKUP = """
SELECT s.id, k.i FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
    WITH ORDINALITY AS k(sensor_id, metric, unit, tags, i)
JOIN tidegate.series s ON s.gateway_id = $1 AND s.sensor_id = k.sensor_id
    AND s.metric = k.metric AND s.unit = k.unit AND s.tags = k.tags
"""
_CREATE = """
INSERT INTO tidegate.series (gateway_id, sensor_id, metric, unit, tags)
SELECT $1, k.sensor_id, k.metric, k.unit, k.tags
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
    WITH ORDINALITY AS k(sensor_id, metric, unit, tags, i)
ORDER BY k.i
ON CONFLICT DO NOTHING
"""


class CentralSeries:
    """Central series ids with a bounded LRU cache (see the module docstring)."""

    def __init__(self, cache_size: int = 100_000) -> None:
        self.cache_size = cache_size
        self.cache: OrderedDict[tuple[str, SeriesKey], int] = OrderedDict()
        self.created = 0
        """Series this object created (a metric)."""

    async def ids(
        self, conn: Any, gateway_id: str, keys: Iterable[SeriesKey]
    ) -> dict[SeriesKey, int]:
        """The id of every key of ``gateway_id``, creating the missing series."""
        cache = self.cache
        out: dict[SeriesKey, int] = {}
        missing: list[SeriesKey] = []
        for key in keys:
            cached = cache.get((gateway_id, key))
            if cached is None:
                missing.append(key)
            else:
                out[key] = cached
        if not missing:
            return out
        missing = sorted(set(missing))  # one lock order for every writer
        in_transaction = conn.is_in_transaction()
        found = await self._lookup(conn, gateway_id, missing)
        committed = dict(found)
        absent = [key for key in missing if key not in found]
        if absent:
            status = await conn.execute(_CREATE, gateway_id, *_columns(absent))
            self.created += _row_count(status)
            created = await self._lookup(conn, gateway_id, absent)
            lost = [key for key in absent if key not in created]
            if lost:  # cannot happen under READ COMMITTED: say so rather than KeyError
                raise RuntimeError(f"series not found after insert: {lost[:3]}")
            found.update(created)
            if not in_transaction:
                committed.update(created)
        for key, series_id in committed.items():
            cache[(gateway_id, key)] = series_id
        while len(cache) > self.cache_size:
            cache.popitem(last=False)
        out.update(found)
        return out

    @staticmethod
    async def _lookup(conn: Any, gateway_id: str, keys: list[SeriesKey]) -> dict[SeriesKey, int]:
        rows = await conn.fetch(_LOOKUP, gateway_id, *_columns(keys))
        return {keys[row[1] - 1]: int(row[0]) for row in rows}


def _columns(keys: Sequence[SeriesKey]) -> tuple[list[str], list[str], list[str], list[str]]:
    return (
        [k.sensor_id for k in keys],
        [k.metric for k in keys],
        [k.unit for k in keys],
        [k.tags for k in keys],
    )


def _row_count(status: str) -> int:
    """The row count of an ``INSERT 0 n`` / ``DELETE n`` command status."""
    tail = status.rsplit(" ", 1)[-1] if status else ""
    return int(tail) if tail.isdigit() else 0


# --- partitions ------------------------------------------------------------------------


def day_of(ts_ms: int) -> int:
    """The UTC day number (days since 1970-01-01) holding ``ts_ms``."""
    return ts_ms // DAY_MS


def partition_name(day: int) -> str:
    """``readings_data_pYYYYMMDD`` of UTC day number ``day``."""
    date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    return f"readings_data_p{date:%Y%m%d}"


def day_of_partition(name: str) -> int | None:
    """Inverse of :func:`partition_name` (None for any other name)."""
    stem = name.removeprefix("readings_data_p")
    if stem == name or len(stem) != 8 or not stem.isdigit():
        return None
    try:
        date = dt.datetime.strptime(stem, "%Y%m%d").date()
    except ValueError:
        return None
    return (date - dt.date(1970, 1, 1)).days


def _bound(day: int) -> str:
    return f"{dt.date(1970, 1, 1) + dt.timedelta(days=day):%Y-%m-%d} 00:00:00+00"


class PartitionCache:
    """Day partitions known to exist (per database: one per writer connection's
    target). Retention may drop a cached day; a write that then finds no partition fails
    with ``no partition of relation`` and :meth:`forget` makes the retry create it."""

    def __init__(self) -> None:
        self.days: set[int] = set()
        self.created = 0

    def forget(self) -> None:
        self.days.clear()


async def existing_partitions(conn: Any) -> dict[int, str]:
    """Every day partition of ``tidegate.readings_data``: day number → table name."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'tidegate.readings_data'::regclass"
    )
    out: dict[int, str] = {}
    for row in rows:
        day = day_of_partition(row[0])
        if day is not None:
            out[day] = row[0]
    return out


async def ensure_partitions(
    conn: Any, lo_ms: int, hi_ms: int, cache: PartitionCache | None = None
) -> int:
    """Make sure a partition exists for every UTC day from ``lo_ms``'s to ``hi_ms``'s
    (inclusive); returns how many this call created (see :func:`ensure_days`)."""
    return await ensure_days(conn, range(day_of(lo_ms), day_of(hi_ms) + 1), cache)


async def ensure_days(conn: Any, days: Iterable[int], cache: PartitionCache | None = None) -> int:
    """Make sure UTC day numbers ``days`` have their partitions; returns how many this
    call created. Safe against concurrent creators (another writer's partition counts as
    found) and inside a transaction (each creation in a savepoint)."""
    wanted = set(days)
    if cache is not None:
        wanted -= cache.days
    if not wanted:
        return 0
    present = await existing_partitions(conn)
    created = 0
    for day in sorted(wanted - present.keys()):
        if await _create_partition(conn, day):
            created += 1
    if cache is not None:
        cache.days.update(wanted)
        cache.created += created
    return created


def days_of(stamps: Sequence[int]) -> Iterable[int]:
    """The UTC days ``stamps`` fall on: only those (a batch with one reading from 2001 and
    one from today needs two partitions, not nine thousand)."""
    lo, hi = day_of(min(stamps)), day_of(max(stamps))
    if hi - lo <= 2:
        return range(lo, hi + 1)
    return {ts // DAY_MS for ts in stamps}


async def _create_partition(conn: Any, day: int) -> bool:
    """Create and attach ``day``'s partition; False when another writer did first."""
    name = partition_name(day)
    try:
        async with conn.transaction():  # a savepoint inside the caller's transaction
            await conn.execute(
                f"CREATE TABLE tidegate.{name}"
                " (LIKE tidegate.readings_data INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            )
            await conn.execute(
                f"ALTER TABLE tidegate.readings_data ATTACH PARTITION tidegate.{name}"
                f" FOR VALUES FROM ('{_bound(day)}') TO ('{_bound(day + 1)}')"
            )
    except (
        asyncpg.DuplicateTableError,
        asyncpg.DuplicateObjectError,
        asyncpg.UniqueViolationError,
    ):
        # A concurrent writer created it (the catalog's unique index, the name, or — when
        # both CREATE TABLEs got that far at once — the table's row type: 'type … already
        # exists', seen in test_rollups_stay_exact_while_writers_keep_writing under load).
        if day in await existing_partitions(conn):
            return False
        raise
    return True


def is_missing_partition(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL's "no partition of relation … found for row"
    (retention dropped a day a cache still listed)."""
    return isinstance(exc, asyncpg.CheckViolationError) and "no partition" in str(exc)


# --- readings ----------------------------------------------------------------------------


async def copy_readings(
    conn: Any,
    rows: Sequence[tuple[int, int, float]],
    *,
    partitions: PartitionCache | None = None,
) -> int:
    """Insert ``(central_series_id, ts_ms, value)`` ``rows`` (see the module docstring)
    in the caller's transaction (or one of its own); returns how many were new — the
    rest were already stored. With ``partitions``, days it lists are not checked."""
    if not rows:
        return 0
    stamps = [row[1] for row in rows]
    await ensure_days(conn, days_of(stamps), partitions)
    if not conn.is_in_transaction():
        async with conn.transaction():
            return await _copy(conn, rows)
    return await _copy(conn, rows)


_staged: weakref.WeakSet[Any] = weakref.WeakSet()
"""Connections whose staging table was created outside any transaction (it lives as long
as the session: no ``CREATE … IF NOT EXISTS`` round trip per batch)."""


async def prepare_connection(conn: Any) -> None:
    """Create ``conn``'s staging table now, outside a transaction (call it after
    connecting; without it :func:`copy_readings` creates the table in each batch's
    transaction, one round trip more)."""
    if conn.is_in_transaction():
        return
    await conn.execute(_STAGING_DDL)
    _staged.add(conn)


async def _copy(conn: Any, rows: Sequence[tuple[int, int, float]]) -> int:
    if conn not in _staged:
        # Inside the caller's transaction: a rollback would take the table with it.
        await conn.execute(_STAGING_DDL)
    await conn.copy_records_to_table(
        STAGING, records=rows, columns=("series_id", "ts_ms", "value"), schema_name="pg_temp"
    )
    status = await conn.execute(_INSERT_FROM_STAGING)
    await conn.execute(_MARK_PENDING)
    return _row_count(status)
