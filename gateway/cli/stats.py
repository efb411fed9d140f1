"""``tidegate stats``: readings, series, dead letters and database size — and, when a
gateway runs on this database, its live status (ready / degraded / not ready, lag, the
broker's dropped and queued counts) from the status file it keeps next to the database
(:mod:`gateway.status`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gateway.cli.common import add_read_arguments, central_url, gateway_of, open_reader
from gateway.health import buffer_span
from gateway.status import read_status, status_path
from gateway.validation import format_ms


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("stats", help="database totals and size")
    add_read_arguments(parser)
    parser.add_argument("--format", "-f", choices=("table", "json"), default="table")
    parser.set_defaults(handler=handle)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def handle(args: argparse.Namespace) -> int:
    gateway = gateway_of(args)
    with open_reader(args) as (reader, path):
        totals = reader(reader.store.stats(gateway))
        details = reader(reader.store.details(gateway))
    # A gateway keeps its status file next to its own database (not for --store).
    live = None if central_url(args) else read_status(status_path(Path(path)))
    if args.format == "json":
        print(
            json.dumps(
                {**asdict(totals), "gateway": gateway, "storage": details.data, "live": live}
            )
        )
        return 0
    per_reading = (totals.database_bytes / totals.readings) if totals.readings else 0.0
    lines = [
        ("database", path),
        *([("gateway", gateway)] if gateway is not None else []),
        ("readings", f"{totals.readings:,}"),
        ("series", f"{totals.series:,} ({totals.sensors:,} sensors)"),
        ("dead letters", f"{totals.dead_letters:,}"),
        (
            "size",
            f"{_size(totals.database_bytes)} + WAL {_size(totals.wal_bytes)}"
            + (f" ({per_reading:.1f} bytes/reading)" if totals.readings else ""),
        ),
        ("oldest", format_ms(totals.oldest_ts_ms) if totals.oldest_ts_ms is not None else "-"),
        ("newest", format_ms(totals.newest_ts_ms) if totals.newest_ts_ms is not None else "-"),
        *details.lines,
        *live_lines(live),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}")
    return 0


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def live_lines(live: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The running gateway's status as table lines."""
    if live is None:
        return [("gateway", "no status file (not started on this database by this version)")]
    if not live.get("live"):
        last = str(live.get("status", "?"))
        return [("gateway", f"not running (last status {_ago(float(live['age_s']))}: {last})")]
    status = str(live.get("status", "?"))
    reasons = "; ".join(map(str, live.get("reasons", [])))
    lines = [
        (
            "gateway",
            f"running (pid {live.get('pid')}), {status}"
            + (f": {reasons}" if reasons else "")
            + f" — as of {_ago(float(live['age_s']))}",
        )
    ]
    lag = live.get("lag") or {}
    lines.append(
        (
            "lag",
            f"readings committed {float(lag.get('reading_age_s', 0)):.1f} s after their"
            f" timestamps; arrival to commit {float(lag.get('receipt_to_commit_s', 0)) * 1000:.0f} ms",
        )
    )
    broker = live.get("broker") or {}
    if broker.get("dropped") is not None:
        text = (
            f"dropped {int(broker.get('dropped_since_start') or 0):,} since the gateway started"
            f" (broker total {int(broker['dropped']):,})"
        )
        if broker.get("stored_messages") is not None:
            text += f"; holds {int(broker['stored_messages']):,} messages"
            if broker.get("stored_bytes") is not None:
                text += f" ({_size(int(broker['stored_bytes']))})"
        lines.append(("broker", text))
    up = live.get("upstream")
    if isinstance(up, dict):
        lines.append(("forwarding", upstream_line(up)))
    return lines


def upstream_line(up: dict[str, Any]) -> str:
    """The forwarder's figures in one line (``docs/upstream.md``)."""
    if up.get("connected"):
        state = f"as {up.get('gateway_id')}, connected"
    elif up.get("unreachable_since"):
        state = f"as {up.get('gateway_id')}, CENTRE UNREACHABLE ({up.get('last_error') or '?'})"
    else:
        state = f"as {up.get('gateway_id')}, connecting"
    text = (
        f"{state}; {int(up.get('pending') or 0):,} readings pending"
        f" (oldest {float(up.get('oldest_pending_age_s') or 0):.0f} s);"
        f" {float(up.get('forward_rate') or 0):,.0f} readings/s forwarded,"
        f" {int(up.get('forwarded') or 0):,} since start"
    )
    hours = up.get("buffer_hours_left")
    if hours is not None:
        text += f"; {buffer_span(float(hours))} of local buffer left at the ingest rate"
    if up.get("dropped"):
        text += f"; {int(up['dropped']):,} DROPPED for space"
    return text
