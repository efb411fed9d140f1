"""The bench's message shapes: what each scenario publishes and how tidegate is told
to read it.

Every (sensor, metric, ts) key is unique within a run, so a drain of N messages must
leave exactly N × readings_per_message rows — the harness checks that count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    """One message shape."""

    name: str
    title: str
    readings_per_message: int
    sensors: int
    fmt: str = "json"
    """tidegate's subscription format."""

    def default_base_ms(self, n: int) -> int:
        """First timestamp of ``n`` messages ending ~5 s before now (1 ms per message,
        10 ms per batched message)."""
        step = 1 if self.readings_per_message == 1 else 10
        return int(time.time() * 1000) - n * step - 5000

    def topic_template(self, prefix: str) -> str:
        if self.readings_per_message == 1:
            return f"{prefix}/{{sensor_id}}/{{metric}}"
        return f"{prefix}/{{sensor_id}}"

    def messages(
        self, prefix: str, n: int, base_ms: int | None = None
    ) -> Iterator[tuple[str, bytes]]:
        """``n`` messages under ``prefix``; timestamps start at ``base_ms`` (default: so
        that the last one is a few seconds old, like a backlog published just now)."""
        base = base_ms if base_ms is not None else self.default_base_ms(n)
        sensors = self.sensors
        if self.readings_per_message == 1:
            for i in range(n):
                value = (i * 7919 % 10_000) / 100
                yield (
                    f"{prefix}/s{i % sensors}/temperature",
                    b'{"value":%.2f,"ts":%d}' % (value, base + i),
                )
            return
        per = self.readings_per_message
        for i in range(n):
            topic = f"{prefix}/d{i % sensors}"
            t0 = base + i * 10
            if self.fmt == "senml":
                records: list[dict[str, object]] = []
                for j in range(per):
                    rec: dict[str, object] = {
                        "n": f"m{j % 10}",
                        "v": ((i + j) * 7919 % 10_000) / 100,
                        "t": (j // 10) / 1000,
                    }
                    if j == 0:
                        rec["bt"] = t0 / 1000
                        rec["bu"] = "Cel"
                    records.append(rec)
                yield topic, json.dumps(records, separators=(",", ":")).encode()
            else:
                items = [
                    {
                        "metric": f"m{j % 10}",
                        "value": ((i + j) * 7919 % 10_000) / 100,
                        "ts": t0 + j // 10,
                    }
                    for j in range(per)
                ]
                yield topic, json.dumps(items, separators=(",", ":")).encode()


ONE = Scenario("json-1", "1 reading / JSON message, 100 sensors", 1, 100)
BATCH_JSON = Scenario("json-100", "100 readings / JSON array, 100 devices × 10 metrics", 100, 100)
BATCH_SENML = Scenario(
    "senml-100", "100 readings / SenML pack, 100 devices × 10 metrics", 100, 100, "senml"
)
SENSORS_10K = Scenario("sensors-10k", "1 reading / JSON message, 10,000 sensors", 1, 10_000)
