"""Compaction: move readings from the hot table into the per-series table.

New readings are appended to ``readings_hot`` (keyed ``(ts, series_id)``), which keeps
each commit down to a few rewritten pages however many series it touches. Queries over
one series want ``(series_id, ts)`` order, so the storage service moves the hot rows
older than :data:`LAG_MS` into ``readings_cold`` in large chunks, sorted by series: one
chunk appends dozens of readings to each series' last page instead of one reading per
commit (``docs/decisions/0079-hot-table.md``).

A **round** moves every hot row older than a boundary ``upto``. It starts when:

* at least ``chunk_rows`` hot rows are older than the lag → ``upto`` is the timestamp of
  about the ``chunk_rows``-th oldest (big chunks: few page rewrites per reading);
* or the oldest hot row is older than ``max_age_ms`` (slow trickles) → ``upto`` is
  "now minus the lag";
* ``force`` (tools, tests) → everything.

A round is cut into **steps** by series-id range, each one short transaction on the
writer's connection (≈ :data:`STEP_ROWS` rows: a few ms), so ingestion batches run
between them instead of waiting for a whole chunk (a 50,000-row move over 1,000 series
held the writer 50–100 ms, which was the p99 latency at high rates). The first step
raises ``cold_ceiling`` to ``upto``. Invariants, at every commit:

* every cold row is older than the ceiling;
* no key is in both tables (a step moves rows and deletes them in one transaction; the
  writer inserts a reading older than the ceiling only if the cold table lacks its key).

Hot rows older than the ceiling are normal while a round is under way (series not
reached yet) and after late arrivals; the next round takes them. The rollups read only
the cold table and stop at the oldest hot reading (:mod:`gateway.storage.sqlite.rollups`), so
they wait for a round to finish.

"Older than the lag" is measured against the wall clock: readings stamped in the future
stay hot until their time has come, and the last readings of a fleet that went quiet are
moved once they are ``max_age_ms`` old (so they reach the rollups and, eventually,
retention).
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass

from gateway.storage.sqlite.schema import CEILING_KEY, COLD, HOT, cold_ceiling

LAG_MS = 30_000
"""Readings younger than this stay hot: stragglers and redeliveries of the last half
minute land in the cheap table, and the 1-minute rollups (whose grace is the same)
never wait for a move."""
CHUNK_ROWS = 50_000
MAX_AGE_MS = 120_000
STEP_ROWS = 5_000
"""Rows per step (by series range, so an estimate)."""


@dataclass(slots=True)
class _Round:
    upto: int
    next_series: int
    """Series ids from here on are still to move."""
    width: int
    """Series ids per step."""
    last_series: int


class Compactor:
    """Plans rounds and runs them one step at a time. One instance per writer
    connection (the round in progress lives here; after a restart the rows it had not
    reached are simply part of the next round)."""

    def __init__(
        self,
        chunk_rows: int = CHUNK_ROWS,
        *,
        lag_ms: int = LAG_MS,
        max_age_ms: int = MAX_AGE_MS,
        step_rows: int = STEP_ROWS,
    ) -> None:
        self.chunk_rows = max(1, chunk_rows)
        self.lag_ms = lag_ms
        self.max_age_ms = max_age_ms
        self.step_rows = max(1, step_rows)
        self._round: _Round | None = None

    @property
    def in_round(self) -> bool:
        return self._round is not None

    def step(self, conn: sqlite3.Connection, now_ms: int, force: bool = False) -> int:
        """One step in its own transaction (starting a round if one is due); returns
        rows moved. ``0`` with :attr:`in_round` false: nothing is due."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self._round is None:
                self._round = self._plan(conn, now_ms, force)
            moved = self._advance(conn) if self._round is not None else 0
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._round = None  # replanned from the database next time
            raise
        return moved

    def _plan(self, conn: sqlite3.Connection, now_ms: int, force: bool) -> _Round | None:
        # Both ends of the (ts, series_id) key: two index seeks.
        oldest = conn.execute(f"SELECT ts FROM {HOT} ORDER BY ts LIMIT 1").fetchone()
        if oldest is None:
            return None
        oldest_ts = int(oldest[0])
        newest = int(conn.execute(f"SELECT ts FROM {HOT} ORDER BY ts DESC LIMIT 1").fetchone()[0])
        target = newest + 1 if force else now_ms - self.lag_ms
        if target <= oldest_ts:
            return None
        rows = self.chunk_rows
        nth = conn.execute(
            f"SELECT ts FROM {HOT} ORDER BY ts LIMIT 1 OFFSET ?", (self.chunk_rows - 1,)
        ).fetchone()
        if nth is not None and nth[0] < target:
            # A chunk's worth is due; readings sharing the boundary's timestamp wait
            # for the next round (but a round always moves at least one timestamp).
            upto = max(int(nth[0]), oldest_ts + 1)
        elif force or oldest_ts < now_ms - self.max_age_ms:
            upto = target
            rows = int(
                conn.execute(f"SELECT count(*) FROM {HOT} WHERE ts < ?", (upto,)).fetchone()[0]
            )
        else:
            return None
        first, last = conn.execute("SELECT min(id), max(id) FROM series").fetchone()
        if first is None:
            return None
        span = int(last) - int(first) + 1
        steps = max(1, math.ceil(rows / self.step_rows))
        _raise_ceiling(conn, upto)
        return _Round(upto, int(first), max(1, math.ceil(span / steps)), int(last))

    def _advance(self, conn: sqlite3.Connection) -> int:
        current = self._round
        assert current is not None
        low, high = current.next_series, current.next_series + current.width
        moved = _move_rows(
            conn, "ts < ? AND series_id >= ? AND series_id < ?", (current.upto, low, high)
        )
        current.next_series = high
        if high > current.last_series:
            self._round = None
        return moved


def move_below(conn: sqlite3.Connection, upto: int) -> int:
    """Inside the caller's transaction: move every hot row with ``ts < upto`` and raise
    the ceiling to at least ``upto``. Returns rows moved."""
    moved = _move_rows(conn, "ts < ?", (upto,))
    _raise_ceiling(conn, upto)
    return moved


def _move_rows(conn: sqlite3.Connection, where: str, params: tuple[int, ...]) -> int:
    """Copy the hot rows matching ``where`` into the cold table, sorted by series, and
    delete them from the hot table (same transaction). Returns rows moved."""
    conn.execute(
        f"INSERT OR IGNORE INTO {COLD} (series_id, ts, value)"
        f" SELECT series_id, ts, value FROM {HOT} WHERE {where} ORDER BY series_id, ts",
        params,
    )
    return int(conn.execute(f"DELETE FROM {HOT} WHERE {where}", params).rowcount)


def _raise_ceiling(conn: sqlite3.Connection, upto: int) -> None:
    if upto > cold_ceiling(conn):
        conn.execute(
            "INSERT OR REPLACE INTO storage_state (key, value) VALUES (?, ?)", (CEILING_KEY, upto)
        )


def compact_step(
    conn: sqlite3.Connection,
    now_ms: int,
    chunk_rows: int = CHUNK_ROWS,
    *,
    lag_ms: int = LAG_MS,
    max_age_ms: int = MAX_AGE_MS,
    force: bool = False,
) -> int:
    """One whole round (if one is due), step by step; returns rows moved (tools, tests
    and measurements; the storage service drives a :class:`Compactor` itself)."""
    compactor = Compactor(chunk_rows, lag_ms=lag_ms, max_age_ms=max_age_ms)
    moved = compactor.step(conn, now_ms, force)
    while compactor.in_round:
        moved += compactor.step(conn, now_ms, force)
    return moved


def compact_below(conn: sqlite3.Connection, upto: int) -> int:
    """Move every hot row older than ``upto`` in one transaction (tools and tests)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        moved = move_below(conn, upto)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return moved


def compact_all(conn: sqlite3.Connection, now_ms: int) -> int:
    """Move every hot row (tools and tests; never on the hot path)."""
    return compact_step(conn, now_ms, force=True)
