"""An in-memory store for unit tests: both interfaces of :mod:`gateway.storage.base`, no
disk. ``tests/unit/storage/test_contract.py`` holds it to the same behaviour as the
real backends; it has no rollup tiers (every bucket is answered from raw readings) and
no size limits."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar

from gateway.errors import QueryError, StorageError
from gateway.models import DeadLetter, Reading
from gateway.request import AggregateQuery, ReadingsQuery, SeriesCursor
from gateway.storage.base import (
    Bucket,
    DeadLetterRow,
    GatewayInfo,
    Latest,
    Overview,
    ReadingRow,
    Reads,
    ReasonGroup,
    Selection,
    SeriesInfo,
    Stats,
    StorageDetails,
    WriteResult,
)


@dataclass(slots=True)
class _Series:
    id: int
    sensor_id: str
    metric: str
    unit: str | None
    tags: dict[str, str]
    values: dict[int, float] = field(default_factory=dict)
    """ts_ms → value."""


@dataclass(slots=True)
class _State:
    series: dict[tuple[object, ...], _Series] = field(default_factory=dict)
    dead: list[DeadLetterRow] = field(default_factory=list)
    next_dead_id: int = 1


T = TypeVar("T")


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _MemoryReads:
    """The read queries over one state (the live one, or a snapshot's copy), as the
    local store of gateway ``gateway_id``."""

    def __init__(self, state: _State, gateway_id: str) -> None:
        self._state = state
        self.gateway_id = gateway_id

    # -- helpers ---------------------------------------------------------------------

    def _other(self, gateway: str | None) -> bool:
        """True when ``gateway`` names another gateway than this store's own."""
        return gateway is not None and gateway != self.gateway_id

    def _find(
        self,
        sensor: str | None,
        metric: str | None,
        match: str | None = None,
        after: SeriesCursor | None = None,
        limit: int = 0,
        gateway: str | None = None,
    ) -> list[_Series]:
        if self._other(gateway):
            return []
        needle = match.lower() if match else None
        found = sorted(
            (
                s
                for s in self._state.series.values()
                if (sensor is None or s.sensor_id == sensor)
                and (metric is None or s.metric == metric)
                and (needle is None or needle in s.sensor_id.lower() or needle in s.metric.lower())
                and (after is None or (s.sensor_id, s.metric, s.id) > after)
            ),
            key=lambda s: (s.sensor_id, s.metric, s.id),
        )
        return found[:limit] if limit else found

    def _rows(self, query: ReadingsQuery) -> Iterator[ReadingRow]:
        rows = [
            (ts, s.id, value, s)
            for s in self._find(query.sensor, query.metric, gateway=query.gateway)
            for ts, value in s.values.items()
            if (query.since_ms is None or ts >= query.since_ms)
            and (query.until_ms is None or ts < query.until_ms)
        ]
        rows.sort(key=lambda r: (r[0], r[1]), reverse=query.descending)
        count = 0
        for ts, sid, value, s in rows:
            after = query.after
            if after is not None and (
                (ts, sid) >= after if query.descending else (ts, sid) <= after
            ):
                continue
            yield ReadingRow(
                s.sensor_id, s.metric, ts, value, s.unit, dict(s.tags), sid, self.gateway_id
            )
            count += 1
            if query.limit and count >= query.limit:
                return

    def _buckets(self, query: AggregateQuery) -> Iterator[Bucket]:
        count = 0
        size = query.bucket_ms
        for s in self._find(query.sensor, query.metric, gateway=query.gateway):
            groups: dict[int, list[tuple[int, float]]] = {}
            for ts, value in sorted(s.values.items()):
                if query.since_ms <= ts < query.until_ms:
                    groups.setdefault(ts // size, []).append((ts, value))
            for b in sorted(groups):
                points = groups[b]
                values = [v for _ts, v in points]
                total = sum(values)
                every: dict[str, float | int | None] = {
                    "min": min(values),
                    "max": max(values),
                    "avg": total / len(values),
                    "sum": total,
                    "count": len(values),
                    "last": points[-1][1],
                }
                yield Bucket(
                    s.sensor_id,
                    s.metric,
                    b * size,
                    {a: every[a] for a in query.aggregates},
                    gateway_id=self.gateway_id,
                )
                count += 1
                if query.limit and count >= query.limit:
                    return

    def _selected(self, selection: Selection) -> list[DeadLetterRow]:
        if self._other(selection.gateway):
            return []

        def wanted(d: DeadLetterRow) -> bool:
            return (
                (not selection.ids or d.id in selection.ids)
                and (selection.reason is None or selection.reason.lower() in d.reason.lower())
                and (selection.since_ms is None or d.received_at_ms >= selection.since_ms)
                and (selection.before_ms is None or d.received_at_ms < selection.before_ms)
                and (selection.payload_contains is None or selection.payload_contains in d.payload)
            )

        return [d for d in self._state.dead if wanted(d)]

    def _bounds(self) -> tuple[int | None, int | None]:
        stamps = [ts for s in self._state.series.values() for ts in s.values]
        return (min(stamps), max(stamps)) if stamps else (None, None)

    # -- Reads -----------------------------------------------------------------------

    async def series(
        self,
        sensor: str | None = None,
        metric: str | None = None,
        *,
        counts: bool = True,
        after: SeriesCursor | None = None,
        limit: int = 0,
        gateway: str | None = None,
    ) -> list[SeriesInfo]:
        out = []
        for s in self._find(sensor, metric, after=after, limit=limit, gateway=gateway):
            first = min(s.values) if s.values else None
            last = max(s.values) if s.values else None
            out.append(
                SeriesInfo(
                    s.id,
                    s.sensor_id,
                    s.metric,
                    s.unit,
                    dict(s.tags),
                    len(s.values) if counts else -1,
                    first,
                    last,
                    s.values[last] if last is not None else None,
                    self.gateway_id,
                )
            )
        return out

    async def latest(
        self,
        sensor: str | None = None,
        metric: str | None = None,
        *,
        match: str | None = None,
        after: SeriesCursor | None = None,
        limit: int = 0,
        gateway: str | None = None,
    ) -> list[Latest]:
        out = []
        for s in self._find(sensor, metric, match, after, limit, gateway):
            last = max(s.values) if s.values else None
            value = s.values[last] if last is not None else None
            out.append(
                Latest(
                    s.id, s.sensor_id, s.metric, s.unit, dict(s.tags), last, value, self.gateway_id
                )
            )
        return out

    async def readings(self, query: ReadingsQuery) -> list[ReadingRow]:
        return list(self._rows(query))

    async def stream_readings(
        self, query: ReadingsQuery, chunk: int = 1000
    ) -> AsyncIterator[list[ReadingRow]]:
        for part in _chunks(self._rows(query), chunk):
            yield part

    async def aggregate(self, query: AggregateQuery) -> list[Bucket]:
        return list(self._buckets(query))

    async def stream_aggregate(
        self, query: AggregateQuery, chunk: int = 1000
    ) -> AsyncIterator[list[Bucket]]:
        for part in _chunks(self._buckets(query), chunk):
            yield part

    async def overview(self) -> Overview:
        oldest, newest = self._bounds()
        return Overview(len(self._state.series), 0, 0, oldest, newest)

    async def stats(self, gateway: str | None = None) -> Stats:
        if self._other(gateway):
            return Stats(0, 0, 0, 0, 0, 0, None, None)
        oldest, newest = self._bounds()
        state = self._state
        return Stats(
            sum(len(s.values) for s in state.series.values()),
            len(state.series),
            len({s.sensor_id for s in state.series.values()}),
            len(state.dead),
            0,
            0,
            oldest,
            newest,
        )

    async def gateways(self) -> list[GatewayInfo]:
        series = self._state.series.values()
        sensors = len({s.sensor_id for s in series})
        return [GatewayInfo(self.gateway_id, len(series), sensors)]

    async def details(self, gateway: str | None = None) -> StorageDetails:
        return StorageDetails({"backend": "memory"}, [("backend", "memory")])

    async def dead_letter_groups(self, selection: Selection = Selection()) -> list[ReasonGroup]:
        groups: dict[str, list[int]] = {}
        for d in self._selected(selection):
            groups.setdefault(d.reason, []).append(d.received_at_ms)
        out = [ReasonGroup(r, len(t), min(t), max(t)) for r, t in groups.items()]
        out.sort(key=lambda g: (-g.count, g.reason))
        return out

    async def stream_dead_letters(
        self, selection: Selection = Selection(), limit: int = 100, chunk: int = 200
    ) -> AsyncIterator[list[DeadLetterRow]]:
        rows = [
            replace(d, gateway_id=self.gateway_id)
            for d in sorted(self._selected(selection), key=lambda d: -d.id)
        ]
        if limit > 0:
            rows = rows[:limit]
        for part in _chunks(rows, chunk):
            yield part

    async def dead_letter(self, ident: int) -> DeadLetterRow:
        for d in self._state.dead:
            if d.id == ident:
                return replace(d, gateway_id=self.gateway_id)
        raise QueryError(f"no dead letter with id {ident}")


class MemoryStore(_MemoryReads):
    """Both sides in memory. ``stored`` maps ``(series_key, ts_ms)`` to what was
    stored and ``dead_letters`` lists what was written, for tests to inspect;
    ``fail_next`` makes the next ``write_batch`` calls raise, to exercise retries.
    ``gateway_id`` is the id its rows carry (the local gateway's)."""

    def __init__(self, dead_letter_max_payload: int = 64 * 1024, gateway_id: str = "local") -> None:
        super().__init__(_State(), gateway_id)
        self.dead_letter_max_payload = dead_letter_max_payload
        self.stored: dict[tuple[object, int], Reading] = {}
        self.dead_letters: list[DeadLetter] = []
        self.batches = 0
        self.fail_next = 0
        self.opened = False
        self.closed = False

    # -- WriteStore ------------------------------------------------------------------

    async def open(self) -> None:
        self.opened = True

    async def write_batch(
        self, readings: Sequence[Reading], dead_letters: Sequence[DeadLetter]
    ) -> WriteResult:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise StorageError("injected failure")
        state = self._state
        stored = 0
        for reading in readings:
            key = reading.series_key
            series = state.series.get(key)
            if series is None:
                series = _Series(
                    len(state.series) + 1,
                    reading.sensor_id,
                    reading.metric,
                    reading.unit or None,
                    dict(reading.tags),
                )
                state.series[key] = series
            if reading.ts_ms not in series.values:
                series.values[reading.ts_ms] = reading.value
                self.stored[(key, reading.ts_ms)] = reading
                stored += 1
        for dead in dead_letters:
            kept = dead.payload[: self.dead_letter_max_payload]
            state.dead.append(
                DeadLetterRow(
                    state.next_dead_id,
                    dead.received_at_ms,
                    dead.subscription,
                    dead.topic,
                    kept,
                    len(dead.payload),
                    dead.reason,
                )
            )
            state.next_dead_id += 1
        self.dead_letters.extend(dead_letters)
        self.batches += 1
        return WriteResult(stored, len(readings) - stored, len(dead_letters))

    async def maintain(self) -> None:
        return None

    # -- ReadStore -------------------------------------------------------------------

    def snapshot(self) -> AbstractAsyncContextManager[Reads]:
        return self._snapshot()

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[Reads]:
        yield _MemoryReads(copy.deepcopy(self._state), self.gateway_id)

    async def close(self) -> None:
        self.closed = True
