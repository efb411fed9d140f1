"""The storage part of ``tidegate stats --store``: the central store's schema version,
table and partition sizes, pending rollup work, and each gateway's forward position.

Read-only and cheap: sizes from ``pg_total_relation_size`` (tables with their indexes
and TOAST), row counts of partitions from the planner's estimate (``reltuples``), never
a count of the readings.
"""

from __future__ import annotations

from typing import Any

from gateway.parsing import format_size
from gateway.storage.base import StorageDetails
from gateway.storage.postgresql.queries import Connection
from gateway.validation import format_ms

TABLES = (
    "series",
    "readings_data",
    "rollup_1m",
    "rollup_1h",
    "rollup_pending",
    "dead_letters",
    "gateways",
)


async def storage_details(conn: Connection, gateway: str | None = None) -> StorageDetails:
    """Plain data for JSON and ``(label, text)`` lines for people; the forwarding
    figures of one gateway with ``gateway``."""
    data = await _report(conn, gateway)
    return StorageDetails(data, _lines(data))


async def _report(conn: Connection, gateway: str | None) -> dict[str, Any]:
    version = None
    if await conn.fetchval("SELECT to_regclass('tidegate.schema_version') IS NOT NULL"):
        version = await conn.fetchval("SELECT max(version) FROM tidegate.schema_version")
    tables: dict[str, int] = {}
    for name in TABLES:
        # A partitioned table has no storage of its own: sum its partitions.
        size = await conn.fetchval(
            "SELECT CASE WHEN c.relkind = 'p' THEN (SELECT sum(pg_total_relation_size(t.relid))"
            " FROM pg_partition_tree(c.oid) t) ELSE pg_total_relation_size(c.oid) END::bigint"
            " FROM pg_class c WHERE c.oid = to_regclass($1)",
            f"tidegate.{name}",
        )
        tables[name] = int(size or 0)
    partitions = [
        {"name": r[0], "bytes": int(r[1]), "rows_estimate": max(0, int(r[2]))}
        for r in await conn.fetch(
            "SELECT c.relname, pg_total_relation_size(c.oid), c.reltuples::bigint"
            " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'tidegate.readings_data'::regclass ORDER BY c.relname"
        )
    ]
    pending = await conn.fetchrow(
        "SELECT count(*), min(bucket), count(DISTINCT series_id) FROM tidegate.rollup_pending"
    )
    where = "" if gateway is None else " WHERE gateway_id = $1"
    args = () if gateway is None else (gateway,)
    gateways = [
        {
            "gateway_id": r[0],
            "mode": r[1],
            "position": int(r[2]),
            "forwarded": int(r[3]),
            "backlog": int(r[4]),
            "oldest_pending_ms": r[5],
            "last_forward_ms": r[6],
            "updated_at_ms": r[7],
        }
        for r in await conn.fetch(
            "SELECT gateway_id, mode, position, forwarded, backlog, oldest_pending,"
            f" last_forward, updated_at FROM tidegate.gateways{where}"
            ' ORDER BY gateway_id COLLATE "C"',
            *args,
        )
    ]
    return {
        "backend": "postgresql",
        "server_version": await conn.fetchval("SHOW server_version"),
        "database": await conn.fetchval("SELECT current_database()"),
        "schema_version": version,
        "total_bytes": sum(tables.values()),
        "table_bytes": tables,
        "partitions": partitions,
        "rollup_pending": {
            "minutes": int(pending[0]),
            "series": int(pending[2]),
            "oldest_ms": pending[1],
        },
        "gateways": gateways,
    }


def _when(ms: int | None) -> str:
    return format_ms(ms) if ms is not None else "-"


def _lines(data: dict[str, Any]) -> list[tuple[str, str]]:
    tables = data["table_bytes"]
    lines = [
        (
            "backend",
            f"PostgreSQL {data['server_version']}, database {data['database']},"
            f" schema version {data['schema_version'] if data['schema_version'] is not None else '-'}",
        ),
        (
            "size",
            f"{format_size(data['total_bytes'])} (readings {format_size(tables['readings_data'])},"
            f" rollups {format_size(tables['rollup_1m'] + tables['rollup_1h'])},"
            f" dead letters {format_size(tables['dead_letters'])})",
        ),
    ]
    parts = data["partitions"]
    if parts:
        lines.append(
            (
                "partitions",
                f"{len(parts)}: {parts[0]['name']} … {parts[-1]['name']}"
                if len(parts) > 1
                else f"1: {parts[0]['name']}",
            )
        )
    else:
        lines.append(("partitions", "none"))
    pending = data["rollup_pending"]
    lines.append(
        (
            "rollup pending",
            f"{pending['minutes']:,} minutes of {pending['series']:,} series"
            + (f", oldest {_when(pending['oldest_ms'])}" if pending["minutes"] else ""),
        )
    )
    for g in data["gateways"]:
        if g["mode"] == "edge":
            text = (
                f"edge: forwarded {g['forwarded']:,}, backlog {g['backlog']:,}"
                f" (oldest {_when(g['oldest_pending_ms'])}),"
                f" last forward {_when(g['last_forward_ms'])}, position {g['position']:,}"
            )
        else:
            text = f"direct, seen {_when(g['updated_at_ms'])}"
        lines.append((f"gateway {g['gateway_id']}", text))
    return lines
