"""The central side of edge forwarding: a gateway's row in ``tidegate.gateways`` and its
position (``docs/upstream.md``, decision 0118).

``position`` is the last outbox sequence number of the edge committed centrally. It
moves only in the transaction that commits the readings it covers, and only from the
value the forwarder expects (:func:`advance`): if another process moved it — a second
process forwarding under the same id, or an edge whose outbox went back — zero rows
match, the caller rolls back and re-reads it. So a batch is committed exactly once,
whatever crashes or retries happen around it.

Every function takes an asyncpg connection and raises the driver's errors (the caller
converts them where they enter, :func:`.connection.convert_error`).
"""

from __future__ import annotations

from typing import Any

from gateway.errors import StorageError

_CLAIM = """
INSERT INTO tidegate.gateways (gateway_id, mode) VALUES ($1, 'edge')
ON CONFLICT (gateway_id) DO NOTHING
"""
_ROW = "SELECT mode, position FROM tidegate.gateways WHERE gateway_id = $1"
_ADVANCE = """
UPDATE tidegate.gateways
SET position = $3, forwarded = forwarded + $4, backlog = $5,
    oldest_pending = CASE WHEN $6::bigint IS NULL THEN NULL
                          ELSE timestamptz 'epoch' + $6::bigint * interval '1 millisecond' END,
    last_forward = now(), updated_at = now()
WHERE gateway_id = $1 AND position = $2
"""
_REPORT = """
UPDATE tidegate.gateways
SET backlog = $2,
    oldest_pending = CASE WHEN $3::bigint IS NULL THEN NULL
                          ELSE timestamptz 'epoch' + $3::bigint * interval '1 millisecond' END,
    updated_at = now()
WHERE gateway_id = $1
"""


async def claim(conn: Any, gateway_id: str) -> int:
    """Make sure ``gateway_id`` has an edge row; returns its position. A row in direct
    mode belongs to a direct-mode group: refused (:class:`StorageError`)."""
    await conn.execute(_CLAIM, gateway_id)
    row = await conn.fetchrow(_ROW, gateway_id)
    if row is None:  # deleted between the two statements: take it again next round
        raise StorageError(f"gateway {gateway_id!r} vanished from tidegate.gateways")
    if row["mode"] != "edge":
        raise StorageError(
            f"gateway id {gateway_id!r} is used by direct-mode gateways in the central"
            " store: give this edge another upstream.gateway_id"
        )
    return int(row["position"])


async def position(conn: Any, gateway_id: str) -> int:
    """The current position of ``gateway_id`` (0 if it has no row)."""
    value = await conn.fetchval(
        "SELECT position FROM tidegate.gateways WHERE gateway_id = $1", gateway_id
    )
    return int(value or 0)


async def advance(
    conn: Any,
    gateway_id: str,
    *,
    expected: int,
    new: int,
    forwarded: int,
    backlog: int,
    oldest_pending_ms: int | None,
) -> bool:
    """Inside the batch's transaction: move the position from ``expected`` to ``new``
    and record the figures; False when the position was not ``expected`` (roll back)."""
    status = await conn.execute(
        _ADVANCE, gateway_id, expected, new, forwarded, backlog, oldest_pending_ms
    )
    return str(status).rsplit(" ", 1)[-1] == "1"


async def report(conn: Any, gateway_id: str, backlog: int, oldest_pending_ms: int | None) -> None:
    """Record the backlog without moving the position (an idle edge keeps its row
    current; a reader of ``tidegate.gateways`` sees an empty backlog as empty)."""
    await conn.execute(_REPORT, gateway_id, backlog, oldest_pending_ms)
