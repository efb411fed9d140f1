"""A tiny MQTT 3.1.1 client over a plain socket, for loading the broker fast.

The bench needs to queue hundreds of thousands of QoS 1 messages at the broker in a
few seconds; paho's per-message Python work would make the publisher the bottleneck
of every run. Here packets are encoded once and written in large ``sendall`` calls,
with a bounded window of unacknowledged packet ids. Only what the bench needs:
CONNECT, PUBLISH (QoS 0/1), PUBACK, SUBSCRIBE, DISCONNECT. Loopback only.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterable


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, clean_session: bool = True, keepalive: int = 60) -> bytes:
    flags = 0x02 if clean_session else 0x00
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _str(client_id)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, mid: int, qos: int = 1) -> bytes:
    body = _str(topic) + (struct.pack("!H", mid) if qos else b"") + payload
    return bytes([0x30 | (qos << 1)]) + _varint(len(body)) + body


def subscribe_packet(topic_filter: str, qos: int, mid: int = 1) -> bytes:
    body = struct.pack("!H", mid) + _str(topic_filter) + bytes([qos])
    return b"\x82" + _varint(len(body)) + body


DISCONNECT = b"\xe0\x00"


class WireClient:
    """A blocking MQTT 3.1.1 connection for the bench's publishers and session setup."""

    def __init__(
        self, port: int, client_id: str, clean_session: bool = True, host: str = "127.0.0.1"
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()
        self.sock.sendall(connect_packet(client_id, clean_session))
        ptype, body = self.read_packet()
        if ptype != 0x20 or len(body) < 2 or body[1] != 0:
            raise ConnectionError(f"CONNECT refused: type {ptype:#x} body {bytes(body)!r}")
        self.session_present = bool(body[0] & 1)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        self._buf += chunk

    def _parse_one(self) -> tuple[int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        length = 0
        mult = 1
        pos = 1
        while True:
            if pos >= len(buf):
                return None
            byte = buf[pos]
            length += (byte & 0x7F) * mult
            mult *= 128
            pos += 1
            if not byte & 0x80:
                break
        if len(buf) < pos + length:
            return None
        ptype = buf[0] & 0xF0
        body = bytes(buf[pos : pos + length])
        del buf[: pos + length]
        return ptype, body

    def read_packet(self) -> tuple[int, bytes]:
        """Block until one whole packet arrived; returns (type nibble << 4, body)."""
        while True:
            parsed = self._parse_one()
            if parsed is not None:
                return parsed
            self._fill()

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.sock.sendall(subscribe_packet(topic_filter, qos))
        while True:
            ptype, body = self.read_packet()
            if ptype == 0x90:
                if body[-1] >= 0x80:
                    raise ConnectionError(f"SUBSCRIBE {topic_filter!r} refused")
                return

    def publish_all(
        self,
        messages: Iterable[tuple[str, bytes]],
        qos: int = 1,
        window: int = 2000,
        chunk: int = 200,
        timeout: float = 300,
    ) -> int:
        """Publish every message; at QoS 1 return only when the broker acked them all.
        Returns the number published."""
        deadline = time.monotonic() + timeout
        outstanding = 0
        sent = 0
        mid = 0
        pending = bytearray()
        in_batch = 0
        for topic, payload in messages:
            mid = mid % 65535 + 1
            pending += publish_packet(topic, payload, mid, qos)
            in_batch += 1
            if in_batch >= chunk:
                self.sock.sendall(pending)
                pending.clear()
                sent += in_batch
                if qos:
                    outstanding += in_batch
                in_batch = 0
                while qos and outstanding > window:
                    outstanding -= self._drain_acks(deadline)
        if pending:
            self.sock.sendall(pending)
            sent += in_batch
            if qos:
                outstanding += in_batch
        while outstanding > 0:
            outstanding -= self._drain_acks(deadline)
        return sent

    def _drain_acks(self, deadline: float) -> int:
        if time.monotonic() > deadline:
            raise TimeoutError("broker did not acknowledge the publishes in time")
        acked = 0
        while True:
            parsed = self._parse_one()
            if parsed is None:
                break
            if parsed[0] == 0x40:
                acked += 1
        if acked:
            return acked
        self._fill()
        return 0

    def close(self) -> None:
        try:
            self.sock.sendall(DISCONNECT)
        except OSError:
            pass
        self.sock.close()


def create_session(port: int, client_id: str, topic_filter: str, qos: int = 1) -> None:
    """Create (or keep) a persistent session with one subscription, then go offline."""
    client = WireClient(port, client_id, clean_session=False)
    try:
        client.subscribe(topic_filter, qos)
    finally:
        client.close()


def delete_session(port: int, client_id: str) -> None:
    """Connect with a clean session: the broker discards the stored one."""
    WireClient(port, client_id, clean_session=True).close()


def publish_backlog(port: int, messages: Iterable[tuple[str, bytes]], client_id: str) -> int:
    """Publish ``messages`` at QoS 1 and wait for every PUBACK. Returns the count."""
    client = WireClient(port, client_id)
    try:
        return client.publish_all(messages)
    finally:
        client.close()


def publish_paced(
    port: int,
    make: Callable[[int], tuple[str, bytes]],
    rate: float,
    duration_s: float,
    client_id: str,
    tick_s: float = 0.002,
) -> int:
    """Publish ``make(i)`` at ``rate`` messages/s for ``duration_s`` (QoS 1, acks read
    as they come). ``make`` is called at send time, so it can stamp the payload.
    Returns the number published."""
    client = WireClient(port, client_id)
    client.sock.setblocking(True)
    sent = 0
    mid = 0
    outstanding = 0
    start = time.monotonic()
    end = start + duration_s
    try:
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due = int((now - start) * rate)
            if due > sent:
                out = bytearray()
                for i in range(sent, due):
                    mid = mid % 65535 + 1
                    topic, payload = make(i)
                    out += publish_packet(topic, payload, mid, 1)
                client.sock.sendall(out)
                outstanding += due - sent
                sent = due
            client.sock.settimeout(0)
            try:
                client._fill()
            except (BlockingIOError, TimeoutError):
                pass
            finally:
                client.sock.settimeout(30)
            while (parsed := client._parse_one()) is not None:
                if parsed[0] == 0x40:
                    outstanding -= 1
            time.sleep(tick_s)
        deadline = time.monotonic() + 60
        while outstanding > 0:
            outstanding -= client._drain_acks(deadline)
    finally:
        client.close()
    return sent
