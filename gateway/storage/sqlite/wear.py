"""SD-card wear: bytes written per reading, and WAL checkpoints off the writer's path.

Bytes written come from ``/proc/self/io`` ``write_bytes`` (what this process caused to
be written to the block device: WAL appends, checkpoints, logs), so the figure is the
real wear, not an estimate. It is missing on non-Linux systems (then 0).

Checkpoints: a PASSIVE checkpoint on a **separate** connection copies WAL frames into
the database while the writer keeps committing (it never takes the write lock). The
writer's own automatic checkpoint is raised to a safety net (``WRITER_AUTOCHECKPOINT``)
so routine checkpoints happen on the timer: each page changed since the last
checkpoint is written to the database file once per checkpoint, however often it was
committed — a longer interval writes hot pages (B-tree interiors, each series' newest
leaf) less often. ``journal_size_limit`` stops a WAL that grew in a burst from
keeping its size forever.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

WRITER_AUTOCHECKPOINT = 10_000
"""Pages (≈40 MiB at 4 KiB) the WAL may reach before the writer checkpoints itself —
only if the background checkpoint falls behind or is not running."""
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
"""After a checkpoint the WAL file is cut back to this size when writing restarts at its
beginning, so a burst does not keep a large WAL (which counts against the size cap)."""


def read_write_bytes() -> int | None:
    """``write_bytes`` of ``/proc/self/io``, or ``None`` where unavailable."""
    try:
        with open("/proc/self/io", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("write_bytes:"):
                    return int(line.split(":", 1)[1])
    except (OSError, ValueError):
        return None
    return None


@dataclass(slots=True)
class WearMeter:
    """Turns ``write_bytes`` and ``readings_stored`` samples into bytes per reading."""

    start_bytes: int | None = None
    last_bytes: int | None = None
    last_readings: int = 0
    bytes_per_reading: float = 0.0
    total_bytes: int = 0

    def sample(self, readings_stored: int) -> None:
        now = read_write_bytes()
        if now is None:
            return
        if self.start_bytes is None or self.last_bytes is None:
            self.start_bytes = self.last_bytes = now
            self.last_readings = readings_stored
            return
        self.total_bytes = now - self.start_bytes
        readings = readings_stored - self.last_readings
        if readings > 0:
            self.bytes_per_reading = (now - self.last_bytes) / readings
            self.last_bytes = now
            self.last_readings = readings_stored


def tune_writer(conn: sqlite3.Connection) -> None:
    """Writer connection settings when background checkpoints run."""
    conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT}")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")


def open_checkpointer(path: Path) -> sqlite3.Connection:
    """A connection used only for checkpoints (from a worker thread)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 1000")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    return conn


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int]:
    """PASSIVE checkpoint: ``(wal_frames, frames_checkpointed)``; never waits for the
    writer or readers."""
    _busy, log_frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(log_frames), int(done)


def truncate_wal(conn: sqlite3.Connection) -> bool:
    """Checkpoint everything and cut the WAL file to zero bytes, from the writer's own
    connection, without waiting: returns False (and does nothing harmful) when a reader
    still uses old WAL frames. Used by the size guard, whose cap counts the WAL."""
    previous = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.execute(f"PRAGMA busy_timeout = {previous}")
    return not busy
