"""The batch writer: one writer connection, one transaction per batch.

The batch logic (:class:`BatchWriter`) is plain synchronous sqlite3 code; the async
:class:`SqliteSink` runs it on aiosqlite's worker thread in a single hop per batch (see
``_aiosqlite_adapter``). One writer per database file: SQLite allows one writer at a
time anyway, and a single owner keeps the series cache coherent
(``docs/decisions/0001-one-writer-per-database.md``). The gateway's write side,
:class:`gateway.storage.sqlite.store.SqliteStore`, wraps a sink with the file's
lifecycle (lock, integrity check, hooks, maintenance).
"""

from __future__ import annotations

import functools
import itertools
import logging
import operator
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import cast

import aiosqlite

from gateway.errors import StorageError
from gateway.models import DeadLetter, Reading, Tags
from gateway.series_gate import SeriesGate
from gateway.storage.base import WriteResult
from gateway.storage.sqlite import outbox
from gateway.storage.sqlite._aiosqlite_adapter import run_on_connection
from gateway.storage.sqlite.connection import (
    apply_pragmas,
    convert_sqlite_error,
    create_private,
)
from gateway.storage.sqlite.schema import (
    COLD,
    HOT,
    cold_ceiling,
    prepare_database,
    tags_from_text,
    tags_to_text,
)

log = logging.getLogger(__name__)

SeriesKey = tuple[str, str, str | None, Tags]

ROWS_PER_STATEMENT = 2048
"""Rows per multi-row INSERT (3 parameters each; SQLite's limit is 32,766 since 3.32,
999 before — older libraries fall back to smaller chunks in :func:`insert_rows`)."""
_series_key = operator.itemgetter(0, 1, 4, 5)  # Reading → (sensor_id, metric, unit, tags)
_ts_of = operator.itemgetter(2)
_value_of = operator.itemgetter(3)
_INSERT_DEAD = (
    "INSERT INTO dead_letters (received_at, subscription, topic, payload, payload_size, reason)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


@functools.cache
def _insert_many(count: int) -> str:
    return f"INSERT OR IGNORE INTO {HOT} (series_id, ts, value) VALUES " + ",".join(
        ["(?,?,?)"] * count
    )


@functools.cache
def _insert_many_new_to_cold(count: int) -> str:
    """Into the hot table, skipping keys the cold table already holds (one index seek
    each): for readings older than the ceiling, which may have been moved already."""
    return (
        f"INSERT OR IGNORE INTO {HOT} (series_id, ts, value)"
        " SELECT v.column1, v.column2, v.column3 FROM (VALUES "
        + ",".join(["(?,?,?)"] * count)
        + f") AS v WHERE NOT EXISTS (SELECT 1 FROM {COLD} AS c"
        " WHERE c.series_id = v.column1 AND c.ts = v.column2)"
    )


def insert_rows(
    conn: sqlite3.Connection, rows: Sequence[tuple[int, int, float]], *, skip_cold: bool = False
) -> int:
    """Insert ``(series_id, ts, value)`` ``rows`` into the hot table (duplicates of its
    keys are ignored; with ``skip_cold``, also rows whose key the cold table holds);
    returns how many were new.

    Multi-row INSERTs of up to :data:`ROWS_PER_STATEMENT` rows (chunk sizes are powers
    of two, so a handful of statements cover every batch and stay in sqlite3's
    statement cache) instead of ``executemany``: executemany releases and re-takes the
    GIL around every row, and while the event loop thread is busy decoding each
    re-take can wait a whole switch interval — the writer then crawls
    (``docs/decisions/0062``). One statement releases the GIL once per chunk.
    """
    total = len(rows)
    if not total:
        return 0
    top = ROWS_PER_STATEMENT
    while 3 * top > conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER):
        top >>= 1
    flat = list(itertools.chain.from_iterable(rows))
    stored = 0
    pos = 0
    while pos < total:
        size = top
        while size > total - pos:
            size >>= 1
        sql = _insert_many_new_to_cold(size) if skip_cold else _insert_many(size)
        stored += conn.execute(sql, flat[3 * pos : 3 * (pos + size)]).rowcount
        pos += size
    return stored


class BatchWriter:
    """Synchronous batch logic over one sqlite3 connection (in autocommit mode).

    Keeps a bounded LRU cache of series key → id. New series are inserted inside the
    batch's transaction and enter the cache only after it commits, so a rolled-back
    batch never leaves a dangling id behind.
    """

    def __init__(
        self, dead_letter_max_payload: int, dead_letter_max_rows: int, cache_size: int
    ) -> None:
        self.dead_letter_max_payload = dead_letter_max_payload
        self.dead_letter_max_rows = dead_letter_max_rows
        self.cache_size = cache_size
        self.series_ids: OrderedDict[SeriesKey, int] = OrderedDict()
        self._last_dead_letter_id = 0
        self.after_insert: (
            Callable[[sqlite3.Connection, list[tuple[int, int, float]]], None] | None
        ) = None
        """Called inside the transaction after the readings' INSERT with the batch's
        ``(series_id, ts, value)`` rows in arrival order (duplicates included) — rollup
        late-data tracking, gateway.storage."""
        self.outbox = False
        """Whether the file forwards (its outbox trigger exists, :mod:`.outbox`): then
        each batch that adds rows also records when it was written."""

    def load(self, conn: sqlite3.Connection) -> None:
        """Warm the series cache (newest series first, up to the cache size)."""
        rows = conn.execute(
            "SELECT id, sensor_id, metric, unit, tags FROM series ORDER BY id DESC LIMIT ?",
            (self.cache_size,),
        ).fetchall()
        for series_id, sensor_id, metric, unit, tags in reversed(rows):
            key = (sensor_id, metric, unit or None, _tags_tuple(tags))
            self.series_ids[key] = series_id
        row = conn.execute("SELECT coalesce(max(id), 0) FROM dead_letters").fetchone()
        self._last_dead_letter_id = int(row[0])
        self.outbox = outbox.enabled(conn)

    def _resolve_new(self, conn: sqlite3.Connection, keys: list[SeriesKey]) -> dict[SeriesKey, int]:
        now_ms = int(time.time() * 1000)
        params = [(s, m, u or "", tags_to_text(t), now_ms) for s, m, u, t in keys]
        conn.executemany(
            "INSERT OR IGNORE INTO series (sensor_id, metric, unit, tags, created_at) VALUES (?, ?, ?, ?, ?)",
            params,
        )
        found: dict[SeriesKey, int] = {}
        lookup = (
            "SELECT id FROM series WHERE sensor_id = ? AND metric = ? AND unit = ? AND tags = ?"
        )
        for key, (s, m, u, t, _now) in zip(keys, params, strict=True):
            found[key] = conn.execute(lookup, (s, m, u, t)).fetchone()[0]
        return found

    def insert(
        self, conn: sqlite3.Connection, readings: Sequence[Reading]
    ) -> tuple[int, int, dict[SeriesKey, int]]:
        """Insert ``readings`` inside the caller's open transaction: resolve (and create)
        their series, insert the rows into the hot table (minus keys already cold, for
        readings older than the cold ceiling), run :attr:`after_insert`. Returns
        ``(stored, attempted, new_series)``; pass ``new_series`` to :meth:`remember`
        once the transaction committed."""
        cache = self.series_ids
        # map()/zip() over itemgetters: the per-reading work runs in C, not in a Python
        # loop (this runs with the GIL held, competing with the decoder).
        keys: list[SeriesKey] = list(map(_series_key, readings))
        ids: list[int | None] = list(map(cache.get, keys))
        fresh: dict[SeriesKey, int] = {}
        if None in ids:
            new_keys = list(dict.fromkeys(k for k, i in zip(keys, ids, strict=True) if i is None))
            fresh = self._resolve_new(conn, new_keys)
            ids = [fresh[k] if i is None else i for k, i in zip(keys, ids, strict=True)]
        resolved = cast(list[int], ids)  # every None was replaced from fresh above
        stamps = list(map(_ts_of, readings))
        rows: list[tuple[int, int, float]] = list(
            zip(resolved, stamps, map(_value_of, readings), strict=True)
        )
        if not rows:
            return 0, 0, fresh
        first_seq = outbox.last_seq(conn) + 1 if self.outbox else 0
        ceiling = cold_ceiling(conn)
        if min(stamps) >= ceiling:
            # The usual case (decided in C): every key is newer than anything cold, so
            # the hot table's primary key alone keeps duplicates out; arrival order is
            # (nearly) its key order, so no sort is needed for locality.
            stored = insert_rows(conn, rows)
        else:
            # Readings older than the ceiling (late data, a redelivery of something
            # already moved, a backlog after an outage) also go to the hot table, minus
            # the keys already in the cold one.
            old = [row for row in rows if row[1] < ceiling]
            new = [row for row in rows if row[1] >= ceiling]
            stored = insert_rows(conn, old, skip_cold=True) + insert_rows(conn, new)
        if first_seq and stored:
            # The trigger copied the new rows into the outbox from first_seq on.
            outbox.mark(conn, first_seq, int(time.time() * 1000))
        if self.after_insert is not None:
            self.after_insert(conn, rows)
        return stored, len(rows), fresh

    def remember(self, fresh: dict[SeriesKey, int]) -> None:
        """Add committed new series to the bounded cache."""
        cache = self.series_ids
        for key, series_id in fresh.items():
            cache[key] = series_id
        while len(cache) > self.cache_size:
            cache.popitem(last=False)

    def write(
        self,
        conn: sqlite3.Connection,
        readings: Sequence[Reading],
        dead_letters: Sequence[DeadLetter],
    ) -> WriteResult:
        """Commit ``readings`` and ``dead_letters`` in one transaction."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            stored, attempted, fresh = self.insert(conn, readings)
            if dead_letters:
                conn.executemany(_INSERT_DEAD, [self._dead_row(d) for d in dead_letters])
                self._last_dead_letter_id = int(
                    conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                )
                cutoff = self._last_dead_letter_id - self.dead_letter_max_rows
                if cutoff > 0:
                    conn.execute("DELETE FROM dead_letters WHERE id <= ?", (cutoff,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.remember(fresh)
        return WriteResult(stored, attempted - stored, len(dead_letters))

    def _dead_row(self, dead: DeadLetter) -> tuple[int, str, str, bytes, int, str]:
        payload = dead.payload[: self.dead_letter_max_payload]
        return (
            dead.received_at_ms,
            dead.subscription,
            dead.topic,
            payload,
            len(dead.payload),
            dead.reason,
        )


def series_keys(conn: sqlite3.Connection) -> Iterator[SeriesKey]:
    """The key of every stored series, as readings carry it (unit None for none)."""
    rows = conn.execute("SELECT sensor_id, metric, unit, tags FROM series")
    return ((s, m, u or None, _tags_tuple(t)) for s, m, u, t in rows)


def _tags_tuple(text: str) -> Tags:
    if not text:
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in tags_from_text(text).items()))


class SqliteSink:
    """Async batch writer over one SQLite file (the bare write side: no lock, no
    maintenance; see :class:`gateway.storage.sqlite.store.SqliteStore`)."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 5000,
        dead_letter_max_payload: int = 64 * 1024,
        dead_letter_max_rows: int = 100_000,
        series_cache_size: int = 100_000,
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.writer = BatchWriter(dead_letter_max_payload, dead_letter_max_rows, series_cache_size)
        self._conn: aiosqlite.Connection | None = None
        self.admission: Callable[[], None] | None = None
        """Called before each batch; raises StorageFull to hold writes (size guard)."""
        self.forward: bool | None = None
        """At open: install (True) or remove (False) the outbox trigger
        (:mod:`.outbox`); ``None`` leaves the file as it is."""

    @property
    def connection(self) -> aiosqlite.Connection:
        """The open writer connection; raises if the sink is not open."""
        if self._conn is None:
            raise StorageError("sink is not open")
        return self._conn

    async def open(self) -> None:
        if self.path.parent and not self.path.parent.exists():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create {self.path.parent}: {exc.strerror}") from None
        try:
            create_private(self.path)
            self._conn = await aiosqlite.connect(self.path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise convert_sqlite_error(exc, f"opening {self.path}") from None

        def setup(conn: sqlite3.Connection) -> None:
            apply_pragmas(conn, self.synchronous, self.busy_timeout_ms)
            prepare_database(conn)
            if self.forward is not None:
                outbox.set_enabled(conn, self.forward)
            self.writer.load(conn)

        try:
            await run_on_connection(self._conn, setup)
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise convert_sqlite_error(exc, f"preparing {self.path}") from None
        except StorageError:
            await self.close()
            raise

    async def seed(self, gate: SeriesGate) -> None:
        """Give ``gate`` the key of every stored series (one pass over the series table,
        on the writer's thread, before any batch)."""

        def keys(conn: sqlite3.Connection) -> None:
            gate.load(series_keys(conn))

        try:
            await run_on_connection(self.connection, keys)
        except (sqlite3.Error, OSError) as exc:
            raise convert_sqlite_error(exc, "reading series") from None

    async def write_batch(
        self, readings: Sequence[Reading], dead_letters: Sequence[DeadLetter]
    ) -> WriteResult:
        conn = self.connection
        if self.admission is not None:
            self.admission()

        def write(raw: sqlite3.Connection) -> WriteResult:
            return self.writer.write(raw, readings, dead_letters)

        try:
            return await run_on_connection(conn, write)
        except (sqlite3.Error, OSError) as exc:
            raise convert_sqlite_error(exc, "writing batch") from None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except (sqlite3.Error, OSError) as exc:
                log.warning("closing %s: %s", self.path, exc)
