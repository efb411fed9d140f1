"""Falling behind: reading age at commit, the broker's dropped counter, one log line
when it starts and one when it stops."""

from __future__ import annotations

import logging

import pytest

from gateway.lag import LagTracker, batch_age_s
from gateway.metrics import LagState
from gateway.models import Reading

NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


ALWAYS_BUSY = {"idle_at": lambda: -100.0, "monotonic": lambda: 0.0}
"""The writer last waited for work 100 s ago: working off a backlog."""


def batch(age_s: float, n: int = 100, now: float = NOW) -> list[Reading]:
    ts = int((now - age_s) * 1000)
    return [Reading(f"s{i}", "t", ts, 1.0) for i in range(n)]


def test_batch_age_is_robust_to_a_few_wrong_clocks() -> None:
    readings = batch(0.5)
    # A quarter of the devices run an hour behind, a few an hour ahead: still fresh.
    for i in range(0, 100, 5):
        readings[i] = readings[i]._replace(ts_ms=readings[i].ts_ms - 3_600_000)
    for i in range(1, 100, 10):
        readings[i] = readings[i]._replace(ts_ms=readings[i].ts_ms + 3_600_000)
    assert batch_age_s(readings, int(NOW * 1000)) == pytest.approx(0.5)
    # A backlog: every reading old.
    assert batch_age_s(batch(120), int(NOW * 1000)) == pytest.approx(120)
    assert batch_age_s([], int(NOW * 1000)) is None


def test_behind_and_caught_up_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    state = LagState()
    tracker = LagTracker(state, threshold_s=30, clock=clock, **ALWAYS_BUSY)
    tracker.committed(batch(1, now=clock.now), 0.01)
    assert not state.behind
    for _ in range(20):
        clock.now += 1
        tracker.committed(batch(90, now=clock.now), 0.02)
    assert state.behind
    assert "readings are committed 90 s after their timestamps" in state.reason
    for _ in range(30):
        clock.now += 1
        tracker.committed(batch(0.5, now=clock.now), 0.02)
    assert not state.behind and state.reason == ""
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("falling behind:") for m in messages) == 1
    assert sum(m.startswith("caught up after") for m in messages) == 1


def test_broker_drops_make_it_behind_until_quiet() -> None:
    clock = Clock()
    state = LagState()
    tracker = LagTracker(state, threshold_s=10, clock=clock)
    tracker.broker_value("$SYS/broker/publish/messages/dropped", b"500")
    assert state.broker_dropped == 500 and state.dropped_since_start == 0
    assert not state.behind  # a count from before we started is not our lag
    clock.now += 1
    tracker.broker_value("$SYS/broker/publish/messages/dropped", b"880")
    assert state.behind and state.dropped_since_start == 380
    assert "the broker dropped 380 messages" in state.reason
    clock.now += 5
    tracker.evaluate()
    assert state.behind
    clock.now += 6
    tracker.evaluate()
    assert not state.behind
    # The broker restarted: its counter starts again; ours keeps counting.
    tracker.broker_value("$SYS/broker/publish/messages/dropped", b"0")
    tracker.broker_value("$SYS/broker/publish/messages/dropped", b"20")
    assert state.dropped_since_start == 400
    tracker.broker_value("$SYS/broker/store/messages/count", b"173")
    tracker.broker_value("$SYS/broker/store/messages/bytes", b"468")
    tracker.broker_value("$SYS/broker/store/messages/bytes", b"garbage")
    tracker.broker_value("$SYS/broker/uptime", b"12 seconds")
    assert (state.broker_stored, state.broker_stored_bytes) == (173, 468)


def test_idle_is_not_behind() -> None:
    clock = Clock()
    state = LagState()
    queued = [0]
    tracker = LagTracker(
        state, threshold_s=10, queued=lambda: queued[0], clock=clock, **ALWAYS_BUSY
    )
    for _ in range(10):
        clock.now += 1
        tracker.committed(batch(60, now=clock.now), 0.01)
    assert state.behind
    clock.now += 11
    queued[0] = 5  # still work queued: the age stands
    tracker.evaluate()
    assert state.behind
    queued[0] = 0
    tracker.evaluate()
    assert not state.behind and state.reading_age_s == 0


def test_old_readings_to_an_idle_gateway_are_not_a_backlog() -> None:
    """A device uploading buffered history sends old readings, but the gateway keeps
    pausing for work: not behind. The same readings while it never pauses: behind."""
    clock = Clock()
    state = LagState()
    mono = [0.0]
    idle = [0.0]
    tracker = LagTracker(
        state, threshold_s=30, clock=clock, idle_at=lambda: idle[0], monotonic=lambda: mono[0]
    )
    for _ in range(20):
        clock.now += 1
        mono[0] += 1
        idle[0] = mono[0] - 0.5  # paused for work half a second ago
        tracker.committed(batch(3600, now=clock.now), 0.01)
    assert not state.behind
    for _ in range(11):  # no pause for 11 s: a backlog
        clock.now += 1
        mono[0] += 1
        tracker.committed(batch(3600, now=clock.now), 0.01)
    assert state.behind
    idle[0] = mono[0]  # the backlog is worked off: it waits for work again
    tracker.evaluate()
    assert not state.behind
