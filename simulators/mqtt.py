"""Publishing MQTT 3.1.1 connections on asyncio, for thousands of clients at once.

The publisher side of MQTT is small — CONNECT/CONNACK, PUBLISH, PUBACK (QoS 1),
PUBREC/PUBREL/PUBCOMP (QoS 2), PINGREQ/PINGRESP, DISCONNECT — and the simulator's
job is to be much faster than the gateway it loads, so :class:`Connection` speaks it
directly as an :class:`asyncio.Protocol` instead of going through paho (measured on
the dev machine: paho's per-PUBACK parsing and bookkeeping capped one process at
~12,000 msg/s; see ``docs/decisions/0031-own-mqtt-publisher.md``):

* ``publish`` encodes the PUBLISH, remembers the message's ledger token under its
  packet id, and queues the bytes; all packets queued in one event-loop turn go out
  in one ``transport.write`` (``call_soon`` flush);
* incoming PUBACKs/PUBCOMPs are parsed in bulk from each ``data_received`` and move
  their tokens to the ledger as acknowledged (QoS 0: acknowledged when written);
* connecting is non-blocking (``loop.create_connection``, TLS included), so 5,000
  clients connect without a thread each;
* an unexpected disconnect reconnects with backoff and resends every unacknowledged
  message (DUP set) and every unfinished PUBREL — nothing acknowledged is counted
  twice, nothing unacknowledged is forgotten.

:class:`Flow` bounds the messages in flight over all connections (memory stays
bounded and packet ids never wrap onto a pending one) and lets the runner wait for
room, or for the last acknowledgement at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from simulators.errors import BrokerUnreachable
from simulators.report import Ledger, Token

CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"
_U16 = struct.Struct(">H")

# Pending entry states.
_UNSENT, _SENT, _RELEASED = 0, 1, 2

QOS2_WINDOW = 20
"""QoS 2 messages in flight per connection, at most. Debian 12's Mosquitto 2.0.11
acknowledges QoS 2 publishes beyond its in-flight window (20) but never delivers them
(measured: 200 published, 42 delivered), so a publisher must not go beyond it."""


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """Where and how to connect."""

    host: str = "localhost"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_insecure: bool = False
    keepalive: int = 30
    connect_timeout_s: float = 10.0

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None or self.tls_cert is not None or self.tls_insecure

    def where(self) -> str:
        """``mqtt://host:port`` (``mqtts`` with TLS), for messages."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Will:
    """A last-will message the broker publishes if the client vanishes."""

    topic: str
    payload: bytes = b"offline"
    qos: int = 0
    retain: bool = False


class Flow:
    """Messages in flight over all connections, bounded by ``limit``.

    ``wait_room`` blocks publishing while ``limit`` messages await their ack and
    resumes at 80 % (hysteresis: no flapping per ack). ``wait_empty`` waits for the
    last acknowledgement.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.low = max(1, int(self.limit * 0.8))
        self.n = 0
        self._room = asyncio.Event()
        self._room.set()
        self._empty = asyncio.Event()
        self._empty.set()

    def add(self) -> None:
        self.n += 1
        self._empty.clear()
        if self.n >= self.limit:
            self._room.clear()

    def done(self, count: int = 1) -> None:
        self.n -= count
        if self.n <= self.low:
            self._room.set()
        if self.n <= 0:
            self.n = 0
            self._empty.set()

    @property
    def full(self) -> bool:
        return not self._room.is_set()

    async def wait_room(self) -> None:
        await self._room.wait()

    async def wait_empty(self, timeout: float) -> bool:
        """True when nothing is in flight any more; False after ``timeout`` s."""
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return False
        return True


def _tls_context(options: BrokerOptions) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(options.tls_ca) if options.tls_ca is not None else None
    )
    if options.tls_cert is not None:
        context.load_cert_chain(
            str(options.tls_cert), str(options.tls_key) if options.tls_key else None
        )
    if options.tls_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer."""
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    if len(data) > 0xFFFF:
        raise ValueError("MQTT strings are at most 65535 bytes")
    return _U16.pack(len(data)) + data


def connect_packet(
    client_id: str,
    keepalive: int,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session."""
    flags = 0x02
    payload = _string(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _string(will.topic) + _string(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    variable = b"\x00\x04MQTT\x04" + bytes((flags,)) + _U16.pack(keepalive)
    body = variable + payload
    return b"\x10" + _remaining_length(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, qos: int, mid: int) -> bytes:
    """PUBLISH (no DUP, no retain); ``mid`` is ignored at QoS 0."""
    head = _U16.pack(len(topic)) + topic
    if qos:
        head += _U16.pack(mid)
    return (
        bytes((0x30 | (qos << 1),)) + _remaining_length(len(head) + len(payload)) + head + payload
    )


class _Protocol(asyncio.Protocol):
    """Hands bytes and connection events to its :class:`Connection`."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn._attach(transport)  # noqa: SLF001 - the protocol is the connection's own part

    def data_received(self, data: bytes) -> None:
        self.conn._on_data(data)  # noqa: SLF001

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn._on_lost(self, exc)  # noqa: SLF001


class Connection:
    """One MQTT client that only publishes, driven by the running event loop."""

    def __init__(
        self,
        options: BrokerOptions,
        client_id: str,
        ledger: Ledger,
        flow: Flow,
        *,
        will: Will | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self.client_id = client_id
        self.ledger = ledger
        self.flow = flow
        self.will = will
        self.on_event = on_event or (lambda _message: None)
        self.pending: dict[int, list[object]] = {}
        """mid → [token, packet, state]: everything not yet acknowledged, in publish order."""
        self._q2_flying = 0
        """QoS 2 messages sent and not completed (PUBLISH or PUBREL out), ≤ QOS2_WINDOW."""
        self._q2_waiting: deque[int] = deque()
        """QoS 2 packet ids not sent yet because the window is full, in order."""
        self.connected = False
        self.closing = False
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._qos0: list[Token] = []
        self._flush_scheduled = False
        self._next_mid = 0
        self._connack: asyncio.Future[None] | None = None
        self._lost: asyncio.Event = asyncio.Event()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._last_out = time.monotonic()
        self._ping_sent: float | None = None
        self._topics: dict[str, bytes] = {}
        self._connect_bytes = connect_packet(
            client_id, options.keepalive, options.username, options.password, will
        )

    # --------------------------------------------------------------------- connecting

    async def connect(self) -> None:
        """Connect and wait for the CONNACK; raises :class:`BrokerUnreachable`."""
        opts = self.options
        self._connack = self._loop.create_future()
        context = _tls_context(opts) if opts.tls else None
        try:
            async with asyncio.timeout(opts.connect_timeout_s):
                await self._loop.create_connection(
                    lambda: _Protocol(self),
                    opts.host,
                    opts.port,
                    ssl=context,
                    server_hostname=(opts.host if context is not None else None),
                )
                await self._connack
        except TimeoutError:
            self._drop_transport()
            raise BrokerUnreachable(
                f"{opts.where()}: no CONNACK for {self.client_id} within {opts.connect_timeout_s:g}s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            self._drop_transport()
            raise BrokerUnreachable(f"cannot connect to {opts.where()}: {exc}") from None
        except BrokerUnreachable:
            self._drop_transport()
            raise
        self.connected = True
        self._lost = asyncio.Event()
        self._resend()

    def _attach(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        self._buf.clear()
        self._ping_sent = None
        self._transport.write(self._connect_bytes)
        self._last_out = time.monotonic()

    def _drop_transport(self) -> None:
        if self._transport is not None:
            self._transport.abort()
            self._transport = None

    def _on_lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        self._transport = None
        was_connected = self.connected
        self.connected = False
        self._out.clear()
        for token in self._qos0:
            self.ledger.unconfirmed(token)
        self.flow.done(len(self._qos0))
        self._qos0.clear()
        self._lost.set()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(
                BrokerUnreachable(
                    f"{self.options.where()} closed the connection of {self.client_id}"
                    + (f": {exc}" if exc else "")
                )
            )
        if self.closing or not was_connected:
            return
        self.on_event(
            f"{self.client_id}: connection lost ({exc or 'closed by the broker'}); reconnecting"
        )
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = self._loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.1
        while not self.closing:
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            if self.closing:
                return
            self.ledger.totals.reconnects += 1
            try:
                await self.connect()
            except BrokerUnreachable as exc:
                self.on_event(f"{self.client_id}: reconnect failed: {exc}")
                delay = min(5.0, delay * 2)
                continue
            self.on_event(f"{self.client_id}: reconnected, resent {len(self.pending):,}")
            return

    def _resend(self) -> None:
        """After (re)connecting: every unacknowledged message again, in order (QoS 2
        ones only as far as the window allows; the rest wait for completions)."""
        self._q2_flying = 0
        self._q2_waiting.clear()
        for mid, entry in self.pending.items():
            state = entry[2]
            packet = entry[1]
            assert isinstance(packet, bytes)
            qos2 = packet[0] & 0x06 == 0x04
            if qos2 and self._q2_flying >= QOS2_WINDOW and state != _RELEASED:
                entry[2] = _UNSENT
                self._q2_waiting.append(mid)
                continue
            if qos2:
                self._q2_flying += 1
            if state == _RELEASED:
                self._out.append(b"\x62\x02" + _U16.pack(mid))
            else:
                if state == _SENT:
                    packet = bytes((packet[0] | 0x08,)) + packet[1:]  # DUP
                entry[2] = _SENT
                self._out.append(packet)
        if self._out:
            self._schedule_flush()

    def _send_waiting_qos2(self) -> None:
        """Fill the QoS 2 window from the waiting messages."""
        while self._q2_waiting and self._q2_flying < QOS2_WINDOW and self.connected:
            entry = self.pending.get(self._q2_waiting.popleft())
            if entry is None or entry[2] != _UNSENT:
                continue
            entry[2] = _SENT
            packet = entry[1]
            assert isinstance(packet, bytes)
            self._out.append(packet)
            self._q2_flying += 1
            self._schedule_flush()

    # ------------------------------------------------------------------------ reading

    def _on_data(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        size = len(buf)
        pos = 0
        while size - pos >= 2:
            first = buf[pos]
            index = pos + 1
            length = 0
            shift = 0
            complete = False
            while index < size and shift <= 21:
                byte = buf[index]
                index += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    complete = True
                    break
            if not complete:
                if shift > 21 and self._transport is not None:
                    self.on_event(f"{self.client_id}: malformed packet from the broker")
                    self._transport.abort()
                break
            end = index + length
            if end > size:
                break
            kind = first >> 4
            if kind == 4:  # PUBACK
                self._acked((buf[index] << 8) | buf[index + 1])
            elif kind == 7:  # PUBCOMP: a QoS 2 slot is free
                if self._acked((buf[index] << 8) | buf[index + 1]):
                    self._q2_flying = max(0, self._q2_flying - 1)
                    self._send_waiting_qos2()
            elif kind == 5:  # PUBREC → PUBREL
                mid = (buf[index] << 8) | buf[index + 1]
                entry = self.pending.get(mid)
                if entry is not None:
                    entry[2] = _RELEASED
                self._out.append(b"\x62\x02" + _U16.pack(mid))
                self._schedule_flush()
            elif kind == 2:  # CONNACK
                self._on_connack(buf[index + 1] if length >= 2 else 255)
            elif kind == 13:  # PINGRESP
                self._ping_sent = None
            pos = end
        if pos:
            del buf[:pos]

    def _acked(self, mid: int) -> bool:
        entry = self.pending.pop(mid, None)
        if entry is None:
            return False
        token = entry[0]
        self.ledger.acked(token)  # type: ignore[arg-type]
        self.flow.done()
        return True

    def _on_connack(self, code: int) -> None:
        future = self._connack
        if future is None or future.done():
            return
        if code == 0:
            future.set_result(None)
        else:
            reason = CONNACK_CODES.get(code, f"return code {code}")
            future.set_exception(
                BrokerUnreachable(f"{self.options.where()} refused {self.client_id}: {reason}")
            )

    # ------------------------------------------------------------------------ writing

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self._transport
        if transport is None or not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        transport.write(data)
        self._last_out = time.monotonic()
        if self._qos0:
            # QoS 0 has no acknowledgement: handed to the socket is as far as it goes.
            for token in self._qos0:
                self.ledger.acked(token)
            self.flow.done(len(self._qos0))
            self._qos0.clear()

    def _new_mid(self) -> int:
        mid = self._next_mid
        pending = self.pending
        for _ in range(0x10000):
            mid = mid % 0xFFFF + 1
            if mid not in pending:
                self._next_mid = mid
                return mid
        raise RuntimeError("all 65535 packet ids are in flight")  # Flow prevents this

    def publish(self, topic: str, payload: bytes, qos: int, token: Token) -> bool:
        """Queue one message. QoS ≥ 1 messages survive a reconnect; a QoS 0 message
        while disconnected is refused (False, counted as a publish error)."""
        topic_bytes = self._topics.get(topic)
        if topic_bytes is None:
            topic_bytes = topic.encode()
            if len(self._topics) < 4096:
                self._topics[topic] = topic_bytes
        if qos == 0:
            if not self.connected:
                self.ledger.totals.publish_errors += 1
                return False
            self._out.append(publish_packet(topic_bytes, payload, 0, 0))
            self._qos0.append(token)
        else:
            mid = self._new_mid()
            packet = publish_packet(topic_bytes, payload, qos, mid)
            if qos == 2 and (self._q2_flying >= QOS2_WINDOW or not self.connected):
                self.pending[mid] = [token, packet, _UNSENT]
                if self.connected:
                    self._q2_waiting.append(mid)
            elif self.connected:
                self.pending[mid] = [token, packet, _SENT]
                self._out.append(packet)
                if qos == 2:
                    self._q2_flying += 1
            else:
                self.pending[mid] = [token, packet, _UNSENT]
        self.flow.add()
        if self.connected:
            self._schedule_flush()
        return True

    def misc(self) -> None:
        """Keepalive: ping when idle; drop a connection whose ping went unanswered."""
        if not self.connected or self._transport is None:
            return
        now = time.monotonic()
        keepalive = self.options.keepalive
        if self._ping_sent is not None and now - self._ping_sent > keepalive:
            self.on_event(f"{self.client_id}: no PINGRESP in {keepalive}s; reconnecting")
            self._transport.abort()
            return
        if self._ping_sent is None and now - self._last_out > keepalive / 2:
            self._ping_sent = now
            self._out.append(_PINGREQ)
            self._schedule_flush()

    def give_up_pending(self) -> int:
        """Record every unacknowledged message as unconfirmed; returns how many."""
        count = len(self.pending) + len(self._qos0)
        for entry in self.pending.values():
            self.ledger.unconfirmed(entry[0])  # type: ignore[arg-type]
        for token in self._qos0:
            self.ledger.unconfirmed(token)
        self.pending.clear()
        self._qos0.clear()
        self._q2_waiting.clear()
        self._q2_flying = 0
        if count:
            self.flow.done(count)
        return count

    async def close(self, timeout: float = 5.0) -> None:
        """Send DISCONNECT (so the broker drops the last will) and close."""
        self.closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
        transport = self._transport
        if transport is None:
            return
        self._flush()
        if self.connected:
            transport.write(_DISCONNECT)
        transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lost.wait(), timeout)
        if self._transport is not None:
            self._transport.abort()
