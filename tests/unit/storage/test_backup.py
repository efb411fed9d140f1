"""Backup while ingesting (consistent, atomic, restorable) and validated restore."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.errors import StorageError
from gateway.models import Reading
from gateway.storage.sqlite.backup import backup_database, restore_database, validate
from gateway.storage.sqlite.lock import DatabaseLock
from gateway.storage.sqlite.schema import SCHEMA_VERSION
from gateway.storage.sqlite.writer import SqliteSink
from tests.support.storage import T0

BATCH = 200


def batch(k: int) -> list[Reading]:
    """Batch ``k``: 200 readings, all with value ``k``."""
    return [Reading(f"s{i % 10}", "t", T0 + k * BATCH + i, float(k)) for i in range(BATCH)]


def check_whole_batches(db: Path) -> int:
    """Every batch in ``db`` is complete and they form a prefix; returns how many."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        per_batch = conn.execute(
            "SELECT value, count(*) FROM readings GROUP BY value ORDER BY value"
        ).fetchall()
    finally:
        conn.close()
    assert all(n == BATCH for _v, n in per_batch), per_batch
    assert [int(v) for v, _n in per_batch] == list(range(len(per_batch)))
    return len(per_batch)


async def test_backup_taken_during_ingestion_restores_and_verifies(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    sink = SqliteSink(db)
    await sink.open()
    written = 0
    stop = asyncio.Event()

    async def ingest() -> None:
        nonlocal written
        while not stop.is_set() and written < 2000:
            await sink.write_batch(batch(written), [])
            written += 1

    writer = asyncio.create_task(ingest())
    try:
        while written < 20:
            await asyncio.sleep(0.001)
        backups = []
        during = 0
        for n in range(3):
            target = tmp_path / f"backup-{n}.db"
            before = written
            info = await asyncio.to_thread(backup_database, db, target)
            during += written - before
            backups.append((target, info, written))
        assert during > 0  # batches committed while backups were being taken
        stop.set()
        await writer
    finally:
        await sink.close()
    assert written > backups[-1][2] > 20  # the writer kept going during the backups
    for target, info, _at in backups:
        assert info.schema_version == SCHEMA_VERSION
        assert check_whole_batches(target) * BATCH == info.readings > 0
        assert not list(tmp_path.glob(f".{target.name}.*"))  # no temp files left
    # Restore the last backup in place of a database and use it.
    target, info, _at = backups[-1]
    restored = tmp_path / "restored.db"
    got, moved = restore_database(target, restored)
    assert moved is None and got.readings == info.readings
    sink = SqliteSink(restored)
    await sink.open()
    try:
        await sink.write_batch(batch(100_000), [])
    finally:
        await sink.close()
    conn = sqlite3.connect(restored)
    try:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == info.readings + BATCH
        assert conn.execute("SELECT count(*) FROM series").fetchone()[0] == 10
    finally:
        conn.close()


async def test_restore_refuses_while_a_gateway_runs_unless_forced(tmp_path: Path) -> None:
    db = tmp_path / "db.db"
    sink = SqliteSink(db)
    await sink.open()
    await sink.write_batch(batch(0), [])
    await sink.close()
    backup = tmp_path / "b.db"
    backup_database(db, backup)
    running = DatabaseLock(db)
    running.acquire()  # as a running gateway holds it
    try:
        with pytest.raises(StorageError, match="a gateway is running"):
            restore_database(backup, db)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(["restore", str(backup), "--db", str(db)]) == 1
        assert "stop it first, or pass --force" in err.getvalue()
        info, moved = restore_database(backup, db, force=True)
    finally:
        running.release()
    assert moved is not None and moved.name.startswith("db.db.pre-restore-")
    assert info.readings == BATCH and moved.exists()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["restore", str(backup), "--db", str(db)]) == 0
    assert "previous database kept as" in out.getvalue()


def test_restore_validates_the_backup_first(tmp_path: Path) -> None:
    db = tmp_path / "keep.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE series (x)")
    original = db.read_bytes()

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"definitely not sqlite" * 500)
    with pytest.raises(StorageError):
        restore_database(junk, db)

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE other (x)")
    with pytest.raises(StorageError, match="not a tidegate database"):
        restore_database(foreign, db)

    future = tmp_path / "future.db"
    with sqlite3.connect(future) as conn:
        for table in ("series", "readings", "dead_letters"):
            conn.execute(f"CREATE TABLE {table} (x)")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StorageError, match="newer than this tidegate"):
        validate(future)
    with pytest.raises(StorageError, match="not found"):
        restore_database(tmp_path / "missing.db", db)
    assert db.read_bytes() == original  # untouched by every refusal


def test_cli_backup(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with sqlite3.connect(db) as conn:
        for table in ("series", "readings", "dead_letters"):
            conn.execute(f"CREATE TABLE {table} (x)")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["backup", str(tmp_path / "copy.db"), "--db", str(db)]) == 0
    assert "quick_check ok" in out.getvalue()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["backup", str(db), "--db", str(db)]) == 1
    assert "must not overwrite the database" in err.getvalue()
