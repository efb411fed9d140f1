"""The one place that reaches below uvicorn's public settings: its h11 protocol class,
subclassed to bound what a client can hold (checked against uvicorn 0.54, h11 0.16).

What uvicorn offers, and why it is not enough (``docs/decisions/0150``):

* ``limit_concurrency`` counts *connections*, idle ones included, and answers every
  request beyond it 503 — 70 connections that never send a byte took ``/healthz`` down.
  We pass None and keep our own :class:`~gateway.api.connections.ConnectionTable`,
  which evicts waiting connections instead of refusing the newcomer.
* ``timeout_keep_alive`` only starts after a first response, and any byte cancels it
  for good: a connection that never sends, or trickles header bytes, stays open for
  ever. We add a request-header timeout: from the moment a connection waits for a
  request (opened, or its last response finished) its headers must be complete within
  ``header_timeout_s``, however the bytes dribble in; otherwise 408 (if anything
  arrived) and close.
* No send timeout: a client that stops reading parks its response in
  ``FlowControl.drain()`` for ever. While the transport has paused writing, a timer
  checks the write buffer every ``send_timeout_s``; if it did not shrink, the
  connection is aborted (which wakes the response with a disconnect).
* ``h11_max_incomplete_event_size`` (headers ≤ 16 KiB) is public and used as is.
* Cutting a response off on purpose (an export past its deadline) is done the only way
  ASGI has — the application returns without finishing the body, and uvicorn closes the
  connection — but uvicorn then logs an ERROR meant for application bugs.
  :func:`abandon_response` marks the request's context so :class:`_AbandonedFilter`
  drops exactly that line for it (the application logs its own reason).

The subclass uses these members of ``H11Protocol``: ``connection_made``,
``data_received``, ``connection_lost``, ``on_response_complete``, ``pause_writing``,
``resume_writing`` (overridden, each calling the original) and the attributes
``loop``, ``transport``, ``client``, ``cycle`` (``response_complete``) and ``app``.
``tests/unit/api/test_uvicorn_adapter.py`` drives it over a fake transport so an
uvicorn upgrade that moves any of them fails a test, not production.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import select
import time
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway.api.connections import ConnectionTable

log = logging.getLogger("gateway.api.connections")

LOG_EVERY_S = 60.0
"""At most one log line per minute about shed connections (an attack must not flood
the log)."""

_REQUIRED = (
    "connection_made",
    "data_received",
    "connection_lost",
    "on_response_complete",
    "pause_writing",
    "resume_writing",
)
_missing = [name for name in _REQUIRED if not callable(getattr(H11Protocol, name, None))]
if _missing:  # pragma: no cover - only with an incompatible uvicorn
    raise ImportError(f"uvicorn's H11Protocol lacks {', '.join(_missing)}: unsupported uvicorn")

_ABANDONED: contextvars.ContextVar[bool] = contextvars.ContextVar("abandoned", default=False)
_INCOMPLETE = "ASGI callable returned without completing response."


def abandon_response() -> None:
    """Called by the application, in the request's task, before it returns without
    finishing a response on purpose: uvicorn's ERROR line about it is dropped."""
    _ABANDONED.set(True)


class _AbandonedFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == _INCOMPLETE and _ABANDONED.get())


logging.getLogger("uvicorn.error").addFilter(_AbandonedFilter())

_TIMEOUT_BODY = b'{"error": "request headers not received in time"}'
_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\nconnection: close\r\n\r\n"
) + _TIMEOUT_BODY


async def _refuse(scope: Any, receive: Any, send: Any) -> None:
    """The answer on a connection that found no room."""
    body = b'{"error": "too many connections; try again shortly"}'
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Shedding:
    """One rate-limited log line about connections the server closed."""

    def __init__(self, table: ConnectionTable[Any]) -> None:
        self.table = table
        self.logged_at = 0.0
        self.logged: dict[str, int] = {}

    def note(self) -> None:
        now = time.monotonic()
        if now - self.logged_at < LOG_EVERY_S:
            return
        closed = self.table.stats.closed
        delta = {
            k: v - self.logged.get(k, 0) for k, v in closed.items() if v > self.logged.get(k, 0)
        }
        if not delta:
            return
        self.logged_at = now
        self.logged = dict(closed)
        log.warning(
            "HTTP API shed connections since the last report: %s (%d open; limits:"
            " api.max_connections=%d, api.max_connections_per_client=%d)",
            ", ".join(f"{n} {reason}" for reason, n in sorted(delta.items())),
            len(self.table),
            self.table.total,
            self.table.per_client,
        )


def _has_unread_bytes(conn: GuardedH11Protocol) -> bool:
    """True when ``conn``'s socket holds bytes the event loop has not read yet (its
    request may be in there): such a connection is not evicted. asyncio accepts many
    connections per loop turn before it reads any of them, so without this a flood of
    newcomers from one address could evict a health check whose request had already
    arrived. One ``poll`` with timeout 0 per candidate."""
    sock = conn.transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return False


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the connection table, a request-header timeout and a
    send timeout. Configured through :func:`protocol_class`."""

    table: ClassVar[ConnectionTable[Any]]
    header_timeout_s: ClassVar[float]
    send_timeout_s: ClassVar[float]
    shedding: ClassVar[_Shedding]

    _header_timer: asyncio.TimerHandle | None = None
    _send_timer: asyncio.TimerHandle | None = None
    _received: bool = False
    _refused: bool = False
    _buffered: int = 0

    # --- lifecycle --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        client = self.client[0] if self.client else "unknown"
        admission = self.table.admit(self, client, _has_unread_bytes)
        if admission.evict is not None:
            admission.evict.shed("evicted")
        if not admission.accepted:
            self.shedding.note()
            if not admission.answer:
                transport.close()  # too many refused already waiting: not even a 503
                return
            self._refused = True
            self.app = _refuse
        self._wait_for_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._refused:
            self._refused = False
            self.table.refused_closed()
        else:
            self.table.remove(self)
        super().connection_lost(exc)

    def shed(self, reason: str) -> None:
        """Close this connection for ``reason`` (counted by the table's caller)."""
        self._cancel_timers()
        if reason != "evicted":
            self.table.stats.closed[reason] += 1
        self.shedding.note()
        if reason == "send_timeout":
            self.transport.abort()  # drop the unsent response; wakes the writer
        else:
            self.transport.close()

    # --- request-header timeout ------------------------------------------------------

    def _wait_for_request(self) -> None:
        """The connection waits for a request: start the header clock."""
        self._received = False
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)
        if not self._refused:
            self.table.waiting(self)

    def _in_request(self) -> bool:
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    def data_received(self, data: bytes) -> None:
        self._received = True
        super().data_received(data)
        if self._header_timer is not None and self._in_request():
            self._header_timer.cancel()
            self._header_timer = None
            if not self._refused:
                self.table.busy(self)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._wait_for_request()

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._in_request():
            return
        if self._received:
            self.transport.write(_TIMEOUT_408)
        self.shed("header_timeout")

    # --- send timeout ------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        self._arm_send_timer()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _arm_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
        self._buffered = self.transport.get_write_buffer_size()
        self._send_timer = self.loop.call_later(self.send_timeout_s, self._send_check)

    def _send_check(self) -> None:
        self._send_timer = None
        if self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size() < self._buffered:
            self._arm_send_timer()  # slow, but reading: give it another period
            return
        self.shed("send_timeout")

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._send_timer = None


def protocol_class(
    table: ConnectionTable[Any], header_timeout_s: float, send_timeout_s: float
) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` bound to one server's table and timeouts (uvicorn
    takes a protocol class, not an instance factory)."""
    attributes = {
        "table": table,
        "header_timeout_s": header_timeout_s,
        "send_timeout_s": send_timeout_s,
        "shedding": _Shedding(table),
    }
    return type("TidegateH11Protocol", (GuardedH11Protocol,), attributes)
