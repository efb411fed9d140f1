"""The running gateway's live status, for ``tidegate stats``.

``tidegate stats`` reads the database, not the running process (whose HTTP API may be
off, token-protected or on a port chosen at start). So the gateway writes a small
``<database>.status.json`` every :data:`STATUS_INTERVAL_S` seconds, when its readiness
changes and when it stops:
readiness, lag, the broker's counters and a few totals (``docs/decisions/0094``). The
file is advisory — written atomically (temp file + rename) but not fsynced; a reader
trusts it only while it is fresh and its process is alive.

The running gateway's ``status_service`` (:mod:`gateway.app`) writes it and re-evaluates
the lag state every second, so "caught up" is noticed when traffic stops too.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from gateway.health import readiness
from gateway.metrics import Metrics

STATUS_INTERVAL_S = 10.0
STALE_AFTER_S = 3 * STATUS_INTERVAL_S
VERSION = 1


def status_path(database: Path) -> Path:
    """``<database>.status.json``."""
    database = Path(database)
    return database.with_name(database.name + ".status.json")


def snapshot(metrics: Metrics, connected: bool, running: bool = True) -> dict[str, Any]:
    """What the status file holds, from the gateway's memory (``connected``: every
    broker connection is up)."""
    verdict = readiness(metrics, connected)
    lag = metrics.lag
    return {
        "version": VERSION,
        "pid": os.getpid(),
        "running": running,
        "written_at": round(time.time(), 3),
        "status": verdict.status if running else "stopped",
        "reasons": verdict.reasons if running else [],
        "lag": {
            "behind": lag.behind,
            "behind_since": round(lag.since, 3) if lag.behind else None,
            "reading_age_s": round(lag.reading_age_s, 3),
            "receipt_to_commit_s": round(lag.receipt_to_commit_s, 4),
        },
        "broker": {
            "dropped": lag.broker_dropped,
            "dropped_since_start": lag.dropped_since_start,
            "stored_messages": lag.broker_stored,
            "stored_bytes": lag.broker_stored_bytes,
        },
        "upstream": upstream_status(metrics),
        "totals": {
            "messages_received": metrics.messages_received,
            "readings_stored": metrics.readings_stored,
            "messages_dead_lettered": metrics.messages_dead_lettered,
            "reconnects": metrics.reconnects,
        },
    }


def upstream_status(metrics: Metrics) -> dict[str, Any] | None:
    """Forwarding figures for the status file (``None`` when not forwarding)."""
    up = metrics.upstream
    if not up.configured:
        return None
    return {
        "gateway_id": up.gateway_id,
        "connected": up.connected,
        "unreachable_since": round(up.unreachable_since, 3) if up.unreachable_since else None,
        "last_error": up.last_error,
        "position": up.position,
        "pending": up.pending,
        "oldest_pending_age_s": round(up.oldest_pending_age_s, 3),
        "forwarded": up.forwarded,
        "sent": up.sent,
        "forward_rate": round(up.forward_rate, 3),
        "ingest_rate": round(up.ingest_rate, 3),
        "buffer_hours_left": (
            None if up.buffer_hours_left is None else round(up.buffer_hours_left, 3)
        ),
        "errors": up.errors,
        "conflicts": up.conflicts,
        "dropped": up.dropped,
    }


def write_status(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` atomically (an OSError is swallowed: advisory)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def read_status(path: Path, now: float | None = None) -> dict[str, Any] | None:
    """The status file with ``live`` set (True when fresh and its process is alive);
    None when there is none or it is unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    now = time.time() if now is None else now
    age = now - float(data.get("written_at", 0))
    alive = False
    pid = data.get("pid")
    if isinstance(pid, int) and pid > 0:
        try:
            os.kill(pid, 0)
            alive = True
        except PermissionError:
            alive = True
        except OSError:
            alive = False
    data["age_s"] = round(age, 1)
    data["live"] = bool(data.get("running")) and alive and age <= STALE_AFTER_S
    return data
