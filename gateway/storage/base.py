"""The two interfaces between tidegate and a storage backend, and the data they carry.

**Write side** (:class:`WriteStore`) — what the pipeline needs. ``write_batch`` commits
one batch's readings and dead letters in one durable transaction: all become durable
together, or none do (then it raises :class:`~gateway.errors.StorageError` and the
pipeline retries the same batch). Writes are idempotent: a reading whose
``(series, ts)`` is already stored is ignored and counted as a duplicate, so a
redelivered MQTT message never creates a second row. ``maintain`` is the backend's
background upkeep (compaction, rollups, retention…), which the application runs as a
service beside the pipeline; a backend that needs none returns at once.

**Read side** (:class:`ReadStore`) — what the CLI, the HTTP API and
``tidegate-sim verify`` need: series and their latest values, pages and streams of
readings with keyset cursors, aggregates by tier (each bucket says which tier answered
it), totals, dead letters. Requests are the checked values of :mod:`gateway.request`;
a bad one raises :class:`~gateway.errors.QueryError`, a failing database
:class:`~gateway.errors.StorageError`. Every call sees one consistent state of the
store; :meth:`ReadStore.snapshot` keeps one state across many calls (``verify`` reads
a live, compacting gateway through it).

Both sides are asynchronous: the gateway and its API run on one event loop, which a
query must never block (the SQLite backend runs its statements on worker threads with
a per-query deadline; a PostgreSQL backend awaits its driver), and the CLI simply runs
one loop per command. Nothing here names a table or a connection type; backends live
in subpackages (:mod:`gateway.storage.sqlite`), the fake for unit tests in
:mod:`gateway.storage.memory`, and ``tests/unit/storage/test_contract.py`` holds every
backend to the same behaviour.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.models import DeadLetter, Reading
from gateway.request import AggregateQuery, ReadingsQuery, SeriesCursor

# --- write side -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one committed batch did."""

    stored: int
    duplicates: int
    dead_letters: int


class WriteStore(Protocol):
    """Durable storage for readings and dead letters (one writer per store)."""

    async def open(self) -> None:
        """Create or migrate the store and make it ready for writes."""

    async def write_batch(
        self, readings: Sequence[Reading], dead_letters: Sequence[DeadLetter]
    ) -> WriteResult:
        """Commit ``readings`` and ``dead_letters`` in one durable transaction."""

    async def maintain(self) -> None:
        """Background upkeep until cancelled (returns at once if there is none)."""

    async def close(self) -> None:
        """Flush and release everything; safe to call twice."""


# --- direct-mode groups: who holds which MQTT client-id slot ---------------------------


@dataclass(frozen=True, slots=True)
class SlotSurvey:
    """The claims on a group's slots as the server sees them now."""

    members: int
    """Live processes of the group (each holds a member claim for its whole life)."""
    mine: frozenset[int]
    """Slots this process holds."""
    taken: frozenset[int]
    """Slots any process holds (``mine`` included)."""


class SlotLocks(Protocol):
    """Exclusive claims on the client-id slots of one direct-mode group
    (:mod:`gateway.sources.slots`, ``docs/decisions/0124``), held by a store that sees
    every member: a claim is released when its holder releases it, closes, or dies
    (its connection to the store ends). Every call raises
    :class:`~gateway.errors.StorageError` when the store cannot be asked; after that the
    process must assume it holds nothing until :meth:`open` succeeds again."""

    async def open(self) -> None:
        """Connect (again) and join the group as a member; holds no slot yet."""

    async def survey(self) -> SlotSurvey:
        """Who holds what; also proves this process's claims are still held."""

    async def try_claim(self, slot: int) -> bool:
        """Claim ``slot`` if nobody holds it; False when someone does."""

    async def release(self, slot: int) -> None:
        """Give up ``slot`` (after its MQTT connection is closed)."""

    async def load_record(self, slot: int) -> str | None:
        """What the broker session of ``slot`` holds, as its driver last recorded it
        (opaque text; None: never recorded)."""

    async def save_record(self, slot: int, record: str) -> None:
        """Record what ``slot``'s session holds, for whichever member drives it next."""

    async def forget_record(self, slot: int) -> None:
        """Drop ``slot``'s record (its session was emptied and retired)."""

    async def recorded(self) -> frozenset[int]:
        """Every slot whose record holds a subscription (an empty record is a session
        that takes no share)."""

    async def close(self) -> None:
        """Leave the group, releasing every claim; safe to call twice."""


# --- read side: what comes back --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadingRow:
    """One stored reading. ``series_id`` with ``ts_ms`` is the keyset cursor."""

    sensor_id: str
    metric: str
    ts_ms: int
    value: float
    unit: str | None
    tags: dict[str, str] = field(default_factory=dict)
    series_id: int = 0
    gateway_id: str = ""
    """The gateway the reading came from (a local store: its own id)."""


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """One series with its summary (``count`` is -1 when not counted)."""

    series_id: int
    sensor_id: str
    metric: str
    unit: str | None
    tags: dict[str, str]
    count: int
    first_ts_ms: int | None
    last_ts_ms: int | None
    last_value: float | None
    gateway_id: str = ""


@dataclass(frozen=True, slots=True)
class Latest:
    """One series with its newest reading (``None`` when it has none)."""

    series_id: int
    sensor_id: str
    metric: str
    unit: str | None
    tags: dict[str, str]
    last_ts_ms: int | None
    last_value: float | None
    gateway_id: str = ""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One time bucket of one series."""

    sensor_id: str
    metric: str
    start_ms: int
    values: dict[str, float | int | None]
    tier: str = "raw"
    """Which data answered this bucket: ``raw``, ``1m`` or ``1h``."""
    gateway_id: str = ""


@dataclass(frozen=True, slots=True)
class Overview:
    """Cheap figures (no counting): what a metrics scrape reads."""

    series: int
    database_bytes: int
    wal_bytes: int
    oldest_ts_ms: int | None
    newest_ts_ms: int | None


@dataclass(frozen=True, slots=True)
class Stats:
    """Totals (counting rows: cache them)."""

    readings: int
    series: int
    sensors: int
    dead_letters: int
    database_bytes: int
    wal_bytes: int
    oldest_ts_ms: int | None
    newest_ts_ms: int | None


@dataclass(frozen=True, slots=True)
class Forwarding:
    """What an edge gateway last reported with a forwarded batch (the central store's
    forward position of that gateway)."""

    forwarded: int
    """Readings the centre committed from it, in total."""
    backlog: int
    """Readings it still held unforwarded when it sent its last batch."""
    oldest_pending_ms: int | None
    """Receive time of its oldest unforwarded reading then (None: none pending)."""
    last_forward_ms: int
    """When its last batch was committed centrally."""


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """One gateway whose readings the store holds: a local store knows only itself; the
    central store every edge that forwards into it and every direct-mode group."""

    gateway_id: str
    series: int
    sensors: int
    forwarding: Forwarding | None = None
    """None when the gateway does not forward into this store (the local store itself,
    a direct-mode group)."""


@dataclass(frozen=True, slots=True)
class StorageDetails:
    """Backend-specific state for ``tidegate stats``: plain data for JSON, and the
    same as ``(label, text)`` lines for people."""

    data: dict[str, Any]
    lines: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """One stored dead letter."""

    id: int
    received_at_ms: int
    subscription: str
    topic: str
    payload: bytes
    payload_size: int
    reason: str
    gateway_id: str = ""

    @property
    def truncated(self) -> bool:
        """True when only the first ``len(payload)`` of ``payload_size`` bytes were kept."""
        return self.payload_size > len(self.payload)


@dataclass(frozen=True, slots=True)
class ReasonGroup:
    """Dead letters sharing one reason."""

    reason: str
    count: int
    first_ms: int
    last_ms: int


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a request is about; all given conditions must hold.

    ``reason`` matches as a case-insensitive substring, ``payload_contains`` as a byte
    substring; ``since_ms``/``before_ms`` bound the receive time. ``everything``
    selects all rows (with no other condition). ``gateway`` narrows any selection to
    one gateway's dead letters (it selects nothing by itself).
    """

    ids: tuple[int, ...] = ()
    reason: str | None = None
    since_ms: int | None = None
    before_ms: int | None = None
    payload_contains: bytes | None = None
    everything: bool = False
    gateway: str | None = None

    @property
    def empty(self) -> bool:
        """True when nothing was asked for (changing commands refuse to act on that)."""
        return not (
            self.ids
            or self.reason is not None
            or self.since_ms is not None
            or self.before_ms is not None
            or self.payload_contains is not None
            or self.everything
        )


# --- read side: the interface ----------------------------------------------------------


class Reads(Protocol):
    """The queries. Lists are bounded by the request; streams yield chunks of rows and
    hold the store's resources until exhausted or closed (``aclose``).

    The gateway is one more dimension: every row says which gateway it came from
    (``gateway_id``), and every query takes a ``gateway`` filter (in the request, the
    selection, or as a keyword). A local store holds one gateway, its own; a filter
    naming another matches nothing."""

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
        """Matching series with first/last reading (and its row count unless ``counts``
        is false: counting reads every row), ordered by sensor, metric, id: those after
        ``after``, at most ``limit`` (0: all — page through a large store instead); of
        one gateway with ``gateway``."""

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
        """The newest reading of matching series, ordered by sensor, metric, id: those
        after ``after``, at most ``limit`` (0: all). ``match``: a case-insensitive
        substring of the sensor id or the metric; ``gateway``: one gateway's series."""

    async def readings(self, query: ReadingsQuery) -> list[ReadingRow]:
        """One page: at most ``query.limit`` rows (ask one more to know whether a next
        page exists)."""

    def stream_readings(
        self, query: ReadingsQuery, chunk: int = 1000
    ) -> AsyncIterator[list[ReadingRow]]:
        """All rows of ``query`` (``limit`` 0: no limit) in chunks, for exports."""

    async def aggregate(self, query: AggregateQuery) -> list[Bucket]:
        """Buckets in series order then time (at most ``query.limit`` if set)."""

    def stream_aggregate(
        self, query: AggregateQuery, chunk: int = 1000
    ) -> AsyncIterator[list[Bucket]]:
        """The buckets of ``query`` in chunks, for exports."""

    async def overview(self) -> Overview:
        """Sizes, series and time bounds, without counting rows."""

    async def stats(self, gateway: str | None = None) -> Stats:
        """Totals, of one gateway's series and dead letters with ``gateway`` (counts
        every row: slow on big stores; sizes are the whole store's)."""

    async def gateways(self) -> list[GatewayInfo]:
        """Every gateway the store holds readings or a forward position of, by id."""

    async def details(self, gateway: str | None = None) -> StorageDetails:
        """Backend-specific state (tiers, vacuum, wear, …) for ``tidegate stats``; the
        central store's forwarding figures of one gateway with ``gateway``."""

    async def dead_letter_groups(self, selection: Selection = Selection()) -> list[ReasonGroup]:
        """Selected dead letters grouped by reason, most frequent first."""

    def stream_dead_letters(
        self, selection: Selection = Selection(), limit: int = 100, chunk: int = 200
    ) -> AsyncIterator[list[DeadLetterRow]]:
        """Selected dead letters, newest first (``limit`` 0: all), in chunks."""

    async def dead_letter(self, ident: int) -> DeadLetterRow:
        """One dead letter; :class:`~gateway.errors.QueryError` if there is none."""


class ReadStore(Reads, Protocol):
    """Read access to a store (any number of readers beside its writer)."""

    def snapshot(self) -> AbstractAsyncContextManager[Reads]:
        """``async with store.snapshot() as snap:`` — every read through ``snap`` sees
        the same committed state, whatever the writer and its maintenance do meanwhile
        (for tools that compare many reads, such as ``tidegate-sim verify``)."""

    async def close(self) -> None:
        """Release connections and threads; safe to call twice."""
