"""The SQLite outbox: filled with new readings only, in commit order, in the batch's
transaction; confirmed, adopted and dropped without ever reusing a sequence number."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.config import StorageConfig
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.storage.sqlite import outbox, wear
from gateway.storage.sqlite.guard import Guard
from gateway.storage.sqlite.maintenance import ForwardPolicy, Maintenance
from gateway.storage.sqlite.outbox import SqliteOutbox
from gateway.storage.sqlite.rollups import LateDataTracker
from gateway.storage.sqlite.writer import SqliteSink

NOW = 1_732_000_000_000


def _batch(start: int, n: int, sensor: str = "s1") -> list[Reading]:
    return [Reading(sensor, "temp", NOW + i, float(i), "C") for i in range(start, start + n)]


def _rows(db: Path) -> list[tuple[int, int, int, float]]:
    conn = sqlite3.connect(db)
    try:
        return [tuple(r) for r in conn.execute("SELECT * FROM outbox ORDER BY seq")]
    finally:
        conn.close()


async def _sink(db: Path, forward: bool | None) -> SqliteSink:
    sink = SqliteSink(db)
    sink.forward = forward
    await sink.open()
    return sink


async def test_without_forwarding_nothing_is_installed(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    sink = await _sink(db, False)
    try:
        await sink.write_batch(_batch(0, 10), [])
    finally:
        await sink.close()
    assert _rows(db) == []
    conn = sqlite3.connect(db)
    assert not outbox.enabled(conn)


async def test_new_readings_only_in_commit_order(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    sink = await _sink(db, True)
    try:
        await sink.write_batch(_batch(0, 5), [])
        result = await sink.write_batch(_batch(3, 5), [])  # 3, 4 are duplicates
        assert (result.stored, result.duplicates) == (3, 2)
        await sink.write_batch(_batch(0, 8), [])  # nothing new: no rows, no mark
    finally:
        await sink.close()
    rows = _rows(db)
    assert [r[0] for r in rows] == list(range(1, 9))
    assert [r[2] - NOW for r in rows] == list(range(8))
    conn = sqlite3.connect(db)
    marks = [r[0] for r in conn.execute("SELECT seq FROM outbox_marks ORDER BY seq")]
    assert marks == [1, 6]
    pending = outbox.pending(conn)
    assert (pending.count, pending.position, pending.last_seq) == (8, 0, 8)
    assert pending.oldest_received_ms is not None


async def test_a_rolled_back_batch_leaves_no_outbox_rows(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    sink = await _sink(db, True)
    try:
        await sink.write_batch(_batch(0, 2), [])

        def fail(conn: sqlite3.Connection, rows: object) -> None:
            raise RuntimeError("boom")

        sink.writer.after_insert = fail
        with pytest.raises(RuntimeError):
            await sink.write_batch(_batch(2, 3), [])
    finally:
        await sink.close()
    assert [r[0] for r in _rows(db)] == [1, 2]


async def test_confirm_keeps_the_sequence_going(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    sink = await _sink(db, True)
    box = SqliteOutbox(db, lambda: sink.connection)
    try:
        await sink.write_batch(_batch(0, 4), [])
        assert (await box.adopt(0, "gw")).renumbered == 0  # a first start moves nothing
        chunk = await box.read(0, 3, set())
        assert [r[0] for r in chunk.rows] == [1, 2, 3]
        assert chunk.series == {1: ("s1", "temp", "C", "")}
        assert (await box.read(0, 3, {1})).series == {}
        await box.confirm(4)  # everything went up: the table is emptied but for seq 4
        assert [r[0] for r in _rows(db)] == [4]
        assert (await box.pending()).count == 0
        await sink.write_batch(_batch(10, 2), [])
        assert [r[0] for r in (await box.read(4, 100, {1})).rows] == [5, 6]
        pending = await box.pending()
        assert (pending.count, pending.position) == (2, 4)
    finally:
        await box.close()
        await sink.close()


async def test_adopt_after_a_crash_between_central_commit_and_local_delete(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    sink = await _sink(db, True)
    box = SqliteOutbox(db, lambda: sink.connection)
    try:
        await sink.write_batch(_batch(0, 10), [])
        await box.adopt(0, "gw")
        await box.confirm(3)
        # The centre committed up to 7, the gateway died before deleting locally.
        adoption = await box.adopt(7, "gw")
        assert (adoption.confirmed, adoption.renumbered) == (4, 0)
        assert [r[0] for r in (await box.read(7, 100, set())).rows] == [8, 9, 10]
    finally:
        await box.close()
        await sink.close()


async def test_adopt_renumbers_a_new_file_after_the_central_position(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    sink = await _sink(db, True)
    box = SqliteOutbox(db, lambda: sink.connection)
    try:
        await sink.write_batch(_batch(0, 3), [])
        # The centre has 5000 from an earlier database of this gateway.
        adoption = await box.adopt(5000, "gw")
        assert (adoption.confirmed, adoption.renumbered) == (0, 3)
        assert [r[0] for r in (await box.read(5000, 100, set())).rows] == [5001, 5002, 5003]
        await sink.write_batch(_batch(3, 1), [])
        assert (await box.read(5003, 100, set())).rows[0][0] == 5004
        # An empty outbox adopting a higher position keeps a placeholder at it.
        await box.confirm(5004)
        adoption = await box.adopt(9000, "other")
        assert adoption.renumbered == 0
        await sink.write_batch(_batch(4, 1), [])
        rows = (await box.read(9000, 100, set())).rows
        assert [r[0] for r in rows] == [9001]
        assert (await box.pending()).count == 1
    finally:
        await box.close()
        await sink.close()


async def test_drop_oldest_counts_and_keeps_the_newest(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    sink = await _sink(db, True)
    try:
        await sink.write_batch(_batch(0, 10), [])
    finally:
        await sink.close()
    conn = sqlite3.connect(db, isolation_level=None)
    assert outbox.drop_oldest(conn, 4) == 4
    assert outbox.drop_oldest(conn, 100) == 5  # the newest row holds the sequence
    pending = outbox.pending(conn)
    assert (pending.count, pending.dropped) == (1, 9)


async def test_turning_forwarding_off_removes_the_trigger(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    sink = await _sink(db, True)
    await sink.write_batch(_batch(0, 2), [])
    await sink.close()
    sink = await _sink(db, False)
    try:
        await sink.write_batch(_batch(2, 2), [])
    finally:
        await sink.close()
    assert len(_rows(db)) == 2


async def _full_rig(tmp_path: Path, policy: ForwardPolicy) -> tuple[SqliteSink, Maintenance]:
    config = StorageConfig(path=tmp_path / "g.db", min_free_disk="0")
    sink = SqliteSink(config.path)
    sink.forward = True
    tracker = LateDataTracker()
    sink.writer.after_insert = tracker
    await sink.open()
    guard = Guard(config.path, 0, 0, "purge_oldest")
    sink.admission = guard.admission
    maintenance = Maintenance(sink, config, Metrics(), guard, tracker, lambda: NOW, forward=policy)
    # Nothing is rolled up yet, so nothing local may be purged: only the outbox is left.
    await sink.write_batch([Reading(f"s{i % 50}", "t", NOW + i, 1.5) for i in range(20_000)], [])
    await maintenance._step(wear.truncate_wal)
    usage = await maintenance.measure()
    guard.max_size = int(usage.database_bytes * 0.7)
    return sink, maintenance


async def test_guard_stop_keeps_every_unforwarded_reading(tmp_path: Path) -> None:
    sink, maintenance = await _full_rig(tmp_path, "stop")
    try:
        await maintenance.enforce_limits()
        assert maintenance.guard.paused_reason is not None
        assert "unforwarded readings are kept" in maintenance.guard.paused_reason
        assert maintenance.metrics.upstream.dropped == 0
    finally:
        await sink.close()
    assert len(_rows(tmp_path / "g.db")) == 20_000


async def test_guard_drop_oldest_drops_counted_oldest_first(tmp_path: Path) -> None:
    sink, maintenance = await _full_rig(tmp_path, "drop_oldest")
    try:
        await maintenance.enforce_limits()
        assert maintenance.guard.paused_reason is None
        dropped = maintenance.metrics.upstream.dropped
        assert dropped > 0
    finally:
        await sink.close()
    rows = _rows(tmp_path / "g.db")
    assert len(rows) == 20_000 - dropped
    assert rows[0][0] == dropped + 1  # the oldest went, the rest is intact and in order
    conn = sqlite3.connect(tmp_path / "g.db")
    assert outbox.pending(conn).dropped == dropped


async def test_stats_report_the_outbox(tmp_path: Path) -> None:
    from gateway.storage.sqlite.report import report_lines, storage_report

    db = tmp_path / "t.db"
    sink = await _sink(db, False)
    await sink.close()
    conn = sqlite3.connect(db)
    assert storage_report(conn, db)["outbox"] is None  # never forwarded: no line
    conn.close()
    sink = await _sink(db, True)
    try:
        await sink.write_batch(_batch(0, 3), [])
    finally:
        await sink.close()
    conn = sqlite3.connect(db)
    report = storage_report(conn, db)
    assert report["outbox"]["pending"] == 3 and report["outbox"]["forwarding"]
    line = dict(report_lines(report))["outbox"]
    assert line.startswith("3 readings not yet forwarded (oldest written ")
