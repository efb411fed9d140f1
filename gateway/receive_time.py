"""Receive times that never collide within a series.

A reading without a timestamp of its own (ESPHome, Shelly, Tasmota, raw values, line
protocol without a time) is stored at the time the gateway received it, and readings are
keyed by ``(series, ts)`` in milliseconds. Two such readings of one series in the same
millisecond — a backlog delivered in one burst after a restart, two values in one
message — would be one row, and the second would be thrown away as a "duplicate" after
being acknowledged. :class:`ReceiveClock` gives every such reading its own millisecond:
the receive time, or one more than the last receive time given to that series, whichever
is later (``docs/decisions/0082``). A burst of N readings of one series is spread over
N ms after its arrival, in arrival order.

Which readings took the receive time is found out exactly, without asking each codec:
codecs put ``ctx.now_ms`` where a timestamp is missing, so a reading whose ``ts`` equals
the receive time is a *candidate*. Usually the candidate's series has no receive time at
or after this millisecond yet and nothing needs to move. Only when one would collide is
the message decoded a second time with the receive time one millisecond later: the
readings whose ``ts`` moved with it are the ones that had none (a device that sends its
own timestamp equal to the receive millisecond keeps it — its repeats must still meet
the primary key).

Across restarts: :attr:`ReceiveClock.high_ms`, the latest receive time given out that
was ahead of the wall clock, is written in the same transaction as the readings that
carry it (:mod:`gateway.storage.sqlite.receive_floor`), and the next process starts
above it (:attr:`ReceiveClock.floor_ms`), so a restart quicker than a burst's spread
cannot reuse a millisecond either.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

from gateway.models import Reading, Tags

SeriesKey = tuple[str, str, str | None, Tags]

PRUNE_AT = 10_000
"""Series remembered before stale entries are dropped (an entry older than the current
millisecond can never matter again)."""


_ts_of = operator.itemgetter(2)  # Reading.ts_ms


def _key(reading: Reading) -> SeriesKey:
    return (reading.sensor_id, reading.metric, reading.unit, reading.tags)


class ReceiveClock:
    """Hands out per-series receive times that never repeat (see the module docstring).

    Runs on the event loop (one per gateway process, shared by every connection); the
    writer thread only reads :attr:`high_ms`.
    """

    def __init__(self, floor_ms: int = 0) -> None:
        self.floor_ms = floor_ms
        """Every receive time handed out is above this (the previous run's
        :attr:`high_ms`, or entries dropped while still ahead of the clock)."""
        self.high_ms = floor_ms
        """The latest receive time handed out (or inherited) that was ahead of the
        wall clock when assigned; persisted with the batches that carry it."""
        self._last: dict[SeriesKey, int] = {}
        self._prune_at = PRUNE_AT
        self.moved = 0
        """Readings given a later millisecond than their arrival (a metric)."""

    def stamp(
        self, readings: list[Reading], now_ms: int, redecode: Callable[[], list[Reading]]
    ) -> list[Reading]:
        """``readings`` of one message decoded with receive time ``now_ms``, with every
        reading that took the receive time moved to its own millisecond where needed.
        ``redecode()`` must decode the same message with receive time ``now_ms + 1``."""
        if now_ms not in map(_ts_of, readings):  # the usual case, decided in C
            return readings
        candidates = [i for i, r in enumerate(readings) if r.ts_ms == now_ms]
        last = self._last
        keys = [_key(readings[i]) for i in candidates]
        if (
            self.floor_ms < now_ms
            and len(set(keys)) == len(keys)
            and all(last.get(k, 0) < now_ms for k in keys)
        ):
            # Nothing collides: each series' receive time is simply now (if a candidate
            # carried its own ts equal to now, remembering it only spaces later ones).
            for k in keys:
                last[k] = now_ms
            self._maybe_prune(now_ms)
            return readings
        shifted = redecode()
        if len(shifted) != len(readings):  # a codec that is not deterministic: leave as is
            return readings
        out = list(readings)
        floor = self.floor_ms
        took_receive_time = [shifted[i].ts_ms == now_ms + 1 for i in candidates]
        for k, took in zip(keys, took_receive_time, strict=True):
            if not took:  # its own timestamp, equal to the receive millisecond by chance:
                last[k] = max(last.get(k, 0), now_ms)  # receive times go after it
        for i, k, took in zip(candidates, keys, took_receive_time, strict=True):
            if not took:
                continue
            ts = max(now_ms, last.get(k, floor) + 1, floor + 1)
            last[k] = ts
            if ts != now_ms:
                out[i] = readings[i]._replace(ts_ms=ts)
                self.moved += 1
                if ts > self.high_ms:
                    self.high_ms = ts
        self._maybe_prune(now_ms)
        return out

    def _maybe_prune(self, now_ms: int) -> None:
        last = self._last
        if len(last) < self._prune_at:
            return
        for key in [k for k, ts in last.items() if ts < now_ms]:
            del last[key]
        if len(last) >= 10 * PRUNE_AT:
            # Very many series ahead of the clock at once: forget them all, but keep
            # every later receive time above theirs.
            self.floor_ms = max(self.floor_ms, *last.values())
            last.clear()
        self._prune_at = max(PRUNE_AT, 2 * len(last))
