"""Online backup and validated restore.

``backup``: SQLite's online backup API copies the database from one read snapshot
(a single step, so a writer committing meanwhile never makes it restart, and in WAL
mode the writer is never blocked). The copy is written to a temporary file beside the
destination, switched to a self-contained rollback journal, checked with
``quick_check``, fsynced, then renamed over the destination: a reader of ``PATH`` sees
the old backup or the new one, never half of one.

``restore``: validates the backup first (SQLite can read it, ``quick_check`` passes,
it has tidegate's tables and a schema version this tidegate understands), refuses
while a gateway holds the database's lock unless forced, copies the backup into a
temporary file beside the database, moves the current database (with ``-wal`` and
``-shm``) aside as ``<name>.pre-restore-<UTC timestamp>``, and renames the copy into
place. Nothing is deleted; the gateway migrates an older backup when it next opens it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import StorageError
from gateway.storage.sqlite.connection import convert_sqlite_error, create_private
from gateway.storage.sqlite.integrity import SIDE_FILES, fsync_dir, move_aside
from gateway.storage.sqlite.lock import DatabaseLock, holder
from gateway.storage.sqlite.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

REQUIRED_TABLES = ("series", "readings", "dead_letters")


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What a validated backup holds."""

    path: Path
    schema_version: int
    series: int
    readings: int
    size_bytes: int


def _temp_beside(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


def _remove(path: Path) -> None:
    for suffix in SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def validate(path: Path, mode: str = "quick") -> BackupInfo:
    """Check that ``path`` is a complete, readable tidegate database; raises
    :class:`StorageError` saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"backup not found: {path}")
    try:
        # immutable=1: read the file exactly as it is, create no -wal/-shm beside it.
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        raise convert_sqlite_error(exc, f"opening backup {path}") from None
    try:
        pragma = "integrity_check(20)" if mode == "full" else "quick_check(20)"
        rows = conn.execute(f"PRAGMA {pragma}").fetchall()
        if rows != [("ok",)]:
            raise StorageError(
                f"backup {path} is damaged: " + "; ".join(str(r[0]) for r in rows)[:500]
            )
        tables = {
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
        }
        missing = [t for t in REQUIRED_TABLES if t not in tables]
        if missing:
            raise StorageError(f"{path} is not a tidegate database (no {', '.join(missing)})")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"backup {path} has schema version {version}, newer than this tidegate"
                f" ({SCHEMA_VERSION})"
            )
        series = int(conn.execute("SELECT count(*) FROM series").fetchone()[0])
        readings = int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
    except sqlite3.Error as exc:
        raise StorageError(f"backup {path} is not readable: {exc}") from None
    finally:
        conn.close()
    return BackupInfo(path, version, series, readings, path.stat().st_size)


def _copy(source: sqlite3.Connection, target: Path) -> None:
    """Copy ``source`` into a new self-contained file ``target`` and check it."""
    _remove(target)
    create_private(target)  # backups and restored databases: 0600 whatever the umask
    dest = sqlite3.connect(target, isolation_level=None)
    try:
        # pages=-1: one step from one snapshot; it never restarts under a busy writer.
        source.backup(dest, pages=-1)
        dest.execute("PRAGMA journal_mode = DELETE")
        check = dest.execute("PRAGMA quick_check(5)").fetchall()
        if check != [("ok",)]:
            raise StorageError(f"the copy failed its check: {check}")
    finally:
        dest.close()
    _fsync_file(target)


def backup_database(db: Path, dest: Path) -> BackupInfo:
    """Back up the live database ``db`` to ``dest`` (atomically replaced)."""
    db, dest = Path(db), Path(dest)
    if not db.exists():
        raise StorageError(f"database not found: {db}")
    if dest.resolve() == db.resolve():
        raise StorageError("the backup must not overwrite the database itself")
    if dest.is_dir():
        raise StorageError(f"{dest} is a directory; give a file name")
    tmp = _temp_beside(dest, "backup")
    try:
        source = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True)
        try:
            source.execute("PRAGMA busy_timeout = 5000")
            _copy(source, tmp)
        finally:
            source.close()
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except (sqlite3.Error, OSError) as exc:
        raise convert_sqlite_error(exc, f"backing up {db} to {dest}") from None
    finally:
        _remove(tmp)
    info = validate(dest)
    log.info("backup of %s written to %s (%d readings)", db, dest, info.readings)
    return info


def restore_database(
    backup: Path, db: Path, force: bool = False, now: dt.datetime | None = None
) -> tuple[BackupInfo, Path | None]:
    """Replace ``db`` with ``backup``. Returns the backup's info and where the previous
    database was moved (``None`` if there was none).

    Refuses while a gateway holds ``db``'s lock unless ``force`` (then the running
    gateway keeps writing to the moved-aside file until it is restarted).
    """
    backup, db = Path(backup), Path(db)
    if backup.resolve() == db.resolve():
        raise StorageError("the backup and the database are the same file")
    info = validate(backup)
    lock = DatabaseLock(db)
    try:
        lock.acquire()
    except StorageError:
        if not force:
            pid = holder(db)
            raise StorageError(
                f"a gateway is running on {db}"
                + (f" (pid {pid})" if pid else "")
                + "; stop it first, or pass --force"
            ) from None
        log.warning("restoring over %s while a gateway holds it (--force): restart it", db)
    try:
        tmp = _temp_beside(db, "restore")
        try:
            source = sqlite3.connect(f"file:{backup.resolve()}?mode=ro&immutable=1", uri=True)
            try:
                _copy(source, tmp)
            finally:
                source.close()
            moved: Path | None = None
            if db.exists():
                stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
                moved = db.with_name(f"{db.name}.pre-restore-{stamp}")
                move_aside(db, moved)
            os.replace(tmp, db)
            fsync_dir(db.parent)
        except (sqlite3.Error, OSError) as exc:
            raise convert_sqlite_error(exc, f"restoring {backup} to {db}") from None
        finally:
            _remove(tmp)
    finally:
        lock.release()
    log.info("restored %s from %s; previous database: %s", db, backup, moved or "none")
    return info, moved
