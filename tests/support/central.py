"""A central store for read-side tests, written through the real write path.

:class:`CentralTestWriter` is a :class:`~gateway.storage.base.WriteStore` for one gateway
over the central tables: the schema from ``schema.migrate``, readings through
``ingest`` (series ids, day partitions, COPY, ``ON CONFLICT DO NOTHING``, pending marks
in the same transaction) — what the direct-mode store and the forwarder commit — and a
``tidegate.gateways`` row of either mode (the direct-mode ``PostgresStore`` registers
only ``direct``; the read side must show edges' forward positions too). :func:`settle`
is one pass of central maintenance (rollups from the pending marks), without retention.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from gateway.models import DeadLetter, Reading
from gateway.storage.base import WriteResult
from gateway.storage.postgresql.ingest import CentralSeries, SeriesKey, copy_readings
from gateway.storage.postgresql.maintenance import Retention, maintain_once
from gateway.storage.postgresql.schema import migrate
from gateway.storage.sqlite.schema import tags_to_text

_INSERT_DEAD = (
    "INSERT INTO tidegate.dead_letters"
    " (gateway_id, received_at, subscription, topic, payload, payload_size, reason)"
    " VALUES ($1, timestamptz 'epoch' + $2 * interval '1 millisecond', $3, $4, $5, $6, $7)"
)


class CentralTestWriter:
    """Writes one gateway's batches into the central store at ``url``."""

    def __init__(self, url: str, gateway_id: str, mode: str = "direct") -> None:
        self.url = url
        self.gateway_id = gateway_id
        self.mode = mode
        self.conn: Any = None
        self.series = CentralSeries()

    async def open(self) -> None:
        self.conn = await asyncpg.connect(self.url, server_settings={"TimeZone": "UTC"})
        await migrate(self.conn)
        await self.conn.execute(
            "INSERT INTO tidegate.gateways (gateway_id, mode) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING",
            self.gateway_id,
            self.mode,
        )

    async def write_batch(
        self, readings: Sequence[Reading], dead_letters: Sequence[DeadLetter]
    ) -> WriteResult:
        keys = {
            r.series_key: SeriesKey(r.sensor_id, r.metric, r.unit or "", tags_to_text(r.tags))
            for r in readings
        }
        ids = await self.series.ids(self.conn, self.gateway_id, set(keys.values()))
        rows = [(ids[keys[r.series_key]], r.ts_ms, r.value) for r in readings]
        async with self.conn.transaction():
            stored = await copy_readings(self.conn, rows)
            for dead in dead_letters:
                await self.conn.execute(
                    _INSERT_DEAD,
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


async def settle(url: str, now_ms: int | None = None) -> int:
    """Central maintenance until no pending mark is left (no retention); returns how many
    marks it processed."""
    conn = await asyncpg.connect(url, server_settings={"TimeZone": "UTC"})
    try:
        done = 0
        while True:
            result = await maintain_once(conn, Retention(None, None, None), now_ms)
            assert result.ran, "another process holds the maintenance lock"
            done += result.marks_done
            if not result.marks_left:
                return done
    finally:
        await conn.close()
