"""The SQLite outbox: a copy of every newly stored reading, in commit order, until the
central store has it (``docs/upstream.md``, decision 0118).

* **Filled by a trigger** on ``readings_hot`` (``outbox_append``) that exists only while
  forwarding is configured (:func:`set_enabled`, called by the store at open). The
  trigger fires for inserted rows only — an ``INSERT OR IGNORE`` that hits an existing
  key inserts nothing — so duplicates never enter, and it runs inside whatever
  transaction inserted the reading: a batch that rolls back takes its outbox rows with
  it, a committed batch cannot miss them. Every path into the readings (the gateway's
  writer, dead-letter replay, an ``INSERT`` through the ``readings`` view) goes through
  it. Without forwarding there is no trigger: the write path is exactly as before.
* **``seq``** is the rowid: each new row gets ``max(seq) + 1``, so numbers follow commit
  order. They must never be handed out twice (the central position would swallow a
  reused number), so the row at the confirmed position itself is kept when the rows
  below it are deleted: the table is never emptied, ``max(seq)`` never goes back.
* **``outbox_marks``** holds one row per batch that added rows: its first ``seq`` and
  when it was written. The age of the oldest unforwarded reading is its batch's time —
  one row a batch instead of a column a reading.
* ``storage_state`` keeps the position this file last confirmed (``outbox.position``),
  the gateway id it forwarded under (``outbox.gateway_id``), and how many unforwarded
  rows were dropped for space (``outbox.dropped``).

The forwarder reads on a read-only connection of its own (WAL: it never blocks the
writer) and changes the outbox only on the writer's connection, between batches.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TypeVar

import aiosqlite

from gateway.errors import StorageError
from gateway.storage.outbox import Adoption, Chunk, OutboxRow, Pending, SeriesText
from gateway.storage.sqlite._aiosqlite_adapter import run_on_connection
from gateway.storage.sqlite.connection import convert_sqlite_error
from gateway.storage.sqlite.schema import HOT

log = logging.getLogger(__name__)
T = TypeVar("T")

TRIGGER = "outbox_append"
POSITION_KEY = "outbox.position"
GATEWAY_KEY = "outbox.gateway_id"
DROPPED_KEY = "outbox.dropped"
SENTINEL_SERIES = 0
"""``series_id`` of a placeholder row that only holds a sequence number (never a real
series: ids start at 1); never forwarded."""

_CREATE_TRIGGER = (
    f"CREATE TRIGGER IF NOT EXISTS {TRIGGER} AFTER INSERT ON {HOT} BEGIN"
    " INSERT INTO outbox (series_id, ts, value) VALUES (NEW.series_id, NEW.ts, NEW.value);"
    " END"
)


def _state(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM storage_state WHERE key = ?", (key,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def _set_state(conn: sqlite3.Connection, key: str, value: int | str) -> None:
    conn.execute("INSERT OR REPLACE INTO storage_state (key, value) VALUES (?, ?)", (key, value))


def enabled(conn: sqlite3.Connection) -> bool:
    """Whether new readings are copied into the outbox (the trigger exists)."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ?", (TRIGGER,)
    ).fetchone()
    return row is not None


def set_enabled(conn: sqlite3.Connection, on: bool) -> None:
    """Install or remove the trigger (the writer's connection, at open)."""
    was = enabled(conn)
    if on == was:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if on:
            conn.execute(_CREATE_TRIGGER)
        else:
            conn.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if on:
        log.info("forwarding: new readings are kept in the outbox until the centre has them")
    else:
        left = pending(conn)
        log.warning(
            "forwarding is off ([upstream] not configured): new readings no longer enter"
            " the outbox; %d unforwarded readings stay in it",
            left.count,
        )


def last_seq(conn: sqlite3.Connection) -> int:
    """The highest sequence number handed out (0 for none)."""
    row = conn.execute("SELECT max(seq) FROM outbox").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def mark(conn: sqlite3.Connection, first_seq: int, now_ms: int) -> None:
    """Record that the batch whose rows start at ``first_seq`` was written at ``now_ms``
    (inside that batch's transaction)."""
    conn.execute(
        "INSERT OR REPLACE INTO outbox_marks (seq, received_at) VALUES (?, ?)",
        (first_seq, now_ms),
    )


def pending(conn: sqlite3.Connection, after: int | None = None) -> Pending:
    """The unforwarded rows (those above ``after``, default the confirmed position): a
    few index seeks. Sequence numbers above the confirmed position are contiguous (rows
    are appended at ``max + 1`` and only ever deleted from the low end), so the count is
    ``last - first + 1``."""
    position = int(_state(conn, POSITION_KEY) or 0)
    if after is not None:
        position = max(position, after)
    dropped = int(_state(conn, DROPPED_KEY) or 0)
    last = last_seq(conn)
    # ORDER BY … LIMIT 1, not min(): with the second term min() scans the whole range.
    row = conn.execute(
        "SELECT seq FROM outbox WHERE seq > ? AND series_id != ? ORDER BY seq LIMIT 1",
        (position, SENTINEL_SERIES),
    ).fetchone()
    first = None if row is None or row[0] is None else int(row[0])
    if first is None:
        return Pending(0, None, position, last, dropped)
    mark_row = conn.execute(
        "SELECT received_at FROM outbox_marks WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (first,)
    ).fetchone()
    oldest = int(mark_row[0]) if mark_row else None
    return Pending(last - first + 1, oldest, position, last, dropped)


def confirm(conn: sqlite3.Connection, position: int) -> int:
    """Delete the rows the central store holds (below ``position``; the row at it is
    kept, see the module docstring) and remember the position; returns rows deleted."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = int(conn.execute("DELETE FROM outbox WHERE seq < ?", (position,)).rowcount)
        # Keep the mark that covers the first row after the position.
        conn.execute(
            "DELETE FROM outbox_marks WHERE seq < (SELECT coalesce(max(seq), 0)"
            " FROM outbox_marks WHERE seq <= ?)",
            (position + 1,),
        )
        _set_state(conn, POSITION_KEY, position)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return deleted


def adopt(conn: sqlite3.Connection, position: int, gateway_id: str) -> Adoption:
    """Align the outbox with the central ``position`` (see :class:`Adoption`).

    The local numbering continues the central one only if this file forwarded under
    ``gateway_id`` before and has handed out numbers up to ``position`` at least; then
    everything up to ``position`` went up (a crash can fall between the central commit
    and the local delete) and is deleted here. Otherwise — a new or restored file, a new
    gateway id — every row still here is renumbered to follow ``position`` and goes up
    (again): the central store ignores readings it already holds.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        known_gateway = _state(conn, GATEWAY_KEY)
        confirmed_before = _state(conn, POSITION_KEY)
        last = last_seq(conn)
        continues = (
            known_gateway == gateway_id and confirmed_before is not None and last >= position
        )
        went_back = continues and position < int(confirmed_before or 0)
        if continues:
            deleted = int(conn.execute("DELETE FROM outbox WHERE seq < ?", (position,)).rowcount)
            result = Adoption(confirmed=deleted, renumbered=0, went_back=went_back)
        else:
            # Rows at or below this file's own confirmed position went up already (the
            # one kept there only holds the sequence); the rest go up after ``position``.
            mine = int(confirmed_before or 0)
            conn.execute("DELETE FROM outbox WHERE seq <= ?", (mine,))
            # A placeholder is always the lowest row (everything after it is newer).
            conn.execute(
                "DELETE FROM outbox WHERE seq = (SELECT min(seq) FROM outbox) AND series_id = ?",
                (SENTINEL_SERIES,),
            )
            row = conn.execute("SELECT min(seq), max(seq) FROM outbox").fetchone()
            first, last = (int(row[0]), int(row[1])) if row and row[0] is not None else (0, -1)
            count = last - first + 1  # contiguous (see pending())
            offset = position + 1 - first if count else 0
            if offset:
                # Every row is rewritten (twice: through the negative numbers, so no
                # key collides on the way; order and gaps are kept) — seconds for
                # millions of rows, holding the writer: only a restored or replaced
                # database, or a new gateway id, pays it.
                for table in ("outbox", "outbox_marks"):
                    conn.execute(f"UPDATE {table} SET seq = -seq")
                    conn.execute(f"UPDATE {table} SET seq = ? - seq", (offset,))
            elif not count:
                conn.execute("DELETE FROM outbox_marks")
            # The placeholder at the position keeps max(seq) from going back below it.
            conn.execute(
                "INSERT OR IGNORE INTO outbox (seq, series_id, ts, value) VALUES (?, ?, 0, 0)",
                (position, SENTINEL_SERIES),
            )
            # A first start moves nothing (the centre at 0, the rows from 1).
            result = Adoption(confirmed=0, renumbered=count if offset else 0)
        conn.execute(
            "DELETE FROM outbox_marks WHERE seq < (SELECT coalesce(max(seq), 0)"
            " FROM outbox_marks WHERE seq <= ?)",
            (position + 1,),
        )
        _set_state(conn, GATEWAY_KEY, gateway_id)
        _set_state(conn, POSITION_KEY, position)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def drop_oldest(conn: sqlite3.Connection, rows: int) -> int:
    """Delete up to ``rows`` of the oldest unforwarded rows (never the newest row, which
    holds the sequence) — the explicit ``upstream.full_policy = "drop_oldest"``; returns
    how many, also added to ``outbox.dropped``. Runs in the caller's transaction."""
    position = int(_state(conn, POSITION_KEY) or 0)
    last = last_seq(conn)
    row = conn.execute("SELECT min(seq) FROM outbox WHERE seq > ?", (position,)).fetchone()
    if row is None or row[0] is None:
        return 0
    first = int(row[0])
    upto = min(first + rows - 1, last - 1)
    if upto < first:
        return 0
    deleted = int(
        conn.execute(
            "DELETE FROM outbox WHERE seq BETWEEN ? AND ? AND series_id != ?",
            (first, upto, SENTINEL_SERIES),
        ).rowcount
    )
    _set_state(conn, DROPPED_KEY, int(_state(conn, DROPPED_KEY) or 0) + deleted)
    return deleted


def read_rows(conn: sqlite3.Connection, after: int, limit: int) -> list[OutboxRow]:
    rows = conn.execute(
        "SELECT seq, series_id, ts, value FROM outbox WHERE seq > ? AND series_id != ?"
        " ORDER BY seq LIMIT ?",
        (after, SENTINEL_SERIES, limit),
    ).fetchall()
    return rows  # (int, int, int, float) as stored: the columns are typed NOT NULL


def series_text(conn: sqlite3.Connection, ids: list[int]) -> dict[int, SeriesText]:
    out: dict[int, SeriesText] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ",".join("?" * len(part))
        for sid, sensor, metric, unit, tags in conn.execute(
            f"SELECT id, sensor_id, metric, unit, tags FROM series WHERE id IN ({marks})", part
        ):
            out[int(sid)] = (str(sensor), str(metric), str(unit or ""), str(tags or ""))
    return out


class SqliteOutbox:
    """:class:`gateway.storage.outbox.Outbox` over a store's file: reads on a read-only
    connection of its own, changes on the writer's (``writer()`` returns it, once the
    store is open)."""

    def __init__(self, path: Path, writer: Callable[[], aiosqlite.Connection]) -> None:
        self.path = Path(path)
        self._writer = writer
        self._reader: aiosqlite.Connection | None = None

    async def _write(self, fn: Callable[[sqlite3.Connection], T], what: str) -> T:
        try:
            return await run_on_connection(self._writer(), fn)
        except (sqlite3.Error, OSError) as exc:
            raise convert_sqlite_error(exc, what) from None

    async def _read_conn(self) -> aiosqlite.Connection:
        if self._reader is None:
            try:
                self._reader = await aiosqlite.connect(
                    f"file:{self.path.resolve()}?mode=ro", uri=True, isolation_level=None
                )
                await self._reader.execute("PRAGMA busy_timeout = 5000")
            except (sqlite3.Error, OSError) as exc:
                raise convert_sqlite_error(exc, f"opening {self.path} for the forwarder") from None
        return self._reader

    async def adopt(self, position: int, gateway_id: str) -> Adoption:
        return await self._write(lambda c: adopt(c, position, gateway_id), "outbox adopt")

    async def read(self, after: int, limit: int, known: AbstractSet[int]) -> Chunk:
        conn = await self._read_conn()

        def work(raw: sqlite3.Connection) -> Chunk:
            # One read transaction: the rows and their series from one state.
            raw.execute("BEGIN")
            try:
                rows = read_rows(raw, after, limit)
                missing = sorted({r[1] for r in rows} - set(known))
                series = series_text(raw, missing) if missing else {}
                left = pending(raw, rows[-1][0]) if rows else None
            finally:
                raw.execute("COMMIT")
            return Chunk(rows, series, left)

        try:
            return await run_on_connection(conn, work)
        except (sqlite3.Error, OSError) as exc:
            raise convert_sqlite_error(exc, "reading the outbox") from None

    async def confirm(self, position: int) -> None:
        await self._write(lambda c: confirm(c, position), "outbox confirm")

    async def pending(self, after: int | None = None) -> Pending:
        conn = await self._read_conn()
        try:
            return await run_on_connection(conn, lambda c: pending(c, after))
        except (sqlite3.Error, OSError) as exc:
            raise convert_sqlite_error(exc, "reading the outbox") from None

    async def close(self) -> None:
        conn, self._reader = self._reader, None
        if conn is not None:
            try:
                await conn.close()
            except (sqlite3.Error, OSError) as exc:
                raise StorageError(f"closing the outbox reader: {exc}") from None
