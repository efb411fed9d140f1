"""``tidegate aggregate``: time buckets (min/max/avg/sum/count/last) from the coarsest
rollup tier that answers them; each row says which tier did."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from gateway import request
from gateway.cli.common import add_read_arguments, gateway_of, open_reader
from gateway.cli.output import FORMATS, write_rows
from gateway.request import AGGREGATES, DEFAULT_MAX_BUCKETS, TIERS, AggregateQuery, Limit
from gateway.validation import format_ms


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "aggregate",
        help="bucketed min/max/avg/sum/count/last (from rollups where they answer)",
        description="Aggregates per series in epoch-aligned buckets. Each bucket is answered"
        " by the coarsest tier that can (1h, 1m rollups, else raw readings); the tier"
        " column says which.",
    )
    add_read_arguments(parser)
    parser.add_argument("--sensor", "-s", help="sensor id")
    parser.add_argument("--metric", "-m", help="metric name")
    parser.add_argument(
        "--bucket", "-b", default="1h", help="bucket size: 1m, 5m, 1h, 1d … (default 1h)"
    )
    parser.add_argument(
        "--agg",
        "-a",
        default="avg",
        help=f"comma-separated aggregates from {','.join(AGGREGATES)} (default avg)",
    )
    parser.add_argument(
        "--since",
        default="24h",
        help="start (default 24h ago): ISO 8601, epoch s, or a duration ago",
    )
    parser.add_argument("--until", default="now", help="end, exclusive (default now)")
    parser.add_argument("--tier", choices=TIERS, default="auto", help="force a tier (default auto)")
    parser.add_argument(
        "--max-buckets",
        type=int,
        default=DEFAULT_MAX_BUCKETS,
        help="refuse more buckets per series than this",
    )
    parser.add_argument("--format", "-f", choices=FORMATS, default="table")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    aggs = request.aggregates([args.agg], "--agg")
    query = AggregateQuery(
        sensor=args.sensor,
        metric=args.metric,
        gateway=gateway_of(args),
        since_ms=request.time_ms(args.since, "--since"),
        until_ms=request.time_ms(args.until, "--until"),
        bucket_ms=request.bucket_ms(args.bucket, "--bucket"),
        aggregates=aggs,
        tier=args.tier,
        max_buckets=Limit(args.max_buckets, "--max-buckets"),
    )
    columns = ("sensor_id", "metric", "start", *aggs, "tier", "gateway")
    with open_reader(args) as (reader, _path):

        def rows() -> Iterator[dict[str, Any]]:
            for bucket in reader.rows(reader.store.stream_aggregate(query)):
                yield {
                    "gateway": bucket.gateway_id,
                    "sensor_id": bucket.sensor_id,
                    "metric": bucket.metric,
                    "start": format_ms(bucket.start_ms),
                    **bucket.values,
                    "tier": bucket.tier,
                }

        write_rows(rows(), columns, args.format)
    return 0
