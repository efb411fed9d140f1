"""1-minute and 1-hour rollups, computed in the background from a watermark.

Why in the background and not in each batch's transaction: measured in
``docs/decisions/0071-background-rollups.md`` — maintaining rollups inside the batch
costs 25–50 % of ingest throughput, a background pass costs the hot path one
comparison per reading.

How it stays exact:

* Each tier has a **watermark** (``storage_state``): every bucket that ends at or below
  it is rolled up. :meth:`RollupJob.step` advances the 1-minute watermark to
  ``now - grace`` and the 1-hour watermark to the last whole hour below the 1-minute
  one, one series at a time, recomputing buckets from their source (raw readings, or
  1-minute rows for hours) with ``INSERT OR REPLACE`` — idempotent, so a step cut short
  by a crash is simply redone.
* **Late data**: :class:`LateDataTracker` is installed as
  :attr:`gateway.storage.sqlite.writer.BatchWriter.after_insert`; inside the batch's own
  transaction it records the 1-minute bucket of every reading older than the
  watermark in ``rollup_dirty`` (a few rows, only when data is late). The job
  recomputes those buckets from raw readings, and the hours holding them from minutes,
  so a late reading changes min/max/sum/count, and ``last`` only if it is newer.
  A redelivered duplicate also marks its bucket; recomputing is idempotent.
* Raw readings are purged only below the 1-minute watermark and minutes only below the
  hour watermark (:mod:`gateway.storage.sqlite.retention`), so nothing is purged before it is
  rolled up. A late reading for a bucket whose raw data is already purged (older than
  ``storage.retention.raw``) cannot be merged exactly and is left out of the rollups
  (counted as ``rollup_too_late``); the raw purge removes it later.

All functions take the writer's plain ``sqlite3.Connection`` in autocommit mode and
run on its thread (see :func:`gateway.storage.sqlite._aiosqlite_adapter.run_on_connection`).
"""

from __future__ import annotations

import logging
import operator
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.storage.sqlite.compaction import compact_below
from gateway.storage.sqlite.schema import COLD, HOT

log = logging.getLogger(__name__)

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
GRACE_MS = 30_000
"""Readings this recent are not rolled up yet: most stragglers arrive within it, so the
late-data path stays rare."""
MAX_WINDOW_MS = HOUR_MS
"""A catch-up (e.g. after upgrading a version-1 database) advances at most this much per
pass, which bounds one series' statement."""
_SERIES_PAGE = 64
_TS = operator.itemgetter(1)


@dataclass(frozen=True, slots=True)
class Tier:
    """One rollup tier: bucket size and table."""

    name: str
    size_ms: int
    table: str


TIER_1M = Tier("1m", MINUTE_MS, "rollup_1m")
TIER_1H = Tier("1h", HOUR_MS, "rollup_1h")
TIERS: tuple[Tier, ...] = (TIER_1H, TIER_1M)
"""Coarsest first."""

WATERMARK = {TIER_1M.name: "rollup_1m.watermark", TIER_1H.name: "rollup_1h.watermark"}
PURGED_BEFORE = {
    "raw": "raw.purged_before",
    TIER_1M.name: "rollup_1m.purged_before",
    TIER_1H.name: "rollup_1h.purged_before",
}


def floor_to(ts_ms: int, size_ms: int) -> int:
    """Start of the bucket of size ``size_ms`` holding ``ts_ms`` (epoch aligned)."""
    return ts_ms - ts_ms % size_ms


def hot_floor(conn: sqlite3.Connection) -> int:
    """The oldest hot reading's timestamp (a huge number when the hot table is empty):
    every reading older than it is in the per-series table."""
    row = conn.execute(f"SELECT ts FROM {HOT} ORDER BY ts LIMIT 1").fetchone()
    return int(row[0]) if row is not None else 2**62


def get_state(conn: sqlite3.Connection, key: str) -> int | None:
    """An integer from ``storage_state`` (``None`` when unset or the table is missing)."""
    try:
        row = conn.execute("SELECT value FROM storage_state WHERE key = ?", (key,)).fetchone()
    except sqlite3.OperationalError:
        return None  # a version-1 database opened read-only: no rollups yet
    return None if row is None or row[0] is None else int(row[0])


def set_state(conn: sqlite3.Connection, key: str, value: int | str) -> None:
    conn.execute("INSERT OR REPLACE INTO storage_state (key, value) VALUES (?, ?)", (key, value))


def oldest_ts(conn: sqlite3.Connection, table: str = COLD, column: str = "ts") -> int | None:
    """Oldest key in ``table`` by one index seek per series (never a scan); for the raw
    readings (``readings_cold``) the hot table's oldest too."""
    row = conn.execute(
        f"SELECT min((SELECT {column} FROM {table} WHERE series_id = s.id"
        f" ORDER BY {column} LIMIT 1)) FROM series AS s"
    ).fetchone()
    found = None if row is None or row[0] is None else int(row[0])
    if table == COLD:
        hot = conn.execute(f"SELECT ts FROM {HOT} ORDER BY ts LIMIT 1").fetchone()
        if hot is not None and (found is None or hot[0] < found):
            found = int(hot[0])
    return found


_MINUTES_FROM_RAW = """
INSERT OR REPLACE INTO rollup_1m (series_id, bucket, vmin, vmax, vsum, n, vlast, last_ts)
SELECT :sid, g.b, g.vmin, g.vmax, g.vsum, g.n, r.value, g.last_ts
FROM (
    SELECT (ts / 60000) * 60000 AS b, min(value) AS vmin, max(value) AS vmax,
           sum(value) AS vsum, count(*) AS n, max(ts) AS last_ts
    FROM readings_cold WHERE series_id = :sid AND ts >= :lo AND ts < :hi GROUP BY b
) AS g
JOIN readings_cold AS r ON r.series_id = :sid AND r.ts = g.last_ts
"""

_HOURS_FROM_MINUTES = """
INSERT OR REPLACE INTO rollup_1h (series_id, bucket, vmin, vmax, vsum, n, vlast, last_ts)
SELECT :sid, g.b, g.vmin, g.vmax, g.vsum, g.n, m.vlast, g.last_ts
FROM (
    SELECT (bucket / 3600000) * 3600000 AS b, min(vmin) AS vmin, max(vmax) AS vmax,
           sum(vsum) AS vsum, sum(n) AS n, max(last_ts) AS last_ts
    FROM rollup_1m WHERE series_id = :sid AND bucket >= :lo AND bucket < :hi GROUP BY b
) AS g
JOIN rollup_1m AS m ON m.series_id = :sid AND m.bucket = (g.last_ts / 60000) * 60000
"""


def recompute_minutes(conn: sqlite3.Connection, series_id: int, lo: int, hi: int) -> None:
    """Make ``rollup_1m`` equal raw readings for buckets in ``[lo, hi)`` (minute aligned)."""
    params = {"sid": series_id, "lo": lo, "hi": hi}
    conn.execute(
        "DELETE FROM rollup_1m WHERE series_id = :sid AND bucket >= :lo AND bucket < :hi", params
    )
    conn.execute(_MINUTES_FROM_RAW, params)


def recompute_hours(conn: sqlite3.Connection, series_id: int, lo: int, hi: int) -> None:
    """Make ``rollup_1h`` equal the 1-minute rows for hours in ``[lo, hi)`` (hour aligned)."""
    params = {"sid": series_id, "lo": lo, "hi": hi}
    conn.execute(
        "DELETE FROM rollup_1h WHERE series_id = :sid AND bucket >= :lo AND bucket < :hi", params
    )
    conn.execute(_HOURS_FROM_MINUTES, params)


class LateDataTracker:
    """Marks 1-minute buckets that receive readings below the rollup threshold.

    Installed as ``BatchWriter.after_insert``: called inside each batch's transaction
    with the batch's ``(series_id, ts, value)`` rows, so a dirty mark commits or
    rolls back with the readings it describes. Cost on the hot path: a ``min`` over the
    batch's timestamps (~50–65 ns per reading), plus an insert per late bucket.
    """

    def __init__(self) -> None:
        self.threshold_ms: int | None = None
        """Readings below this are late. ``None``: load the watermark on first use."""
        self.marked = 0

    def __call__(self, conn: sqlite3.Connection, rows: Sequence[tuple[int, int, float]]) -> None:
        threshold = self.threshold_ms
        if threshold is None:
            threshold = self.threshold_ms = get_state(conn, WATERMARK[TIER_1M.name]) or 0
        if not rows or not threshold or min(map(_TS, rows)) >= threshold:
            return  # the usual case, decided in C without a Python loop over the rows
        late = {(sid, ts - ts % MINUTE_MS) for sid, ts, _value in rows if ts < threshold}
        if late:
            conn.executemany(
                "INSERT OR IGNORE INTO rollup_dirty (series_id, bucket) VALUES (?, ?)", late
            )
            self.marked += len(late)


@dataclass(slots=True)
class _Window:
    start: int
    end: int
    cursor: int = 0  # last series id done


@dataclass(slots=True)
class StepResult:
    """What one :meth:`RollupJob.step` did."""

    buckets_written: int = 0
    dirty_done: int = 0
    too_late: int = 0
    caught_up: bool = False


class RollupJob:
    """Advances both tiers in time-budgeted steps. One instance per writer connection."""

    def __init__(self, tracker: LateDataTracker, grace_ms: int = GRACE_MS) -> None:
        self.tracker = tracker
        self.grace_ms = grace_ms
        self._minutes: _Window | None = None
        self._hours: _Window | None = None
        self.too_late = 0

    def step(self, conn: sqlite3.Connection, now_ms: int, budget_s: float) -> StepResult:
        """Do up to ``budget_s`` of work (plus at most one statement) in one transaction."""
        deadline = time.perf_counter() + budget_s
        result = StepResult()
        conn.execute("BEGIN IMMEDIATE")
        try:
            caught_up = self._dirty(conn, deadline, result)
            if caught_up:
                caught_up = self._advance_minutes(conn, now_ms, deadline, result)
            if caught_up:
                caught_up = self._advance_hours(conn, deadline, result)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # The in-memory windows may point past what was committed: redo from the
            # persisted watermarks (idempotent).
            self._minutes = self._hours = None
            self.tracker.threshold_ms = None
            raise
        result.caught_up = caught_up
        return result

    # -- late data -------------------------------------------------------------

    def _hour_threshold(self, conn: sqlite3.Connection) -> int:
        if self._hours is not None:
            return self._hours.end
        return get_state(conn, WATERMARK[TIER_1H.name]) or 0

    def _dirty(self, conn: sqlite3.Connection, deadline: float, result: StepResult) -> bool:
        raw_floor = get_state(conn, PURGED_BEFORE["raw"]) or 0
        minute_floor = get_state(conn, PURGED_BEFORE[TIER_1M.name]) or 0
        hour_threshold = self._hour_threshold(conn)
        hours: set[tuple[int, int]] = set()
        try:
            while True:
                # A dirty minute whose late reading is still hot waits until it is cold.
                rows = conn.execute(
                    "SELECT series_id, bucket FROM rollup_dirty WHERE bucket <= ?"
                    " ORDER BY series_id, bucket LIMIT 256",
                    (hot_floor(conn) - MINUTE_MS,),
                ).fetchall()
                if not rows:
                    return True
                for series_id, bucket in rows:
                    if bucket < raw_floor:
                        # Its bucket's raw readings are gone: no exact merge is possible.
                        result.too_late += 1
                        self.too_late += 1
                    else:
                        recompute_minutes(conn, series_id, bucket, bucket + MINUTE_MS)
                        result.buckets_written += 1
                        hour = floor_to(bucket, HOUR_MS)
                        if minute_floor <= hour < hour_threshold:
                            hours.add((series_id, hour))
                    conn.execute(
                        "DELETE FROM rollup_dirty WHERE series_id = ? AND bucket = ?",
                        (series_id, bucket),
                    )
                    result.dirty_done += 1
                    if time.perf_counter() >= deadline:
                        return False
        finally:
            # After all of this step's minutes: an hour is rebuilt from its final minutes.
            for series_id, hour in sorted(hours):
                recompute_hours(conn, series_id, hour, hour + HOUR_MS)

    # -- watermarks ------------------------------------------------------------

    def _start_minutes(self, conn: sqlite3.Connection, now_ms: int) -> _Window | None:
        key = WATERMARK[TIER_1M.name]
        # Rollups read only the per-series table: never past the oldest hot reading
        # (gateway.storage.sqlite.compaction); everything below it is cold.
        target = floor_to(min(now_ms - self.grace_ms, hot_floor(conn)), MINUTE_MS)
        watermark = get_state(conn, key)
        if watermark is None:
            oldest = oldest_ts(conn)
            # Start on a whole hour so the hour tier starts on complete hours.
            watermark = target if oldest is None else min(target, floor_to(oldest, HOUR_MS))
            set_state(conn, key, watermark)
            if get_state(conn, WATERMARK[TIER_1H.name]) is None:
                set_state(conn, WATERMARK[TIER_1H.name], floor_to(watermark, HOUR_MS))
            self.tracker.threshold_ms = watermark
        if target <= watermark:
            return None
        window = _Window(watermark, min(target, watermark + MAX_WINDOW_MS))
        # From now on readings below the window's end count as late, including those
        # for series this window has already passed.
        self.tracker.threshold_ms = window.end
        return window

    def _advance_minutes(
        self, conn: sqlite3.Connection, now_ms: int, deadline: float, result: StepResult
    ) -> bool:
        while True:
            if self._minutes is None:
                self._minutes = self._start_minutes(conn, now_ms)
                if self._minutes is None:
                    return True
            window = self._minutes
            if not self._walk_series(conn, window, recompute_minutes, deadline, result):
                return False
            set_state(conn, WATERMARK[TIER_1M.name], window.end)
            self._minutes = None
            if time.perf_counter() >= deadline:
                return False

    def _start_hours(self, conn: sqlite3.Connection) -> _Window | None:
        minutes = get_state(conn, WATERMARK[TIER_1M.name])
        if minutes is None:
            return None
        target = floor_to(minutes, HOUR_MS)
        watermark = get_state(conn, WATERMARK[TIER_1H.name])
        if watermark is None:
            watermark = target
            set_state(conn, WATERMARK[TIER_1H.name], watermark)
        if target <= watermark:
            return None
        return _Window(watermark, min(target, watermark + MAX_WINDOW_MS * 24))

    def _advance_hours(self, conn: sqlite3.Connection, deadline: float, result: StepResult) -> bool:
        while True:
            if self._hours is None:
                self._hours = self._start_hours(conn)
                if self._hours is None:
                    return True
            window = self._hours
            if not self._walk_series(conn, window, recompute_hours, deadline, result):
                return False
            set_state(conn, WATERMARK[TIER_1H.name], window.end)
            self._hours = None
            if time.perf_counter() >= deadline:
                return False

    @staticmethod
    def _walk_series(
        conn: sqlite3.Connection,
        window: _Window,
        recompute: Callable[[sqlite3.Connection, int, int, int], None],
        deadline: float,
        result: StepResult,
    ) -> bool:
        """Recompute ``window`` for every series after ``window.cursor``; False when the
        budget ran out first (the cursor remembers where to continue)."""
        while True:
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM series WHERE id > ? ORDER BY id LIMIT ?",
                    (window.cursor, _SERIES_PAGE),
                )
            ]
            if not ids:
                return True
            for series_id in ids:
                recompute(conn, series_id, window.start, window.end)
                result.buckets_written += 1
                window.cursor = series_id
                if time.perf_counter() >= deadline:
                    return False


def rollup_all(
    conn: sqlite3.Connection, now_ms: int, tracker: LateDataTracker | None = None
) -> None:
    """Run the job until caught up (tests, ``tidegate`` tools; never on the hot path).
    First moves the hot readings old enough to be rolled up into the per-series table."""
    compact_below(conn, floor_to(now_ms - GRACE_MS, MINUTE_MS))
    job = RollupJob(tracker or LateDataTracker())
    for _ in range(10_000_000):
        if job.step(conn, now_ms, 1.0).caught_up:
            return
