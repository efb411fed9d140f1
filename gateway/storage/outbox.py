"""The forwarding outbox seen from the forwarder: what an edge store hands to
:mod:`gateway.upstream` (``docs/upstream.md``, decision 0118).

An edge store that forwards keeps a copy of every newly stored reading (not the
duplicates) in an *outbox*, appended in the same transaction as the readings, numbered
by a sequence that follows commit order. The forwarder reads the rows after the
central store's position, commits them centrally together with the new position, and
then tells the outbox (:meth:`Outbox.confirm`), which deletes what went up. The
central store is the truth about the position: at start the forwarder calls
:meth:`Outbox.adopt` with it before reading anything.

Nothing here names a table or a driver; :mod:`gateway.storage.sqlite.outbox` is the
implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Protocol

OutboxRow = tuple[int, int, int, float]
"""``(seq, local_series_id, ts_ms, value)``."""

SeriesText = tuple[str, str, str, str]
"""A series as the central dictionary keys it: ``(sensor_id, metric, unit, tags)``,
unit and tags ``''`` when absent, tags in the canonical JSON text."""


@dataclass(frozen=True, slots=True)
class Pending:
    """The unforwarded part of the outbox."""

    count: int
    """Readings not yet confirmed by the central store."""
    oldest_received_ms: int | None
    """When the oldest of them was written (its batch's commit; ``None``: none pending)."""
    position: int
    """The central position this store last confirmed."""
    last_seq: int
    """The highest sequence number handed out so far."""
    dropped: int = 0
    """Unforwarded readings dropped for space over the store's life
    (``upstream.full_policy = "drop_oldest"``)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Rows after a position, in sequence order, and the series they name."""

    rows: Sequence[OutboxRow]
    series: Mapping[int, SeriesText] = field(default_factory=dict)
    """Local series id → key, for the ids the caller did not say it knows."""
    after: Pending | None = None
    """What is left beyond these rows (read in the same transaction)."""

    @property
    def last_seq(self) -> int:
        return self.rows[-1][0] if self.rows else 0


@dataclass(frozen=True, slots=True)
class Adoption:
    """What :meth:`Outbox.adopt` found."""

    confirmed: int
    """Rows the central store already had (committed there before a crash): deleted."""
    renumbered: int
    """Rows renumbered after the central position because the local sequence did not
    continue it (a new or restored database, another gateway id): they go up again,
    and the central store ignores any it already holds."""
    went_back: bool = False
    """The central position was below what this store had confirmed (the central
    database was restored or its gateway row reset)."""


class Outbox(Protocol):
    """An edge store's outbox (see the module docstring)."""

    async def adopt(self, position: int, gateway_id: str) -> Adoption:
        """Align the outbox with the central ``position`` for ``gateway_id`` (at start)."""
        ...

    async def read(self, after: int, limit: int, known: AbstractSet[int]) -> Chunk:
        """Up to ``limit`` rows with a sequence above ``after``, with the keys of the
        series not in ``known``."""
        ...

    async def confirm(self, position: int) -> None:
        """The central store committed everything up to ``position``: drop it here."""
        ...

    async def pending(self, after: int | None = None) -> Pending:
        """The unforwarded backlog (cheap: a few index seeks); with ``after``, what is
        left beyond that sequence number."""
        ...

    async def close(self) -> None: ...
