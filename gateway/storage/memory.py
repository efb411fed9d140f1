"""An in-memory sink for unit tests: same contract as the SQLite sink, no disk."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.errors import StorageError
from gateway.models import DeadLetter, Reading
from gateway.storage.base import WriteResult


class MemorySink:
    """Keeps readings keyed by ``(series_key, ts_ms)``. ``fail_next`` makes the next
    ``write_batch`` calls raise, to exercise retries."""

    def __init__(self) -> None:
        self.readings: dict[tuple[object, int], Reading] = {}
        self.dead_letters: list[DeadLetter] = []
        self.batches = 0
        self.fail_next = 0
        self.opened = False
        self.closed = False

    async def open(self) -> None:
        self.opened = True

    async def write_batch(
        self, readings: Sequence[Reading], dead_letters: Sequence[DeadLetter]
    ) -> WriteResult:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise StorageError("injected failure")
        stored = 0
        for reading in readings:
            key = (reading.series_key, reading.ts_ms)
            if key not in self.readings:
                self.readings[key] = reading
                stored += 1
        self.dead_letters.extend(dead_letters)
        self.batches += 1
        return WriteResult(stored, len(readings) - stored, len(dead_letters))

    async def maintain(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True
