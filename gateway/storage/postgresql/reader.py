"""The central store's read side: :class:`gateway.storage.base.ReadStore` over the
``tidegate`` schema in PostgreSQL (SCHEMA.md), for ``tidegate serve --store``, the CLI's
``--store`` and ``tidegate-sim verify --store``.

The SQL lives in :mod:`.queries` and :mod:`.tiers`; this module runs it on an asyncpg
pool of at most ``threads`` connections, created on first use (so building a reader
never touches the network or imports asyncpg). Every call runs in one
``REPEATABLE READ READ ONLY`` transaction (all its statements see one committed state,
as the SQLite reader's one read transaction per call), under a deadline:
``statement_timeout`` on the server stops a heavy statement there and a client-side
deadline slightly longer catches a server or network that stopped answering; both
are a :class:`~gateway.errors.QueryError` like the SQLite reader's "query took longer
than …". A failing or unreachable database is a :class:`~gateway.errors.StorageError`.

Streams hold no transaction between chunks (decision 0155): each chunk is a query of its
own from the keyset cursor of the last row, on a connection taken from the pool for
that chunk only. :meth:`PostgresReader.snapshot` is the exception by design: one
connection in one ``REPEATABLE READ READ ONLY`` transaction for everything read
through it (``tidegate-sim verify``), streams included.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

from gateway.errors import QueryError, StorageError
from gateway.request import AggregateQuery, ReadingsQuery, SeriesCursor
from gateway.storage.base import (
    Bucket,
    DeadLetterRow,
    GatewayInfo,
    Latest,
    Overview,
    ReadingRow,
    Reads,
    ReasonGroup,
    Selection,
    SeriesInfo,
    Stats,
    StorageDetails,
)
from gateway.storage.postgresql import queries
from gateway.storage.postgresql.details import storage_details

T = TypeVar("T")
Call = Callable[[Any], Awaitable[T]]
"""A read on one connection (inside the runner's transaction)."""

CONNECT_TIMEOUT_S = 10.0
"""How long opening a connection may take (a silent network fails here)."""
DEADLINE_GRACE_S = 2.0
"""The client-side deadline is the statement timeout plus this: the server's own
timeout, with its precise error, fires first whenever the server still answers."""


@asynccontextmanager
async def converted(timeout_s: float | None, what: str) -> AsyncIterator[None]:
    """Turn the driver's and the network's errors into tidegate's (``what`` names the
    action in the message; the URL, and so a password, never appears in it)."""
    try:
        yield
    except (QueryError, StorageError):
        raise
    except Exception as exc:
        raise _convert(exc, timeout_s, what) from None


def _convert(exc: Exception, timeout_s: float | None, what: str) -> Exception:
    import asyncpg

    if isinstance(exc, asyncpg.QueryCanceledError) and timeout_s is not None:
        return QueryError(
            f"query took longer than {timeout_s:g}s; narrow the time range or filters"
        )
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.InvalidSchemaNameError):
        return StorageError(
            f"{what}: the central store has no tidegate schema yet (no gateway has written"
            f" to it): {exc}"
        )
    if isinstance(exc, OverflowError | ValueError | asyncpg.DataError):
        # Arguments asyncpg cannot encode, or the server finds out of range (22xxx).
        return QueryError("a number in the request is out of range")
    if isinstance(exc, asyncpg.PostgresError):
        return StorageError(f"{what} failed: {exc}")
    if isinstance(exc, TimeoutError):
        return StorageError(f"{what}: the central store did not answer in time")
    if isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.ClientConfigurationError):
        return StorageError(f"{what}: the central store is unreachable: {exc}")
    return StorageError(f"{what} failed: {type(exc).__name__}: {exc}")


class _PoolRunner:
    """Runs reads on pooled connections: one transaction per call."""

    def __init__(
        self, url: str, threads: int, timeout_s: float | None, password: str | None = None
    ) -> None:
        self.url = url
        self._password = password
        self.threads = max(1, threads)
        self.timeout_s = timeout_s
        self._pool: Any = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def pool(self) -> Any:
        if self._closed:
            raise StorageError("the reader is shutting down")
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await self._create()
        return self._pool

    async def _create(self) -> Any:
        try:
            import asyncpg
        except ImportError:
            raise StorageError(
                "the central store needs the PostgreSQL driver: pip install 'tidegate[postgresql]'"
            ) from None
        settings = {
            "application_name": "tidegate-read",
            # Safety net: a reader never writes, whatever a query says.
            "default_transaction_read_only": "on",
            # Buckets and days are UTC everywhere (epoch-aligned), whatever the server's
            # TimeZone; nothing here depends on it, but psql-style output would.
            "TimeZone": "UTC",
        }
        if self.timeout_s is not None:
            settings["statement_timeout"] = str(max(1, int(self.timeout_s * 1000)))
        async with converted(self.timeout_s, "connecting to the central store"):
            return await asyncpg.create_pool(
                self.url,
                password=self._password,
                min_size=0,
                max_size=self.threads,
                timeout=CONNECT_TIMEOUT_S,
                init=queries.setup_connection,
                server_settings=settings,
                # Plans for the generated SQL vary with the filters: keep few, cheap.
                statement_cache_size=256,
                max_inactive_connection_lifetime=60.0,
            )

    async def run(self, call: Call[T]) -> T:
        pool = await self.pool()
        async with converted(self.timeout_s, "query"):
            conn = await pool.acquire(timeout=CONNECT_TIMEOUT_S)
            try:
                async with (
                    _deadline(self.timeout_s, conn),
                    conn.transaction(isolation="repeatable_read", readonly=True),
                ):
                    return await call(conn)
            finally:
                await _release(pool, conn)

    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 10)
            except Exception:  # closing: never raise; drop what is left
                pool.terminate()


class _SessionRunner:
    """Runs reads on one connection inside the snapshot's transaction, one at a time."""

    def __init__(self, conn: Any, timeout_s: float | None) -> None:
        self.conn = conn
        self.timeout_s = timeout_s
        self._lock = asyncio.Lock()

    async def run(self, call: Call[T]) -> T:
        async with self._lock, converted(self.timeout_s, "query"):
            if self.conn.is_closed():
                raise StorageError("the snapshot's connection was lost")
            async with _deadline(self.timeout_s, self.conn):
                return await call(self.conn)


Runner = _PoolRunner | _SessionRunner


@asynccontextmanager
async def _deadline(timeout_s: float | None, conn: Any) -> AsyncIterator[None]:
    """The client-side deadline of one call; past it the connection is dropped (its
    state is unknown) and the call fails like a statement timeout."""
    if timeout_s is None:
        yield
        return
    try:
        async with asyncio.timeout(timeout_s + DEADLINE_GRACE_S):
            yield
    except TimeoutError:
        conn.terminate()
        raise QueryError(
            f"query took longer than {timeout_s:g}s; narrow the time range or filters"
        ) from None


async def _release(pool: Any, conn: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pool.release(conn), CONNECT_TIMEOUT_S)


class _Reads:
    """The queries of :class:`~gateway.storage.base.Reads` on a runner: the pool (a
    transaction per call or per stream chunk) or a snapshot's connection."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def series(
        self,
        sensor: str | None = None,
        metric: str | None = None,
        *,
        counts: bool = True,
        after: SeriesCursor | None = None,
        limit: int = 0,
        gateway: str | None = None,
    ) -> list[SeriesInfo]:
        return await self._runner.run(
            lambda conn: queries.series(
                conn, sensor, metric, counts=counts, after=after, limit=limit, gateway=gateway
            )
        )

    async def latest(
        self,
        sensor: str | None = None,
        metric: str | None = None,
        *,
        match: str | None = None,
        after: SeriesCursor | None = None,
        limit: int = 0,
        gateway: str | None = None,
    ) -> list[Latest]:
        return await self._runner.run(
            lambda conn: queries.latest(
                conn, sensor, metric, match=match, after=after, limit=limit, gateway=gateway
            )
        )

    async def readings(self, query: ReadingsQuery) -> list[ReadingRow]:
        return await self._runner.run(lambda conn: queries.readings(conn, query))

    async def stream_readings(
        self, query: ReadingsQuery, chunk: int = 1000
    ) -> AsyncIterator[list[ReadingRow]]:
        chunk = max(1, chunk)
        left = query.limit  # 0: no limit
        after = query.after
        while True:
            size = min(chunk, left) if query.limit else chunk
            page_query = replace(query, after=after, limit=size)
            rows = await self._runner.run(partial(queries.readings, query=page_query))
            if not rows:
                return
            yield rows
            if query.limit:
                left -= len(rows)
                if left <= 0:
                    return
            if len(rows) < size:
                return
            after = (rows[-1].ts_ms, rows[-1].series_id)

    async def aggregate(self, query: AggregateQuery) -> list[Bucket]:
        return await self._runner.run(lambda conn: queries.aggregate(conn, query))

    async def stream_aggregate(
        self, query: AggregateQuery, chunk: int = 1000
    ) -> AsyncIterator[list[Bucket]]:
        chunk = max(1, chunk)
        after: SeriesCursor | None = None
        sent = 0
        pending: list[Bucket] = []
        while True:
            buckets, after = await self._runner.run(
                partial(queries.aggregate_step, query=query, after=after)
            )
            if query.limit:
                buckets = buckets[: query.limit - sent - len(pending)]
            pending.extend(buckets)
            done = after is None or (query.limit and sent + len(pending) >= query.limit)
            while len(pending) >= chunk or (done and pending):
                part, pending = pending[:chunk], pending[chunk:]
                sent += len(part)
                yield part
            if done:
                return

    async def overview(self) -> Overview:
        async def run(conn: Any) -> Overview:
            oldest, newest = await queries.time_bounds(conn)
            return Overview(
                await queries.series_count(conn),
                await queries.relation_bytes(conn),
                0,
                oldest,
                newest,
            )

        return await self._runner.run(run)

    async def stats(self, gateway: str | None = None) -> Stats:
        return await self._runner.run(lambda conn: queries.stats(conn, gateway))

    async def gateways(self) -> list[GatewayInfo]:
        return await self._runner.run(queries.gateways)

    async def details(self, gateway: str | None = None) -> StorageDetails:
        return await self._runner.run(lambda conn: storage_details(conn, gateway))

    async def dead_letter_groups(self, selection: Selection = Selection()) -> list[ReasonGroup]:
        return await self._runner.run(lambda conn: queries.dead_letter_groups(conn, selection))

    async def stream_dead_letters(
        self, selection: Selection = Selection(), limit: int = 100, chunk: int = 200
    ) -> AsyncIterator[list[DeadLetterRow]]:
        chunk = max(1, chunk)
        left = limit if limit > 0 else None
        before: int | None = None
        while left is None or left > 0:
            size = chunk if left is None else min(chunk, left)
            rows = await self._runner.run(
                partial(
                    queries.dead_letters_page, selection=selection, before_id=before, limit=size
                )
            )
            if not rows:
                return
            yield rows
            if left is not None:
                left -= len(rows)
            if len(rows) < size:
                return
            before = rows[-1].id

    async def dead_letter(self, ident: int) -> DeadLetterRow:
        return await self._runner.run(lambda conn: queries.dead_letter(conn, ident))


class PostgresReader(_Reads):
    """Readers of the central store at ``url`` (a ``postgresql://`` URL; the password
    ``password``, else from the URL, ``PGPASSWORD`` or ``~/.pgpass``, as libpq does): at
    most ``threads`` connections, each statement stopped after ``timeout_s`` (``None``:
    no deadline, for tools)."""

    def __init__(
        self,
        url: str,
        threads: int = 4,
        timeout_s: float | None = 30.0,
        *,
        password: str | None = None,
    ) -> None:
        self._pool = _PoolRunner(url, threads, timeout_s, password)
        self.timeout_s = timeout_s
        super().__init__(self._pool)

    def snapshot(self) -> AbstractAsyncContextManager[Reads]:
        return self._snapshot()

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[Reads]:
        pool = await self._pool.pool()
        async with converted(self.timeout_s, "starting a snapshot"):
            conn = await pool.acquire(timeout=CONNECT_TIMEOUT_S)
        try:
            async with converted(self.timeout_s, "starting a snapshot"):
                tx = conn.transaction(isolation="repeatable_read", readonly=True)
                await tx.start()
                # REPEATABLE READ takes its snapshot at the first statement, not at
                # BEGIN: take it now, so the snapshot is the state when it was opened.
                await conn.fetchval("SELECT 1")
            try:
                yield _Reads(_SessionRunner(conn, self.timeout_s))
            finally:
                if not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(tx.rollback(), CONNECT_TIMEOUT_S)
        finally:
            await _release(pool, conn)

    async def close(self) -> None:
        await self._pool.close()
