"""The central PostgreSQL schema (``tidegate``) and its forward migrations.

The tables are those of ``docs/central.md`` (issue 13): a series dictionary keyed by
``(gateway_id, sensor_id, metric, unit, tags)``, raw readings partitioned by UTC day
(``readings_data_pYYYYMMDD``, made by :mod:`.ingest` and :mod:`.maintenance`), the 1-minute
and 1-hour rollups with their ``rollup_pending`` marks, dead letters, one row per
writing gateway, and the ``tidegate.readings`` view for people, scripts and Grafana.

``MIGRATIONS[n]`` takes the schema from version ``n`` to ``n + 1``. :func:`migrate` runs
the missing ones in ONE transaction under a transaction-scoped advisory lock, so any
number of gateways and forwarders may start at once: the first migrates, the others
wait for its commit and then find nothing to do. A database migrated by a newer
tidegate is refused (never written with an older idea of the schema).
"""

from __future__ import annotations

from typing import Any

from gateway.errors import StorageError

SCHEMA = "tidegate"

MIGRATE_LOCK = 0x7469_6465_6761_7401
"""``pg_advisory_xact_lock`` key held while migrating (bigint; "tidegat" + 1). The
other advisory locks tidegate takes are listed in ``docs/central.md``."""

MIGRATIONS: list[str] = [
    # 0 → 1: the initial schema (docs/central.md).
    """
    CREATE SCHEMA IF NOT EXISTS tidegate;
    CREATE TABLE tidegate.schema_version (version integer NOT NULL);
    INSERT INTO tidegate.schema_version (version) VALUES (0);

    CREATE TABLE tidegate.series (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        gateway_id text NOT NULL,
        sensor_id  text NOT NULL,
        metric     text NOT NULL,
        unit       text NOT NULL DEFAULT '',
        tags       text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (gateway_id, sensor_id, metric, unit, tags)
    );

    CREATE TABLE tidegate.readings_data (
        series_id bigint NOT NULL,
        ts        timestamptz NOT NULL,
        value     double precision NOT NULL,
        PRIMARY KEY (series_id, ts)
    ) PARTITION BY RANGE (ts);

    CREATE TABLE tidegate.rollup_1m (
        series_id bigint NOT NULL,
        bucket    timestamptz NOT NULL,
        vmin      double precision NOT NULL,
        vmax      double precision NOT NULL,
        vsum      double precision NOT NULL,
        n         bigint NOT NULL,
        vlast     double precision NOT NULL,
        last_ts   timestamptz NOT NULL,
        PRIMARY KEY (series_id, bucket)
    );
    CREATE TABLE tidegate.rollup_1h (LIKE tidegate.rollup_1m INCLUDING ALL);

    CREATE TABLE tidegate.rollup_pending (
        series_id bigint NOT NULL,
        bucket    timestamptz NOT NULL,
        PRIMARY KEY (series_id, bucket)
    );

    CREATE TABLE tidegate.dead_letters (
        id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        gateway_id   text NOT NULL,
        received_at  timestamptz NOT NULL,
        subscription text NOT NULL,
        topic        text NOT NULL,
        payload      bytea NOT NULL,
        payload_size integer NOT NULL,
        reason       text NOT NULL
    );
    CREATE INDEX dead_letters_by_gateway_time ON tidegate.dead_letters (gateway_id, received_at);

    CREATE TABLE tidegate.gateways (
        gateway_id     text PRIMARY KEY,
        mode           text NOT NULL CHECK (mode IN ('edge', 'direct')),
        position       bigint NOT NULL DEFAULT 0,
        forwarded      bigint NOT NULL DEFAULT 0,
        backlog        bigint NOT NULL DEFAULT 0,
        oldest_pending timestamptz,
        last_forward   timestamptz,
        updated_at     timestamptz NOT NULL DEFAULT now()
    );

    CREATE VIEW tidegate.readings AS
        SELECT s.gateway_id, s.sensor_id, s.metric, r.ts, r.value, NULLIF(s.unit, '') AS unit
        FROM tidegate.readings_data r JOIN tidegate.series s ON s.id = r.series_id;
    """,
    # 1 → 2: what each broker session of a direct-mode group holds (decision 0124): a
    # member that takes a slot over must know its subscriptions (gateway.sources.slots).
    """
    CREATE TABLE tidegate.mqtt_sessions (
        client_id  text PRIMARY KEY,
        record     text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now());
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


async def schema_version(conn: Any) -> int:
    """The version of the ``tidegate`` schema on ``conn``'s database (0: none yet)."""
    # A plain catalog query, not to_regclass(): after waiting for the migration lock it
    # must see the table another process just committed (to_regclass answers from a
    # cache that the wait did not refresh).
    table = await conn.fetchval(
        "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
        " ON n.oid = c.relnamespace WHERE n.nspname = 'tidegate' AND c.relname = 'schema_version'"
    )
    if table is None:
        return 0
    found = await conn.fetchval("SELECT max(version) FROM tidegate.schema_version")
    return int(found or 0)


def _check_not_newer(found: int) -> None:
    if found > SCHEMA_VERSION:
        raise StorageError(
            f"central schema version {found} is newer than this tidegate supports"
            f" ({SCHEMA_VERSION}): upgrade tidegate"
        )


async def migrate(conn: Any) -> int:
    """Bring the ``tidegate`` schema on ``conn`` (an asyncpg connection, outside a
    transaction) to :data:`SCHEMA_VERSION`; returns the version found.

    Raises :class:`~gateway.errors.StorageError` naming both versions if the database
    is newer than this tidegate. Errors of the driver are the caller's to convert
    (:func:`gateway.storage.postgresql.connection.convert_error`).
    """
    found = await schema_version(conn)  # the usual case: up to date, no lock taken
    _check_not_newer(found)
    if found == SCHEMA_VERSION:
        return found
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
        found = await schema_version(conn)  # another process may have migrated meanwhile
        _check_not_newer(found)
        for version in range(found, SCHEMA_VERSION):
            await conn.execute(MIGRATIONS[version])
        if found < SCHEMA_VERSION:
            await conn.execute("UPDATE tidegate.schema_version SET version = $1", SCHEMA_VERSION)
    return found
