"""Client-id slot claims of a direct-mode group as PostgreSQL advisory locks
(:class:`~gateway.storage.base.SlotLocks`; the policy is :mod:`gateway.sources.slots`,
the design ``docs/decisions/0124``).

One dedicated connection per process, held for the process's life, outside any
transaction pool (advisory locks are per session: a pooler in transaction mode would
lose them):

* joining the group takes a *shared* advisory lock on ``(group key, MEMBER)``: the
  members are the sessions holding it, counted in ``pg_locks``;
* a slot is an *exclusive* session lock on ``(group key, slot)``, taken with
  ``pg_try_advisory_lock`` (never waits);
* everything is released when the session ends — a ``kill -9`` closes the socket and
  the server ends the session at once; a host that vanishes (power, network) is found
  by the server's TCP keepalive and ``tcp_user_timeout``, set on this session to about
  ``keepalive_s`` × 3 (the server's defaults would take hours).

The two-integer lock form is used, so these keys can never meet a single-``bigint``
advisory lock (maintenance, migrations) of the same database.

The same connection reads and writes ``tidegate.mqtt_sessions``: per slot session (its
client id), the subscriptions its driver last recorded, for the member that drives it
next. Calls are serialised (one asyncpg connection runs one statement at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Awaitable, Callable

import asyncpg

from gateway.errors import StorageError
from gateway.storage.base import SlotSurvey

MEMBER = 65_536
"""Second key of the shared member lock (slot numbers stay below it)."""

Connect = Callable[[], Awaitable[asyncpg.Connection]]

_SURVEY = """
SELECT objid::bigint AS key, pid = pg_backend_pid() AS mine
FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1::bigint::oid
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def group_key(name: str) -> int:
    """The first lock key of a group: a stable 31-bit hash of its name (the base client
    id: the slots' broker sessions are ``<name>-<slot>``)."""
    return zlib.crc32(f"tidegate.slots/{name}".encode()) & 0x7FFF_FFFF


class PostgresSlotLocks:
    """:class:`~gateway.storage.base.SlotLocks` on one dedicated asyncpg connection
    made by ``connect``; ``keepalive_s`` tunes how soon the server notices this process's
    host is gone (idle, probe interval; 3 probes)."""

    def __init__(self, connect: Connect, name: str, keepalive_s: int = 10) -> None:
        self._connect = connect
        self.name = name
        self.key = group_key(name)
        self.keepalive_s = keepalive_s
        self._conn: asyncpg.Connection | None = None
        self._busy = asyncio.Lock()

    async def open(self) -> None:
        await self.close()
        try:
            conn = await self._connect()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"slot locks: cannot connect: {exc}") from exc
        try:
            k = str(self.keepalive_s)
            # Server side of this session: notice a vanished client in ~3 × keepalive_s.
            # (Ignored on a Unix socket, where a dead process is seen at once anyway.)
            await conn.execute(
                "SELECT set_config('tcp_keepalives_idle', $1, false),"
                " set_config('tcp_keepalives_interval', $1, false),"
                " set_config('tcp_keepalives_count', '3', false),"
                " set_config('tcp_user_timeout', $2, false)",
                k,
                str(self.keepalive_s * 3 * 1000),
            )
            await conn.execute("SELECT pg_advisory_lock_shared($1, $2)", self.key, MEMBER)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            with contextlib.suppress(Exception):
                conn.terminate()
            raise StorageError(f"slot locks: cannot join the group: {exc}") from exc
        self._conn = conn

    def _live(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            raise StorageError("slot locks: the lock connection is closed")
        return self._conn

    async def survey(self) -> SlotSurvey:
        conn = self._live()
        try:
            async with self._busy:
                rows = await conn.fetch(_SURVEY, self.key)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"slot locks: survey failed: {exc}") from exc
        members = 0
        mine: set[int] = set()
        taken: set[int] = set()
        for row in rows:
            key = int(row["key"])
            if key == MEMBER:
                members += 1
                continue
            taken.add(key)
            if row["mine"]:
                mine.add(key)
        if members == 0:
            # Our own member lock is not there: the session is not the one we joined with.
            raise StorageError("slot locks: this process's member claim is gone")
        return SlotSurvey(members, frozenset(mine), frozenset(taken))

    async def try_claim(self, slot: int) -> bool:
        if not 0 <= slot < MEMBER:
            raise ValueError(f"slot {slot} out of range")
        conn = self._live()
        try:
            async with self._busy:
                claimed = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", self.key, slot)
            return bool(claimed)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"slot locks: claim failed: {exc}") from exc

    async def release(self, slot: int) -> None:
        conn = self._live()
        try:
            async with self._busy:
                await conn.execute("SELECT pg_advisory_unlock($1, $2)", self.key, slot)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"slot locks: release failed: {exc}") from exc

    def client_id(self, slot: int) -> str:
        """The broker client id of ``slot``."""
        return f"{self.name}-{slot}"

    async def load_record(self, slot: int) -> str | None:
        conn = self._live()
        try:
            async with self._busy:
                text = await conn.fetchval(
                    "SELECT record FROM tidegate.mqtt_sessions WHERE client_id = $1",
                    self.client_id(slot),
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"slot locks: cannot read session record: {exc}") from exc
        return None if text is None else str(text)

    async def save_record(self, slot: int, record: str) -> None:
        conn = self._live()
        try:
            async with self._busy:
                await conn.execute(
                    "INSERT INTO tidegate.mqtt_sessions (client_id, record) VALUES ($1, $2)"
                    " ON CONFLICT (client_id)"
                    " DO UPDATE SET record = EXCLUDED.record, updated_at = now()",
                    self.client_id(slot),
                    record,
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"slot locks: cannot write session record: {exc}") from exc

    async def forget_record(self, slot: int) -> None:
        conn = self._live()
        try:
            async with self._busy:
                await conn.execute(
                    "DELETE FROM tidegate.mqtt_sessions WHERE client_id = $1", self.client_id(slot)
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"slot locks: cannot drop session record: {exc}") from exc

    async def recorded(self) -> frozenset[int]:
        conn = self._live()
        prefix = f"{self.name}-"
        try:
            async with self._busy:
                rows = await conn.fetch(
                    "SELECT client_id FROM tidegate.mqtt_sessions"
                    " WHERE left(client_id, $2) = $1 AND record <> '{}'",
                    prefix,
                    len(prefix),
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"slot locks: cannot list session records: {exc}") from exc
        slots = set()
        for row in rows:
            tail = str(row["client_id"])[len(prefix) :]
            if tail.isdigit() and int(tail) < MEMBER:
                slots.add(int(tail))
        return frozenset(slots)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        try:
            async with asyncio.timeout(5):
                await conn.close()  # ends the session: every claim goes with it
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn.terminate()
