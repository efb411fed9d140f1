"""The SQLite sink: schema, idempotent inserts, dead letters bounded, migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.models import DeadLetter, Reading
from gateway.storage.sqlite.connection import open_readonly
from gateway.storage.sqlite.schema import SCHEMA_VERSION
from gateway.storage.sqlite.writer import SqliteSink

NOW = 1_732_000_000_000


async def test_idempotent_writes_and_series_dictionary(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "t.db")
    await sink.open()
    try:
        batch = [
            Reading("s1", "temp", NOW, 1.0, "C"),
            Reading("s1", "temp", NOW + 1, 2.0, "C"),
            Reading("s2", "temp", NOW, 3.0, None, (("room", "kitchen"),)),
        ]
        first = await sink.write_batch(batch, [])
        assert (first.stored, first.duplicates) == (3, 0)
        again = await sink.write_batch([*batch, Reading("s1", "temp", NOW + 2, 4.0, "C")], [])
        assert (again.stored, again.duplicates) == (1, 3)
    finally:
        await sink.close()
    conn = open_readonly(tmp_path / "t.db")
    assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 4
    assert conn.execute("SELECT count(*) FROM series").fetchone()[0] == 2
    tags = conn.execute("SELECT tags FROM series WHERE sensor_id = 's2'").fetchone()[0]
    assert tags == '{"room":"kitchen"}'
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_reopen_reuses_series_ids(tmp_path: Path) -> None:
    for round_ in range(2):
        sink = SqliteSink(tmp_path / "t.db")
        await sink.open()
        await sink.write_batch([Reading("s1", "temp", NOW + round_, 1.0)], [])
        await sink.close()
    conn = open_readonly(tmp_path / "t.db")
    assert conn.execute("SELECT count(*) FROM series").fetchone()[0] == 1


async def test_dead_letters_truncated_and_bounded(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "t.db", dead_letter_max_payload=10, dead_letter_max_rows=5)
    await sink.open()
    try:
        for i in range(12):
            await sink.write_batch([], [DeadLetter(NOW + i, "t/x", b"x" * 50, f"bad {i}", "sub")])
    finally:
        await sink.close()
    conn = open_readonly(tmp_path / "t.db")
    rows = conn.execute(
        "SELECT payload, payload_size, reason FROM dead_letters ORDER BY id"
    ).fetchall()
    assert len(rows) == 5
    assert rows[-1] == (b"x" * 10, 50, "bad 11")


async def test_failed_batch_rolls_back_new_series(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    sink = SqliteSink(path)
    await sink.open()
    await sink.close()
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER fail AFTER INSERT ON readings_hot WHEN NEW.value = 666"
        " BEGIN SELECT RAISE(ABORT, 'injected'); END"
    )
    conn.commit()
    conn.close()
    await sink.open()
    try:
        bad = [Reading("new", "m", NOW, 1.0), Reading("new2", "m", NOW, 666.0)]
        with pytest.raises(StorageError, match="injected"):
            await sink.write_batch(bad, [])
        assert sink.writer.series_ids == {}
        ok = await sink.write_batch([Reading("new", "m", NOW, 1.0)], [])
        assert ok.stored == 1
    finally:
        await sink.close()


async def test_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    sink = SqliteSink(path)
    with pytest.raises(StorageError, match="newer"):
        await sink.open()


async def test_not_a_database_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    path.write_bytes(b"this is not sqlite" * 100)
    sink = SqliteSink(path)
    with pytest.raises(StorageError):
        await sink.open()
