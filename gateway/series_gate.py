"""Caps on new series: per message and in total.

A series is one ``(sensor_id, metric, unit, tags)``. Each costs a row in the store's
series table and memory in the writer, and every reader that lists series pays for all
of them. One device can create thousands at once by accident or on purpose — a JSON
object with 10,000 keys, a counter or a timestamp in a metric name — and they never go
away. :class:`SeriesGate` refuses a message that would create more than
``max_new_per_message`` new series, or push the store past ``max_series``; the router
dead-letters it with the reason, so nothing is half-stored and nothing is lost (replay
it after raising the limit). Readings of series that already exist always pass.

The gate remembers every series the store holds as a 64-bit hash of its key (about
60 bytes per series), seeded by the store when it opens and extended as messages are
admitted (an admitted message is committed or retried until it is; a restart reseeds
from the store). A hash collision — about one chance in 10^9 at 250,000 series — would
let one new series through uncounted, never refuse a reading.

Runs on the event loop (the router); the store only calls :meth:`load` while opening,
before any message is routed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.models import Reading, Tags

SeriesKey = tuple[str, str, str | None, Tags]


def _key(reading: Reading) -> SeriesKey:
    # unit "" and None are the same series (the store keeps "" for both)
    return (reading[0], reading[1], reading[4] or None, reading[5])


class SeriesGate:
    """See the module docstring. ``max_series`` / ``max_new_per_message`` 0: no cap."""

    def __init__(self, max_series: int, max_new_per_message: int) -> None:
        self.max_series = max_series
        self.max_new_per_message = max_new_per_message
        self.known: set[int] = set()
        self.loaded = False
        """False until the store seeded the gate; an unseeded gate admits everything
        (a backend that cannot list its series keeps working, without caps)."""
        self.refused = 0

    def load(self, keys: Iterable[SeriesKey]) -> None:
        """Seed with the series the store already holds (``unit`` None or ``""``)."""
        self.known.update(hash((s, m, u or None, t)) for s, m, u, t in keys)
        self.loaded = True

    @property
    def series(self) -> int:
        """Series known to exist (stored, or admitted and on their way)."""
        return len(self.known)

    def admit(self, readings: Sequence[Reading]) -> str | None:
        """None when ``readings`` (one message) may be stored — their new series are
        then counted as existing — else the reason to dead-letter the message."""
        if not self.loaded or not readings:
            return None
        if len(readings) == 1 and hash(_key(readings[0])) in self.known:
            return None  # the common message: one reading of a known series
        new = set(map(hash, map(_key, readings)))
        new.difference_update(self.known)
        if not new:
            return None
        count = len(new)
        if self.max_new_per_message and count > self.max_new_per_message:
            self.refused += 1
            return (
                f"message would create {count} new series, more than"
                f" storage.max_new_series_per_message = {self.max_new_per_message}"
            )
        if self.max_series and len(self.known) + count > self.max_series:
            self.refused += 1
            return (
                f"message would create {count} new series but the store already holds"
                f" {len(self.known)} (storage.max_series = {self.max_series}); readings of"
                " existing series are still stored"
            )
        self.known.update(new)
        return None
