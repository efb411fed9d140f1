"""``tidegate stats``: readings, series, dead letters and database size."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from gateway.cli.common import add_db_argument, open_reader
from gateway.validation import format_ms


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("stats", help="database totals and size")
    add_db_argument(parser)
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
    with open_reader(args) as (reader, path):
        totals = reader(reader.store.stats())
        details = reader(reader.store.details())
    if args.format == "json":
        print(json.dumps({**asdict(totals), "storage": details.data}))
        return 0
    per_reading = (totals.database_bytes / totals.readings) if totals.readings else 0.0
    lines = [
        ("database", str(path)),
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
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}")
    return 0
