"""Who holds the API's connections, and which one gives way when they run out.

A connection is *waiting* while no request is in progress on it (just opened, sending
its headers, or idle between keep-alive requests) and *busy* while a request is being
answered. Waiting connections cost the server nothing but a slot, so they are what
gives way:

* a client at ``per_client`` connections that opens another loses its own oldest
  waiting connection;
* at ``total`` connections, a new one takes the oldest waiting connection of the client
  holding the most (so one client hoarding connections never pushes out someone with
  a single one);
* when nothing is waiting to be evicted, the new connection is *refused*: its request
  is answered 503 and the connection closed (a client then fails loudly and at once
  instead of queueing).

Pure bookkeeping, no I/O and no clock: the protocol (:mod:`gateway.api._uvicorn_adapter`)
closes what :meth:`ConnectionTable.admit` names. Counters feed ``/metrics``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)

CLOSE_REASONS = ("header_timeout", "send_timeout", "evicted", "refused")
"""Why the server closed a connection (the ``reason`` label of
``tidegate_api_connections_closed_total``)."""


@dataclass(frozen=True, slots=True)
class Admission(Generic[C]):
    """What to do with a new connection: close ``evict`` to make room for it, and keep it
    (``accepted``) — or refuse it: answer 503 when its request arrives (``answer``),
    or close it at once when too many refused ones are already waiting for theirs."""

    accepted: bool
    evict: C | None = None
    answer: bool = True


@dataclass
class ConnectionStats:
    """Figures for ``/metrics``."""

    open: int = 0
    closed: Counter[str] = field(default_factory=Counter)


class ConnectionTable(Generic[C]):
    """Open connections by client address, with the caps above."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.stats = ConnectionStats()
        self.refused_open = 0
        """Refused connections still open, waiting for their request to be answered 503
        (the protocol calls :meth:`refused_closed`); at most ``total`` of them."""
        self._client_of: dict[C, str] = {}
        self._count: Counter[str] = Counter()
        self._waiting: dict[str, OrderedDict[C, None]] = {}
        """Per client, its waiting connections, oldest first."""

    def __len__(self) -> int:
        return len(self._client_of)

    def count(self, client: str) -> int:
        return self._count[client]

    def admit(self, conn: C, client: str, spare: Callable[[C], bool] | None = None) -> Admission[C]:
        """Register a new connection (waiting) if there is room or a waiting one to
        evict; the evicted one is forgotten here at once, the caller closes it.

        ``spare(candidate)`` True keeps a candidate from eviction — the server uses it
        for a connection whose request bytes have arrived but not yet been read, so a
        burst of newcomers cannot push out a request that is already on its way in."""
        victim: C | None = None
        if self._count[client] >= self.per_client:
            victim = self._oldest_waiting(client, spare)
        elif len(self._client_of) >= self.total:
            victim = self._hog_waiting(spare)
        else:
            self._register(conn, client)
            return Admission(True)
        if victim is None:
            self.stats.closed["refused"] += 1
            if self.refused_open >= self.total:
                return Admission(False, answer=False)
            self.refused_open += 1
            return Admission(False)
        self.remove(victim)
        self.stats.closed["evicted"] += 1
        self._register(conn, client)
        return Admission(True, victim)

    def refused_closed(self) -> None:
        """A refused connection that was kept for its 503 closed."""
        self.refused_open = max(0, self.refused_open - 1)

    def _register(self, conn: C, client: str) -> None:
        self._client_of[conn] = client
        self._count[client] += 1
        self._waiting.setdefault(client, OrderedDict())[conn] = None
        self.stats.open = len(self._client_of)

    def busy(self, conn: C) -> None:
        """A request started on ``conn``: it cannot be evicted until :meth:`waiting`."""
        client = self._client_of.get(conn)
        if client is not None:
            self._waiting[client].pop(conn, None)

    def waiting(self, conn: C) -> None:
        """``conn`` answered its request and waits for the next one (now the newest)."""
        client = self._client_of.get(conn)
        if client is not None:
            self._waiting[client][conn] = None

    def remove(self, conn: C) -> None:
        """``conn`` closed (for whatever reason)."""
        client = self._client_of.pop(conn, None)
        if client is None:
            return
        self._count[client] -= 1
        waiting = self._waiting[client]
        waiting.pop(conn, None)
        if self._count[client] <= 0:
            del self._count[client]
            del self._waiting[client]
        self.stats.open = len(self._client_of)

    def _oldest_waiting(self, client: str, spare: Callable[[C], bool] | None) -> C | None:
        for conn in self._waiting.get(client, ()):
            if spare is None or not spare(conn):
                return conn
        return None

    def _hog_waiting(self, spare: Callable[[C], bool] | None) -> C | None:
        candidates = [c for c, waiting in self._waiting.items() if waiting]
        for client in sorted(candidates, key=lambda c: -self._count[c]):
            victim = self._oldest_waiting(client, spare)
            if victim is not None:
                return victim
        return None
