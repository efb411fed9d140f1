"""Open and close the database with its lifecycle: lock, integrity, hooks.

:class:`gateway.app.Gateway` calls :meth:`StorageLifecycle.open` instead of opening the
sink directly, and :meth:`StorageLifecycle.close` to close it. In order:

1. take the database lock (one gateway per file; ``tidegate restore`` checks it);
2. ``quick_check`` the file; a damaged one is moved aside and a fresh one created;
3. convert an old database to incremental auto-vacuum when that is cheap;
4. install the hooks: late-data tracking for rollups (``BatchWriter.after_insert``)
   and the size guard (``SqliteSink.admission``);
5. open the sink (creates or migrates the schema).

The scheduled work (rollups, retention, guard, checkpoints, wear) is the maintenance
service (:mod:`gateway.storage.maintenance`), started with the gateway's services.
"""

from __future__ import annotations

import asyncio

from gateway.config import StorageConfig
from gateway.metrics import Metrics
from gateway.sinks.sqlite import SqliteSink
from gateway.storage.guard import Guard
from gateway.storage.integrity import ensure_healthy, ensure_incremental_vacuum
from gateway.storage.lock import DatabaseLock
from gateway.storage.rollups import LateDataTracker
from gateway.storage.units import parse_size


class StorageLifecycle:
    """What a running gateway holds besides the sink: lock, guard, rollup tracker."""

    def __init__(self, config: StorageConfig, sink: SqliteSink, metrics: Metrics) -> None:
        self.config = config
        self.sink = sink
        self.metrics = metrics
        self.lock = DatabaseLock(sink.path)
        self.tracker = LateDataTracker()
        self.guard = Guard(
            sink.path,
            parse_size(config.max_size),
            parse_size(config.min_free_disk),
            config.full_policy,
        )

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
            await self.sink.open()
        except BaseException:
            self.lock.release()
            raise

    async def close(self) -> None:
        try:
            await self.sink.close()
        finally:
            self.lock.release()
