"""Signal models: plausible values for one metric of one sensor over time.

Each model is a small stateful object: ``next(t_s, rng)`` returns the value at wall
time ``t_s`` (epoch seconds) and advances the model's state (noise, drain, counts).
Per-sensor parameters (base level, amplitude, daily phase) are drawn once from the
seeded generator when the model is built, so two sensors never show the same curve
and the same seed builds the same fleet.

Models, by metric name:

* ``temperature`` (°C): daily sine cycle (minimum near 05:00, maximum near 15:00 at the
  sensor's own longitude) plus slowly wandering AR(1) noise.
* ``humidity`` (%RH): anti-correlated with the same daily cycle, clamped to 0–100.
* ``pressure`` (hPa): a bounded random walk around 1013.
* ``co2`` (ppm): outdoor baseline plus a daytime occupancy bump, never below 350.
* ``battery`` (%): drains a little at each sample; never rises, never below 0.
* ``counter`` (no unit): a monotonic counter that grows by small random increments.

Sensor *kinds* group metrics the way real devices do (see :data:`KINDS`).
"""

from __future__ import annotations

import math
import random
from typing import Protocol

DAY_S = 86_400.0
TWO_PI = 2.0 * math.pi


class Signal(Protocol):
    """One metric's generator."""

    def next(self, t_s: float, rng: random.Random) -> float:
        """The value at epoch time ``t_s``; advances internal state."""
        ...


def _daily(t_s: float, phase_s: float) -> float:
    """-1 … +1 over a day; +1 at 15:00 local time (``phase_s`` = longitude offset)."""
    return math.sin(TWO_PI * ((t_s + phase_s) / DAY_S - 0.375))


class Temperature:
    """Daily cycle plus AR(1) noise (weather that wanders, not white noise)."""

    __slots__ = ("amplitude", "base", "noise", "phase_s", "sigma")

    def __init__(self, rng: random.Random, phase_s: float) -> None:
        self.base = rng.uniform(14.0, 24.0)
        self.amplitude = rng.uniform(2.0, 6.0)
        self.phase_s = phase_s
        self.sigma = rng.uniform(0.05, 0.2)
        self.noise = 0.0

    def next(self, t_s: float, rng: random.Random) -> float:
        self.noise = 0.95 * self.noise + rng.gauss(0.0, self.sigma)
        return self.base + self.amplitude * _daily(t_s, self.phase_s) + self.noise


class Humidity:
    """Relative humidity falling as the day warms up; 0–100 %."""

    __slots__ = ("amplitude", "base", "noise", "phase_s")

    def __init__(self, rng: random.Random, phase_s: float) -> None:
        self.base = rng.uniform(35.0, 65.0)
        self.amplitude = rng.uniform(5.0, 15.0)
        self.phase_s = phase_s
        self.noise = 0.0

    def next(self, t_s: float, rng: random.Random) -> float:
        self.noise = 0.9 * self.noise + rng.gauss(0.0, 0.4)
        value = self.base - self.amplitude * _daily(t_s, self.phase_s) + self.noise
        return min(100.0, max(0.0, value))


class Pressure:
    """A random walk pulled back towards its base, clamped to a plausible range."""

    __slots__ = ("base", "value")

    def __init__(self, rng: random.Random, phase_s: float) -> None:
        self.base = rng.uniform(1000.0, 1025.0)
        self.value = self.base

    def next(self, t_s: float, rng: random.Random) -> float:
        self.value += 0.02 * (self.base - self.value) + rng.gauss(0.0, 0.05)
        self.value = min(1060.0, max(940.0, self.value))
        return self.value


class Co2:
    """Outdoor baseline plus a bump while people are in (09:00–17:00 local)."""

    __slots__ = ("baseline", "occupancy", "phase_s")

    def __init__(self, rng: random.Random, phase_s: float) -> None:
        self.baseline = rng.uniform(400.0, 450.0)
        self.occupancy = rng.uniform(200.0, 900.0)
        self.phase_s = phase_s

    def next(self, t_s: float, rng: random.Random) -> float:
        hour = ((t_s + self.phase_s) % DAY_S) / 3600.0
        bump = math.exp(-(((hour - 13.0) / 3.0) ** 2))
        value = self.baseline + self.occupancy * bump + rng.gauss(0.0, 8.0)
        return max(350.0, value)


class Battery:
    """Drains by a small random amount per sample; never rises, floor 0 %."""

    __slots__ = ("drain", "level")

    def __init__(self, rng: random.Random, phase_s: float) -> None:
        self.level = rng.uniform(60.0, 100.0)
        self.drain = rng.uniform(0.0005, 0.005)

    def next(self, t_s: float, rng: random.Random) -> float:
        self.level = max(0.0, self.level - self.drain * rng.uniform(0.5, 1.5))
        return self.level


class Counter:
    """A monotonic count (pulses, packets, litres): grows by 0–4 per sample."""

    __slots__ = ("count",)

    def __init__(self, rng: random.Random, phase_s: float) -> None:
        self.count = float(rng.randrange(0, 100_000))

    def next(self, t_s: float, rng: random.Random) -> float:
        self.count += rng.randrange(0, 5)
        return self.count


MODELS: dict[str, type[Temperature | Humidity | Pressure | Co2 | Battery | Counter]] = {
    "temperature": Temperature,
    "humidity": Humidity,
    "pressure": Pressure,
    "co2": Co2,
    "battery": Battery,
    "counter": Counter,
}
"""Metric name → model class."""

UNITS: dict[str, str | None] = {
    "temperature": "°C",
    "humidity": "%RH",
    "pressure": "hPa",
    "co2": "ppm",
    "battery": "%",
    "counter": None,
}
"""Metric name → unit sent in payloads that carry one (``None``: no unit)."""

DECIMALS: dict[str, int] = {
    "temperature": 2,
    "humidity": 1,
    "pressure": 2,
    "co2": 0,
    "battery": 3,
    "counter": 0,
}
"""Metric name → decimals sent (real sensors report limited precision)."""

KINDS: dict[str, tuple[str, ...]] = {
    "climate": ("temperature", "humidity", "pressure"),
    "air": ("co2", "temperature", "humidity"),
    "meter": ("counter", "battery"),
}
"""Sensor kind → its metrics. Sensor ``i`` of a mixed fleet is of kind ``i % 3``."""


def build(metrics: tuple[str, ...], rng: random.Random) -> list[Signal]:
    """Models for one sensor: one per metric, sharing a random daily phase (longitude)."""
    phase_s = rng.uniform(-6.0, 6.0) * 3600.0
    return [MODELS[name](rng, phase_s) for name in metrics]
