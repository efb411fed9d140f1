"""The central schema: created, migrated once under a lock, a newer one refused."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from gateway.errors import StorageError
from gateway.storage.postgresql.schema import SCHEMA_VERSION, migrate, schema_version


async def test_migrate_creates_then_finds_nothing_to_do(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        assert await schema_version(conn) == 0
        assert await migrate(conn) == 0
        assert await schema_version(conn) == SCHEMA_VERSION
        assert await migrate(conn) == SCHEMA_VERSION
        assert await conn.fetchval("SELECT count(*) FROM tidegate.schema_version") == 1
        columns = await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'tidegate' AND table_name = 'readings'"
            " ORDER BY ordinal_position"
        )
        assert [(c[0], c[1]) for c in columns] == [
            ("gateway_id", "text"),
            ("sensor_id", "text"),
            ("metric", "text"),
            ("ts", "timestamp with time zone"),
            ("value", "double precision"),
            ("unit", "text"),
        ]
    finally:
        await conn.close()


async def test_concurrent_migrations_from_many_processes_all_succeed(pg_url: str) -> None:
    conns = [await asyncpg.connect(pg_url) for _ in range(4)]
    try:
        found = await asyncio.gather(*(migrate(c) for c in conns))
        # Exactly one migrated from nothing; the others waited and found it done.
        assert sorted(found) == [0] + [SCHEMA_VERSION] * 3
        assert await schema_version(conns[0]) == SCHEMA_VERSION
    finally:
        for conn in conns:
            await conn.close()


async def test_a_newer_schema_is_refused_naming_both_versions(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await migrate(conn)
        await conn.execute("UPDATE tidegate.schema_version SET version = 99")
        with pytest.raises(StorageError) as info:
            await migrate(conn)
        assert "99" in str(info.value) and f"({SCHEMA_VERSION})" in str(info.value)
    finally:
        await conn.close()
