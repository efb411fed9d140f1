"""The storage part of ``tidegate stats``: tiers, watermarks, vacuum, wear, corruption.

Read-only: everything comes from the database file (``storage_state``, page counts)
and the directory beside it (corrupt copies, the lock), so it works whether or not a
gateway is running.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from gateway.parsing import format_size
from gateway.storage.sqlite import outbox
from gateway.storage.sqlite.integrity import corrupt_copies
from gateway.storage.sqlite.lock import holder
from gateway.storage.sqlite.retention import page_stats
from gateway.storage.sqlite.rollups import PURGED_BEFORE, TIERS, WATERMARK, get_state
from gateway.validation import format_ms

_VACUUM_MODES = {0: "none (run `tidegate vacuum`)", 1: "full", 2: "incremental"}


def storage_report(conn: sqlite3.Connection, path: Path) -> dict[str, Any]:
    """Plain data for JSON output."""
    pages = page_stats(conn)
    tiers: dict[str, Any] = {}
    for tier in TIERS:
        try:
            rows = int(conn.execute(f"SELECT count(*) FROM {tier.table}").fetchone()[0])
        except sqlite3.OperationalError:
            rows = 0  # a version-1 database: no rollups yet
        tiers[tier.name] = {
            "rows": rows,
            "watermark_ms": get_state(conn, WATERMARK[tier.name]),
            "purged_before_ms": get_state(conn, PURGED_BEFORE[tier.name]),
        }
    wear = get_state_text(conn, "wear.bytes_per_reading")
    return {
        "auto_vacuum": _VACUUM_MODES.get(pages.auto_vacuum, str(pages.auto_vacuum)),
        "page_size": pages.page_size,
        "free_pages": pages.freelist_count,
        "free_bytes": pages.free_bytes,
        "raw_purged_before_ms": get_state(conn, PURGED_BEFORE["raw"]),
        "tiers": tiers,
        "wear_bytes_per_reading": float(wear) if wear else None,
        "wear_sampled_at_ms": get_state(conn, "wear.sampled_at"),
        "corrupt_copies": [str(p) for p in corrupt_copies(path)],
        "gateway_pid": holder(path),
        "outbox": _outbox(conn),
    }


def _outbox(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The forwarding outbox (``docs/upstream.md``): None when it never held anything."""
    try:
        forwarding = outbox.enabled(conn)
        left = outbox.pending(conn)
    except sqlite3.OperationalError:
        return None  # a database older than schema 4
    if not forwarding and left.last_seq == 0:
        return None
    return {
        "forwarding": forwarding,
        "pending": left.count,
        "oldest_pending_ms": left.oldest_received_ms,
        "position": left.position,
        "dropped": left.dropped,
    }


def get_state_text(conn: sqlite3.Connection, key: str) -> str | None:
    try:
        row = conn.execute("SELECT value FROM storage_state WHERE key = ?", (key,)).fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None or row[0] is None else str(row[0])


def report_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """``(label, text)`` lines for the table output."""

    def when(ms: int | None) -> str:
        return format_ms(ms) if ms else "-"

    lines = [
        ("vacuum", f"{report['auto_vacuum']}, {format_size(report['free_bytes'])} free in file"),
        ("raw since", when(report["raw_purged_before_ms"])),
    ]
    for name, tier in report["tiers"].items():
        lines.append(
            (
                f"rollup {name}",
                f"{tier['rows']:,} rows, complete to {when(tier['watermark_ms'])}"
                + (
                    f", kept from {when(tier['purged_before_ms'])}"
                    if tier["purged_before_ms"]
                    else ""
                ),
            )
        )
    wear = report["wear_bytes_per_reading"]
    lines.append(
        (
            "disk writes",
            f"{wear:.0f} bytes/reading (at {when(report['wear_sampled_at_ms'])})"
            if wear is not None
            else "- (measured by a running gateway every 10 min)",
        )
    )
    box = report.get("outbox")
    if box is not None:
        text = f"{box['pending']:,} readings not yet forwarded"
        if box["oldest_pending_ms"]:
            text += f" (oldest written {when(box['oldest_pending_ms'])})"
        text += f"; central position {box['position']:,}"
        if box["dropped"]:
            text += f"; {box['dropped']:,} DROPPED for space"
        if not box["forwarding"]:
            text += "; forwarding is off ([upstream] not configured)"
        lines.append(("outbox", text))
    pid = report["gateway_pid"]
    lines.append(("gateway", "not running" if pid is None else f"running (pid {pid or '?'})"))
    copies = report["corrupt_copies"]
    if copies:
        lines.append(("CORRUPT", f"{len(copies)}: " + ", ".join(copies)))
    return lines
