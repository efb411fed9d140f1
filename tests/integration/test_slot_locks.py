"""The PostgreSQL slot claims of a direct-mode group (gateway.storage.postgresql.slot_locks)
on a real server: claims are exclusive and counted, a member's claims go when it closes,
and when its process is killed with SIGKILL — at once, not after a timeout — and the
lock session carries the keepalive settings that find a vanished host."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from gateway.errors import StorageError
from gateway.storage.postgresql.schema import migrate
from gateway.storage.postgresql.slot_locks import PostgresSlotLocks, group_key

ROOT = Path(__file__).resolve().parents[2]


def locks(url: str, name: str = "tidegate-test", keepalive_s: int = 10) -> PostgresSlotLocks:
    return PostgresSlotLocks(lambda: asyncpg.connect(url), name, keepalive_s)


async def test_claims_are_exclusive_counted_and_released_on_close(pg_url: str) -> None:
    a, b, other = locks(pg_url), locks(pg_url), locks(pg_url, "another-group")
    await a.open()
    await b.open()
    await other.open()
    try:
        assert await a.try_claim(0) and await a.try_claim(1)
        assert not await b.try_claim(0)
        assert await b.try_claim(2)
        assert await other.try_claim(0), "another group's slot 0 is another lock"
        seen = await b.survey()
        assert (seen.members, seen.mine, seen.taken) == (2, {2}, {0, 1, 2})
        await a.release(1)
        assert (await b.survey()).taken == {0, 2}
        await a.close()
        seen = await b.survey()
        assert (seen.members, seen.taken) == (1, {2})
        assert await b.try_claim(0)
    finally:
        for held in (a, b, other):
            await held.close()
    with pytest.raises(StorageError):
        await a.survey()


async def test_the_lock_session_finds_a_vanished_host(pg_url: str) -> None:
    held = locks(pg_url, keepalive_s=7)
    await held.open()
    try:
        conn = held._live()
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in (
                "tcp_keepalives_idle",
                "tcp_keepalives_interval",
                "tcp_keepalives_count",
                "tcp_user_timeout",
            )
        }
        assert settings == {
            "tcp_keepalives_idle": "7",
            "tcp_keepalives_interval": "7",
            "tcp_keepalives_count": "3",
            "tcp_user_timeout": "21000",
        }
    finally:
        await held.close()


HOLDER = """
import asyncio, sys, asyncpg
from gateway.storage.postgresql.slot_locks import PostgresSlotLocks
async def main():
    held = PostgresSlotLocks(lambda: asyncpg.connect(sys.argv[1]), "tidegate-test", 60)
    await held.open()
    assert await held.try_claim(3) and await held.try_claim(5)
    print("held", flush=True)
    await asyncio.sleep(120)
asyncio.run(main())
"""


async def test_a_killed_members_claims_go_at_once(pg_url: str) -> None:
    survivor = locks(pg_url)
    await survivor.open()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, pg_url], stdout=subprocess.PIPE, cwd=ROOT, text=True
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.strip() == "held"
        seen = await survivor.survey()
        assert (seen.members, seen.taken) == (2, {3, 5})
        proc.kill()
        proc.wait(10)
        # The server sees the socket close and ends the session: the claims go without
        # the keepalive wait (3 x 60 s for this holder), well within the bound here.
        async with asyncio.timeout(15):
            while (await survivor.survey()).taken:
                await asyncio.sleep(0.02)
        assert (await survivor.survey()).members == 1
        assert await survivor.try_claim(3) and await survivor.try_claim(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await survivor.close()


def test_group_keys_are_stable_and_31_bit() -> None:
    assert group_key("tidegate") == group_key("tidegate")
    assert group_key("tidegate") != group_key("tidegate-2")
    assert 0 <= group_key("x" * 200) < 2**31


async def test_session_records_are_shared_by_the_group(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    a, b, other = locks(pg_url), locks(pg_url), locks(pg_url, "another-group")
    for held in (a, b, other):
        await held.open()
    try:
        assert await b.load_record(3) is None
        await a.save_record(3, '{"f":1}')
        await a.save_record(9, "{}")  # a session that holds nothing: not listed
        await other.save_record(4, '{"g":1}')
        assert await b.load_record(3) == '{"f":1}'
        await b.save_record(3, '{"f":2}')
        assert await a.load_record(3) == '{"f":2}'
        assert await a.recorded() == {3} and await other.recorded() == {4}
        await b.forget_record(3)
        assert await a.load_record(3) is None and await a.recorded() == frozenset()
    finally:
        for held in (a, b, other):
            await held.close()
