"""The fleet: per-sensor state, one tick → the messages it publishes, fault injection.

A *tick* is one scheduled moment of one sensor (see :mod:`simulators.rate`). On a tick
a sensor normally takes one *sample* — a value for each of its metrics at one
timestamp — and publishes it in the chosen format. Faults, each drawn with its own
probability:

* ``silent``: per tick, the sensor goes quiet for 5–30 ticks, then comes back; quiet
  ticks take no sample and do not count toward ``--count``;
* ``late``: per sample, it is held back and published 1–5 ticks later with its
  original timestamp (out-of-order arrival);
* ``bursts``: per tick, 5–20 extra samples at once, as a sensor flushing a buffer;
* ``malformed`` / ``out_of_range``: per message, a faulty payload replaces it (see
  :mod:`simulators.formats`); its readings are then never sent;
* ``duplicates``: per message, the same message is published a second time.

Timestamps are epoch milliseconds, strictly increasing per sensor (so unique per
series — the store keys readings on (series, ts) and would merge two readings of
one millisecond); only a deliberate duplicate repeats one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from simulators import signals
from simulators.formats import Encoded, Format, Target, make_target
from simulators.report import Group, Ledger, Token

# send(sensor_index, message, token, duplicate, late)
SendFn = Callable[[int, Encoded, Token, bool, bool], None]


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Probabilities in [0, 1] (see the module docstring for what each applies to)."""

    malformed: float = 0.0
    out_of_range: float = 0.0
    duplicates: float = 0.0
    late: float = 0.0
    bursts: float = 0.0
    silent: float = 0.0

    def __post_init__(self) -> None:
        for name in ("malformed", "out_of_range", "duplicates", "late", "bursts", "silent"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be a rate in [0, 1], got {value}"
                )
        if self.malformed + self.out_of_range > 1.0:
            raise ValueError("--malformed plus --out-of-range must not exceed 1")

    def as_dict(self) -> dict[str, float]:
        return {
            "malformed": self.malformed,
            "out_of_range": self.out_of_range,
            "duplicates": self.duplicates,
            "late": self.late,
            "bursts": self.bursts,
            "silent": self.silent,
        }


class Sensor:
    """One fake device."""

    __slots__ = ("count", "held", "last_ts", "series", "signals", "silent_left", "target")

    def __init__(
        self, target: Target, models: list[signals.Signal], series: tuple[int, ...]
    ) -> None:
        self.target = target
        self.signals = models
        self.series = series
        self.last_ts = 0
        self.count = 0
        self.silent_left = 0
        self.held: list[tuple[int, int, list[float]]] = []
        """Late samples: (release at tick, ts, values)."""


def sensor_ids(prefix: str, n: int) -> list[str]:
    """``prefix-00000`` … with at least five digits, sortable."""
    width = max(5, len(str(n - 1)))
    return [f"{prefix}-{i:0{width}d}" for i in range(n)]


def metrics_for(index: int, metrics: tuple[str, ...] | None) -> tuple[str, ...]:
    """The metrics of sensor ``index``: the explicit list, or its kind's in a mixed fleet."""
    if metrics:
        return metrics
    kinds = list(signals.KINDS.values())
    return kinds[index % len(kinds)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Fleet:
    """All sensors of a run and the fault dice."""

    def __init__(
        self,
        *,
        count: int,
        fmt: Format,
        topic: str,
        prefix: str,
        ledger: Ledger,
        rates: FaultRates,
        rng: random.Random,
        send: SendFn,
        metrics: tuple[str, ...] | None = None,
        samples_per_sensor: int | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        for name in metrics or ():
            if name not in signals.MODELS:
                known = ", ".join(signals.MODELS)
                raise ValueError(f"unknown metric {name!r} (known: {known})")
        self.fmt = fmt
        self.ledger = ledger
        self.rates = rates
        self.rng = rng
        self.send = send
        self.samples_per_sensor = samples_per_sensor
        self.clock_ms = clock_ms
        self._faulty = rates.malformed + rates.out_of_range
        self.sensors: list[Sensor] = []
        for index, sid in enumerate(sensor_ids(prefix, count)):
            names = metrics_for(index, metrics)
            target = make_target(fmt, topic, sid, names)
            series = tuple(
                ledger.series_id(sid, fmt.stored_metric(m), fmt.stored_unit(m)) for m in names
            )
            self.sensors.append(Sensor(target, signals.build(names, rng), series))
        self.finished = 0

    # ----------------------------------------------------------------------------- ticks

    def tick(self, index: int, k: int) -> bool:
        """Serve tick ``k`` of sensor ``index``; False once the sensor sent its count."""
        sensor = self.sensors[index]
        if self.samples_per_sensor is not None and sensor.count >= self.samples_per_sensor:
            # Already finished: a pacer running behind can hand out several due ticks of
            # one sensor in one pass; the ones after its last must not publish.
            return False
        rates = self.rates
        rng = self.rng
        if sensor.silent_left > 0:
            sensor.silent_left -= 1
            return True
        if rates.silent and rng.random() < rates.silent:
            sensor.silent_left = rng.randint(5, 30)
            self.ledger.totals.silent_periods += 1
            return True
        ts, values = self._sample(sensor)
        if rates.late and rng.random() < rates.late:
            sensor.held.append((k + rng.randint(1, 5), ts, values))
        else:
            self._emit(index, sensor, ts, values, late=False)
        if sensor.held:
            self._release(index, sensor, k)
        if rates.bursts and rng.random() < rates.bursts:
            extra = rng.randint(5, 20)
            self.ledger.totals.burst_samples += extra
            for _ in range(extra):
                ts, values = self._sample(sensor)
                self._emit(index, sensor, ts, values, late=False)
        sensor.count += 1
        if self.samples_per_sensor is not None and sensor.count >= self.samples_per_sensor:
            self.release_all(index)
            self.finished += 1
            return False
        return True

    def release_all(self, index: int) -> None:
        """Publish every held (late) sample of sensor ``index`` now."""
        sensor = self.sensors[index]
        held, sensor.held = sensor.held, []
        for _release, ts, values in held:
            self._emit(index, sensor, ts, values, late=True)

    def release_everything(self) -> None:
        """At the end of a run: no sample stays held back."""
        for index in range(len(self.sensors)):
            if self.sensors[index].held:
                self.release_all(index)

    def _release(self, index: int, sensor: Sensor, k: int) -> None:
        keep: list[tuple[int, int, list[float]]] = []
        for item in sensor.held:
            if item[0] <= k:
                self._emit(index, sensor, item[1], item[2], late=True)
            else:
                keep.append(item)
        sensor.held = keep

    def _sample(self, sensor: Sensor) -> tuple[int, list[float]]:
        ts = self.clock_ms()
        if ts <= sensor.last_ts:
            ts = sensor.last_ts + 1  # unique per series, even in a burst
        sensor.last_ts = ts
        t_s = ts / 1000.0
        rng = self.rng
        return ts, [model.next(t_s, rng) for model in sensor.signals]

    def _emit(self, index: int, sensor: Sensor, ts: int, values: list[float], late: bool) -> None:
        rng = self.rng
        rates = self.rates
        for message in self.fmt.encode(sensor.target, ts, values):
            if self._faulty:
                roll = rng.random()
                if roll < self._faulty:
                    kind = "malformed" if roll < rates.malformed else "out_of_range"
                    fault = self.ledger.new_fault(sensor.target.sensor_id, kind)
                    bad = self.fmt.fault(
                        sensor.target,
                        ts,
                        values,
                        kind,
                        self.ledger.fault_id(fault),
                        rng.randrange(1 << 30),
                    )
                    self.send(index, bad, fault, False, False)
                    continue
            group = Group(tuple(sensor.series[i] for i in message.covers), ts)
            self.send(index, message, group, False, late)
            if rates.duplicates and rng.random() < rates.duplicates:
                self.send(index, message, group, True, False)
