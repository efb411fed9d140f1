"""MQTT packets from the broker, parsed from a byte stream — pure, no I/O.

:class:`PacketReader` takes the bytes of each socket read (:meth:`PacketReader.feed`)
and hands over every complete packet:

* each PUBLISH (QoS 0, 1 and 2) as a :data:`Message` tuple, many per read in one call
  to ``on_messages`` — the hot path (``docs/decisions/0060``);
* every other packet (CONNACK, SUBACK, UNSUBACK, PINGRESP, PUBREL, DISCONNECT, AUTH, …)
  as ``on_control(header, body)``, after the messages before it, so order is kept.

Bounds: a PUBLISH whose payload exceeds ``max_payload`` is never buffered whole. Once
its topic and packet id have arrived, the rest is counted off as it streams in and
dropped; when the last byte has passed it is handed over with an empty payload and a
``problem`` naming topic, size and limit (the gateway dead-letters and acks it). A
topic longer than ``max_topic`` bytes is truncated and marked the same way (its payload
kept). Other packets larger than :data:`MAX_CONTROL_BYTES` are a protocol error. The
buffer only ever holds one partial packet below those bounds plus one read, and bytes
are appended and consumed without copying the whole buffer (a 60 MB message costs
linear, not quadratic, work).

Anything that is not MQTT raises :class:`~gateway.errors.ProtocolError` (the connection
must then be closed: the stream has lost its packet boundaries). Nothing else escapes
:meth:`PacketReader.feed` — a property test feeds it arbitrary bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.errors import ProtocolError

Message = tuple[str, bytes, int, int, str, Any]
"""``(topic, payload, qos, packet_id, problem, tag)``. ``problem`` is empty for a
normal message, else why it cannot be stored (payload then empty when it was skipped).
``packet_id`` is 0 for QoS 0. ``tag`` is the reader's tag (the connection)."""

OnMessages = Callable[[list[Message], int], None]
"""Receives the messages of one read and their size (:func:`message_size` summed)."""
OnControl = Callable[[int, bytes], None]
OnDollar = Callable[[str, bytes, int], bool]
"""Sees each PUBLISH whose topic starts with ``$`` (``$SYS``…) before it is queued;
returns True when it consumed the message (it is then not handed over)."""

PUBLISH = 0x30
MAX_CONTROL_BYTES = 1 << 20
"""Largest non-PUBLISH packet accepted from a broker (a SUBACK for every filter, an MQTT
5 DISCONNECT with a reason string; far below this)."""
PROPERTY_ALLOWANCE = 64 * 1024
"""MQTT 5 properties a PUBLISH may carry on top of topic and payload before it is
handled as oversized (user properties, correlation data)."""
MESSAGE_OVERHEAD = 120
"""Bytes a buffered message costs besides topic and payload (tuple, objects)."""


def message_size(topic: str, payload: bytes) -> int:
    """What one buffered message counts against a connection's buffer bound."""
    return len(topic) + len(payload) + MESSAGE_OVERHEAD


def _varint(data: bytearray | bytes, pos: int, end: int) -> tuple[int, int] | None:
    """Decode a Variable Byte Integer at ``pos``: (value, next position), None if the
    bytes end first; ProtocolError beyond four bytes."""
    value = 0
    shift = 0
    while pos < end:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise ProtocolError("malformed packet from the broker: length over four bytes")
    return None


class PacketReader:
    """Incremental parser for one connection. ``v5`` selects MQTT 5 (PUBLISH packets
    carry properties). ``tag`` is put into every :data:`Message`."""

    def __init__(
        self,
        on_messages: OnMessages,
        on_control: OnControl,
        *,
        max_payload: int,
        max_topic: int,
        v5: bool = False,
        tag: Any = None,
        on_dollar: OnDollar | None = None,
    ) -> None:
        self.on_messages = on_messages
        self.on_control = on_control
        self.on_dollar = on_dollar
        self.max_payload = max_payload
        self.max_topic = max_topic
        self.v5 = v5
        self.tag = tag
        self.max_body = max_payload + max_topic + 8 + (PROPERTY_ALLOWANCE if v5 else 0)
        """A PUBLISH body beyond this is skipped as it streams in."""
        self._buf = bytearray()
        self._skip = 0
        self._skipped: Message | None = None
        self.skipped_bytes = 0
        """Total bytes of oversized messages dropped unread (for metrics)."""

    def _first_may_complete(self, buf: bytearray) -> bool:
        """False when the first buffered packet is known to be incomplete (and not one to
        skip): then nothing can be parsed yet and the buffer is not copied."""
        end = len(buf)
        if end < 2:
            return False
        decoded = _varint(buf, 1, end)
        if decoded is None:
            return False  # (more than four length bytes raise here, as they should)
        length, i = decoded
        if i + length <= end:
            return True
        # Partial: worth parsing now only if it is over its bound (an oversized PUBLISH
        # starts to be skipped; any other packet is a protocol error).
        return length > (self.max_body if buf[0] & 0xF0 == PUBLISH else MAX_CONTROL_BYTES)

    @property
    def buffered(self) -> int:
        """Bytes held for a partial packet."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Parse ``data`` (the next bytes of the stream); deliver complete packets."""
        if self._skip:
            if len(data) < self._skip:
                self._skip -= len(data)
                return
            data = data[self._skip :]
            self._skip = 0
            skipped, self._skipped = self._skipped, None
            assert skipped is not None
            self.on_messages([skipped], message_size(skipped[0], skipped[1]))
        buf = self._buf
        buf += data
        if not self._first_may_complete(buf):
            return  # the first packet is still partial: no copying, nothing to parse
        # One copy of what is buffered (complete packets plus at most one read of the
        # next one), then cheap bytes slicing: the common case, many small packets.
        data = bytes(buf)
        end = len(data)
        pos = 0
        messages: list[Message] = []
        size = 0
        tag = self.tag
        v5 = self.v5
        max_topic = self.max_topic
        max_payload = self.max_payload
        max_body = self.max_body
        on_dollar = self.on_dollar
        try:
            while end - pos >= 2:
                header = data[pos]
                # Remaining length: inline for one or two bytes (nearly every packet).
                byte = data[pos + 1]
                if byte < 0x80:
                    length = byte
                    i = pos + 2
                elif end - pos >= 3 and data[pos + 2] < 0x80:
                    length = (byte & 0x7F) | (data[pos + 2] << 7)
                    i = pos + 3
                else:
                    decoded = _varint(data, pos + 1, end)
                    if decoded is None:
                        break
                    length, i = decoded
                body_end = i + length
                if header & 0xF0 != PUBLISH:
                    if length > MAX_CONTROL_BYTES:
                        raise ProtocolError(
                            f"malformed packet from the broker: type {header >> 4} of"
                            f" {length:,} bytes"
                        )
                    if body_end > end:
                        break
                    if messages:
                        self.on_messages(messages, size)
                        messages, size = [], 0
                    body = data[i:body_end]
                    pos = body_end
                    self.on_control(header, body)
                    continue
                qos = (header >> 1) & 3
                if qos == 3:
                    raise ProtocolError("malformed PUBLISH from the broker: QoS 3")
                if length > max_body:
                    head = self._publish_head(data, i, end, length, qos)
                    if head is None:
                        break  # wait for topic and packet id
                    topic, problem_topic, mid, p_start = head
                    payload_size = body_end - p_start
                    if payload_size > max_payload:
                        problem = (
                            f"payload of {payload_size:,} bytes exceeds max_payload_bytes="
                            f"{max_payload:,} (skipped as it arrived, not stored)"
                        )
                    elif problem_topic:
                        problem = problem_topic
                    else:
                        problem = (
                            f"MQTT 5 properties of {p_start - i:,} bytes exceed"
                            f" {PROPERTY_ALLOWANCE:,} (message skipped, not stored)"
                        )
                    message: Message = (topic, b"", qos, mid, problem, tag)
                    if messages:
                        self.on_messages(messages, size)
                        messages, size = [], 0
                    if body_end <= end:
                        pos = body_end
                        self.skipped_bytes += length
                        self.on_messages([message], message_size(topic, b""))
                        continue
                    self._skip = body_end - end
                    self.skipped_bytes += length
                    self._skipped = message
                    pos = end
                    break
                if body_end > end:
                    break
                if length < 2:
                    raise ProtocolError("malformed PUBLISH from the broker: no topic")
                tlen = (data[i] << 8) | data[i + 1]
                t_end = i + 2 + tlen
                p_start = t_end + (2 if qos else 0)
                if p_start > body_end:
                    raise ProtocolError("malformed PUBLISH from the broker: topic overruns it")
                mid = (data[t_end] << 8) | data[t_end + 1] if qos else 0
                if v5:
                    props = _varint(data, p_start, body_end)
                    if props is None or props[1] + props[0] > body_end:
                        raise ProtocolError(
                            "malformed PUBLISH from the broker: properties overrun it"
                        )
                    p_start = props[1] + props[0]
                if tlen == 0:
                    # A topic alias: never allowed (our CONNECT sets no Topic Alias
                    # Maximum), so the broker broke the protocol.
                    raise ProtocolError("PUBLISH with an empty topic (topic alias not allowed)")
                payload = data[p_start:body_end]
                pos = body_end
                try:
                    topic = data[i + 2 : t_end].decode()
                    problem = ""
                except UnicodeDecodeError:
                    topic = repr(data[i + 2 : t_end])[:max_topic]
                    problem = "topic is not valid UTF-8"
                if tlen > max_topic:
                    topic = topic[:max_topic] + "…"
                    problem = f"topic of {tlen:,} bytes exceeds max_topic_bytes={max_topic:,}"
                elif body_end - p_start > max_payload and not problem:
                    problem = (
                        f"payload of {len(payload):,} bytes exceeds max_payload_bytes="
                        f"{max_payload:,}"
                    )
                if (
                    on_dollar is not None
                    and topic[0] == "$"
                    and not problem
                    and on_dollar(topic, payload, qos)
                ):
                    continue  # consumed (the broker's $SYS counters)
                messages.append((topic, payload, qos, mid, problem, tag))
                size += len(topic) + len(payload) + MESSAGE_OVERHEAD
        finally:
            if pos:
                del buf[:pos]
        if messages:
            self.on_messages(messages, size)

    def _publish_head(
        self, buf: bytes, i: int, end: int, length: int, qos: int
    ) -> tuple[str, str, int, int] | None:
        """Topic, topic problem, packet id and payload start of an oversized PUBLISH whose
        body starts at ``i``; None until those bytes are here."""
        body_end = i + length
        if end - i < 2:
            return None
        tlen = (buf[i] << 8) | buf[i + 1]
        t_end = i + 2 + tlen
        p_start = t_end + (2 if qos else 0)
        if p_start > body_end:
            raise ProtocolError("malformed PUBLISH from the broker: topic overruns it")
        if p_start > end:
            return None
        if tlen == 0:
            raise ProtocolError("PUBLISH with an empty topic (topic alias not allowed)")
        mid = (buf[t_end] << 8) | buf[t_end + 1] if qos else 0
        if self.v5:
            props = _varint(buf, p_start, min(end, body_end))
            if props is None:
                if end >= body_end or end - p_start >= 4:
                    raise ProtocolError("malformed PUBLISH from the broker: bad properties")
                return None
            p_start = props[1] + props[0]
            if p_start > body_end:
                raise ProtocolError("malformed PUBLISH from the broker: properties overrun it")
        raw_topic = bytes(buf[i + 2 : t_end])
        problem = ""
        try:
            topic = raw_topic.decode()
        except UnicodeDecodeError:
            topic = repr(raw_topic)[: self.max_topic]
            problem = "topic is not valid UTF-8"
        if tlen > self.max_topic:
            topic = topic[: self.max_topic] + "…"
            problem = f"topic of {tlen:,} bytes exceeds max_topic_bytes={self.max_topic:,}"
        return topic, problem, mid, p_start
