"""The size cap and free-disk guard.

Measured every maintenance interval:

* **database size** = used pages + WAL (free pages inside the file do not count: they
  are reused, or returned by incremental vacuum), against ``storage.max_size``;
* **free disk** on the database's file system, against ``storage.min_free_disk``.

Under pressure, ``storage.full_policy`` decides:

* ``purge_oldest`` (default): give free pages back, then delete the oldest raw
  readings (then the oldest 1-minute rollups) in small steps until the database is
  back under 95 % of the cap and free disk 5 % above its floor. Nothing not yet rolled
  up is purged; when there is nothing left that may go, the guard falls back to
  ``stop`` and says so.
* ``stop``: hold writes. :meth:`Guard.admission` (installed as
  ``SqliteSink.admission``) raises :class:`~gateway.errors.StorageFull`, so the
  pipeline keeps the batch, acknowledges nothing, backs off and reports not-ready;
  the queue fills and the MQTT source stops reading — the broker keeps the messages.
  Writes resume by themselves once the pressure is gone (retention purged, the cap
  was raised, space was freed).

The 5 % gap between "pressure" and "relieved" keeps the guard from flapping.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import StorageFull
from gateway.parsing import format_size
from gateway.storage.sqlite.retention import PageStats, page_stats
from gateway.storage.sqlite.rollups import (
    HOUR_MS,
    MINUTE_MS,
    TIER_1H,
    TIER_1M,
    WATERMARK,
    floor_to,
    get_state,
    oldest_ts,
)
from gateway.storage.sqlite.schema import COLD

log = logging.getLogger(__name__)

RELIEF = 0.05
"""Purge down to 95 % of the cap / 105 % of the free-disk floor before resuming."""


@dataclass(frozen=True, slots=True)
class Usage:
    """One measurement."""

    pages: PageStats
    wal_bytes: int
    disk_free: int

    @property
    def database_bytes(self) -> int:
        return self.pages.used_bytes + self.wal_bytes

    @property
    def file_bytes(self) -> int:
        return self.pages.page_count * self.pages.page_size


def wal_size(path: Path) -> int:
    try:
        return os.stat(f"{path}-wal").st_size
    except OSError:
        return 0


def disk_free(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (for unprivileged users)."""
    try:
        return shutil.disk_usage(Path(path).resolve().parent).free
    except OSError:
        return -1


class Guard:
    """Size cap and free-disk policy. Thread-safe enough: ``paused_reason`` is one
    attribute read by :meth:`admission` on the event loop and set by maintenance."""

    def __init__(self, path: Path, max_size: int, min_free_disk: int, policy: str) -> None:
        self.path = Path(path)
        self.max_size = max_size
        self.min_free_disk = min_free_disk
        self.policy = policy
        self.paused_reason: str | None = None

    @property
    def enabled(self) -> bool:
        return self.max_size > 0 or self.min_free_disk > 0

    def measure(self, conn: sqlite3.Connection) -> Usage:
        return Usage(page_stats(conn), wal_size(self.path), disk_free(self.path))

    def pressure(self, usage: Usage, relief: float = 0.0) -> str | None:
        """Why the database must shrink or stop growing, or ``None``. With ``relief``
        the thresholds tighten by that fraction (used to decide when it is over)."""
        reasons = []
        if self.max_size > 0 and usage.database_bytes > self.max_size * (1 - relief):
            reasons.append(
                f"database {format_size(usage.database_bytes)} over storage.max_size"
                f" {format_size(self.max_size)}"
            )
        if (
            self.min_free_disk > 0
            and usage.disk_free >= 0
            and usage.disk_free < self.min_free_disk * (1 + relief)
        ):
            reasons.append(
                f"free disk {format_size(usage.disk_free)} below storage.min_free_disk"
                f" {format_size(self.min_free_disk)}"
            )
        return "; ".join(reasons) or None

    def admission(self) -> None:
        """Raise :class:`StorageFull` while writes are held (``SqliteSink.admission``)."""
        reason = self.paused_reason
        if reason is not None:
            raise StorageFull(f"ingestion paused: {reason}")

    def pause(self, reason: str) -> None:
        if self.paused_reason is None:
            log.error("storage guard: pausing ingestion (nothing is acked or lost): %s", reason)
        self.paused_reason = reason

    def resume(self) -> None:
        if self.paused_reason is not None:
            log.warning("storage guard: pressure gone, ingestion resumes")
        self.paused_reason = None


def emergency_cutoff(conn: sqlite3.Connection, tier: str) -> int | None:
    """Where to cut the oldest slice of ``tier`` (``raw`` or ``1m``) to make room:
    an eighth of what may be purged (at least a minute / an hour), never past the
    tier's rollup watermark. ``None`` when nothing may be purged."""
    if tier == "raw":
        table, column, unit, mark_key = COLD, "ts", MINUTE_MS, WATERMARK[TIER_1M.name]
    elif tier == TIER_1M.name:
        table, column, unit, mark_key = TIER_1M.table, "bucket", HOUR_MS, WATERMARK[TIER_1H.name]
    else:
        raise ValueError(f"the guard never purges tier {tier!r}")
    mark = floor_to(get_state(conn, mark_key) or 0, unit)
    oldest = oldest_ts(conn, table, column)
    if oldest is None or oldest >= mark:
        return None
    step = max(unit, floor_to((mark - oldest) // 8, unit))
    return min(floor_to(oldest, unit) + step, mark)
