"""Integrity at start: a damaged database is moved aside, loudly, and a fresh one begins.

:func:`ensure_healthy` runs ``PRAGMA quick_check`` (or the slower ``integrity_check``)
before the writer opens the file. If SQLite reports damage — or cannot read the file
as a database at all — the file and its ``-wal``/``-shm`` are renamed to
``<name>.corrupt-<UTC timestamp>`` (``-wal``/``-shm`` suffixes kept, so the copy can
still be opened for forensics or salvage), an ERROR is logged, the
``storage.corrupt_recoveries`` metric counts it and ``tidegate stats`` lists the copy.
Anything else (permissions, a locked file, I/O errors) is raised, never "recovered":
moving a healthy database aside because of a transient error would lose nothing but
would hide all its history.

Also here: converting an old database to incremental auto-vacuum.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
from pathlib import Path

from gateway.errors import StorageCorrupt, StorageError
from gateway.storage.sqlite.connection import convert_sqlite_error
from gateway.storage.sqlite.guard import disk_free

log = logging.getLogger(__name__)

SIDE_FILES = ("", "-wal", "-shm")
AUTO_CONVERT_MAX_BYTES = 64 * 1024 * 1024
"""Old databases up to this size are converted to incremental vacuum at start (a full
VACUUM: seconds); larger ones get a warning naming ``tidegate vacuum``."""


def check(path: Path, mode: str = "quick") -> str | None:
    """The damage SQLite reports in ``path`` (``None``: healthy or absent).

    Raises :class:`StorageError` for problems that are not damage.
    """
    path = Path(path)
    if not path.exists() or mode == "off":
        return None
    pragma = "integrity_check(20)" if mode == "full" else "quick_check(20)"
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=rw", uri=True)
        conn.execute("PRAGMA busy_timeout = 5000")
        rows = conn.execute(f"PRAGMA {pragma}").fetchall()
    except (sqlite3.Error, OSError) as exc:
        converted = convert_sqlite_error(exc, f"checking {path}")
        if isinstance(converted, StorageCorrupt):
            return str(exc)
        raise converted from None
    finally:
        if conn is not None:
            conn.close()
    if rows == [("ok",)]:
        return None
    return "; ".join(str(row[0]) for row in rows)


def corrupt_name(path: Path, now: dt.datetime) -> Path:
    """``<name>.corrupt-<YYYYmmddTHHMMSSZ>``, made unique if that exists already."""
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(Path(f"{target}{s}").exists() for s in SIDE_FILES):
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    return target


def move_aside(path: Path, target: Path) -> None:
    """Rename ``path`` and its ``-wal``/``-shm`` to ``target`` (+ the same suffixes)."""
    for suffix in SIDE_FILES:
        source = Path(f"{path}{suffix}")
        if source.exists():
            try:
                os.replace(source, f"{target}{suffix}")
            except OSError as exc:
                raise StorageError(f"cannot move {source} aside: {exc.strerror}") from None
    fsync_dir(path.parent)


def ensure_healthy(path: Path, mode: str = "quick", now: dt.datetime | None = None) -> Path | None:
    """Check ``path``; if damaged, move it aside and return where it went (else ``None``)."""
    problem = check(path, mode)
    if problem is None:
        return None
    target = corrupt_name(Path(path), now or dt.datetime.now(dt.UTC))
    move_aside(Path(path), target)
    log.error(
        "DATABASE CORRUPT: %s failed its %s check (%s). It was moved to %s and a fresh,"
        " empty database is being created. Salvage older data from the copy with"
        " `sqlite3 %s .recover`.",
        path,
        mode,
        problem[:500],
        target,
        target,
    )
    return target


def corrupt_copies(path: Path) -> list[Path]:
    """The moved-aside copies beside ``path`` (oldest first)."""
    path = Path(path)
    if not path.parent.exists():
        return []
    prefix = f"{path.name}.corrupt-"
    return sorted(
        p
        for p in path.parent.iterdir()
        if p.name.startswith(prefix) and not p.name.endswith(("-wal", "-shm"))
    )


def ensure_incremental_vacuum(path: Path, force: bool = False) -> bool:
    """Switch an existing database to ``auto_vacuum = INCREMENTAL`` (a full VACUUM).

    Done automatically only for small files with room to spare (VACUUM writes a full
    copy); otherwise logs how to do it. Returns True when the database is (now)
    incremental. Call with no other connection open.
    """
    path = Path(path)
    if not path.exists():
        return True
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2:
            if force:  # already incremental: give every free page back
                conn.execute("PRAGMA incremental_vacuum").fetchall()
            return True
        size = path.stat().st_size
        room = disk_free(path)
        if not force and (size > AUTO_CONVERT_MAX_BYTES or (0 <= room < 2 * size)):
            log.warning(
                "%s does not return purged space to the disk (auto_vacuum is not incremental);"
                " stop the gateway and run `tidegate vacuum` once to convert it",
                path,
            )
            return False
        log.warning("converting %s to incremental auto-vacuum (one full VACUUM)", path)
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
        return int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2
    except sqlite3.Error as exc:
        raise convert_sqlite_error(exc, f"vacuuming {path}") from None
    finally:
        conn.close()


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
