"""The sink contract.

A sink writes one batch per transaction: all of a batch's readings and dead letters
become durable together, or none do (then the call raises a
:class:`~gateway.errors.StorageError` and the pipeline retries the same batch).
Writes are idempotent: a reading whose ``(series, ts)`` is already stored is ignored
and counted as a duplicate, so a redelivered MQTT message never creates a second row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.models import DeadLetter, Reading


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one committed batch did."""

    stored: int
    duplicates: int
    dead_letters: int


class Sink(Protocol):
    """Durable storage for readings and dead letters."""

    async def open(self) -> None:
        """Create or migrate the store and make it ready for writes."""

    async def write_batch(
        self, readings: Sequence[Reading], dead_letters: Sequence[DeadLetter]
    ) -> WriteResult:
        """Commit ``readings`` and ``dead_letters`` in one transaction."""

    async def close(self) -> None:
        """Flush and release everything; safe to call twice."""
