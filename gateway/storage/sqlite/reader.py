"""The SQLite read side: :class:`gateway.storage.base.ReadStore` over one database file.

The SQL lives in :mod:`.queries` and :mod:`.deadletters` (plain functions over a
connection); this module runs it on the worker threads of a :class:`.readpool.ReadPool`,
each call in one read transaction and under the pool's deadline, and a
:meth:`SqliteReader.snapshot` on one connection in one transaction throughout.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

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
from gateway.storage.sqlite import deadletters, queries
from gateway.storage.sqlite.readpool import ReadPool, Session
from gateway.storage.sqlite.report import report_lines, storage_report
from gateway.storage.sqlite.schema import has_hot_table

T = TypeVar("T")


class _Runner(Protocol):
    """Where statements run: the pool (a transaction per call) or a session."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    def stream(
        self, make: Callable[[sqlite3.Connection], Iterator[T]], chunk: int = 1000
    ) -> AsyncIterator[list[T]]: ...


async def _nothing() -> AsyncIterator[list[Any]]:
    return
    yield


class _Reads:
    """The queries of :class:`~gateway.storage.base.Reads`, on a runner (with
    ``session``: the runner is that snapshot, whose hot table is read only once).

    The file holds one gateway's readings, ``gateway_id``'s: rows carry that id, and a
    ``gateway`` filter naming another one matches nothing (without reading the file)."""

    def __init__(
        self, path: Path, runner: _Runner, session: Session | None = None, gateway_id: str = ""
    ) -> None:
        self.path = path
        self._runner = runner
        self._session = session
        self.gateway_id = gateway_id

    def _other(self, gateway: str | None) -> bool:
        return gateway is not None and gateway != self.gateway_id

    def _hot(self, conn: sqlite3.Connection) -> queries.HotSnapshot | None:
        """In a snapshot: its hot table, read on first use (the snapshot never changes)."""
        if self._session is None:
            return None
        cache = self._session.cache
        if "hot" not in cache:
            cache["hot"] = queries.HotSnapshot(conn) if has_hot_table(conn) else None
        hot: queries.HotSnapshot | None = cache["hot"]
        return hot

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
        if self._other(gateway):
            return []

        def run(conn: sqlite3.Connection) -> list[SeriesInfo]:
            found = queries.series(
                conn, sensor, metric, counts, self._hot(conn), after=after, limit=limit,
                gateway_id=self.gateway_id,
            )  # fmt: skip
            return list(found)

        return await self._runner.run(run)

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
        if self._other(gateway):
            return []

        def run(conn: sqlite3.Connection) -> list[Latest]:
            return queries.latest(
                conn, sensor, metric, match=match, after=after, limit=limit,
                gateway_id=self.gateway_id,
            )  # fmt: skip

        return await self._runner.run(run)

    async def readings(self, query: ReadingsQuery) -> list[ReadingRow]:
        if self._other(query.gateway):
            return []

        def run(conn: sqlite3.Connection) -> list[ReadingRow]:
            rows = queries.readings(conn, query, self._hot(conn), self.gateway_id)
            return list(itertools.islice(rows, query.limit) if query.limit else rows)

        return await self._runner.run(run)

    def stream_readings(
        self, query: ReadingsQuery, chunk: int = 1000
    ) -> AsyncIterator[list[ReadingRow]]:
        if self._other(query.gateway):
            return _nothing()
        return self._runner.stream(
            lambda conn: queries.readings(conn, query, self._hot(conn), self.gateway_id), chunk
        )

    async def aggregate(self, query: AggregateQuery) -> list[Bucket]:
        if self._other(query.gateway):
            return []

        def run(conn: sqlite3.Connection) -> list[Bucket]:
            buckets = queries.aggregate(conn, query, self.gateway_id)
            return list(itertools.islice(buckets, query.limit) if query.limit else buckets)

        return await self._runner.run(run)

    def stream_aggregate(
        self, query: AggregateQuery, chunk: int = 1000
    ) -> AsyncIterator[list[Bucket]]:
        if self._other(query.gateway):
            return _nothing()

        def make(conn: sqlite3.Connection) -> Iterator[Bucket]:
            buckets = queries.aggregate(conn, query, self.gateway_id)
            return itertools.islice(buckets, query.limit) if query.limit else buckets

        return self._runner.stream(make, chunk)

    async def overview(self) -> Overview:
        return await self._runner.run(queries.overview, self.path)

    async def stats(self, gateway: str | None = None) -> Stats:
        if self._other(gateway):
            database_bytes, wal_bytes = queries.file_sizes(self.path)
            return Stats(0, 0, 0, 0, database_bytes, wal_bytes, None, None)
        return await self._runner.run(queries.stats, self.path)

    async def gateways(self) -> list[GatewayInfo]:
        def run(conn: sqlite3.Connection) -> list[GatewayInfo]:
            series, sensors = conn.execute(
                "SELECT count(*), count(DISTINCT sensor_id) FROM series"
            ).fetchone()
            return [GatewayInfo(self.gateway_id, int(series), int(sensors))]

        return await self._runner.run(run)

    async def details(self, gateway: str | None = None) -> StorageDetails:
        def run(conn: sqlite3.Connection) -> StorageDetails:
            data = storage_report(conn, self.path)
            return StorageDetails(data, report_lines(data))

        return await self._runner.run(run)

    async def dead_letter_groups(self, selection: Selection = Selection()) -> list[ReasonGroup]:
        if self._other(selection.gateway):
            return []
        return await self._runner.run(deadletters.groups, selection)

    def stream_dead_letters(
        self, selection: Selection = Selection(), limit: int = 100, chunk: int = 200
    ) -> AsyncIterator[list[DeadLetterRow]]:
        if self._other(selection.gateway):
            return _nothing()

        def make(conn: sqlite3.Connection) -> Iterator[DeadLetterRow]:
            for row in deadletters.listing(conn, selection, limit):
                yield replace(row, gateway_id=self.gateway_id)

        return self._runner.stream(make, chunk)

    async def dead_letter(self, ident: int) -> DeadLetterRow:
        row = await self._runner.run(deadletters.get, ident)
        return replace(row, gateway_id=self.gateway_id)


class SqliteReader(_Reads):
    """Readers of the database at ``path``: ``threads`` worker threads, each query
    interrupted after ``timeout_s`` (``None``: no deadline, for tools). ``gateway_id``:
    the gateway whose file it is (its rows carry it)."""

    def __init__(
        self,
        path: Path,
        threads: int = 2,
        timeout_s: float | None = 10.0,
        gateway_id: str = "",
    ) -> None:
        self._pool = ReadPool(Path(path), threads, timeout_s)
        super().__init__(Path(path), self._pool, gateway_id=gateway_id)

    def snapshot(self) -> AbstractAsyncContextManager[Reads]:
        return self._snapshot()

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[Reads]:
        async with self._pool.session() as session:
            yield _Reads(self.path, session, session, self.gateway_id)

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.close)
