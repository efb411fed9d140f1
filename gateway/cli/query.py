"""``tidegate query``: stored readings as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from gateway import request
from gateway.cli.common import Reader, add_read_arguments, gateway_of, open_reader
from gateway.cli.output import FORMATS, write_rows
from gateway.request import ReadingsQuery
from gateway.validation import format_ms

COLUMNS = ("sensor_id", "metric", "ts", "value", "unit", "gateway")
"""``gateway`` last: the columns before it kept their places when it was added."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("query", help="print stored readings")
    add_read_arguments(parser)
    parser.add_argument("--sensor", "-s", help="sensor id")
    parser.add_argument("--metric", "-m", help="metric name")
    parser.add_argument("--since", help="start: ISO 8601, epoch seconds, or a duration ago like 2h")
    parser.add_argument("--until", help="end (exclusive), same forms as --since")
    parser.add_argument(
        "--limit", "-n", type=int, default=1000, help="max rows (default 1000; 0 = all, streamed)"
    )
    parser.add_argument("--latest", action="store_true", help="newest first")
    parser.add_argument("--format", "-f", choices=FORMATS, default="table")
    parser.set_defaults(handler=handle)


class Truncation:
    """Set by :func:`rows` when more rows matched than ``--limit`` allowed."""

    def __init__(self) -> None:
        self.truncated = False


def build_query(args: argparse.Namespace) -> ReadingsQuery:
    """The request (checked before the database is opened)."""
    limit = args.limit
    return ReadingsQuery(
        sensor=args.sensor,
        metric=args.metric,
        gateway=gateway_of(args),
        since_ms=request.time_ms(args.since, "--since") if args.since else None,
        until_ms=request.time_ms(args.until, "--until") if args.until else None,
        limit=limit + 1 if limit else 0,  # one more tells whether there are more
        descending=args.latest,
    )


def rows(
    args: argparse.Namespace,
    reader: Reader,
    query: ReadingsQuery,
    truncation: Truncation | None = None,
) -> Iterator[dict[str, Any]]:
    limit = args.limit
    for count, row in enumerate(reader.rows(reader.store.stream_readings(query))):
        if limit and count >= limit:
            if truncation is not None:
                truncation.truncated = True
            return
        yield {
            "gateway": row.gateway_id,
            "sensor_id": row.sensor_id,
            "metric": row.metric,
            "ts": format_ms(row.ts_ms),
            "value": row.value,
            "unit": row.unit,
        }


def handle(args: argparse.Namespace) -> int:
    truncation = Truncation()
    query = build_query(args)
    with open_reader(args) as (reader, _path):
        write_rows(rows(args, reader, query, truncation), COLUMNS, args.format)
    if truncation.truncated:
        print(
            f"tidegate: showing the first {args.limit} rows; more match"
            " (raise --limit, or --limit 0 for all)",
            file=sys.stderr,
        )
    return 0
