"""``tidegate sensors``: every sensor/metric with count, first/last time and last value."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from gateway.cli.common import Reader, add_read_arguments, gateway_of, open_reader
from gateway.cli.output import FORMATS, write_rows
from gateway.request import SeriesCursor
from gateway.storage.base import SeriesInfo
from gateway.validation import format_ms

COLUMNS = (
    "sensor_id", "metric", "unit", "count", "first_ts", "last_ts", "last_value", "gateway"
)  # fmt: skip


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("sensors", help="list sensors and metrics with their last value")
    add_read_arguments(parser)
    parser.add_argument("--sensor", "-s", help="only this sensor id")
    parser.add_argument("--metric", "-m", help="only this metric")
    parser.add_argument("--format", "-f", choices=FORMATS, default="table")
    parser.set_defaults(handler=handle)


PAGE = 1000
"""Series read per query: any number of series is listed, a page at a time, and the
output streams."""


def every_series(
    reader: Reader, sensor: str | None, metric: str | None = None, gateway: str | None = None
) -> Iterator[SeriesInfo]:
    """All matching series, page after page (each its own query)."""
    after: SeriesCursor | None = None
    while True:
        page = reader(reader.store.series(sensor, metric, after=after, limit=PAGE, gateway=gateway))
        yield from page
        if len(page) < PAGE:
            return
        last = page[-1]
        after = (last.sensor_id, last.metric, last.series_id)


def handle(args: argparse.Namespace) -> int:
    gateway = gateway_of(args)
    with open_reader(args) as (reader, _path):
        rows = (
            {
                "gateway": s.gateway_id,
                "sensor_id": s.sensor_id,
                "metric": s.metric,
                "unit": s.unit,
                "count": s.count,
                "first_ts": format_ms(s.first_ts_ms) if s.first_ts_ms is not None else None,
                "last_ts": format_ms(s.last_ts_ms) if s.last_ts_ms is not None else None,
                "last_value": s.last_value,
            }
            for s in every_series(reader, args.sensor, args.metric, gateway)
        )
        write_rows(rows, COLUMNS, args.format)
    return 0
