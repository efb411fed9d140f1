"""A central store for read-side tests, written with plain SQL.

TEMPORARY: until pgcore's schema (``gateway.storage.postgresql.schema.migrate``) and
writer (``gateway.storage.postgresql.store`` / ``ingest``) are on main, the read-side
tests create the SCHEMA.md tables from the local copy below and write through
:class:`CentralTestWriter` — the same rows the real writer commits (series
get-or-create, day partitions on demand, ``ON CONFLICT DO NOTHING``, pending marks in
the same transaction) — and :func:`settle` does what central maintenance does with
the marks (1m from raw, 1h from 1m, marks deleted, one transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gateway.models import DeadLetter, Reading
from gateway.storage.base import WriteResult
from gateway.storage.postgresql.queries import setup_connection
from gateway.storage.sqlite.schema import tags_to_text

DAY_MS = 86_400_000

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS tidegate;
CREATE TABLE tidegate.schema_version (version integer NOT NULL);
INSERT INTO tidegate.schema_version VALUES (1);
CREATE TABLE tidegate.series (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gateway_id text NOT NULL,
    sensor_id  text NOT NULL,
    metric     text NOT NULL,
    unit       text NOT NULL DEFAULT '',
    tags       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (gateway_id, sensor_id, metric, unit, tags)
);
CREATE TABLE tidegate.readings_data (
    series_id bigint NOT NULL,
    ts        timestamptz NOT NULL,
    value     double precision NOT NULL,
    PRIMARY KEY (series_id, ts)
) PARTITION BY RANGE (ts);
CREATE TABLE tidegate.rollup_1m (
    series_id bigint NOT NULL, bucket timestamptz NOT NULL,
    vmin double precision NOT NULL, vmax double precision NOT NULL, vsum double precision NOT NULL,
    n bigint NOT NULL, vlast double precision NOT NULL, last_ts timestamptz NOT NULL,
    PRIMARY KEY (series_id, bucket));
CREATE TABLE tidegate.rollup_1h (LIKE tidegate.rollup_1m INCLUDING ALL);
CREATE TABLE tidegate.rollup_pending (
    series_id bigint NOT NULL, bucket timestamptz NOT NULL,
    PRIMARY KEY (series_id, bucket));
CREATE TABLE tidegate.dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gateway_id   text NOT NULL,
    received_at  timestamptz NOT NULL,
    subscription text NOT NULL,
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    payload_size integer NOT NULL,
    reason       text NOT NULL);
CREATE INDEX dead_letters_by_gateway_time ON tidegate.dead_letters (gateway_id, received_at);
CREATE TABLE tidegate.gateways (
    gateway_id     text PRIMARY KEY,
    mode           text NOT NULL CHECK (mode IN ('edge', 'direct')),
    position       bigint NOT NULL DEFAULT 0,
    forwarded      bigint NOT NULL DEFAULT 0,
    backlog        bigint NOT NULL DEFAULT 0,
    oldest_pending timestamptz,
    last_forward   timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now());
CREATE VIEW tidegate.readings AS
    SELECT s.gateway_id, s.sensor_id, s.metric, r.ts, r.value, NULLIF(s.unit, '') AS unit
    FROM tidegate.readings_data r JOIN tidegate.series s ON s.id = r.series_id;
"""


async def create_schema(conn: Any) -> None:
    """The SCHEMA.md tables (version 1) in an empty database."""
    await conn.execute(SCHEMA_SQL)


def _day(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms - ms % DAY_MS)


async def ensure_partitions(conn: Any, stamps: Sequence[int]) -> None:
    """The day partitions ``readings_data_pYYYYMMDD`` that ``stamps`` fall in."""
    for day_ms in sorted({ms - ms % DAY_MS for ms in stamps}):
        start = _day(day_ms)
        end = start + timedelta(days=1)
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS tidegate.readings_data_p{start:%Y%m%d}"
            " PARTITION OF tidegate.readings_data"
            f" FOR VALUES FROM ('{start:%Y-%m-%d} 00:00+00') TO ('{end:%Y-%m-%d} 00:00+00')"
        )


class CentralTestWriter:
    """A :class:`~gateway.storage.base.WriteStore` over the central tables for one
    gateway (``mode``: how it is registered in ``tidegate.gateways``)."""

    def __init__(self, url: str, gateway_id: str, mode: str = "direct") -> None:
        self.url = url
        self.gateway_id = gateway_id
        self.mode = mode
        self.conn: Any = None

    async def open(self) -> None:
        self.conn = await asyncpg.connect(self.url)
        await setup_connection(self.conn)
        exists = await self.conn.fetchval("SELECT to_regclass('tidegate.series') IS NOT NULL")
        if not exists:
            await create_schema(self.conn)
        await self.conn.execute(
            "INSERT INTO tidegate.gateways (gateway_id, mode) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING",
            self.gateway_id,
            self.mode,
        )

    async def series_ids(self, readings: Sequence[Reading]) -> dict[tuple[object, ...], int]:
        keys = {
            r.series_key: (r.sensor_id, r.metric, r.unit or "", tags_to_text(r.tags))
            for r in readings
        }
        ids: dict[tuple[object, ...], int] = {}
        for key, (sensor, metric, unit, tags) in keys.items():
            ids[key] = await self.conn.fetchval(
                "WITH ins AS (INSERT INTO tidegate.series (gateway_id, sensor_id, metric, unit, tags)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id)"
                " SELECT id FROM ins UNION ALL SELECT id FROM tidegate.series"
                " WHERE gateway_id = $1 AND sensor_id = $2 AND metric = $3 AND unit = $4"
                " AND tags = $5 LIMIT 1",
                self.gateway_id,
                sensor,
                metric,
                unit,
                tags,
            )
        return ids

    async def write_batch(
        self, readings: Sequence[Reading], dead_letters: Sequence[DeadLetter]
    ) -> WriteResult:
        stored = 0
        async with self.conn.transaction():
            if readings:
                ids = await self.series_ids(readings)
                await ensure_partitions(self.conn, [r.ts_ms for r in readings])
                sids = [ids[r.series_key] for r in readings]
                stamps = [r.ts_ms for r in readings]
                values = [r.value for r in readings]
                status = await self.conn.execute(
                    "INSERT INTO tidegate.readings_data (series_id, ts, value)"
                    " SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::float8[])"
                    " ON CONFLICT DO NOTHING",
                    sids,
                    stamps,
                    values,
                )
                stored = int(status.split()[-1])
                await self.conn.execute(
                    "INSERT INTO tidegate.rollup_pending (series_id, bucket)"
                    " SELECT DISTINCT s, date_bin('1 minute', t, timestamptz 'epoch')"
                    " FROM unnest($1::bigint[], $2::timestamptz[]) AS u(s, t)"
                    " ON CONFLICT DO NOTHING",
                    sids,
                    stamps,
                )
            for dead in dead_letters:
                await self.conn.execute(
                    "INSERT INTO tidegate.dead_letters (gateway_id, received_at, subscription,"
                    " topic, payload, payload_size, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    self.gateway_id,
                    dead.received_at_ms,
                    dead.subscription,
                    dead.topic,
                    dead.payload,
                    len(dead.payload),
                    dead.reason,
                )
        return WriteResult(stored, len(readings) - stored, len(dead_letters))

    async def maintain(self) -> None:
        return None

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None


_ROLLUP_1M = """
INSERT INTO tidegate.rollup_1m (series_id, bucket, vmin, vmax, vsum, n, vlast, last_ts)
SELECT g.series_id, g.b, g.vmin, g.vmax, g.vsum, g.n, r.value, g.last_ts
FROM (
    SELECT r.series_id, date_bin('1 minute', r.ts, timestamptz 'epoch') AS b,
           min(r.value) AS vmin, max(r.value) AS vmax, sum(r.value) AS vsum, count(*) AS n,
           max(r.ts) AS last_ts
    FROM tidegate.readings_data r JOIN marks m
      ON r.series_id = m.series_id AND r.ts >= m.bucket AND r.ts < m.bucket + interval '1 minute'
    GROUP BY 1, 2
) g JOIN tidegate.readings_data r ON r.series_id = g.series_id AND r.ts = g.last_ts
"""

_ROLLUP_1H = """
INSERT INTO tidegate.rollup_1h (series_id, bucket, vmin, vmax, vsum, n, vlast, last_ts)
SELECT g.series_id, g.b, g.vmin, g.vmax, g.vsum, g.n, t.vlast, g.last_ts
FROM (
    SELECT t.series_id, date_bin('1 hour', t.bucket, timestamptz 'epoch') AS b,
           min(t.vmin) AS vmin, max(t.vmax) AS vmax, sum(t.vsum) AS vsum, sum(t.n)::bigint AS n,
           max(t.last_ts) AS last_ts
    FROM tidegate.rollup_1m t JOIN hours h
      ON t.series_id = h.series_id AND t.bucket >= h.bucket AND t.bucket < h.bucket + interval '1 hour'
    GROUP BY 1, 2
) g JOIN tidegate.rollup_1m t
  ON t.series_id = g.series_id AND t.bucket = date_bin('1 minute', g.last_ts, timestamptz 'epoch')
"""


async def settle(url: str) -> int:
    """Central maintenance of the pending marks, in one transaction: rebuild the marked
    minutes from raw readings and their hours from minutes, delete the marks. Returns
    how many marks it processed."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute(
                "CREATE TEMP TABLE marks ON COMMIT DROP AS"
                " SELECT series_id, bucket FROM tidegate.rollup_pending FOR UPDATE"
            )
            await conn.execute(
                "CREATE TEMP TABLE hours ON COMMIT DROP AS SELECT DISTINCT series_id,"
                " date_bin('1 hour', bucket, timestamptz 'epoch') AS bucket FROM marks"
            )
            await conn.execute(
                "DELETE FROM tidegate.rollup_1m t USING marks m"
                " WHERE t.series_id = m.series_id AND t.bucket = m.bucket"
            )
            await conn.execute(_ROLLUP_1M)
            await conn.execute(
                "DELETE FROM tidegate.rollup_1h t USING hours h"
                " WHERE t.series_id = h.series_id AND t.bucket = h.bucket"
            )
            await conn.execute(_ROLLUP_1H)
            done = await conn.fetchval("SELECT count(*) FROM marks")
            await conn.execute(
                "DELETE FROM tidegate.rollup_pending p USING marks m"
                " WHERE p.series_id = m.series_id AND p.bucket = m.bucket"
            )
        return int(done)
    finally:
        await conn.close()
