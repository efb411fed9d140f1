"""Read-only database access for the API, off the event loop.

Every query runs on a small pool of worker threads, each with its own read-only
connection (:func:`gateway.sinks.sqlite.open_readonly`): in WAL mode readers never block
the writer, and the event loop that feeds ingestion never waits on a query. Each call
has a deadline enforced inside SQLite (a progress handler), so a heavy query is
interrupted and reported as a :class:`~gateway.errors.QueryError` instead of holding a
thread. Streams (CSV exports) get a dedicated connection, pulled chunk by chunk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import sqlite3
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import QueryError, StorageError
from gateway.sinks.sqlite import convert_sqlite_error, open_readonly

T = TypeVar("T")

PROGRESS_STEPS = 2000
"""SQLite VM steps between deadline checks (each check costs well under a microsecond)."""


class _Deadline:
    """The deadline of the statement running on one connection (None: no limit)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: float | None = None

    def expired(self) -> int:
        at = self.at
        return 1 if at is not None and time.monotonic() > at else 0


class ReadPool:
    """Worker threads with read-only connections to ``path``.

    ``await pool.run(fn, *args)`` calls ``fn(conn, *args)`` on a worker thread and
    returns its result; ``fn`` must finish reading (e.g. ``list(...)`` a generator)
    before it returns. Errors come back as :class:`QueryError` (bad request, deadline)
    or :class:`StorageError` (the database failed).
    """

    def __init__(self, path: Path, threads: int = 2, timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="tidegate-api-read"
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False

    def _open(self) -> tuple[sqlite3.Connection, _Deadline]:
        conn = open_readonly(self.path)
        deadline = _Deadline()
        conn.set_progress_handler(deadline.expired, PROGRESS_STEPS)
        with self._lock:
            if self._closed:
                conn.close()
                raise StorageError("the API is shutting down")
            self._connections.append(conn)
        return conn, deadline

    def _forget(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        conn.close()

    def _thread_connection(self) -> tuple[sqlite3.Connection, _Deadline]:
        pair: tuple[sqlite3.Connection, _Deadline] | None = getattr(self._local, "pair", None)
        if pair is None:
            pair = self._local.pair = self._open()
        return pair

    def _guarded(self, deadline: _Deadline, fn: Callable[[], T]) -> T:
        deadline.at = time.monotonic() + self.timeout_s
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise QueryError(
                    f"query took longer than {self.timeout_s:g}s; narrow the time range or filters"
                ) from None
            raise convert_sqlite_error(exc, "query") from None
        except (sqlite3.Error, OSError) as exc:
            raise convert_sqlite_error(exc, "query") from None
        except OverflowError:
            raise QueryError("a number in the request is out of range") from None
        finally:
            deadline.at = None

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn, deadline = self._thread_connection()
        return self._guarded(deadline, lambda: fn(conn, *args))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on a worker thread."""
        if self._closed:
            raise StorageError("the API is shutting down")
        future = self._executor.submit(self._call, fn, args)
        return await asyncio.wrap_future(future)

    async def stream(
        self, make: Callable[[sqlite3.Connection], Iterator[T]], chunk: int = 1000
    ) -> AsyncGenerator[list[T], None]:
        """Chunks of the iterator ``make(conn)`` returns, read on worker threads from a
        connection of the stream's own, so a slow client never holds a pooled one.

        The deadline applies to each chunk. Closing or abandoning the iterator closes
        the connection (after an in-flight chunk, which is interrupted).
        """
        if self._closed:
            raise StorageError("the API is shutting down")
        loop_submit = self._executor.submit
        opened = await asyncio.wrap_future(loop_submit(self._open))
        conn, deadline = opened
        rows: Iterator[T] | None = None
        pending: concurrent.futures.Future[list[T]] | None = None

        def next_chunk() -> list[T]:
            nonlocal rows
            if rows is None:
                rows = make(conn)
            return list(itertools.islice(rows, chunk))

        try:
            while True:
                pending = loop_submit(self._guarded, deadline, next_chunk)
                items = await asyncio.wrap_future(pending)
                pending = None
                if not items:
                    return
                yield items
        finally:
            if pending is not None and not pending.done():
                # The worker is still reading: stop it, close once it has let go.
                conn.interrupt()
                pending.add_done_callback(lambda _f: self._forget(conn))
            else:
                self._forget(conn)

    def close(self) -> None:
        """Interrupt running queries, stop the threads and close every connection."""
        with self._lock:
            self._closed = True
            connections = list(self._connections)
        for conn in connections:
            conn.interrupt()
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
