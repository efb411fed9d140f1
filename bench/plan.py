"""How big each part of the bench is, per mode (full, ``--quick``, and the test's tiny).

Message counts are per subscriber, sized so each run lasts a few seconds at that
subscriber's speed on a small machine (rates are steady well before that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# (scenario, subscriber) → messages per run, full size.
FULL_N: dict[tuple[str, str], int] = {
    ("json-1", "mosquitto_sub"): 200_000,
    ("json-1", "aiomqtt"): 100_000,
    ("json-1", "naive"): 3_000,
    ("json-1", "tidegate"): 150_000,
    ("json-100", "mosquitto_sub"): 20_000,
    ("json-100", "aiomqtt"): 10_000,
    ("json-100", "naive"): 600,
    ("json-100", "tidegate"): 5_000,
    ("senml-100", "mosquitto_sub"): 20_000,
    ("senml-100", "aiomqtt"): 10_000,
    ("senml-100", "naive"): 600,
    ("senml-100", "tidegate"): 3_000,
    ("sensors-10k", "mosquitto_sub"): 200_000,
    ("sensors-10k", "aiomqtt"): 100_000,
    ("sensors-10k", "naive"): 3_000,
    ("sensors-10k", "tidegate"): 100_000,
}


@dataclass(frozen=True)
class Plan:
    name: str
    runs: int
    scale: float
    min_n: int
    query_rows: int
    latency_s: float
    codecs_quick: bool
    latency_rate_cap: float = 1e9
    fleet_sensors: int = 10_000
    """Sensors of the simulated fleet (1 Hz each) in the second latency run."""
    codec_readings: int | None = None
    """Readings per codec micro-benchmark case (None: bench/codecs.py's own, by
    ``codecs_quick``)."""
    skip: frozenset[str] = field(default_factory=frozenset)

    def n(self, scenario: str, subscriber: str) -> int:
        return max(self.min_n, int(FULL_N[(scenario, subscriber)] * self.scale))


FULL = Plan(
    "full", runs=3, scale=1.0, min_n=1, query_rows=10_000_000, latency_s=60, codecs_quick=False
)
"""Latency runs last a minute: hot readings move to the per-series table 30 s after
their timestamp, so a shorter run would never see a compaction pause."""
QUICK = Plan(
    "quick", runs=1, scale=0.2, min_n=60, query_rows=1_000_000, latency_s=5, codecs_quick=True
)
TINY = Plan(
    "tiny",
    runs=1,
    scale=0.002,
    min_n=5,
    query_rows=20_000,
    latency_s=2,
    codecs_quick=True,
    latency_rate_cap=500,
    fleet_sensors=200,
    codec_readings=2_000,  # the test only needs every case to run: ~5 s, not ~45 s loaded
)
PLANS = {plan.name: plan for plan in (FULL, QUICK, TINY)}
