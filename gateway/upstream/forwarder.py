"""The forwarder: the edge's outbox into the central PostgreSQL, exactly once.

One loop, one connection at a time (``docs/upstream.md``, decision 0119):

1. connect, migrate the central schema (any writer may be the first), claim this
   gateway's row in ``tidegate.gateways`` and read its ``position`` — the central store
   is the truth: :meth:`Outbox.adopt` then deletes locally what went up before a crash,
   or renumbers a new/restored outbox to follow it;
2. read up to ``batch_size`` outbox rows after the position, map their local series to
   central ids (get-or-create, *outside* the batch's transaction, cached);
3. ONE central transaction: ``copy_readings`` + move the position from the expected
   value to the batch's last sequence number (zero rows matched = someone else moved
   it: roll back, re-read, adopt again);
4. after the commit, confirm locally (the outbox drops the rows). A crash between 3 and
   4 is repaired by step 1 of the next run; a crash before the commit leaves the
   position where it was, and the rows go again.

Every failure — refused or lost connection, a timeout (the connection's
``statement_timeout`` / ``command_timeout`` / keepalives, and a bound around each
whole transaction here, so a silent partition fires), a statement error — ends the
connection (terminated, never reused mid-transaction), is logged (once per distinct
message) and counted, and the loop reconnects after a jittered exponential backoff.
The forwarder never stops the gateway: ingestion goes on into SQLite, the outbox grows
and the backlog is visible (metrics, ``/readyz`` detail, ``tidegate stats``).

Central maintenance (partitions ahead, rollups, retention: the shared
:func:`~gateway.storage.postgresql.maintenance.run_central_maintenance`, on a connection
of its own, under its advisory lock) runs beside the forwarding loop with
``upstream.maintenance``, so an edge-only deployment gets it without a direct-mode
gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from typing import Any

from gateway import faults
from gateway.config import UpstreamConfig
from gateway.errors import StorageError
from gateway.metrics import Metrics
from gateway.storage.outbox import Chunk, Outbox
from gateway.storage.postgresql import forward as central
from gateway.storage.postgresql.connection import connect, convert_error, shown_url
from gateway.storage.postgresql.ingest import (
    CentralSeries,
    PartitionCache,
    SeriesKey,
    copy_readings,
    prepare_connection,
)
from gateway.storage.postgresql.maintenance import Retention, run_central_maintenance
from gateway.storage.postgresql.schema import migrate

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0
"""Forward and ingest rates are smoothed over about this long."""


class PositionConflict(StorageError):
    """The central position was not the one this forwarder expected."""


class Forwarder:
    """See the module docstring. ``await run()`` until cancelled; never raises."""

    def __init__(
        self,
        config: UpstreamConfig,
        outbox: Outbox,
        metrics: Metrics,
        gateway_id: str,
        *,
        limits: tuple[int, int] = (0, 0),
    ) -> None:
        self.config = config
        self.limits = limits
        """``(storage.max_size, storage.min_free_disk)`` in bytes, for the buffer estimate."""
        self.outbox = outbox
        self.metrics = metrics
        self.counters = metrics.upstream
        self.gateway_id = gateway_id
        self.series = CentralSeries()
        self.partitions = PartitionCache()
        self.central_ids: dict[int, int] = {}
        """Local series id → central series id (local ids are never reused)."""
        self.position = 0
        self._logged: set[str] = set()
        self._rate_at = time.monotonic()
        self._refreshed = 0.0
        self._delay = config.retry_min_s
        self._rate_sent = 0
        self._rate_stored = metrics.readings_stored
        self.counters.configured = True
        self.counters.gateway_id = gateway_id
        self._exit_after_commit = int(faults.value("upstream-exit-after-commit") or 0)

    # -- forever -------------------------------------------------------------------------

    async def run(self) -> None:
        maintenance: asyncio.Task[None] | None = None
        if self.config.maintenance:
            maintenance = asyncio.create_task(
                run_central_maintenance(
                    lambda: connect(self.config),
                    Retention.of(self.config.retention),
                    self.config.maintenance_interval_s,
                    on_pass=self._maintained,
                ),
                name="upstream-maintenance",
            )
        try:
            await self._forward_forever()
        finally:
            if maintenance is not None:
                maintenance.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await maintenance

    def _maintained(self, result: object) -> None:
        if getattr(result, "ran", False):
            self.counters.maintenance_runs += 1

    async def _forward_forever(self) -> None:
        while True:
            conn: Any = None
            try:
                conn = await connect(self.config)
                self.counters.connected = True
                await self._session(conn)
            except asyncio.CancelledError:
                raise
            except StorageError as exc:
                self._failed(exc)
            except Exception as exc:  # never let forwarding take the gateway down
                log.exception("forwarder: unexpected error")
                self._failed(convert_error(exc, "forwarding"))
            finally:
                self.counters.connected = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
            await self._refresh()
            await asyncio.sleep(self._delay * (0.5 + random.random()))
            self._delay = min(self.config.retry_max_s, self._delay * 2)
            self.counters.reconnects += 1

    def _healthy(self) -> None:
        """Forwarding works (a batch committed, or nothing was left to send): the
        failure, if any, is over; the next one starts the backoff afresh."""
        counters = self.counters
        if counters.unreachable_since:
            log.warning(
                "forwarder: forwarding to %s again after %.0fs",
                shown_url(self.config),
                time.time() - counters.unreachable_since,
            )
            counters.unreachable_since = 0.0
            counters.last_error = ""
            self._logged.clear()
        self._delay = self.config.retry_min_s

    def _failed(self, exc: BaseException) -> None:
        """Counted every time, logged once per distinct message until forwarding works
        again (a failure that repeats on every retry is one line, not one a second)."""
        counters = self.counters
        counters.errors += 1
        counters.last_error = str(exc)
        if not counters.unreachable_since:
            counters.unreachable_since = time.time()
        key = f"{type(exc).__name__}: {exc}"
        if key not in self._logged:
            if len(self._logged) > 100:
                self._logged.clear()
            self._logged.add(key)
            log.error("forwarder: %s (the outbox keeps everything; retrying)", exc)

    # -- one connection ------------------------------------------------------------------

    async def _session(self, conn: Any) -> None:
        # Central ids are looked up again on every connection: a central database that
        # was recreated meanwhile must not receive ids of series it no longer has.
        self.central_ids.clear()
        self.series = CentralSeries()
        try:
            await migrate(conn)
            await prepare_connection(conn)
            self.position = await central.claim(conn, self.gateway_id)
        except StorageError:
            raise
        except Exception as exc:
            raise convert_error(exc, f"preparing {shown_url(self.config)}") from None
        await self._adopt()
        self.partitions.forget()
        # The local read of the next chunk and the local confirm of the last one run
        # while the central transaction of this one does (they only touch SQLite, on
        # threads); a confirm always finishes before the next one or an adopt starts.
        prefetch: asyncio.Task[Chunk] | None = None
        confirming: asyncio.Task[None] | None = None
        try:
            while True:
                if prefetch is not None:
                    chunk, prefetch = await prefetch, None
                else:
                    chunk = await self._read(self.position)
                if not chunk.rows:
                    self._healthy()
                    await self._idle()
                    continue
                prefetch = asyncio.create_task(self._read(chunk.last_seq))
                started = time.monotonic()
                try:
                    await self._forward(conn, chunk)
                except PositionConflict as exc:
                    self.counters.conflicts += 1
                    log.warning("forwarder: %s; re-reading the position", exc)
                    await _settle(prefetch)
                    prefetch = None
                    await _settle(confirming)
                    confirming = None
                    try:
                        self.position = await central.position(conn, self.gateway_id)
                    except Exception as exc2:
                        raise convert_error(exc2, "re-reading the position") from None
                    await self._adopt()
                    continue
                if self.counters.batches == self._exit_after_commit:
                    log.warning("test fault upstream-exit-after-commit: exiting before the confirm")
                    os._exit(137)
                self._healthy()
                if confirming is not None:
                    await confirming
                confirming = asyncio.create_task(self.outbox.confirm(self.position))
                await self._refresh(due_only=True)
                await self._pace(len(chunk.rows), time.monotonic() - started)
        finally:
            await _settle(prefetch)
            await _settle(confirming)

    async def _read(self, after: int) -> Chunk:
        return await self.outbox.read(after, self.config.batch_size, frozenset(self.central_ids))

    async def _adopt(self) -> None:
        adoption = await self.outbox.adopt(self.position, self.gateway_id)
        if adoption.confirmed:
            log.info(
                "forwarder: %d readings were committed centrally before the last stop;"
                " dropped from the outbox",
                adoption.confirmed,
            )
        if adoption.renumbered:
            log.warning(
                "forwarder: the outbox did not continue gateway %r's central position %d"
                " (a new or restored database, or another gateway id): its %d readings go"
                " up after it; any the centre already holds are ignored there",
                self.gateway_id,
                self.position,
                adoption.renumbered,
            )
        if adoption.went_back:
            log.warning(
                "forwarder: the central position of %r went back to %d (central database"
                " restored?): readings forwarded since then are not sent again",
                self.gateway_id,
                self.position,
            )
        self.counters.position = self.position

    async def _central_rows(self, conn: Any, chunk: Chunk) -> list[tuple[int, int, float]]:
        unknown = {sid: key for sid, key in chunk.series.items() if sid not in self.central_ids}
        if unknown:
            keys = {sid: SeriesKey(*key) for sid, key in unknown.items()}
            try:
                ids = await self.series.ids(conn, self.gateway_id, keys.values())
            except Exception as exc:
                raise convert_error(exc, "creating central series") from None
            for sid, key in keys.items():
                self.central_ids[sid] = ids[key]
        mapping = self.central_ids
        return [(mapping[sid], ts, value) for _seq, sid, ts, value in chunk.rows]

    async def _forward(self, conn: Any, chunk: Chunk) -> None:
        rows = await self._central_rows(conn, chunk)
        after = chunk.after or await self.outbox.pending(chunk.last_seq)
        expected, new = self.position, chunk.last_seq
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._transaction_budget_s(len(rows))):
                async with conn.transaction():
                    stored = await copy_readings(conn, rows, partitions=self.partitions)
                    moved = await central.advance(
                        conn,
                        self.gateway_id,
                        expected=expected,
                        new=new,
                        forwarded=stored,
                        backlog=after.count,
                        oldest_pending_ms=after.oldest_received_ms,
                    )
                    if not moved:
                        raise PositionConflict(
                            f"gateway {self.gateway_id!r}'s central position is not {expected}"
                            " (another process forwarding under this id?)"
                        )
        except StorageError:
            raise
        except TimeoutError:
            raise StorageError(
                f"forwarding {len(rows)} readings to {shown_url(self.config)}: timed out"
                " (no answer: network partition or server stalled)"
            ) from None
        except Exception as exc:
            raise convert_error(exc, f"forwarding {len(rows)} readings") from None
        self.position = new
        counters = self.counters
        counters.position = new
        counters.forwarded += stored
        counters.sent += len(rows)
        counters.batches += 1
        counters.forward_seconds.observe(time.monotonic() - started)
        counters.pending = after.count
        counters.oldest_pending_age_s = _age_s(after.oldest_received_ms)

    def _transaction_budget_s(self, rows: int) -> float:
        """A bound on one whole batch transaction (several statements, each bounded by
        the connection's own timeouts): the statement timeout, plus time for the rows
        at a slow 10,000 a second."""
        return self.config.statement_timeout_s + rows / 10_000

    async def _idle(self) -> None:
        await self._refresh()
        await asyncio.sleep(self.config.interval_s)

    async def _pace(self, rows: int, took_s: float) -> None:
        """Hold the catch-up rate at ``max_rate`` readings a second (0: no cap)."""
        if self.config.max_rate > 0:
            wait = rows / self.config.max_rate - took_s
            if wait > 0:
                await asyncio.sleep(wait)

    # -- figures -------------------------------------------------------------------------

    async def _refresh(self, due_only: bool = False) -> None:
        """Backlog, rates and the local buffer estimate (``docs/upstream.md``); with
        ``due_only``, at most once a second (between batches)."""
        now = time.monotonic()
        if due_only and now - self._refreshed < 1.0:
            return
        self._refreshed = now
        counters = self.counters
        with contextlib.suppress(StorageError):
            pending = await self.outbox.pending()
            counters.pending = pending.count
            counters.oldest_pending_age_s = _age_s(pending.oldest_received_ms)
            counters.dropped = max(counters.dropped, pending.dropped)
        now = time.monotonic()
        span = now - self._rate_at
        if span >= 1.0:
            weight = min(1.0, span / RATE_WINDOW_S)
            sent = (counters.sent - self._rate_sent) / span
            stored = (self.metrics.readings_stored - self._rate_stored) / span
            counters.forward_rate += weight * (sent - counters.forward_rate)
            counters.ingest_rate += weight * (stored - counters.ingest_rate)
            self._rate_at, self._rate_sent = now, counters.sent
            self._rate_stored = self.metrics.readings_stored
        counters.buffer_hours_left = buffer_hours_left(self.metrics, *self.limits)


async def _settle(task: asyncio.Task[Any] | None) -> None:
    """Wait for a local task the loop no longer needs (its errors were or will be met
    again by the next attempt); SQLite work on a thread cannot be cancelled anyway."""
    if task is not None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task


def _age_s(received_ms: int | None) -> float:
    if received_ms is None:
        return 0.0
    return max(0.0, time.time() - received_ms / 1000)


BYTES_PER_BUFFERED_READING = 54.0
"""What one more unforwarded reading costs on disk: its outbox row (~27 B, measured
over 1 M rows of 1,000 series) and the reading itself (~26 B, ``docs/storage.md``)."""


def buffer_hours_left(metrics: Metrics, max_size: int, min_free_disk: int) -> float | None:
    """Hours until the local store is full if nothing more is forwarded, at the current
    ingest rate: room / (ingest rate × :data:`BYTES_PER_BUFFERED_READING`). The room is
    the nearer of the free disk above ``storage.min_free_disk`` and what is left under
    ``storage.max_size``, as the size guard last measured them (``metrics.storage``).
    ``None`` when nothing is being ingested or nothing was measured yet. An estimate:
    retention keeps purging old readings meanwhile (the real buffer is longer), the WAL
    and rollups take some room too (shorter)."""
    storage = metrics.storage
    rate = metrics.upstream.ingest_rate
    if rate <= 0 or storage.disk_free_bytes < 0:
        return None
    room = float(storage.disk_free_bytes - min_free_disk)
    if max_size > 0:
        room = min(room, float(max_size - storage.database_bytes))
    return max(0.0, room) / (rate * BYTES_PER_BUFFERED_READING) / 3600
