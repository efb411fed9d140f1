"""Read-only database access off the event loop.

Every query runs on a small pool of worker threads, each with its own read-only
connection (:func:`gateway.storage.sqlite.connection.open_readonly`): in WAL mode
readers never block the writer, and the event loop that feeds ingestion never waits on
a query. Each call has a deadline enforced inside SQLite (a progress handler), so a
heavy query is interrupted and reported as a :class:`~gateway.errors.QueryError`
instead of holding a thread.

Each call runs in one read transaction, so all its statements see one committed
state (a compaction step that moves rows between the hot and the cold table between
two of them cannot make a row vanish or appear twice). Streams (exports) get a
connection of their own, pulled chunk by chunk, in one transaction from the first
chunk to the last. A :meth:`ReadPool.session` keeps one connection and one transaction
across many calls: a snapshot.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import sqlite3
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import QueryError, StorageError
from gateway.storage.sqlite.connection import convert_sqlite_error, open_readonly

T = TypeVar("T")

PROGRESS_STEPS = 2000
"""SQLite VM steps between deadline checks (each check costs well under a microsecond)."""


class _Lane:
    """One read-only connection, the deadline of the statement running on it, and a
    lock that keeps two threads from using it at once."""

    __slots__ = ("at", "conn", "lock")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.at: float | None = None
        self.lock = threading.Lock()
        conn.set_progress_handler(self.expired, PROGRESS_STEPS)

    def expired(self) -> int:
        at = self.at
        return 1 if at is not None and time.monotonic() > at else 0

    def begin(self) -> None:
        """Start a read transaction and take its snapshot now (a deferred transaction
        takes it at the first read)."""
        self.conn.execute("BEGIN")
        self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()

    def end(self) -> None:
        if self.conn.in_transaction:
            self.conn.rollback()


class ReadPool:
    """Worker threads with read-only connections to ``path``.

    ``await pool.run(fn, *args)`` calls ``fn(conn, *args)`` on a worker thread and
    returns its result; ``fn`` must finish reading (e.g. ``list(...)`` a generator)
    before it returns. Errors come back as :class:`QueryError` (bad request, deadline)
    or :class:`StorageError` (the database failed). ``timeout_s`` None: no deadline.
    """

    def __init__(self, path: Path, threads: int = 2, timeout_s: float | None = 10.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="tidegate-read"
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False

    def _open(self) -> _Lane:
        conn = open_readonly(self.path)
        with self._lock:
            if self._closed:
                conn.close()
                raise StorageError("the reader is shutting down")
            self._connections.append(conn)
        return _Lane(conn)

    def _forget(self, lane: _Lane) -> None:
        with self._lock:
            if lane.conn in self._connections:
                self._connections.remove(lane.conn)
        lane.conn.close()

    def _thread_lane(self) -> _Lane:
        lane: _Lane | None = getattr(self._local, "lane", None)
        if lane is None:
            lane = self._local.lane = self._open()
        return lane

    def _guarded(self, lane: _Lane, fn: Callable[[], T]) -> T:
        timeout = self.timeout_s
        with lane.lock:
            lane.at = None if timeout is None else time.monotonic() + timeout
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "interrupted" in str(exc):
                    raise QueryError(
                        f"query took longer than {timeout:g}s; narrow the time range or filters"
                    ) from None
                raise convert_sqlite_error(exc, "query") from None
            except (sqlite3.Error, OSError) as exc:
                raise convert_sqlite_error(exc, "query") from None
            except OverflowError:
                raise QueryError("a number in the request is out of range") from None
            finally:
                lane.at = None

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        lane = self._thread_lane()

        def in_transaction() -> T:
            lane.begin()
            try:
                return fn(lane.conn, *args)
            finally:
                lane.end()

        return self._guarded(lane, in_transaction)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the reader is shutting down")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on a worker thread, in one read transaction."""
        self._check_open()
        future = self._executor.submit(self._call, fn, args)
        return await asyncio.wrap_future(future)

    async def stream(
        self, make: Callable[[sqlite3.Connection], Iterator[T]], chunk: int = 1000
    ) -> AsyncGenerator[list[T], None]:
        """Chunks of the iterator ``make(conn)`` returns, read on worker threads from a
        connection of the stream's own (so a slow client never holds a pooled one), in
        one read transaction.

        The deadline applies to each chunk. Closing or abandoning the iterator closes
        the connection (after an in-flight chunk, which is interrupted).
        """
        self._check_open()
        lane = await asyncio.wrap_future(self._executor.submit(self._open))
        try:
            async for items in self._chunks(lane, make, chunk, begin=True):
                yield items
        finally:
            self._release(lane)

    async def _chunks(
        self,
        lane: _Lane,
        make: Callable[[sqlite3.Connection], Iterator[T]],
        chunk: int,
        begin: bool,
    ) -> AsyncGenerator[list[T], None]:
        """The chunks of ``make(lane.conn)``; abandoned while a chunk is being read, it
        interrupts that statement (see :meth:`_release`)."""
        rows: Iterator[T] | None = None
        pending: concurrent.futures.Future[list[T]] | None = None

        def next_chunk() -> list[T]:
            nonlocal rows
            if rows is None:
                if begin:
                    lane.begin()
                rows = make(lane.conn)
            return list(itertools.islice(rows, chunk))

        try:
            while True:
                pending = self._executor.submit(self._guarded, lane, next_chunk)
                items = await asyncio.wrap_future(pending)
                pending = None
                if not items:
                    return
                yield items
        finally:
            if pending is not None and not pending.done():
                lane.conn.interrupt()

    def _close_lane(self, lane: _Lane) -> None:
        with lane.lock:  # an interrupted statement lets go quickly
            self._forget(lane)

    def _release(self, lane: _Lane) -> concurrent.futures.Future[None] | None:
        """Close a stream's or session's connection (its transaction ends with it).

        At once when no worker uses it; otherwise (an interrupted chunk still running)
        on a worker once that chunk let go: closing a connection under a running
        statement can crash inside libsqlite3. Returns the pending close, if any.
        """
        if lane.lock.acquire(blocking=False):
            try:
                self._forget(lane)
            finally:
                lane.lock.release()
            return None
        try:
            return self._executor.submit(self._close_lane, lane)
        except RuntimeError:  # the executor was shut down by close(), which closes it
            return None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """A connection of its own in one read transaction for every call made through
        the yielded :class:`Session`: they all see the same committed state."""
        self._check_open()
        lane = await asyncio.wrap_future(self._executor.submit(self._open))
        try:
            await asyncio.wrap_future(self._executor.submit(self._guarded, lane, lane.begin))
            yield Session(self, lane)
        finally:
            closing = self._release(lane)
            if closing is not None:
                await asyncio.wrap_future(closing)

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


class Session:
    """Calls on one connection inside one read transaction (see :meth:`ReadPool.session`);
    same methods as the pool."""

    def __init__(self, pool: ReadPool, lane: _Lane) -> None:
        self._pool = pool
        self._lane = lane
        self.cache: dict[str, Any] = {}
        """Whatever a caller derives from this snapshot and may reuse (it never changes)."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        pool, lane = self._pool, self._lane
        pool._check_open()  # noqa: SLF001 - the session is part of the pool
        future = pool._executor.submit(pool._guarded, lane, lambda: fn(lane.conn, *args))  # noqa: SLF001
        return await asyncio.wrap_future(future)

    async def stream(
        self, make: Callable[[sqlite3.Connection], Iterator[T]], chunk: int = 1000
    ) -> AsyncGenerator[list[T], None]:
        self._pool._check_open()  # noqa: SLF001
        async for items in self._pool._chunks(self._lane, make, chunk, begin=False):  # noqa: SLF001
            yield items
