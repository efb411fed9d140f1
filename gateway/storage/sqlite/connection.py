"""Connections to a tidegate SQLite file and the errors they raise.

Every connection the storage package opens comes from here: the writer's settings
(:func:`apply_pragmas`), read-only connections for queries, short-lived read-write
connections for tools that run beside a live gateway (dead-letter replay and purge),
and the one place where sqlite3/OS errors become :class:`~gateway.errors.StorageError`.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from gateway.errors import StorageCorrupt, StorageError, StorageFull


def convert_sqlite_error(exc: BaseException, what: str) -> StorageError:
    """Map a sqlite3/OS error to our tree: full disk, corruption, or plain failure."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == sqlite3.SQLITE_FULL or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
        return StorageFull(f"{what}: disk or database full ({exc})")
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StorageCorrupt(f"{what}: database is damaged ({exc})")
    if primary == sqlite3.SQLITE_IOERR and "disk" in str(exc).lower():
        return StorageFull(f"{what}: disk I/O error, disk may be full ({exc})")
    return StorageError(f"{what}: {exc}")


def apply_pragmas(conn: sqlite3.Connection, synchronous: str, busy_timeout_ms: int) -> None:
    """Connection settings for the writer: WAL, the chosen durability, a busy timeout."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        # A new file: auto_vacuum only takes effect if set before WAL mode creates it.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StorageError(f"could not switch the database to WAL mode (got {mode})")
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise StorageError(f"bad synchronous mode {synchronous!r}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists.

    SQLite would create a database 0644 minus the umask, and gives its ``-wal``, ``-shm``
    and journal files the database file's mode: creating the file first keeps the whole
    set readable by its owner only, whatever the umask. An existing file keeps its mode.
    """
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection for queries (CLI, HTTP API). It never blocks the writer:
    in WAL mode readers and the writer proceed concurrently."""
    if not Path(path).exists():
        raise StorageError(f"database not found: {path}")
    try:
        conn = sqlite3.connect(
            f"file:{Path(path).resolve()}?mode=ro", uri=True, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise convert_sqlite_error(exc, f"opening {path} read-only") from None
    return conn


def open_writable(path: Path, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A read-write connection to an existing tidegate database (autocommit mode, so
    every transaction here is explicit)."""
    if not Path(path).exists():
        raise StorageError(f"database not found: {path}")
    try:
        conn = sqlite3.connect(
            Path(path),
            isolation_level=None,
            timeout=busy_timeout_ms / 1000,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("SELECT 1 FROM dead_letters LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise convert_sqlite_error(exc, f"opening {path}") from None
    return conn
