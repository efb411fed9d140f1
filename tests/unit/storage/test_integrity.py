"""Integrity at start: a deliberately corrupted database is moved aside (with its -wal
and -shm) as <name>.corrupt-<UTC timestamp>, loudly, and a fresh one is created; other
errors are never mistaken for corruption; one gateway per database file."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import re
import sqlite3
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.config import StorageConfig
from gateway.errors import StorageError
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.storage.sqlite import integrity
from gateway.storage.sqlite.lock import holder
from gateway.storage.sqlite.store import SqliteStore
from gateway.storage.sqlite.writer import SqliteSink
from tests.support.storage import T0

NOW = dt.datetime(2024, 11, 19, 7, 30, 5, tzinfo=dt.UTC)


async def make_database(path: Path, n: int = 5000) -> None:
    sink = SqliteSink(path)
    await sink.open()
    try:
        await sink.write_batch([Reading(f"s{i % 7}", "t", T0 + i, float(i)) for i in range(n)], [])
    finally:
        await sink.close()


def damage(path: Path) -> None:
    """Overwrite pages 2–6 (B-tree pages) with junk, as a failing SD card might."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = 4096
    with open(path, "r+b") as fh:
        fh.seek(page)
        fh.write(bytes((i * 7 + 13) % 256 for i in range(5 * page)))


async def test_a_damaged_database_is_moved_aside_with_its_wal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "tidegate.db"
    await make_database(db)
    damage(db)
    Path(f"{db}-wal").write_bytes(b"")  # side files travel with it
    Path(f"{db}-shm").write_bytes(b"x" * 10)
    assert integrity.check(db) is not None
    with caplog.at_level(logging.ERROR):
        moved = integrity.ensure_healthy(db, "quick", NOW)
    assert moved == tmp_path / "tidegate.db.corrupt-20241119T073005Z"
    assert moved.exists() and Path(f"{moved}-wal").exists() and Path(f"{moved}-shm").exists()
    assert not db.exists() and not Path(f"{db}-wal").exists()
    assert "DATABASE CORRUPT" in caplog.text and str(moved) in caplog.text
    # The same second again: a unique name, nothing overwritten.
    db.write_bytes(b"not a database at all, just junk" * 100)
    assert integrity.ensure_healthy(db, "quick", NOW) == Path(f"{moved}-1")
    assert integrity.corrupt_copies(db) == [moved, Path(f"{moved}-1")]


async def test_gateway_start_replaces_a_corrupt_database_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "g.db"
    await make_database(db)
    damage(db)
    metrics = Metrics()
    sink = SqliteSink(db)
    lifecycle = SqliteStore(StorageConfig(path=db), metrics, sink)
    with caplog.at_level(logging.ERROR):
        await lifecycle.open()
    try:
        assert metrics.storage.corrupt_recoveries == 1
        assert re.search(r"g\.db\.corrupt-\d{8}T\d{6}Z$", metrics.storage.corrupt_moved_to)
        result = await sink.write_batch([Reading("s", "t", T0, 1.0)], [])
        assert result.stored == 1
    finally:
        await lifecycle.close()
    assert "DATABASE CORRUPT" in caplog.text
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["stats", "--db", str(db), "-f", "json"]) == 0
    report = json.loads(out.getvalue())
    assert report["readings"] == 1
    assert report["storage"]["corrupt_copies"] == [metrics.storage.corrupt_moved_to]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["stats", "--db", str(db)]) == 0
    assert "CORRUPT" in out.getvalue()


async def test_a_healthy_database_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "ok.db"
    await make_database(db, 100)
    assert integrity.ensure_healthy(db, "full") is None
    assert integrity.ensure_healthy(tmp_path / "absent.db") is None
    assert db.exists() and integrity.corrupt_copies(db) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without permission")
def test_other_errors_are_raised_not_recovered(tmp_path: Path) -> None:  # pragma: no cover
    db = tmp_path / "locked.db"
    sqlite3.connect(db).close()
    db.chmod(0)
    with pytest.raises(StorageError):
        integrity.ensure_healthy(db)
    assert db.exists()


def test_a_directory_in_the_way_is_an_error_not_corruption(tmp_path: Path) -> None:
    db = tmp_path / "dir.db"
    db.mkdir()
    with pytest.raises(StorageError):
        integrity.ensure_healthy(db)
    assert db.is_dir() and integrity.corrupt_copies(db) == []


async def test_one_gateway_per_database(tmp_path: Path) -> None:
    db = tmp_path / "one.db"
    first = SqliteStore(StorageConfig(path=db), Metrics(), SqliteSink(db))
    await first.open()
    try:
        assert holder(db) == os.getpid()
        second = SqliteStore(StorageConfig(path=db), Metrics(), SqliteSink(db))
        with pytest.raises(
            StorageError, match=rf"in use by another tidegate \(pid {os.getpid()}\)"
        ):
            await second.open()
    finally:
        await first.close()
    assert holder(db) is None
    again = SqliteStore(StorageConfig(path=db), Metrics(), SqliteSink(db))
    await again.open()
    await again.close()
