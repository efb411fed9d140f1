"""How far behind the gateway is, and when to say so.

Two kinds of evidence, kept in :class:`~gateway.metrics.LagState`:

* **Reading age at commit** — after each commit, the age of the batch's readings (commit
  time minus their timestamps). While the gateway keeps up it is the sensors' own delay
  plus milliseconds; when it falls behind, the broker queues messages for it and every
  batch is older. Robust against a few devices with wrong clocks: the age of a batch is
  the 25th percentile of up to 32 readings sampled across it (a device whose clock runs
  behind cannot make a fresh batch look old, one whose clock runs ahead cannot hide a
  backlog alone), smoothed over batches. When nothing is committed for a threshold
  period and nothing is queued, the age counts as zero (no traffic is not a backlog).
* **The broker's counters**, where it publishes them (Mosquitto's ``$SYS`` topics,
  every ``sys_interval``, 10 s by default): ``publish/messages/dropped`` (broker-wide:
  messages it threw away, e.g. a client's queue over ``max_queued_messages``) and
  ``store/messages/count`` / ``bytes`` (what it holds). Mosquitto 2.0 publishes no
  per-client queue figures.

Old readings alone do not mean a backlog: a device uploading hours of buffered history
sends old readings to an idle gateway. So age counts only while the gateway is **busy** —
its writer has not once waited :data:`~gateway.pipeline.IDLE_S` for work during the last
:data:`BUSY_S` seconds (a gateway that keeps up has such pauses; one working off the
broker's queue does not).

The gateway is **behind** when it is busy and the smoothed age exceeds
``pipeline.lag_threshold_s``, or the broker's dropped counter grew within the last
threshold period; it has **caught up** when (the age is below half the threshold, or it
was idle) and no drop was seen for a threshold period.
Each transition is logged once (WARNING / INFO); ``/readyz`` says "degraded" with the
reason meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from gateway.metrics import LagState
from gateway.models import Reading

log = logging.getLogger(__name__)

SAMPLE = 32
BUSY_S = 10.0
"""No idle moment for this long: the gateway is working off a backlog."""
SMOOTHING = 0.3
"""Weight of the newest batch in the smoothed age."""

BROKER_TOPICS = {
    "$SYS/broker/publish/messages/dropped": "broker_dropped",
    "$SYS/broker/store/messages/count": "broker_stored",
    "$SYS/broker/store/messages/bytes": "broker_stored_bytes",
}
"""The Mosquitto ``$SYS`` topics the gateway subscribes (QoS 0, first connection)."""


def batch_age_s(readings: Sequence[Reading], now_ms: int) -> float | None:
    """The 25th-percentile age (seconds, ≥ 0) of up to :data:`SAMPLE` readings spread
    across ``readings``; None for an empty batch."""
    count = len(readings)
    if not count:
        return None
    step = max(1, count // SAMPLE)
    ages = sorted(now_ms - r.ts_ms for r in readings[::step])
    return max(0.0, ages[len(ages) // 4] / 1000)


class LagTracker:
    """Maintains ``state`` from commits and broker values; :meth:`evaluate` decides
    behind / caught up and logs each change once."""

    def __init__(
        self,
        state: LagState,
        threshold_s: float,
        queued: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.time,
        idle_at: Callable[[], float] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.threshold_s = threshold_s
        self.queued = queued
        self.clock = clock
        self.idle_at = idle_at
        """``Pipeline.idle_at``; None: never busy, so age alone never means behind."""
        self.monotonic = monotonic
        self.last_commit = clock()
        self.last_drop = 0.0
        self._dropped_base: int | None = None
        self._dropped_last: int | None = None
        self._dropped_at_behind = 0

    def committed(self, readings: Sequence[Reading], receipt_to_commit_s: float) -> None:
        """One batch committed now; ``receipt_to_commit_s`` is its slowest message's
        time from arrival to commit."""
        now = self.clock()
        self.last_commit = now
        state = self.state
        state.receipt_to_commit_s = receipt_to_commit_s
        age = batch_age_s(readings, int(now * 1000))
        if age is not None:
            previous = state.reading_age_s
            state.reading_age_s = (
                age if previous == 0 else (SMOOTHING * age + (1 - SMOOTHING) * previous)
            )
        self.evaluate(now)

    def broker_value(self, topic: str, payload: bytes) -> None:
        """A ``$SYS`` message from the broker (ignored unless it is one we track)."""
        name = BROKER_TOPICS.get(topic)
        if name is None:
            return
        try:
            value = int(payload.strip() or b"x")
        except ValueError:
            return
        state = self.state
        setattr(state, name, value)
        if name == "broker_dropped":
            if self._dropped_base is None or (
                self._dropped_last is not None and value < self._dropped_last
            ):
                # First value, or the broker restarted (its counters start again).
                self._dropped_base = value - state.dropped_since_start
            elif self._dropped_last is not None and value > self._dropped_last:
                self.last_drop = self.clock()
            self._dropped_last = value
            state.dropped_since_start = value - self._dropped_base
            self.evaluate(self.clock())

    def evaluate(self, now: float | None = None) -> None:
        """Decide behind / caught up (call after updates and periodically)."""
        now = self.clock() if now is None else now
        state = self.state
        threshold = self.threshold_s
        if now - self.last_commit > threshold and self.queued() == 0:
            state.reading_age_s = 0.0  # idle, not behind
        dropping = self.last_drop and now - self.last_drop < threshold
        busy = self.idle_at is not None and self.monotonic() - self.idle_at() >= BUSY_S
        if not state.behind:
            if (busy and state.reading_age_s > threshold) or dropping:
                state.behind = True
                state.since = now
                self._dropped_at_behind = state.dropped_since_start
                state.reason = self._reason(bool(dropping))
                log.warning("falling behind: %s", state.reason)
            return
        state.reason = self._reason(bool(dropping))
        if (state.reading_age_s < threshold / 2 or not busy) and not dropping:
            dropped = state.dropped_since_start - self._dropped_at_behind
            log.info(
                "caught up after %.0f s (readings now committed %.1f s after their timestamps%s)",
                now - state.since,
                state.reading_age_s,
                f"; the broker dropped {dropped:,} messages meanwhile" if dropped else "",
            )
            state.behind = False
            state.since = 0.0
            state.reason = ""

    def _reason(self, dropping: bool) -> str:
        state = self.state
        parts = []
        if state.reading_age_s > self.threshold_s / 2:
            parts.append(
                f"readings are committed {state.reading_age_s:.0f} s after their timestamps"
                f" (threshold {self.threshold_s:g} s)"
            )
        if dropping:
            parts.append(
                f"the broker dropped {state.dropped_since_start:,} messages since the gateway"
                " started ($SYS/broker/publish/messages/dropped, broker-wide)"
            )
        return "; ".join(parts) or "catching up"
