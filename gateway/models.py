"""The data that flows through the pipeline.

``Reading`` is a ``NamedTuple`` rather than a pydantic model on purpose: it is created
hundreds of thousands of times a second on the hot path, after the payload itself was
validated by pydantic in the codec (see ``docs/decisions/0002-reading-tuples.md``).
Use :func:`gateway.validation.check_reading` (or a codec) to build valid readings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

Tags = tuple[tuple[str, str], ...]
"""Tags as a tuple of ``(key, value)`` pairs sorted by key: hashable, canonical."""

NO_TAGS: Tags = ()


class Reading(NamedTuple):
    """One measurement. ``ts_ms`` is milliseconds since the Unix epoch, UTC."""

    sensor_id: str
    metric: str
    ts_ms: int
    value: float
    unit: str | None = None
    tags: Tags = NO_TAGS

    @property
    def series_key(self) -> tuple[str, str, str | None, Tags]:
        """The identity of the series this reading belongs to."""
        return (self.sensor_id, self.metric, self.unit, self.tags)


@dataclass(slots=True)
class DeadLetter:
    """A message that could not be decoded, stored with the reason instead of readings."""

    received_at_ms: int
    topic: str
    payload: bytes
    reason: str
    subscription: str = ""


MAX_SKIPPED_NAMES = 20
"""How many skipped field names a message keeps (the count is always exact)."""


@dataclass(slots=True)
class Decoded:
    """What a codec made of one message: readings, plus the fields it skipped on purpose
    (strings, states, nulls, NaN, excluded fields) that are not errors: ``skipped``
    counts them exactly, ``skipped_names`` names the first :data:`MAX_SKIPPED_NAMES`."""

    readings: list[Reading]
    skipped: int = 0
    skipped_names: list[str] | None = None

    def skip(self, name: str) -> None:
        """Count one skipped field named ``name``."""
        self.skipped += 1
        names = self.skipped_names
        if names is None:
            self.skipped_names = [name]
        elif len(names) < MAX_SKIPPED_NAMES:
            names.append(name)


def _no_ack() -> None:
    return None


@dataclass(slots=True)
class Envelope:
    """One MQTT message's worth of work for the writer.

    Exactly one of ``readings`` (possibly empty: a well-formed message with nothing
    storable) or ``dead_letter`` is meaningful. ``ack`` is called by the writer only
    after the transaction holding this envelope committed; it must be cheap and must
    never raise.
    """

    readings: list[Reading]
    dead_letter: DeadLetter | None = None
    ack: Callable[[], None] = field(default=_no_ack)
    subscription: str = ""
    skipped: int = 0
    skipped_names: list[str] | None = None
    """The first skipped field names (see :class:`Decoded`), for ``tidegate decode``."""
    received_at: float = 0.0
    """``time.monotonic()`` when the message arrived; used for commit-latency metrics."""
