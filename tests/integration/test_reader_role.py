"""deploy/postgresql/reader-role.sql makes a role that reads everything of the central
schema (tables, the readings view, partitions and tables created later) and writes
nothing: not even inside a transaction it declares read-write."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.support.fleet import create_owner, create_reader, fleet_rows, load

pytestmark = pytest.mark.integration

TABLES = (
    "schema_version",
    "series",
    "readings_data",
    "readings_data_p20261130",
    "rollup_1m",
    "rollup_1h",
    "rollup_pending",
    "dead_letters",
    "gateways",
    "readings",
)
WRITES = (
    "INSERT INTO tidegate.readings_data VALUES (1, now(), 1)",
    "INSERT INTO tidegate.series (gateway_id, sensor_id, metric) VALUES ('x', 'y', 'z')",
    "UPDATE tidegate.gateways SET position = 0",
    "DELETE FROM tidegate.rollup_pending",
    "TRUNCATE tidegate.dead_letters",
    "CREATE TABLE tidegate.mine (x int)",
    "DROP TABLE tidegate.rollup_1h",
    "ALTER TABLE tidegate.series ADD COLUMN x int",
    "CREATE TABLE tidegate.readings_data_p20300101 PARTITION OF tidegate.readings_data"
    " FOR VALUES FROM ('2030-01-01') TO ('2030-01-02')",
)


@pytest.fixture
async def urls(pg_url: str) -> AsyncIterator[tuple[str, str]]:
    owner_url = await create_owner(pg_url)
    conn = await asyncpg.connect(owner_url)
    try:
        await load(conn, fleet_rows())
    finally:
        await conn.close()
    create_reader(pg_url)
    yield owner_url, create_reader(pg_url)  # twice: running the file again changes nothing


async def test_the_reader_reads_everything(urls: tuple[str, str]) -> None:
    owner_url, reader_url = urls
    reader = await asyncpg.connect(reader_url)
    try:
        for table in TABLES:
            await reader.fetch(f"SELECT * FROM tidegate.{table} LIMIT 1")
        assert await reader.fetchval("SELECT count(*) FROM tidegate.readings") == 12 * 1080 + 1
        # What the owner creates later (a new day's partition, a later migration's table)
        # is readable too: ALTER DEFAULT PRIVILEGES, and partitions through their parent.
        owner = await asyncpg.connect(owner_url)
        try:
            await owner.execute(
                "CREATE TABLE tidegate.readings_data_p20261201 PARTITION OF"
                " tidegate.readings_data FOR VALUES FROM ('2026-12-01') TO ('2026-12-02');"
                "INSERT INTO tidegate.readings_data VALUES (1, '2026-12-01T00:00:00Z', 5);"
                "CREATE TABLE tidegate.later_migration (x int); INSERT INTO"
                " tidegate.later_migration VALUES (7)"
            )
        finally:
            await owner.close()
        assert await reader.fetchval("SELECT x FROM tidegate.later_migration") == 7
        assert (
            await reader.fetchval(
                "SELECT value FROM tidegate.readings_data WHERE ts = '2026-12-01T00:00:00Z'"
            )
            == 5
        )
    finally:
        await reader.close()


async def test_the_reader_writes_nothing(urls: tuple[str, str]) -> None:
    _owner_url, reader_url = urls
    reader = await asyncpg.connect(reader_url)
    try:
        for statement in WRITES:
            # Its sessions start read-only...
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await reader.execute(statement)
            # ...and without that setting the privileges still refuse.
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with reader.transaction():
                    await reader.execute("SET TRANSACTION READ WRITE")
                    await reader.execute(statement)
    finally:
        await reader.close()
