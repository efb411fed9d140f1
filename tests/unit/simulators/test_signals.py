"""Signal models and the fleet's per-sensor state: plausible, reproducible, unique timestamps."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from simulators import signals
from simulators.fleet import FaultRates, Fleet, metrics_for, sensor_ids
from simulators.formats import FORMATS, Encoded
from simulators.report import Fault, Group, Ledger, Token

DAY = 86_400.0
T0 = 1_750_000_000.0  # some epoch second, at an arbitrary time of day


def series(model: signals.Signal, rng: random.Random, step_s: float, n: int) -> list[float]:
    return [model.next(T0 + i * step_s, rng) for i in range(n)]


def test_every_metric_has_a_model_unit_and_precision() -> None:
    assert set(signals.MODELS) == set(signals.UNITS) == set(signals.DECIMALS)
    for metrics in signals.KINDS.values():
        assert set(metrics) <= set(signals.MODELS)


def test_same_seed_same_values() -> None:
    def run(seed: int) -> list[float]:
        rng = random.Random(seed)
        models = signals.build(("temperature", "humidity", "co2"), rng)
        return [m.next(T0 + i, rng) for i in range(50) for m in models]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_temperature_follows_a_daily_cycle() -> None:
    rng = random.Random(1)
    model = signals.Temperature(rng, phase_s=0.0)
    model.sigma = 0.0  # no noise: the cycle alone
    hourly = [model.next(h * 3600.0, rng) for h in range(24)]
    assert max(hourly) - min(hourly) == pytest.approx(2 * model.amplitude, rel=0.05)
    assert hourly.index(max(hourly)) in (14, 15, 16)  # afternoon
    assert hourly.index(min(hourly)) in (2, 3, 4)  # before dawn


def test_temperature_noise_wanders_but_stays_near_the_curve() -> None:
    rng = random.Random(2)
    model = signals.Temperature(rng, phase_s=0.0)
    values = series(model, rng, 1.0, 2000)
    assert all(math.isfinite(v) for v in values)
    assert all(
        model.base - model.amplitude - 5 < v < model.base + model.amplitude + 5 for v in values
    )


def test_bounded_models_stay_in_range() -> None:
    rng = random.Random(3)
    hum = series(signals.Humidity(rng, 0.0), rng, 60.0, 3000)
    pres = series(signals.Pressure(rng, 0.0), rng, 60.0, 3000)
    co2 = series(signals.Co2(rng, 0.0), rng, 60.0, 3000)
    assert all(0.0 <= v <= 100.0 for v in hum)
    assert all(940.0 <= v <= 1060.0 for v in pres)
    assert all(v >= 350.0 for v in co2)
    assert max(co2) - min(co2) > 100  # the occupancy bump shows over a couple of days


def test_battery_drains_and_counter_only_grows() -> None:
    rng = random.Random(4)
    battery = series(signals.Battery(rng, 0.0), rng, 1.0, 5000)
    counter = series(signals.Counter(rng, 0.0), rng, 1.0, 5000)
    assert all(b2 <= b1 for b1, b2 in itertools.pairwise(battery))
    assert battery[-1] < battery[0] and battery[-1] >= 0.0
    assert all(c2 >= c1 for c1, c2 in itertools.pairwise(counter))
    assert counter[-1] > counter[0]


def test_sensors_get_different_curves() -> None:
    rng = random.Random(5)
    a, b = (signals.build(("temperature",), rng)[0] for _ in range(2))
    assert series(a, rng, 1.0, 5) != series(b, rng, 1.0, 5)


def test_sensor_ids_and_kinds() -> None:
    assert sensor_ids("sim", 3) == ["sim-00000", "sim-00001", "sim-00002"]
    assert sensor_ids("x", 200_000)[-1] == "x-199999"
    kinds = list(signals.KINDS.values())
    assert [metrics_for(i, None) for i in range(4)] == [kinds[0], kinds[1], kinds[2], kinds[0]]
    assert metrics_for(5, ("co2",)) == ("co2",)


class Capture:
    def __init__(self) -> None:
        self.sent: list[tuple[int, Encoded, Token, bool, bool]] = []

    def __call__(self, index: int, message: Encoded, token: Token, dup: bool, late: bool) -> None:
        self.sent.append((index, message, token, dup, late))


def make_fleet(
    rates: FaultRates, clock: list[int], count: int | None = None, n: int = 3
) -> tuple[Fleet, Capture, Ledger]:
    ledger = Ledger("abc123", 1)
    capture = Capture()
    fleet = Fleet(
        count=n,
        fmt=FORMATS["json-reading"],
        topic="t/{sensor_id}/{metric}",
        prefix="s",
        ledger=ledger,
        rates=rates,
        rng=random.Random(9),
        send=capture,
        samples_per_sensor=count,
        clock_ms=lambda: clock[0],
    )
    return fleet, capture, ledger


def test_timestamps_unique_per_sensor_even_with_a_frozen_clock() -> None:
    clock = [1_750_000_000_000]
    fleet, capture, _ = make_fleet(FaultRates(bursts=0.5, late=0.3), clock)
    for k in range(50):
        for i in range(3):
            fleet.tick(i, k)
    fleet.release_everything()
    per_series: dict[tuple[int, str], list[int]] = {}
    for index, message, token, dup, _late in capture.sent:
        if isinstance(token, Group) and not dup:
            per_series.setdefault((index, message.topic), []).append(token.ts)
    assert per_series
    for stamps in per_series.values():
        assert len(stamps) == len(set(stamps))


def test_late_samples_arrive_out_of_order_with_original_timestamps() -> None:
    clock = [1_750_000_000_000]
    fleet, capture, _ = make_fleet(FaultRates(late=0.3), clock, n=1)
    for k in range(60):
        clock[0] += 1000
        fleet.tick(0, k)
    fleet.release_everything()
    stamps = [
        t.ts
        for _i, m, t, _d, _l in capture.sent
        if isinstance(t, Group) and m.topic.endswith("temperature")
    ]
    assert stamps != sorted(stamps)  # out of order on the wire …
    assert len(stamps) == 60 == len(set(stamps))  # … but every sample once
    assert any(late for *_rest, late in capture.sent)


def test_count_stops_a_sensor_and_releases_held_samples() -> None:
    clock = [1_750_000_000_000]
    fleet, capture, _ = make_fleet(FaultRates(late=0.5), clock, count=10, n=1)
    results = []
    for k in range(10):
        clock[0] += 1000
        results.append(fleet.tick(0, k))
    assert results == [True] * 9 + [False]
    assert fleet.sensors[0].held == []
    temps = [m for _i, m, t, _d, _l in capture.sent if m.topic.endswith("temperature")]
    assert len(temps) == 10


def test_ticks_after_the_count_publish_nothing() -> None:
    """A pacer running behind can hand out several due ticks of one sensor in one pass:
    those after its last sample must not publish (runs overshot --count by a few)."""
    clock = [1_750_000_000_000]
    fleet, capture, _ = make_fleet(FaultRates(), clock, count=3, n=1)
    results = []
    for k in range(6):
        clock[0] += 1000
        results.append(fleet.tick(0, k))
    assert results == [True, True, False, False, False, False]
    temps = [m for _i, m, t, _d, _l in capture.sent if m.topic.endswith("temperature")]
    assert len(temps) == 3
    assert fleet.finished == 1


def test_faults_replace_messages_and_duplicates_repeat_them() -> None:
    clock = [1_750_000_000_000]
    fleet, capture, _ledger = make_fleet(
        FaultRates(malformed=0.2, out_of_range=0.2, duplicates=0.2), clock
    )
    for k in range(100):
        clock[0] += 1000
        for i in range(3):
            fleet.tick(i, k)
    faults = [t for _i, _m, t, _d, _l in capture.sent if isinstance(t, Fault)]
    dups = [(m, t) for _i, m, t, d, _l in capture.sent if d]
    assert faults and dups
    assert {f.kind for f in faults} == {"malformed", "out_of_range"}
    assert all(
        f"tgfault:abc123-{f.n}".encode() in m.payload
        for _i, m, f, _d, _l in capture.sent
        if isinstance(f, Fault)
    )
    originals = {
        id(t): m.payload for _i, m, t, d, _l in capture.sent if isinstance(t, Group) and not d
    }
    for message, token in dups:
        assert originals[id(token)] == message.payload  # the very same message again


def test_silent_sensors_skip_ticks_and_come_back() -> None:
    clock = [1_750_000_000_000]
    fleet, capture, ledger = make_fleet(FaultRates(silent=0.05), clock, n=1)
    for k in range(400):
        clock[0] += 1000
        fleet.tick(0, k)
    samples = [t.ts for _i, m, t, _d, _l in capture.sent if m.topic.endswith("temperature")]
    assert ledger.totals.silent_periods > 0
    assert 0 < len(samples) < 400
    gaps = [b - a for a, b in itertools.pairwise(samples)]
    assert max(gaps) >= 5000  # quiet for at least five ticks, then back


def test_fault_rates_are_checked() -> None:
    with pytest.raises(ValueError, match="--malformed"):
        FaultRates(malformed=1.5)
    with pytest.raises(ValueError, match="exceed"):
        FaultRates(malformed=0.6, out_of_range=0.6)


def test_unknown_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        Fleet(
            count=1,
            fmt=FORMATS["json-reading"],
            topic="t/{sensor_id}/{metric}",
            prefix="s",
            ledger=Ledger("r", 1),
            rates=FaultRates(),
            rng=random.Random(0),
            send=Capture(),
            metrics=("wind",),
        )
