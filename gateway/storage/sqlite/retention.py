"""Purging expired rows in small chunks, and giving the space back (incremental vacuum).

Every table here is keyed ``(series_id, <time>)``, so "older than X" is one contiguous
key range per series: :class:`Purger` deletes it series by series, at most
``chunk_rows`` rows per statement, inside a step bounded by a time budget. A step is
one short transaction on the writer's connection, run between two batches, so the
longest ingestion stall is one step (measured: ``docs/storage.md``).

Cutoffs never pass the rollup watermarks: raw readings are deleted only once their
minutes are rolled up, minutes only once their hours are (see
:func:`retention_cutoffs`), and cutoffs fall on whole minutes (raw) or hours (1-minute
rows) so the rollup job knows which buckets are still complete (``*.purged_before``).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from gateway.storage.sqlite.rollups import (
    HOUR_MS,
    MINUTE_MS,
    PURGED_BEFORE,
    TIER_1H,
    TIER_1M,
    WATERMARK,
    floor_to,
    get_state,
    set_state,
)
from gateway.storage.sqlite.schema import COLD

TABLES: dict[str, tuple[str, str]] = {
    "raw": (COLD, "ts"),  # raw cutoffs stay below the ceiling: all of it is cold
    TIER_1M.name: (TIER_1M.table, "bucket"),
    TIER_1H.name: (TIER_1H.table, "bucket"),
}
"""tier → (table, time column)."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each tier is kept, in ms (``None``: forever)."""

    raw_ms: int | None
    rollup_1m_ms: int | None
    rollup_1h_ms: int | None


def retention_cutoffs(conn: sqlite3.Connection, now_ms: int, keep: Retention) -> dict[str, int]:
    """tier → purge everything below this key. A tier kept forever has no entry."""
    out: dict[str, int] = {}
    minutes_mark = get_state(conn, WATERMARK[TIER_1M.name]) or 0
    hours_mark = get_state(conn, WATERMARK[TIER_1H.name]) or 0
    if keep.raw_ms is not None:
        out["raw"] = floor_to(min(now_ms - keep.raw_ms, minutes_mark), MINUTE_MS)
    if keep.rollup_1m_ms is not None:
        out[TIER_1M.name] = floor_to(min(now_ms - keep.rollup_1m_ms, hours_mark), HOUR_MS)
    if keep.rollup_1h_ms is not None:
        out[TIER_1H.name] = floor_to(now_ms - keep.rollup_1h_ms, HOUR_MS)
    return {tier: cutoff for tier, cutoff in out.items() if cutoff > 0}


class Purger:
    """Deletes rows below a cutoff from one tier's table, series by series, in chunks.

    :meth:`start` a pass with a cutoff, then call :meth:`step` until it reports done.
    The pass survives between steps (cursor = last series finished), so batches run
    between any two steps.
    """

    def __init__(self, tier: str, chunk_rows: int = 1000) -> None:
        self.tier = tier
        self.table, self.column = TABLES[tier]
        self.chunk_rows = chunk_rows
        self.cutoff: int | None = None
        self._cursor = 0
        self.deleted = 0

    @property
    def active(self) -> bool:
        return self.cutoff is not None

    def start(self, conn: sqlite3.Connection, cutoff: int) -> None:
        """Begin a pass (or move the running pass's cutoff up). Records the new floor
        first, so the rollup job never rebuilds a bucket this pass is emptying."""
        key = PURGED_BEFORE[self.tier]
        if cutoff > (get_state(conn, key) or 0):
            set_state(conn, key, cutoff)
        if self.cutoff is None:
            self._cursor = 0
        self.cutoff = cutoff if self.cutoff is None else max(self.cutoff, cutoff)

    def step(self, conn: sqlite3.Connection, budget_s: float) -> int:
        """Delete for up to ``budget_s`` (plus one chunk) in one transaction; returns
        the rows deleted. The pass ends (``active`` false) when every series is done."""
        cutoff = self.cutoff
        if cutoff is None:
            return 0
        deadline = time.perf_counter() + budget_s
        table, column = self.table, self.column
        first_old = (
            f"SELECT {column} FROM {table} WHERE series_id = ? AND {column} < ?"
            f" ORDER BY {column} LIMIT 1 OFFSET ?"
        )
        delete = f"DELETE FROM {table} WHERE series_id = ? AND {column} < ?"
        deleted = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            while True:
                ids = [
                    row[0]
                    for row in conn.execute(
                        "SELECT id FROM series WHERE id > ? ORDER BY id LIMIT 64", (self._cursor,)
                    )
                ]
                if not ids:
                    self.cutoff = None
                    break
                out_of_time = False
                for series_id in ids:
                    while True:
                        # The chunk's end: the key chunk_rows rows in, or the cutoff.
                        row = conn.execute(
                            first_old, (series_id, cutoff, self.chunk_rows)
                        ).fetchone()
                        end = cutoff if row is None else int(row[0])
                        deleted += conn.execute(delete, (series_id, end)).rowcount
                        if end == cutoff:
                            break
                        if time.perf_counter() >= deadline:
                            out_of_time = True
                            break
                    if out_of_time:
                        break
                    self._cursor = series_id
                    if time.perf_counter() >= deadline:
                        out_of_time = True
                        break
                if out_of_time:
                    break
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.deleted += deleted
        return deleted


@dataclass(frozen=True, slots=True)
class PageStats:
    """Page accounting of the main database file."""

    page_size: int
    page_count: int
    freelist_count: int
    auto_vacuum: int  # 0 none, 1 full, 2 incremental

    @property
    def used_bytes(self) -> int:
        return (self.page_count - self.freelist_count) * self.page_size

    @property
    def free_bytes(self) -> int:
        return self.freelist_count * self.page_size


def page_stats(conn: sqlite3.Connection) -> PageStats:
    def pragma(name: str) -> int:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])

    return PageStats(
        pragma("page_size"), pragma("page_count"), pragma("freelist_count"), pragma("auto_vacuum")
    )


def incremental_vacuum(conn: sqlite3.Connection, max_pages: int, budget_s: float = 0.005) -> int:
    """Return up to ``max_pages`` free pages to the file system, for about ``budget_s``,
    in one transaction; returns how many.

    Does nothing unless the database uses ``auto_vacuum = INCREMENTAL`` (see
    :func:`gateway.storage.sqlite.integrity.ensure_incremental_vacuum` for old databases).
    """
    before = page_stats(conn)
    if before.auto_vacuum != 2 or before.freelist_count == 0:
        return 0
    deadline = time.perf_counter() + budget_s
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Python's sqlite3 steps this pragma once per execute, and SQLite frees one
        # page per step: so one page per call (~35 µs each, measured).
        for _ in range(min(max_pages, before.freelist_count)):
            conn.execute("PRAGMA incremental_vacuum(1)")
            if time.perf_counter() >= deadline:
                break
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return before.freelist_count - page_stats(conn).freelist_count
