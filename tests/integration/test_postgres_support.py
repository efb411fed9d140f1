"""The test PostgreSQL itself (tests/support/postgres.py): it starts on a loopback port
of its own, a kill -9 of the postmaster and all its children loses no committed row and
keeps no uncommitted one, and it comes back on the same port and data dir."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import asyncpg
import pytest

from tests.support.postgres import HOST, PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of the test's own: this test kills it."""
    with PostgresServer(max_connections=20) as server:
        yield server


async def test_session_server_gives_each_test_a_fresh_database(
    postgres: PostgresServer, pg_url: str
) -> None:
    assert f"@{HOST}:{postgres.port}/" in pg_url
    assert postgres.port != 5432
    conn = await asyncpg.connect(pg_url)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        )
        assert await conn.fetchval("SHOW fsync") == "on"
        assert await conn.fetchval("SHOW listen_addresses") == HOST
        assert await conn.fetchval("SHOW server_encoding") == "UTF8"
        assert await conn.fetchval("SHOW lc_collate") == "C"
        # Never run as root (PostgreSQL refuses to).
        user = await conn.fetchval("SELECT current_user")
        assert user == "postgres"
    finally:
        await conn.close()
    pid = postgres.postmaster_pid()
    assert pid is not None
    assert os.stat(f"/proc/{pid}").st_uid != 0


async def test_kill9_keeps_committed_rows_and_drops_uncommitted(
    own_server: PostgresServer,
) -> None:
    server = own_server
    url = await server.create_database_async("crash")
    port = server.port
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE t (id integer PRIMARY KEY, v text NOT NULL)")
    await conn.executemany("INSERT INTO t VALUES ($1, $2)", [(i, f"v{i}") for i in range(1000)])
    # An open transaction with rows that must vanish in the crash.
    pending = await asyncpg.connect(url)
    tx = pending.transaction()
    await tx.start()
    await pending.execute("INSERT INTO t SELECT g, 'lost' FROM generate_series(1000, 1999) g")
    postmaster = server.postmaster_pid()
    assert postmaster is not None

    server.kill9()
    assert server.postmaster_pid() is None
    with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
        await asyncio.wait_for(conn.fetchval("SELECT 1"), 10)
    conn.terminate()
    pending.terminate()

    server.start()
    assert server.port == port
    assert server.postmaster_pid() not in (None, postmaster)
    rows = await server.fetch("SELECT count(*) AS n, max(id) AS top FROM t", database="crash")
    assert (rows[0]["n"], rows[0]["top"]) == (1000, 999)
    assert "redo" in server.log_path.read_text() or "recovery" in server.log_path.read_text()

    # A clean stop and start keeps everything as well.
    await server.execute("INSERT INTO t VALUES (1000, 'after')", database="crash")
    server.stop()
    assert server.postmaster_pid() is None
    server.start()
    assert await server.fetch("SELECT count(*) FROM t", database="crash") == [(1001,)]
