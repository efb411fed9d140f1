"""``tidegate aggregate``: time buckets (min/max/avg/sum/count/last) from the coarsest
rollup tier that answers them; each row says which tier did."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from gateway import query
from gateway.cli.common import add_db_argument, open_db
from gateway.cli.output import FORMATS, write_rows
from gateway.errors import QueryError
from gateway.storage.tiers import TIER_CHOICES
from gateway.validation import format_ms


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "aggregate",
        help="bucketed min/max/avg/sum/count/last (from rollups where they answer)",
        description="Aggregates per series in epoch-aligned buckets. Each bucket is answered"
        " by the coarsest tier that can (1h, 1m rollups, else raw readings); the tier"
        " column says which.",
    )
    add_db_argument(parser)
    parser.add_argument("--sensor", "-s", help="sensor id")
    parser.add_argument("--metric", "-m", help="metric name")
    parser.add_argument(
        "--bucket", "-b", default="1h", help="bucket size: 1m, 5m, 1h, 1d … (default 1h)"
    )
    parser.add_argument(
        "--agg",
        "-a",
        default="avg",
        help=f"comma-separated aggregates from {','.join(query.AGGREGATES)} (default avg)",
    )
    parser.add_argument(
        "--since",
        default="24h",
        help="start (default 24h ago): ISO 8601, epoch s, or a duration ago",
    )
    parser.add_argument("--until", default="now", help="end, exclusive (default now)")
    parser.add_argument(
        "--tier", choices=TIER_CHOICES, default="auto", help="force a tier (default auto)"
    )
    parser.add_argument("--max-buckets", type=int, default=100_000, help="refuse larger results")
    parser.add_argument("--format", "-f", choices=FORMATS, default="table")
    parser.set_defaults(handler=handle)


def parse_aggs(text: str) -> list[str]:
    aggs = [a.strip() for a in text.split(",") if a.strip()]
    if not aggs:
        raise QueryError("--agg needs at least one aggregate")
    unknown = [a for a in aggs if a not in query.AGGREGATES]
    if unknown:
        raise QueryError(
            f"unknown aggregate {unknown[0]!r}; choose from {', '.join(query.AGGREGATES)}"
        )
    return aggs


def handle(args: argparse.Namespace) -> int:
    aggs = parse_aggs(args.agg)
    bucket_ms = query.parse_duration_ms(args.bucket)
    since = query.parse_time_ms(args.since)
    until = query.parse_time_ms(args.until)
    conn, _path = open_db(args)
    columns = ("sensor_id", "metric", "start", *aggs, "tier")

    def rows() -> Iterator[dict[str, Any]]:
        for bucket in query.aggregate(
            conn,
            sensor=args.sensor,
            metric=args.metric,
            since_ms=since,
            until_ms=until,
            bucket_ms=bucket_ms,
            aggs=aggs,
            max_buckets=args.max_buckets,
            tier=args.tier,
        ):
            yield {
                "sensor_id": bucket.sensor_id,
                "metric": bucket.metric,
                "start": format_ms(bucket.start_ms),
                **bucket.values,
                "tier": bucket.tier,
            }

    try:
        write_rows(rows(), columns, args.format)
    finally:
        conn.close()
    return 0
