"""A fleet of many series for tests that need a big series table: ``count`` series of
``sensors = count // 2`` sensors × (temp, hum), one reading each, ``per_message`` to a
JSON array message (under the default ``storage.max_new_series_per_message``)."""

from __future__ import annotations

import json
from collections.abc import Iterator

METRICS = ("temp", "hum")


def sensor_name(i: int) -> str:
    return f"dev-{i:05d}"


def wide_fleet(
    base_ms: int, count: int = 100_000, per_message: int = 100
) -> Iterator[tuple[str, bytes]]:
    """``(topic, payload)`` messages creating ``count`` series (reading i at base + i ms)."""
    batch: list[dict[str, object]] = []
    for i in range(count):
        batch.append(
            {
                "sensor_id": sensor_name(i // 2),
                "metric": METRICS[i % 2],
                "value": i % 97,
                "ts": base_ms + i,
            }
        )
        if len(batch) == per_message:
            yield "sensors/bulk", json.dumps(batch).encode()
            batch = []
    if batch:
        yield "sensors/bulk", json.dumps(batch).encode()
