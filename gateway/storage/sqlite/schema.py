"""The SQLite schema and its forward migrations.

Layout (see ``docs/decisions/0003-storage-layout.md``):

* ``series``: one row per (sensor_id, metric, unit, tags); ``unit`` and ``tags`` are
  ``''`` when absent so the UNIQUE constraint holds (NULLs would never collide).
* ``readings``: ``(series_id, ts, value)`` keyed by ``(series_id, ts)``, WITHOUT ROWID:
  ~25 bytes a reading, fast per-series range scans, and idempotent inserts — a
  redelivered message hits the primary key and is ignored. ``ts`` is epoch ms UTC.
* ``dead_letters``: messages that could not be decoded, with the reason.

Since version 3 (``docs/decisions/0079-hot-table.md``) readings live in two tables behind
the ``readings`` view: ``readings_hot`` keyed ``(ts, series_id)`` takes every new
reading (appends at the right edge of one B-tree: a commit rewrites a few pages, not a
page per series), and the storage service moves rows older than a short lag into
``readings_cold`` keyed ``(series_id, ts)`` in large sorted chunks
(:mod:`gateway.storage.sqlite.compaction`). No key is ever in both: every cold row is older
than ``storage_state['cold_ceiling']`` (a move raises it), so a reading at or above the
ceiling can only collide in the hot table, and one below it is inserted only if the cold
table does not hold its key — each table's primary key keeps redeliveries out.
``readings`` (a ``UNION ALL`` view with INSTEAD OF triggers) stays the table everything
else reads; inserts through it follow the same rule, deletes reach both tables.

The schema version lives in ``PRAGMA user_version``. ``MIGRATIONS[n]`` takes a database
from version ``n`` to ``n + 1``; they run in order inside one transaction at open.
"""

from __future__ import annotations

import json
import sqlite3

from gateway.errors import StorageError
from gateway.models import Tags

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
    # 2 → 3: hot/cold split of the readings (see the module docstring). The ceiling of
    # an existing database is just above its newest reading (one index seek per
    # series): everything already stored is cold.
    """
    ALTER TABLE readings RENAME TO readings_cold;
    CREATE TABLE readings_hot (
        ts        INTEGER NOT NULL,
        series_id INTEGER NOT NULL,
        value     REAL NOT NULL,
        PRIMARY KEY (ts, series_id)
    ) WITHOUT ROWID;
    INSERT OR REPLACE INTO storage_state (key, value)
        SELECT 'cold_ceiling',
               coalesce(max((SELECT max(ts) FROM readings_cold WHERE series_id = s.id)) + 1, 0)
        FROM series AS s;
    CREATE VIEW readings (series_id, ts, value) AS
        SELECT series_id, ts, value FROM readings_cold
        UNION ALL
        SELECT series_id, ts, value FROM readings_hot;
    CREATE TRIGGER readings_insert INSTEAD OF INSERT ON readings BEGIN
        INSERT INTO readings_hot (ts, series_id, value)
            SELECT NEW.ts, NEW.series_id, NEW.value
            WHERE NOT EXISTS (
                SELECT 1 FROM readings_cold WHERE series_id = NEW.series_id AND ts = NEW.ts
            );
    END;
    CREATE TRIGGER readings_delete INSTEAD OF DELETE ON readings BEGIN
        DELETE FROM readings_hot WHERE ts = OLD.ts AND series_id = OLD.series_id;
        DELETE FROM readings_cold WHERE series_id = OLD.series_id AND ts = OLD.ts;
    END;
    """,
    # 3 → 4: the forwarding outbox (gateway/storage/sqlite/outbox.py, docs/upstream.md,
    # decision 0118). Filled only while [upstream] is configured, by a trigger on
    # readings_hot that the store creates then (nothing is installed otherwise).
    # outbox: a copy of every newly stored reading, seq = commit order;
    # outbox_marks: when each batch that added rows was written (its first seq).
    """
    CREATE TABLE outbox (
        seq       INTEGER PRIMARY KEY,
        series_id INTEGER NOT NULL,
        ts        INTEGER NOT NULL,
        value     REAL NOT NULL
    );
    CREATE TABLE outbox_marks (
        seq         INTEGER PRIMARY KEY,
        received_at INTEGER NOT NULL
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)

HOT = "readings_hot"
COLD = "readings_cold"
CEILING_KEY = "cold_ceiling"
"""``storage_state`` key: every cold row's ``ts`` is below it (:mod:`.compaction`)."""


def statements(script: str) -> list[str]:
    """Split ``script`` into complete statements (a trigger body holds ``;`` too)."""
    out: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending.strip())
            pending = ""
    if pending.strip(" \n;"):
        raise StorageError(f"incomplete statement in a migration: {pending.strip()[:80]}")
    return out


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
            for statement in statements(MIGRATIONS[version]):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def prepare_database(conn: sqlite3.Connection) -> None:
    """Create or migrate the schema. A new database gets incremental auto-vacuum, which
    must be chosen before the first table exists."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    migrate(conn)


def cold_ceiling(conn: sqlite3.Connection) -> int:
    """The current hot/cold boundary (read inside the writer's transaction)."""
    row = conn.execute("SELECT value FROM storage_state WHERE key = ?", (CEILING_KEY,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def has_hot_table(conn: sqlite3.Connection) -> bool:
    """Whether the database has the hot/cold layout (schema 3+); an older one opened
    read-only keeps all readings in the ``readings`` table."""
    row = conn.execute(
        f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{HOT}'"
    ).fetchone()
    return row is not None


def tags_to_text(tags: Tags) -> str:
    """Canonical text form of tags as stored in ``series.tags`` (``''`` for none)."""
    if not tags:
        return ""
    return json.dumps(dict(tags), separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def tags_from_text(text: str) -> dict[str, str]:
    """Inverse of :func:`tags_to_text`."""
    return json.loads(text) if text else {}
