"""Rate control with a fake clock: the aggregate rate holds to ±2 %, lag is detected."""

from __future__ import annotations

import itertools
import random

import pytest

from simulators.rate import KeepUp, Pacer, RateMeter


def drive(
    pacer: Pacer, until: float, step: float, capacity: int = 10**9
) -> list[tuple[float, int, int]]:
    """Serve the pacer like the runner does, every ``step`` fake seconds, at most
    ``capacity`` ticks a step. Returns (time, sensor, k) for every tick served."""
    served: list[tuple[float, int, int]] = []
    now = pacer.start
    while now < until:
        for sensor, k in pacer.pop_due(now, capacity):
            served.append((now, sensor, k))
        now += step
    return served


@pytest.mark.parametrize(
    ("sensors", "rate", "jitter"),
    [(500, 2.0, 0.1), (10_000, 1.0, 0.1), (3, 50.0, 0.3), (1000, 0.2, 0.0)],
)
def test_aggregate_rate_within_two_percent_over_every_window(
    sensors: int, rate: float, jitter: float
) -> None:
    pacer = Pacer(sensors, rate, start=100.0, rng=random.Random(1), jitter=jitter)
    period = 1.0 / rate
    window = max(5.0, 5 * period)
    duration = 6 * window
    served = drive(pacer, 100.0 + duration, step=0.01)
    expected = sensors * rate * window
    for w in range(1, 6):  # skip the first window: the schedule starts inside it
        low = 100.0 + w * window
        got = sum(1 for t, _s, _k in served if low <= t < low + window)
        assert abs(got - expected) <= 0.02 * expected, (w, got, expected)


def test_each_sensor_keeps_its_period_with_bounded_jitter() -> None:
    pacer = Pacer(20, 4.0, start=0.0, rng=random.Random(2), jitter=0.1)
    served = drive(pacer, 30.0, step=0.001)
    by_sensor: dict[int, list[float]] = {}
    for t, sensor, _k in served:
        by_sensor.setdefault(sensor, []).append(t)
    for times in by_sensor.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.25 * 0.8 - 0.002 <= g <= 0.25 * 1.2 + 0.002 for g in gaps)
        assert sum(gaps) / len(gaps) == pytest.approx(0.25, rel=0.01)


def test_publishes_do_not_align_across_sensors() -> None:
    pacer = Pacer(100, 1.0, start=0.0, rng=random.Random(3))
    first = sorted(when for when, _s, _k in pacer._heap)
    # Stratified offsets: spread over the whole first period, not bunched at 0.
    assert first[-1] - first[0] > 0.8
    assert len({round(t, 4) for t in first}) >= 95  # no two sensors in lockstep


def test_schedule_does_not_drift_after_a_stall() -> None:
    pacer = Pacer(10, 10.0, start=0.0, rng=random.Random(4), jitter=0.0)
    drive(pacer, 1.0, step=0.01)
    # The driver stalls for 2 s, then catches up: the missed ticks are all served …
    caught_up = pacer.pop_due(3.0, 10**9)
    assert len(caught_up) == pytest.approx(10 * 10 * 2, abs=10)
    # … and the schedule stays on its nominal grid afterwards.
    assert pacer.ticks == pytest.approx(10 * 10 * 3, abs=10)
    assert pacer.next_due() is not None and pacer.next_due() > 3.0  # type: ignore[operator]


def test_lag_grows_when_the_driver_cannot_keep_up() -> None:
    pacer = Pacer(1000, 10.0, start=0.0, rng=random.Random(5))
    keepup = KeepUp(limit_s=0.5, grace_s=2.0)
    verdicts = []
    now = 0.0
    while now < 10.0:
        pacer.pop_due(now, 50)  # 50 ticks per 10 ms step = 5,000/s < 10,000/s requested
        verdicts.append(keepup.observe(now, pacer.lag(now)))
        now += 0.01
    assert keepup.fell_behind
    assert verdicts.count(True) == 1  # said once, not on every step
    assert keepup.max_lag_s > 3.0
    assert pacer.ticks == pytest.approx(5000 * 10, rel=0.01)


def test_keepup_forgives_short_hiccups() -> None:
    keepup = KeepUp(limit_s=0.5, grace_s=2.0)
    assert not keepup.observe(0.0, 1.0)
    assert keepup.behind
    assert not keepup.observe(1.0, 1.0)
    assert not keepup.observe(1.5, 0.0)  # recovered before the grace ran out
    assert not keepup.behind
    assert not keepup.observe(3.0, 1.0)
    assert not keepup.fell_behind


def test_pop_respects_the_limit_and_finished_sensors() -> None:
    pacer = Pacer(100, 1.0, start=0.0, rng=random.Random(6), jitter=0.0)
    assert len(pacer.pop_due(5.0, 30)) == 30
    for sensor in range(100):
        pacer.finish(sensor)
    assert pacer.pop_due(100.0, 10**9) == []
    assert not pacer.active
    assert pacer.next_due() is None
    assert pacer.lag(100.0) == 0.0


@pytest.mark.parametrize(
    ("sensors", "rate", "jitter"), [(0, 1.0, 0.1), (1, 0.0, 0.1), (1, 1.0, 0.5)]
)
def test_bad_arguments(sensors: int, rate: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        Pacer(sensors, rate, start=0.0, rng=random.Random(0), jitter=jitter)


def test_rate_meter_with_a_fake_clock() -> None:
    now = [0.0]
    meter = RateMeter(lambda: now[0], window_s=5.0)
    for _ in range(20):
        now[0] += 0.5
        meter.add(100)
        rate = meter.sample()
    assert rate == pytest.approx(200.0, rel=0.05)
    assert meter.overall() == pytest.approx(200.0)
