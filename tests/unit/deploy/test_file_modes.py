"""The database, its -wal/-shm files, backups and restored databases are created 0600
whatever the process umask (a service's or a shell's), so readings are never readable by
other local users by accident."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.models import Reading
from gateway.storage.sqlite.backup import backup_database, restore_database
from gateway.storage.sqlite.writer import SqliteSink
from tests.support.storage import T0


@pytest.fixture(params=[0o000, 0o002, 0o022, 0o077], ids=lambda m: f"umask{m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_database_wal_shm_backup_and_restore_are_private(umask: int, tmp_path: Path) -> None:
    db = tmp_path / "tidegate.db"
    sink = SqliteSink(db)
    await sink.open()
    try:
        await sink.write_batch([Reading("s1", "t", T0 + i, float(i)) for i in range(10)], [])
        files = {p.name: mode(p) for p in tmp_path.iterdir()}
        assert {"tidegate.db", "tidegate.db-wal", "tidegate.db-shm"} <= set(files)
        assert files == dict.fromkeys(files, 0o600), {k: oct(v) for k, v in files.items()}
        backup = tmp_path / "backups" / "tidegate-backup.db"
        backup.parent.mkdir()
        backup_database(db, backup)
        assert mode(backup) == 0o600
    finally:
        await sink.close()
    restored = tmp_path / "restored" / "tidegate.db"
    restored.parent.mkdir()
    restore_database(backup, restored)
    assert mode(restored) == 0o600


async def test_an_existing_database_keeps_its_mode(umask: int, tmp_path: Path) -> None:
    """An admin's deliberate 0640 (a read-only group for dashboards) is left alone."""
    db = tmp_path / "tidegate.db"
    db.touch()
    db.chmod(0o640)
    sink = SqliteSink(db)
    await sink.open()
    try:
        await sink.write_batch([Reading("s1", "t", T0, 1.0)], [])
    finally:
        await sink.close()
    assert mode(db) == 0o640
