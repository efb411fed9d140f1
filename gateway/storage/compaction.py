"""Compaction: move readings from the hot table into the per-series table.

New readings are appended to ``readings_hot`` (keyed ``(ts, series_id)``), which keeps
each commit down to a few rewritten pages however many series it touches. Queries over
one series want ``(series_id, ts)`` order, so the storage service moves the hot rows
older than :data:`LAG_MS` into ``readings_cold`` in large chunks, sorted by series: one
chunk appends dozens of readings to each series' last page instead of one reading per
commit (``docs/decisions/0079-hot-table.md``).

A step is one transaction on the writer's connection: it moves every hot row below a
new boundary, deletes them from the hot table and raises ``cold_ceiling`` to that
boundary. Cold rows are therefore always older than the ceiling, which is what lets the
writer skip the cold table for newer readings and probe it only for older ones
(:meth:`gateway.sinks.sqlite.BatchWriter.insert`): no key is ever stored in both.
The rollups read only the cold table and stop at the oldest hot reading
(:mod:`gateway.storage.rollups`).

When a step moves rows:

* at least ``chunk_rows`` hot rows are older than the lag → move about that many (the
  oldest); big chunks mean few page rewrites per reading, the chunk size bounds the
  stall (≈ 40 ms for 50,000 rows on a small x86 core);
* or the oldest hot row is older than ``max_age_ms`` (slow trickles) → move everything
  older than the lag;
* ``force`` (tools, tests, shutdown) → move everything.

"Older than the lag" is measured against the wall clock: readings stamped in the future
stay hot until their time has come, and the last readings of a fleet that went quiet are
moved once they are ``max_age_ms`` old (so they reach the rollups and, eventually,
retention).
"""

from __future__ import annotations

import sqlite3

from gateway.sinks.sqlite import CEILING_KEY, COLD, HOT, cold_ceiling

LAG_MS = 30_000
"""Readings younger than this stay hot: stragglers and redeliveries of the last half
minute land in the cheap table, and the 1-minute rollups (whose grace is the same)
never wait for a move."""
CHUNK_ROWS = 50_000
MAX_AGE_MS = 120_000


def compact_step(
    conn: sqlite3.Connection,
    now_ms: int,
    chunk_rows: int = CHUNK_ROWS,
    *,
    lag_ms: int = LAG_MS,
    max_age_ms: int = MAX_AGE_MS,
    force: bool = False,
) -> int:
    """One move (see the module docstring) in its own transaction; returns rows moved
    (``0``: nothing was due)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        moved = _move(conn, now_ms, chunk_rows, lag_ms, max_age_ms, force)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return moved


def _move(
    conn: sqlite3.Connection,
    now_ms: int,
    chunk_rows: int,
    lag_ms: int,
    max_age_ms: int,
    force: bool,
) -> int:
    # Both ends of the (ts, series_id) key: two index seeks.
    oldest = conn.execute(f"SELECT ts FROM {HOT} ORDER BY ts LIMIT 1").fetchone()
    if oldest is None:
        return 0
    oldest_ts = int(oldest[0])
    newest = int(conn.execute(f"SELECT ts FROM {HOT} ORDER BY ts DESC LIMIT 1").fetchone()[0])
    target = newest + 1 if force else now_ms - lag_ms
    if target <= oldest_ts:
        return 0
    upto: int | None = None
    if not force:
        nth = conn.execute(
            f"SELECT ts FROM {HOT} ORDER BY ts LIMIT 1 OFFSET ?", (max(chunk_rows, 1) - 1,)
        ).fetchone()
        if nth is not None and nth[0] < target:
            # A chunk's worth is due; readings sharing the boundary's timestamp wait
            # for the next step (but a chunk always moves at least one timestamp).
            upto = max(int(nth[0]), oldest_ts + 1)
        elif oldest_ts < now_ms - max_age_ms:
            upto = target
        else:
            return 0
    else:
        upto = target
    return move_below(conn, upto)


def move_below(conn: sqlite3.Connection, upto: int) -> int:
    """Inside the caller's transaction: move every hot row with ``ts < upto`` and raise
    the ceiling to at least ``upto``. Returns rows moved."""
    conn.execute(
        f"INSERT OR IGNORE INTO {COLD} (series_id, ts, value)"
        f" SELECT series_id, ts, value FROM {HOT} WHERE ts < ? ORDER BY series_id, ts",
        (upto,),
    )
    moved = int(conn.execute(f"DELETE FROM {HOT} WHERE ts < ?", (upto,)).rowcount)
    if upto > cold_ceiling(conn):
        conn.execute(
            "INSERT OR REPLACE INTO storage_state (key, value) VALUES (?, ?)", (CEILING_KEY, upto)
        )
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
