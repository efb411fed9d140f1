"""Central maintenance: partitions ahead, rollups from ``rollup_pending``, retention.

Any process that writes into the central store may run it (every direct-mode gateway,
every forwarder): :func:`maintain_once` first takes a session advisory lock with
``pg_try_advisory_lock`` and returns at once if another process holds it, so exactly one
does the work at a time, and a process that dies releases the lock with its connection.

A pass, in order:

1. **Partitions ahead**: today's and the next two UTC days' (writers create any other
   day on demand, :mod:`.ingest`).
2. **Rollups** from the pending marks, in bounded steps (``step_rows`` marks each, until
   none are left or ``budget_s`` is spent). One step is one transaction that first takes
   ``rollup_pending`` in SHARE mode: that waits for the writers whose marks are not yet
   committed and holds new marks back until the step commits (a few tens of ms). It is
   what makes deleting the marks safe: every reading in a marked minute is then either
   committed before the step reads it, or its batch's mark is inserted after the step
   deleted the old one (a later step recomputes it). Decision 0113. A step recomputes each
   marked minute from the raw readings (min, max, sum, count, last value and its time —
   the edge's math, :mod:`gateway.storage.sqlite.rollups`), then every hour holding one
   of them from its minutes, then deletes the marks. A mark older than the raw retention
   (its day's raw partition is gone, or only late readings recreated it) cannot be merged
   exactly: it is dropped without touching the rollups and counted as ``too_late``.
3. **Retention** (``[storage.retention]`` in direct mode; the same keys as the edge):
   raw day partitions entirely older than ``raw`` are detached and dropped (with a short
   ``lock_timeout``: a busy parent means "next pass"), but never while a pending mark
   lies in them; 1-minute rollups older than ``rollup_1m`` and 1-hour rollups older than
   ``rollup_1h`` are deleted in bounded chunks; dead letters beyond
   ``dead_letter_max_rows`` per gateway are deleted, oldest first.

Every writer into one database should use the same retention: whichever process holds
the lock applies its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.config import PostgresConfig, RetentionConfig, StorageConfig
from gateway.metrics import Metrics
from gateway.parsing import parse_retention_ms
from gateway.storage.postgresql.connection import connect, convert_error, shown_url
from gateway.storage.postgresql.ingest import (
    DAY_MS,
    day_of,
    ensure_partitions,
    existing_partitions,
)

log = logging.getLogger(__name__)

MAINTENANCE_LOCK = 0x7469_6465_6761_7402
"""``pg_try_advisory_lock`` key of central maintenance (session level)."""
DAYS_AHEAD = 2
STEP_ROWS = 2000
"""Pending marks per rollup step: bounds how long writers' new marks wait."""
SERIES_PAGE = 1000
"""Series per statement of the rollup retention."""
ROLLUP_RETENTION_EVERY_S = 600.0
"""Rollup retention walks every series: :func:`run_central_maintenance` does it this
often, not every pass (rollups expire by the day; being minutes late costs nothing)."""
DROP_LOCK_TIMEOUT = "2s"

_MARKS = "tidegate_marks"
_MARKS_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_MARKS}"
    " (series_id bigint NOT NULL, bucket timestamptz NOT NULL) ON COMMIT DELETE ROWS"
)
_TAKE_MARKS = f"""
INSERT INTO pg_temp.{_MARKS} (series_id, bucket)
SELECT series_id, bucket FROM tidegate.rollup_pending ORDER BY series_id, bucket LIMIT $1
"""
_TOO_LATE = f"DELETE FROM pg_temp.{_MARKS} WHERE bucket < $1"
_MINUTES_DELETE = f"""
DELETE FROM tidegate.rollup_1m r USING pg_temp.{_MARKS} m
WHERE r.series_id = m.series_id AND r.bucket = m.bucket
"""
_MINUTES_FROM_RAW = f"""
INSERT INTO tidegate.rollup_1m (series_id, bucket, vmin, vmax, vsum, n, vlast, last_ts)
SELECT m.series_id, m.bucket, g.vmin, g.vmax, g.vsum, g.n, l.value, g.last_ts
FROM pg_temp.{_MARKS} m
CROSS JOIN LATERAL (
    SELECT min(d.value) AS vmin, max(d.value) AS vmax, sum(d.value) AS vsum,
           count(*) AS n, max(d.ts) AS last_ts
    FROM tidegate.readings_data d
    WHERE d.series_id = m.series_id AND d.ts >= m.bucket
      AND d.ts < m.bucket + interval '1 minute'
) g
JOIN tidegate.readings_data l ON l.series_id = m.series_id AND l.ts = g.last_ts
WHERE g.n > 0
"""
_HOURS = (
    f"SELECT DISTINCT series_id, date_trunc('hour', bucket, 'UTC') AS hour FROM pg_temp.{_MARKS}"
)
_HOURS_DELETE = f"""
DELETE FROM tidegate.rollup_1h r USING ({_HOURS}) h
WHERE r.series_id = h.series_id AND r.bucket = h.hour
"""
_HOURS_FROM_MINUTES = f"""
INSERT INTO tidegate.rollup_1h (series_id, bucket, vmin, vmax, vsum, n, vlast, last_ts)
SELECT h.series_id, h.hour, g.vmin, g.vmax, g.vsum, g.n, l.vlast, g.last_ts
FROM ({_HOURS}) h
CROSS JOIN LATERAL (
    SELECT min(r.vmin) AS vmin, max(r.vmax) AS vmax, sum(r.vsum) AS vsum,
           sum(r.n)::bigint AS n, max(r.last_ts) AS last_ts
    FROM tidegate.rollup_1m r
    WHERE r.series_id = h.series_id AND r.bucket >= h.hour AND r.bucket < h.hour + interval '1 hour'
) g
JOIN tidegate.rollup_1m l
    ON l.series_id = h.series_id AND l.bucket = date_trunc('minute', g.last_ts, 'UTC')
WHERE g.n IS NOT NULL
"""


def _ms(ms: int) -> str:
    """An exact timestamptz expression for epoch ``ms`` (a literal: no parameter types)."""
    return f"(timestamptz 'epoch' + {int(ms)} * interval '1 millisecond')"


@dataclass(slots=True)
class PassResult:
    """What one :func:`maintain_once` did (``ran`` False: another process holds the lock)."""

    ran: bool = False
    partitions_created: int = 0
    minutes_written: int = 0
    hours_written: int = 0
    marks_done: int = 0
    too_late: int = 0
    marks_left: bool = False
    partitions_dropped: list[str] = field(default_factory=list)
    rollups_deleted: int = 0
    dead_letters_deleted: int = 0


@dataclass(frozen=True, slots=True)
class Retention:
    """Central retention in ms (None: forever)."""

    raw_ms: int | None
    rollup_1m_ms: int | None
    rollup_1h_ms: int | None
    dead_letter_max_rows: int = 100_000

    @classmethod
    def of(cls, retention: RetentionConfig, dead_letter_max_rows: int = 100_000) -> Retention:
        return cls(
            parse_retention_ms(retention.raw),
            parse_retention_ms(retention.rollup_1m),
            parse_retention_ms(retention.rollup_1h),
            dead_letter_max_rows,
        )


def raw_cutoff_ms(retention: Retention, now_ms: int) -> int | None:
    """Raw readings before this are expired: the start of the oldest UTC day that still
    has any unexpired reading (retention drops whole days)."""
    if retention.raw_ms is None:
        return None
    return day_of(now_ms - retention.raw_ms) * DAY_MS


async def maintain_once(
    conn: Any,
    retention: Retention,
    now_ms: int | None = None,
    *,
    budget_s: float = 1.0,
    step_rows: int = STEP_ROWS,
    rollup_retention: bool = True,
) -> PassResult:
    """One maintenance pass on ``conn`` (outside a transaction) if no other process is
    running one; driver errors propagate (the caller converts them). Expired rollups are
    looked for only with ``rollup_retention``."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    result = PassResult()
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK):
        return result
    try:
        result.ran = True
        result.partitions_created = await ensure_partitions(conn, now, now + DAYS_AHEAD * DAY_MS)
        deadline = time.monotonic() + budget_s
        cutoff = raw_cutoff_ms(retention, now)
        while True:
            done = await rollup_step(conn, step_rows, cutoff, result)
            if done < step_rows:
                break
            if time.monotonic() >= deadline:
                result.marks_left = True
                break
        await apply_retention(conn, retention, now, result, rollups=rollup_retention)
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK)
    return result


async def rollup_step(conn: Any, step_rows: int, cutoff_ms: int | None, result: PassResult) -> int:
    """Recompute the rollups of up to ``step_rows`` pending marks in one transaction;
    returns how many marks it took."""
    await conn.execute(_MARKS_DDL)
    async with conn.transaction():
        # SHARE: waits for writers with uncommitted marks, holds new ones back (above).
        await conn.execute("LOCK TABLE tidegate.rollup_pending IN SHARE MODE")
        taken = int(_count(await conn.execute(_TAKE_MARKS, step_rows)))
        if not taken:
            return 0
        if cutoff_ms is not None:
            result.too_late += _count(await conn.execute(_TOO_LATE.replace("$1", _ms(cutoff_ms))))
        await conn.execute(_MINUTES_DELETE)
        result.minutes_written += _count(await conn.execute(_MINUTES_FROM_RAW))
        await conn.execute(_HOURS_DELETE)
        result.hours_written += _count(await conn.execute(_HOURS_FROM_MINUTES))
        # The marks taken, too-late ones included (those left the temp table above).
        await conn.execute(
            "DELETE FROM tidegate.rollup_pending p WHERE (p.series_id, p.bucket) IN"
            " (SELECT series_id, bucket FROM tidegate.rollup_pending"
            "  ORDER BY series_id, bucket LIMIT $1)",
            taken,
        )
        result.marks_done += taken
        return taken


async def apply_retention(
    conn: Any, retention: Retention, now_ms: int, result: PassResult, *, rollups: bool = True
) -> None:
    """Drop expired raw days, delete surplus dead letters and (with ``rollups``)
    expired rollups."""
    cutoff = raw_cutoff_ms(retention, now_ms)
    if cutoff is not None:
        expired = sorted(
            (day, name)
            for day, name in (await existing_partitions(conn)).items()
            if (day + 1) * DAY_MS <= cutoff
        )
        for day, name in expired:
            blocked = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM tidegate.rollup_pending"
                f" WHERE bucket >= {_ms(day * DAY_MS)} AND bucket < {_ms((day + 1) * DAY_MS)})"
            )
            if blocked:
                continue  # its marks first (a step drops them as too late once expired)
            if await _drop_partition(conn, name):
                result.partitions_dropped.append(name)
    if rollups:
        for table, keep in (
            ("rollup_1m", retention.rollup_1m_ms),
            ("rollup_1h", retention.rollup_1h_ms),
        ):
            if keep is not None:
                result.rollups_deleted += await _expire_rollups(conn, table, now_ms - keep)
    cap = retention.dead_letter_max_rows
    over = await conn.fetch(
        "SELECT gateway_id FROM tidegate.dead_letters GROUP BY gateway_id HAVING count(*) > $1",
        cap,
    )
    for (gateway_id,) in over:
        result.dead_letters_deleted += _count(
            await conn.execute(
                "DELETE FROM tidegate.dead_letters WHERE gateway_id = $1 AND id <= ("
                " SELECT id FROM tidegate.dead_letters WHERE gateway_id = $1"
                " ORDER BY id DESC OFFSET $2 LIMIT 1)",
                gateway_id,
                cap,
            )
        )


async def _expire_rollups(conn: Any, table: str, cutoff_ms: int) -> int:
    """Delete ``table``'s buckets older than ``cutoff_ms``, a page of series at a time:
    each series is a range scan of the primary key ``(series_id, bucket)`` (the table
    has no index on ``bucket`` alone, and a scan of all rollups would grow with years)."""
    deleted = 0
    cursor = 0
    while True:
        row = await conn.fetchrow(
            f"WITH s AS (SELECT id FROM tidegate.series WHERE id > $1 ORDER BY id LIMIT {SERIES_PAGE}),"
            f" d AS (DELETE FROM tidegate.{table} r USING s WHERE r.series_id = s.id"
            f" AND r.bucket < {_ms(cutoff_ms)} RETURNING 1)"
            " SELECT (SELECT max(id) FROM s), (SELECT count(*) FROM d)",
            cursor,
        )
        if row is None or row[0] is None:
            return deleted
        cursor = int(row[0])
        deleted += int(row[1])


async def _drop_partition(conn: Any, name: str) -> bool:
    """Detach and drop one day partition; False when the parent stayed busy for
    :data:`DROP_LOCK_TIMEOUT` (tried again next pass)."""
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'")
            await conn.execute(
                f"ALTER TABLE tidegate.readings_data DETACH PARTITION tidegate.{name}"
            )
            await conn.execute(f"DROP TABLE tidegate.{name}")
    except Exception as exc:
        if getattr(exc, "sqlstate", "") == "55P03":  # lock_not_available
            log.info("retention: %s is busy, dropping it next pass", name)
            return False
        raise
    log.info("retention: dropped %s", name)
    return True


def _count(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1] if status else ""
    return int(tail) if tail.isdigit() else 0


# --- the service -------------------------------------------------------------------------

ConnFactory = Callable[[], Awaitable[Any]]


async def run_central_maintenance(
    conn_factory: ConnFactory,
    retention: Retention,
    interval_s: float,
    *,
    budget_s: float = 1.0,
    on_pass: Callable[[PassResult], None] | None = None,
) -> None:
    """Maintenance passes every ``interval_s`` until cancelled, on a connection from
    ``conn_factory`` (made again after a failure). Errors are logged and retried next
    round, never raised: the caller's writes go on. For the forwarder as for the
    direct-mode store."""
    conn: Any = None
    failing = False
    rollups_due = 0.0
    try:
        while True:
            try:
                if conn is None or conn.is_closed():
                    conn = await conn_factory()
                due = time.monotonic() >= rollups_due
                result = await maintain_once(
                    conn, retention, budget_s=budget_s, rollup_retention=due
                )
                if due and result.ran:
                    rollups_due = time.monotonic() + ROLLUP_RETENTION_EVERY_S
                if on_pass is not None:
                    on_pass(result)
                if failing:
                    log.info("central maintenance recovered")
                    failing = False
                if result.marks_left:
                    await asyncio.sleep(0)  # more rollups waiting: go on at once
                    continue
            except Exception as exc:
                error = convert_error(exc, "central maintenance")
                if not failing:
                    log.warning("%s (retrying every %.0fs)", error, interval_s)
                failing = True
                if conn is not None:
                    conn.terminate()
                    conn = None
            await asyncio.sleep(interval_s)
    finally:
        if conn is not None and not conn.is_closed():
            conn.terminate()


async def run_forever(
    server: PostgresConfig, storage: StorageConfig, interval_s: float, metrics: Metrics
) -> None:
    """The direct-mode store's maintenance service (``[storage.retention]``)."""
    retention = Retention.of(storage.retention, storage.dead_letter_max_rows)

    async def factory() -> Any:
        return await connect(server)

    log.debug("central maintenance on %s every %.0fs", shown_url(server), interval_s)
    await run_central_maintenance(factory, retention, interval_s)
