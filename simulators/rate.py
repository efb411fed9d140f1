"""Rate control: when each sensor publishes, and whether the simulator keeps up.

:class:`Pacer` holds one heap entry per sensor. Sensor ``i``'s ``k``-th tick is due at
``start + offset_i + k / rate + jitter`` where the offsets are *stratified* (sensor
``i`` of ``n`` starts in slot ``i / n`` of the first period, at a random point inside
it) and the jitter is drawn per tick around the nominal time. Because the nominal
times never drift, the aggregate number of ticks due by any moment is ``n × rate ×
elapsed`` to within about one tick per sensor, whatever the jitter: that is what
holds the aggregate rate to ±2 % over any window of a few periods — as long as the
driver pops due ticks in time. When it cannot, due times pile up in the past: the
**lag** (now minus the oldest due time) grows, and :class:`KeepUp` says so.

The clock is injected (a ``() -> float`` in seconds), so tests drive the pacer with a
fake clock and no sleeping.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]

LAG_LIMIT_S = 0.5
"""Falling this far behind the schedule counts as not keeping up …"""
LAG_GRACE_S = 2.0
"""… once it has lasted this long (a GC pause or a burst is not a verdict)."""


class Pacer:
    """Due times of every sensor's ticks; pop the due ones, they are rescheduled."""

    def __init__(
        self,
        sensors: int,
        rate_hz: float,
        start: float,
        rng: random.Random,
        jitter: float = 0.1,
    ) -> None:
        if sensors < 1:
            raise ValueError("sensors must be >= 1")
        if not rate_hz > 0:
            raise ValueError("rate must be > 0")
        if not 0.0 <= jitter < 0.5:
            raise ValueError("jitter must be in [0, 0.5) periods")
        self.sensors = sensors
        self.period = 1.0 / rate_hz
        self.start = start
        self.jitter = jitter
        self._rng = rng
        self._offsets = [(i + rng.random()) / sensors * self.period for i in range(sensors)]
        self._done = bytearray(sensors)
        self._heap: list[tuple[float, int, int]] = [
            (start + self._offsets[i] + self._jitter(), i, 0) for i in range(sensors)
        ]
        heapq.heapify(self._heap)
        self.ticks = 0

    def _jitter(self) -> float:
        if self.jitter == 0.0:
            return 0.0
        return self._rng.uniform(-self.jitter, self.jitter) * self.period

    def nominal(self, sensor: int, k: int) -> float:
        """When sensor ``sensor``'s ``k``-th tick is due, before jitter."""
        return self.start + self._offsets[sensor] + k * self.period

    def pop_due(self, now: float, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` ``(sensor, k)`` ticks due at ``now``, oldest first; each is
        rescheduled for its next period unless the sensor was :meth:`finish`-ed."""
        heap = self._heap
        due: list[tuple[int, int]] = []
        while heap and heap[0][0] <= now and len(due) < limit:
            _when, sensor, k = heap[0]
            if self._done[sensor]:
                heapq.heappop(heap)
                continue
            due.append((sensor, k))
            next_k = k + 1
            # Jitter around the nominal time (never before the previous tick): the
            # schedule does not drift however late a tick was served.
            when = max(_when, self.nominal(sensor, next_k) + self._jitter())
            heapq.heapreplace(heap, (when, sensor, next_k))
        self.ticks += len(due)
        return due

    def finish(self, sensor: int) -> None:
        """Stop scheduling ``sensor`` (it sent its ``--count``)."""
        self._done[sensor] = 1

    @property
    def active(self) -> bool:
        """True while any sensor is still scheduled."""
        while self._heap and self._done[self._heap[0][1]]:
            heapq.heappop(self._heap)
        return bool(self._heap)

    def next_due(self) -> float | None:
        """The earliest due time, or None when every sensor finished."""
        return self._heap[0][0] if self.active else None

    def lag(self, now: float) -> float:
        """How far behind schedule the oldest unserved tick is (0 when on time)."""
        when = self.next_due()
        return 0.0 if when is None else max(0.0, now - when)


class KeepUp:
    """Tracks schedule lag; decides (once, with grace) that the machine cannot keep up."""

    def __init__(self, limit_s: float = LAG_LIMIT_S, grace_s: float = LAG_GRACE_S) -> None:
        self.limit_s = limit_s
        self.grace_s = grace_s
        self.max_lag_s = 0.0
        self._behind_since: float | None = None
        self.fell_behind = False
        """Sticky: the lag stayed above ``limit_s`` for ``grace_s`` at least once."""

    def observe(self, now: float, lag_s: float) -> bool:
        """Record the lag at ``now``; True exactly when the verdict first turns bad."""
        self.max_lag_s = max(self.max_lag_s, lag_s)
        if lag_s <= self.limit_s:
            self._behind_since = None
            return False
        if self._behind_since is None:
            self._behind_since = now
        if not self.fell_behind and now - self._behind_since >= self.grace_s:
            self.fell_behind = True
            return True
        return False

    @property
    def behind(self) -> bool:
        """Currently behind schedule by more than the limit."""
        return self._behind_since is not None


class RateMeter:
    """Events per second over a sliding window (for the progress line) and in total."""

    def __init__(self, clock: Clock, window_s: float = 5.0) -> None:
        self._clock = clock
        self.window_s = window_s
        self.start = clock()
        self.total = 0
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, n: int = 1) -> None:
        self.total += n

    def sample(self) -> float:
        """Record the current total; return the rate over the last window."""
        now = self._clock()
        samples = self._samples
        samples.append((now, self.total))
        while len(samples) > 2 and now - samples[0][0] > self.window_s:
            samples.popleft()
        first_t, first_n = samples[0]
        span = now - first_t
        if span <= 0:
            return 0.0
        return (self.total - first_n) / span

    def overall(self, now: float | None = None) -> float:
        """Average rate since the meter was created."""
        elapsed = (self._clock() if now is None else now) - self.start
        return self.total / elapsed if elapsed > 0 else 0.0
