"""The SQLite schema and its forward migrations.

Layout (see ``docs/decisions/0003-storage-layout.md``):

* ``series``: one row per (sensor_id, metric, unit, tags); ``unit`` and ``tags`` are
  ``''`` when absent so the UNIQUE constraint holds (NULLs would never collide).
* ``readings``: ``(series_id, ts, value)`` keyed by ``(series_id, ts)``, WITHOUT ROWID:
  ~25 bytes a reading, fast per-series range scans, and idempotent inserts — a
  redelivered message hits the primary key and is ignored. ``ts`` is epoch ms UTC.
* ``dead_letters``: messages that could not be decoded, with the reason.

The schema version lives in ``PRAGMA user_version``. ``MIGRATIONS[n]`` takes a database
from version ``n`` to ``n + 1``; they run in order inside one transaction at open.
"""

from __future__ import annotations

import sqlite3

from gateway.errors import StorageError

MIGRATIONS: list[str] = [
    # 0 → 1: the initial schema.
    """
    CREATE TABLE series (
        id        INTEGER PRIMARY KEY,
        sensor_id TEXT NOT NULL,
        metric    TEXT NOT NULL,
        unit      TEXT NOT NULL DEFAULT '',
        tags      TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        UNIQUE (sensor_id, metric, unit, tags)
    );
    CREATE TABLE readings (
        series_id INTEGER NOT NULL,
        ts        INTEGER NOT NULL,
        value     REAL NOT NULL,
        PRIMARY KEY (series_id, ts)
    ) WITHOUT ROWID;
    CREATE TABLE dead_letters (
        id           INTEGER PRIMARY KEY,
        received_at  INTEGER NOT NULL,
        subscription TEXT NOT NULL,
        topic        TEXT NOT NULL,
        payload      BLOB NOT NULL,
        payload_size INTEGER NOT NULL,
        reason       TEXT NOT NULL
    );
    CREATE INDEX dead_letters_by_time ON dead_letters (received_at);
    """,
    # 1 → 2: rollup tiers and storage bookkeeping (gateway/storage, docs/storage.md).
    # rollup_<tier>: one row per (series, bucket start ms); avg = vsum / n; vlast is the
    # value at last_ts. Filled in the background from raw readings (no backfill here:
    # a big version-1 database is rolled up in small steps after the upgrade).
    # rollup_dirty: 1-minute buckets that received late data, recomputed in the background.
    # storage_state: watermarks and counters of the maintenance service.
    """
    CREATE TABLE rollup_1m (
        series_id INTEGER NOT NULL,
        bucket    INTEGER NOT NULL,
        vmin      REAL NOT NULL,
        vmax      REAL NOT NULL,
        vsum      REAL NOT NULL,
        n         INTEGER NOT NULL,
        vlast     REAL NOT NULL,
        last_ts   INTEGER NOT NULL,
        PRIMARY KEY (series_id, bucket)
    ) WITHOUT ROWID;
    CREATE TABLE rollup_1h (
        series_id INTEGER NOT NULL,
        bucket    INTEGER NOT NULL,
        vmin      REAL NOT NULL,
        vmax      REAL NOT NULL,
        vsum      REAL NOT NULL,
        n         INTEGER NOT NULL,
        vlast     REAL NOT NULL,
        last_ts   INTEGER NOT NULL,
        PRIMARY KEY (series_id, bucket)
    ) WITHOUT ROWID;
    CREATE TABLE rollup_dirty (
        series_id INTEGER NOT NULL,
        bucket    INTEGER NOT NULL,
        PRIMARY KEY (series_id, bucket)
    ) WITHOUT ROWID;
    CREATE TABLE storage_state (
        key   TEXT PRIMARY KEY,
        value
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring ``conn``'s database to :data:`SCHEMA_VERSION`; returns the version found.

    Refuses a database written by a newer tidegate (its version is higher than ours).
    """
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise StorageError(
            f"database schema version {found} is newer than this tidegate supports ({SCHEMA_VERSION})"
        )
    if found == SCHEMA_VERSION:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        for version in range(found, SCHEMA_VERSION):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found
