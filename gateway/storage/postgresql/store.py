"""The direct-mode write side: a gateway committing its batches into PostgreSQL.

:class:`PostgresStore` implements :class:`gateway.storage.base.WriteStore` over one
asyncpg connection (``[storage] backend = "postgresql"``, ``docs/central.md``):

* ``open`` connects, migrates the schema, registers the gateway (``tidegate.gateways``,
  mode ``direct``; an id that an edge gateway forwards under is refused), and seeds the
  series gate with the group's series.
* ``write_batch`` resolves central series ids (before the transaction: a series row is
  harmless if the batch then fails, and series creation never holds row locks across a
  batch), then in ONE transaction: the readings (:func:`.ingest.copy_readings`: COPY,
  ``INSERT … ON CONFLICT DO NOTHING``, rollup marks) and the dead letters. It returns
  only after the COMMIT, so the pipeline acknowledges nothing uncommitted; any failure
  is a :class:`~gateway.errors.StorageError` and the pipeline retries the same batch —
  idempotently: a batch whose COMMIT reached the server but whose answer was lost is
  retried into ``ON CONFLICT DO NOTHING`` (dead letters, which have no natural key, may
  then be stored twice). A lost connection (server restarted, killed, unreachable,
  statement timeout on a silent network) is closed and the next attempt reconnects; the
  pipeline's backoff paces the attempts.
* ``maintain`` runs :func:`.maintenance.run_central_maintenance` on a connection of its
  own every ``storage.maintenance_interval_s``; across all writers only one process
  does the work at a time (advisory lock), so every member of a group may run it.
* Several processes may share one ``gateway_id`` (a direct-mode group on one MQTT
  shared subscription): nothing here assumes a single writer. Series creation is
  race-safe, a reading stored by one member and redelivered to another is a duplicate
  there, and each member keeps its own caches.

What the SQLite store does that this one does not, and why (decision 0112):
the receive-time floor is not persisted (a restart quicker than a burst's spread can
reuse a millisecond, and two members of a group can give one series the same receive
millisecond: the second timestamp-less reading then counts as a duplicate — devices
that send their own timestamps are not affected); the series gate is seeded with the
group's series at open, then counts only what this process admits, so
``storage.max_series`` is enforced per process against a snapshot. There is no size
guard, backup, vacuum or local integrity check: that is the database server's job.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Sequence
from typing import Any

from gateway.config import PostgresConfig, StorageConfig
from gateway.errors import StorageError
from gateway.metrics import Metrics
from gateway.models import DeadLetter, Reading, Tags
from gateway.receive_time import ReceiveClock
from gateway.series_gate import SeriesGate
from gateway.storage.base import WriteResult
from gateway.storage.postgresql import maintenance
from gateway.storage.postgresql.connection import (
    connect,
    convert_error,
    is_connection_lost,
    shown_url,
)
from gateway.storage.postgresql.ingest import (
    CentralSeries,
    PartitionCache,
    SeriesKey,
    copy_readings,
    is_missing_partition,
    prepare_connection,
)
from gateway.storage.postgresql.schema import migrate
from gateway.storage.sqlite.schema import tags_from_text, tags_to_text

log = logging.getLogger(__name__)

LocalKey = tuple[str, str, str | None, Tags]
_local_key = operator.itemgetter(0, 1, 4, 5)  # Reading → (sensor_id, metric, unit, tags)
_ts_of = operator.itemgetter(2)
_value_of = operator.itemgetter(3)

_INSERT_DEAD = (
    "INSERT INTO tidegate.dead_letters"
    " (gateway_id, received_at, subscription, topic, payload, payload_size, reason)"
    " VALUES ($1, timestamptz 'epoch' + $2 * interval '1 millisecond', $3, $4, $5, $6, $7)"
)
_REGISTER = """
INSERT INTO tidegate.gateways (gateway_id, mode) VALUES ($1, 'direct')
ON CONFLICT (gateway_id) DO UPDATE SET updated_at = now()
RETURNING mode
"""


def central_key(key: LocalKey) -> SeriesKey:
    """A reading's series key as the central dictionary spells it."""
    sensor_id, metric, unit, tags = key
    return SeriesKey(sensor_id, metric, unit or "", tags_to_text(tags))


class PostgresStore:
    """A direct-mode gateway's write side (see the module docstring)."""

    def __init__(
        self,
        config: StorageConfig,
        metrics: Metrics,
        gateway_id: str,
        receive_clock: ReceiveClock | None = None,
        series_gate: SeriesGate | None = None,
    ) -> None:
        if config.postgresql is None:
            raise StorageError('storage.backend = "postgresql" needs [storage.postgresql]')
        self.config = config
        self.server: PostgresConfig = config.postgresql
        self.metrics = metrics
        self.gateway_id = gateway_id
        self.receive_clock = receive_clock  # not persisted centrally: see the docstring
        self.series_gate = series_gate
        self.series = CentralSeries(config.series_cache_size)
        self.partitions = PartitionCache()
        self._ids: dict[LocalKey, int] = {}
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self.reconnects = 0

    @property
    def shown(self) -> str:
        """The server's URL as it may be printed."""
        return shown_url(self.server)

    async def open(self) -> None:
        """Connect, migrate, register the gateway, seed the series gate."""
        conn = await connect(self.server)
        try:
            await migrate(conn)
            await prepare_connection(conn)
            mode = await conn.fetchval(_REGISTER, self.gateway_id)
            if mode != "direct":
                raise StorageError(
                    f"gateway id {self.gateway_id!r} belongs to an edge gateway forwarding"
                    f" into {self.shown}: give this direct-mode gateway another"
                    " storage.gateway_id"
                )
            if self.series_gate is not None:
                rows = await conn.fetch(
                    "SELECT sensor_id, metric, unit, tags FROM tidegate.series"
                    " WHERE gateway_id = $1",
                    self.gateway_id,
                )
                self.series_gate.load((s, m, u or None, _tags_tuple(t)) for s, m, u, t in rows)
        except BaseException as exc:
            await _close_quietly(conn)
            if isinstance(exc, Exception):
                raise convert_error(exc, f"opening {self.shown}") from None
            raise
        self._conn = conn
        log.info("central store %s open (gateway id %r)", self.shown, self.gateway_id)

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = None
            conn = await connect(self.server)
            try:
                await prepare_connection(conn)
            except Exception as exc:
                conn.terminate()
                raise convert_error(exc, f"preparing a connection to {self.shown}") from None
            self._conn = conn
            self.reconnects += 1
            log.warning("reconnected to %s", self.shown)
        return self._conn

    async def write_batch(
        self, readings: Sequence[Reading], dead_letters: Sequence[DeadLetter]
    ) -> WriteResult:
        async with self._lock:  # one batch at a time on the one connection
            conn = await self._connection()
            try:
                return await self._write(conn, readings, dead_letters)
            except asyncio.CancelledError:
                # Cut off mid-statement: the connection's state is unknown.
                self._drop(conn)
                raise
            except Exception as exc:
                if is_missing_partition(exc):
                    self.partitions.forget()  # retention dropped a day we listed
                if is_connection_lost(exc) or (not conn.is_closed() and conn.is_in_transaction()):
                    self._drop(conn)
                raise convert_error(exc, f"writing a batch to {self.shown}") from None

    async def _write(
        self, conn: Any, readings: Sequence[Reading], dead_letters: Sequence[DeadLetter]
    ) -> WriteResult:
        ids = self._ids
        keys: list[LocalKey] = list(map(_local_key, readings))
        known: list[int | None] = list(map(ids.get, keys))
        if None in known:
            fresh = list(dict.fromkeys(k for k, i in zip(keys, known, strict=True) if i is None))
            central = [central_key(k) for k in fresh]
            resolved = await self.series.ids(conn, self.gateway_id, central)
            if len(ids) + len(fresh) > self.config.series_cache_size:
                ids.clear()  # bounded; the central cache behind it is an LRU
            for key, ckey in zip(fresh, central, strict=True):
                ids[key] = resolved[ckey]
            known = [ids[k] for k in keys]
        rows = list(zip(known, map(_ts_of, readings), map(_value_of, readings), strict=True))
        async with conn.transaction():
            stored = await copy_readings(conn, rows, partitions=self.partitions)  # type: ignore[arg-type]
            if dead_letters:
                cap = self.config.dead_letter_max_payload
                await conn.executemany(
                    _INSERT_DEAD,
                    [
                        (
                            self.gateway_id,
                            d.received_at_ms,
                            d.subscription,
                            d.topic,
                            d.payload[:cap],
                            len(d.payload),
                            d.reason,
                        )
                        for d in dead_letters
                    ],
                )
        return WriteResult(stored, len(rows) - stored, len(dead_letters))

    def _drop(self, conn: Any) -> None:
        """Forget a connection that cannot be trusted any more (closed without waiting:
        the server may be gone)."""
        if self._conn is conn:
            self._conn = None
        if not conn.is_closed():
            conn.terminate()

    async def maintain(self) -> None:
        """Central maintenance every ``storage.maintenance_interval_s`` until cancelled
        (errors are logged and retried next round; only one process across all writers
        does the work at a time)."""
        await maintenance.run_forever(
            self.server, self.config, self.config.maintenance_interval_s, self.metrics
        )

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close_quietly(conn)


async def _close_quietly(conn: Any) -> None:
    try:
        await asyncio.wait_for(conn.close(), timeout=5.0)
    except Exception as exc:
        log.debug("closing a PostgreSQL connection: %s", exc)
        conn.terminate()


def _tags_tuple(text: str) -> Tags:
    if not text:
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in tags_from_text(text).items()))
