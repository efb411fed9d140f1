"""The receive-time floor: what a restarted gateway must stay above.

:class:`gateway.receive_time.ReceiveClock` may give a burst of timestamp-less readings
receive times a little ahead of the wall clock (one millisecond each). Their latest,
while it is still ahead, is written to ``storage_state['receive_floor']`` inside the
same transaction as the batch's readings (a hook around ``BatchWriter.after_insert``),
and :func:`install` (called by ``SqliteStore.open``) seeds the next process's clock with it, so a restart quicker than a
burst's spread never hands out a millisecond already stored
(``docs/decisions/0082``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from gateway.receive_time import ReceiveClock
from gateway.storage.sqlite._aiosqlite_adapter import run_on_connection
from gateway.storage.sqlite.writer import SqliteSink

FLOOR_KEY = "receive_floor"

AfterInsert = Callable[[sqlite3.Connection, list[tuple[int, int, float]]], None]


def read_floor(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM storage_state WHERE key = ?", (FLOOR_KEY,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


class FloorHook:
    """``BatchWriter.after_insert`` wrapper: runs ``inner``, then writes the clock's
    :attr:`~ReceiveClock.high_ms` while it is ahead of the wall clock (once it is not,
    every later receive time is above it anyway)."""

    def __init__(self, clock: ReceiveClock, inner: AfterInsert | None) -> None:
        self.clock = clock
        self.inner = inner

    def __call__(self, conn: sqlite3.Connection, rows: list[tuple[int, int, float]]) -> None:
        if self.inner is not None:
            self.inner(conn, rows)
        high = self.clock.high_ms  # written by the event loop; an int read is atomic
        if high > time.time() * 1000:
            conn.execute(
                "INSERT OR REPLACE INTO storage_state (key, value) VALUES (?, ?)",
                (FLOOR_KEY, high),
            )


async def install(sink: SqliteSink, clock: ReceiveClock) -> None:
    """Seed ``clock`` from the open ``sink``'s database and hook the floor's write into
    every batch. Call after the sink (and its other hooks) are open."""
    floor = await run_on_connection(sink.connection, read_floor)
    clock.floor_ms = max(clock.floor_ms, floor)
    clock.high_ms = max(clock.high_ms, floor)
    writer = sink.writer
    writer.after_insert = FloorHook(clock, writer.after_insert)
