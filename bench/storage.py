"""Storage baselines: a bare ``sqlite3.executemany`` into tidegate's own schema.

The ceiling for the sink: the scenario's readings, already resolved to series ids,
inserted in batches of ``batch`` rows (one transaction each) with the gateway's pragmas
(WAL, ``synchronous=NORMAL``) — no MQTT, no decoding, no Python objects per reading
beyond the row tuples. Two layouts:

* ``hot`` — what tidegate does since schema 3: rows appended to ``readings_hot`` in
  arrival order, and every ``compaction_rows`` rows moved into ``readings_cold`` with the
  same statement the storage service uses (the whole storage work, done bare);
* ``cold`` — each batch sorted by key straight into the per-series ``readings_cold``
  (the layout before schema 3, for comparison).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from bench.workload import Scenario
from gateway.storage.sqlite import compaction
from gateway.storage.sqlite.connection import apply_pragmas
from gateway.storage.sqlite.schema import prepare_database


def scenario_rows(
    scenario: Scenario, n_messages: int, base_ms: int
) -> list[tuple[int, int, float]]:
    """``(series_id, ts, value)`` rows in arrival order, as the workload publishes them."""
    rows: list[tuple[int, int, float]] = []
    per = scenario.readings_per_message
    sensors = scenario.sensors
    if per == 1:
        for i in range(n_messages):
            rows.append((i % sensors + 1, base_ms + i, (i * 7919 % 10_000) / 100))
        return rows
    for i in range(n_messages):
        device = i % sensors
        t0 = base_ms + i * 10
        for j in range(per):
            rows.append((device * 10 + j % 10 + 1, t0 + j // 10, ((i + j) * 7919 % 10_000) / 100))
    return rows


def bare_executemany(
    db: Path,
    rows: list[tuple[int, int, float]],
    batch: int,
    series: int,
    layout: str = "hot",
    compaction_rows: int = 50_000,
) -> float:
    """Insert ``rows`` into a fresh database at ``db`` (``layout``: see the module
    docstring); returns rows per second."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        apply_pragmas(conn, "NORMAL", 5000)
        prepare_database(conn)
        conn.executemany(
            "INSERT INTO series (id, sensor_id, metric, unit, tags, created_at)"
            " VALUES (?, ?, 'm', '', '', 0)",
            [(i, f"s{i}") for i in range(1, series + 1)],
        )
        table = "readings_hot" if layout == "hot" else "readings_cold"
        insert = f"INSERT OR IGNORE INTO {table} (series_id, ts, value) VALUES (?, ?, ?)"
        pending = 0
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            if layout != "hot":
                chunk = sorted(chunk)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, chunk)
            conn.execute("COMMIT")
            pending += len(chunk)
            if layout == "hot" and (pending >= compaction_rows or start + batch >= len(rows)):
                newest = conn.execute(
                    "SELECT ts FROM readings_hot ORDER BY ts DESC LIMIT 1"
                ).fetchone()[0]
                conn.execute("BEGIN IMMEDIATE")
                compaction.move_below(conn, int(newest) + 1)
                conn.execute("COMMIT")
                pending = 0
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    return len(rows) / elapsed if elapsed > 0 else 0.0
