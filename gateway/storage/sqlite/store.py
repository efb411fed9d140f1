"""The SQLite write side: the batch writer wrapped in the database file's lifecycle.

:class:`SqliteStore` implements :class:`gateway.storage.base.WriteStore`. ``open`` does,
in order:

1. take the database lock (one gateway per file; ``tidegate restore`` checks it);
2. ``quick_check`` the file; a damaged one is moved aside and a fresh one created;
3. convert an old database to incremental auto-vacuum when that is cheap;
4. install the hooks: late-data tracking for rollups (``BatchWriter.after_insert``),
   the size guard (``SqliteSink.admission``), and — with ``forward`` — the outbox
   trigger (:mod:`gateway.storage.sqlite.outbox`; removed again without it);
5. open the sink (creates or migrates the schema);
6. seed the receive clock and the series gate (every stored series key).

``maintain`` is the scheduled work (compaction, rollups, retention, guard,
checkpoints, wear: :mod:`gateway.storage.sqlite.maintenance`), which the application
runs as a service beside the pipeline; ``close`` closes the sink and drops the lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.config import StorageConfig
from gateway.metrics import Metrics
from gateway.models import DeadLetter, Reading
from gateway.parsing import parse_size
from gateway.receive_time import ReceiveClock
from gateway.series_gate import SeriesGate
from gateway.storage.base import WriteResult
from gateway.storage.sqlite import receive_floor
from gateway.storage.sqlite.guard import Guard
from gateway.storage.sqlite.integrity import ensure_healthy, ensure_incremental_vacuum
from gateway.storage.sqlite.lock import DatabaseLock
from gateway.storage.sqlite.maintenance import Clock, ForwardPolicy, Maintenance, wall_clock_ms
from gateway.storage.sqlite.outbox import SqliteOutbox
from gateway.storage.sqlite.rollups import LateDataTracker
from gateway.storage.sqlite.writer import SqliteSink


def build_sink(config: StorageConfig) -> SqliteSink:
    """The batch writer described by ``[storage]``."""
    return SqliteSink(
        config.path,
        synchronous=config.sqlite_synchronous,
        busy_timeout_ms=config.busy_timeout_ms,
        dead_letter_max_payload=config.dead_letter_max_payload,
        dead_letter_max_rows=config.dead_letter_max_rows,
        series_cache_size=config.series_cache_size,
    )


class SqliteStore:
    """One gateway's SQLite database: lock, guard, rollup tracker and the sink."""

    def __init__(
        self,
        config: StorageConfig,
        metrics: Metrics,
        sink: SqliteSink | None = None,
        clock: Clock = wall_clock_ms,
        receive_clock: ReceiveClock | None = None,
        series_gate: SeriesGate | None = None,
        forward: ForwardPolicy | None = None,
    ) -> None:
        self.config = config
        self.forward = forward
        self.series_gate = series_gate
        self.sink = sink if sink is not None else build_sink(config)
        self.metrics = metrics
        self.clock = clock
        self.receive_clock = receive_clock
        self.lock = DatabaseLock(self.sink.path)
        self.tracker = LateDataTracker()
        self.guard = Guard(
            self.sink.path,
            parse_size(config.max_size),
            parse_size(config.min_free_disk),
            config.full_policy,
        )
        self.outbox: SqliteOutbox | None = None
        if forward is not None:
            self.outbox = SqliteOutbox(self.sink.path, lambda: self.sink.connection)

    async def open(self) -> None:
        """Lock, check, hook and open; on failure nothing stays held."""
        self.lock.acquire()
        try:
            moved = await asyncio.to_thread(
                ensure_healthy, self.sink.path, self.config.integrity_check
            )
            if moved is not None:
                self.metrics.storage.corrupt_recoveries += 1
                self.metrics.storage.corrupt_moved_to = str(moved)
            await asyncio.to_thread(ensure_incremental_vacuum, self.sink.path)
            self.sink.writer.after_insert = self.tracker
            self.sink.admission = self.guard.admission
            self.sink.forward = self.forward is not None
            await self.sink.open()
            if self.receive_clock is not None:
                await receive_floor.install(self.sink, self.receive_clock)
            if self.series_gate is not None:
                await self.sink.seed(self.series_gate)
        except BaseException:
            self.lock.release()
            raise

    async def write_batch(
        self, readings: Sequence[Reading], dead_letters: Sequence[DeadLetter]
    ) -> WriteResult:
        return await self.sink.write_batch(readings, dead_letters)

    def maintenance(self) -> Maintenance:
        """The maintenance service on this store's writer connection."""
        return Maintenance(
            self.sink,
            self.config,
            self.metrics,
            self.guard,
            self.tracker,
            self.clock,
            forward=self.forward,
        )

    async def maintain(self) -> None:
        """Run the maintenance service until cancelled."""
        await self.maintenance().run()

    async def close(self) -> None:
        try:
            if self.outbox is not None:
                await self.outbox.close()
            await self.sink.close()
        finally:
            self.lock.release()
