"""The power-cut filesystem (tests/support/powercut.py) is checked before it is trusted.

First its model on plain files (unsynced writes vanish, synced ones stay, a dead mount
refuses I/O), then against plain sqlite3 in WAL mode, the way GUIDE.md §5 asks:
``synchronous=FULL`` keeps every commit through a cut, ``OFF`` loses the commits since
the last checkpoint, and ``integrity_check`` is ok either way.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.powercut import PowerCutFs, fuse_missing_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.isolated,
    pytest.mark.skipif(fuse_missing_reason() is not None, reason=fuse_missing_reason() or ""),
]


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[PowerCutFs]:
    with PowerCutFs(tmp_path) as mounted:
        yield mounted


def _write(path: Path, data: bytes, offset: int = 0, sync: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, offset)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def test_only_synced_writes_survive_a_cut(fs: PowerCutFs) -> None:
    synced = fs.mount / "synced"
    unsynced = fs.mount / "unsynced"
    _write(synced, b"a" * 10_000, sync=True)
    _write(synced, b"b" * 100, offset=5_000)  # overwrite in the middle, never synced
    _write(synced, b"c" * 3_000, offset=10_000)  # extension, never synced
    _write(unsynced, b"lost")
    # Before the cut every write is visible (read your own writes).
    data = synced.read_bytes()
    assert len(data) == 13_000 and data[5_000:5_100] == b"b" * 100
    assert unsynced.read_bytes() == b"lost"

    reply = fs.cut()
    assert reply["ok"] and "/synced" in reply["files_with_unsynced_writes"]
    fs.remount()

    assert synced.read_bytes() == b"a" * 10_000
    assert unsynced.read_bytes() == b""  # the name survives (directories: module docstring)


def test_truncate_is_kept_only_when_synced(fs: PowerCutFs) -> None:
    path = fs.mount / "f"
    _write(path, bytes(range(256)) * 64, sync=True)  # 16 KiB
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, 1000)
        os.pwrite(fd, b"z", 8000)  # the hole between must read as zeros, not old bytes
        assert os.pread(fd, 7000, 1000) == bytes(7000)
        assert os.fstat(fd).st_size == 8001
    finally:
        os.close(fd)
    fs.cut()
    fs.remount()
    assert path.read_bytes() == bytes(range(256)) * 64

    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, 1000)
        os.pwrite(fd, b"z", 8000)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    fs.cut()
    fs.remount()
    data = path.read_bytes()
    assert data[:1000] == (bytes(range(256)) * 64)[:1000]
    assert data[1000:8000] == bytes(7000) and data[8000:] == b"z"


def test_a_dead_mount_refuses_io_until_remount(fs: PowerCutFs) -> None:
    path = fs.mount / "f"
    _write(path, b"kept", sync=True)
    fd = os.open(path, os.O_RDWR)
    fs.cut()
    try:
        with pytest.raises(OSError) as info:
            os.pwrite(fd, b"after the cut", 0)
        assert info.value.errno == 5  # EIO
        with pytest.raises(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
    assert fs.stats()["dead"]
    fs.remount()
    assert path.read_bytes() == b"kept"
    assert not fs.stats()["dead"]


def _sqlite_cut(fs: PowerCutFs, synchronous: str) -> tuple[int, str]:
    """100 rows checkpointed into the main file (at FULL: with OFF even a checkpoint
    does not sync), then 200 single-row commits at ``synchronous``, a cut, a remount:
    (rows found, integrity_check)."""
    db = fs.mount / "t.db"
    conn = sqlite3.connect(db, isolation_level=None)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    for i in range(100, 300):
        conn.execute("INSERT INTO t VALUES (?)", (i,))
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 300
    fs.cut()
    # The dying process cannot write on top: its close fails quietly (EIO).
    conn.close()
    fs.remount()
    after = sqlite3.connect(db)
    try:
        rows = int(after.execute("SELECT count(*) FROM t").fetchone()[0])
        check = str(after.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        after.close()
    return rows, check


def test_sqlite_wal_full_keeps_every_commit(fs: PowerCutFs) -> None:
    assert _sqlite_cut(fs, "FULL") == (300, "ok")


def test_sqlite_wal_off_loses_the_commits_since_the_checkpoint(fs: PowerCutFs) -> None:
    assert _sqlite_cut(fs, "OFF") == (100, "ok")


def test_sqlite_wal_normal_loses_them_too(fs: PowerCutFs) -> None:
    """SQLite's NORMAL, the gateway's old default: the WAL is synced only at checkpoints."""
    assert _sqlite_cut(fs, "NORMAL") == (100, "ok")
