"""``tidegate query``: stored readings as a table, CSV or JSON.

Rows come in time order (newest first with ``--latest``); readings of the same instant
in sensor, metric, unit, tags and gateway order. The stores break such ties by series
id, which is the order each store first saw its series — an edge and the central store
it forwards to number them differently — so the command orders each instant's rows
itself: ``--db`` and ``--store`` print the same rows in the same order, and ``--limit``
cuts the same list (it reads past the limit to the end of the last instant).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from gateway import request
from gateway.cli.common import Reader, add_read_arguments, gateway_of, open_reader
from gateway.cli.output import FORMATS, write_rows
from gateway.request import ReadingsQuery
from gateway.storage.base import ReadingRow
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
    return ReadingsQuery(
        sensor=args.sensor,
        metric=args.metric,
        gateway=gateway_of(args),
        since_ms=request.time_ms(args.since, "--since") if args.since else None,
        until_ms=request.time_ms(args.until, "--until") if args.until else None,
        # Streamed in chunks, not limited: the last instant must be read whole (see
        # the module docstring); reading stops one instant after the limit.
        limit=0,
        descending=args.latest,
    )


def _tie_key(row: ReadingRow) -> tuple[str, str, str, tuple[tuple[str, str], ...], str]:
    return (
        row.sensor_id,
        row.metric,
        row.unit or "",
        tuple(sorted(row.tags.items())),
        row.gateway_id,
    )


def by_instant(stream: Iterable[ReadingRow]) -> Iterator[ReadingRow]:
    """``stream`` (in time order) with the rows of each instant in :func:`_tie_key`
    order; holds one instant's rows at a time."""
    group: list[ReadingRow] = []
    for row in stream:
        if group and row.ts_ms != group[0].ts_ms:
            yield from sorted(group, key=_tie_key)
            group = []
        group.append(row)
    yield from sorted(group, key=_tie_key)


def rows(
    args: argparse.Namespace,
    reader: Reader,
    query: ReadingsQuery,
    truncation: Truncation | None = None,
) -> Iterator[dict[str, Any]]:
    limit = args.limit
    stream = reader.rows(reader.store.stream_readings(query))
    for count, row in enumerate(by_instant(stream)):
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
