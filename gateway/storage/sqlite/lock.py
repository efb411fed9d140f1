"""One gateway per database file: an advisory ``flock`` on ``<db>.lock``.

Two writers on one file would fight over SQLite's write lock and each keep a stale
series cache (``docs/decisions/0001-one-writer-per-database.md``); ``tidegate restore`` must not
swap the file under a running gateway. The kernel drops the lock when the process
dies (even by ``kill -9``), so a stale lock cannot outlive its owner.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from gateway.errors import StorageError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS: no locking
    fcntl = None  # type: ignore[assignment]


def lock_path(db: Path) -> Path:
    return Path(f"{db}.lock")


class DatabaseLock:
    """Held by a running gateway for its database's lifetime."""

    def __init__(self, db: Path) -> None:
        self.path = lock_path(db)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StorageError` naming the holder's pid."""
        if self._fd is not None or fcntl is None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot create lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = _read_pid(fd)
            os.close(fd)
            raise StorageError(
                f"database {self.path.with_suffix('')} is in use by another tidegate"
                + (f" (pid {pid})" if pid else "")
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing drops the flock


def holder(db: Path) -> int | None:
    """The pid holding ``db``'s lock (0 if unknown), or ``None`` when nobody holds it."""
    path = lock_path(db)
    if fcntl is None or not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return 0
