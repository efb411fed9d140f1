"""The one place that reaches below aiomqtt's public API into the paho client it wraps.

Why each workaround exists (checked against aiomqtt 2.5.1 / paho-mqtt 2.2):

* **Manual acks.** aiomqtt PUBACKs a QoS 1 message as soon as it enters aiomqtt's own
  queue, before our code sees it, and has no public manual ack (aiomqtt #345). paho
  can hold acks (``manual_ack_set(True)``) but only if told *before* connecting — set
  later, session messages queued at the broker get auto-acked. :func:`configure` must
  therefore run on a fresh, unconnected client.
* **Reading many packets per readable event** (``docs/decisions/0060``). paho reads
  each packet with three ``recv`` calls (type byte, length, body) and runs a dozen
  Python calls, two locks and a topic matcher per message; in a backlog drain that
  was a quarter of the gateway's time. Our socket reader takes up to
  :data:`READ_SIZE` bytes per ``recv``, parses QoS 0/1 PUBLISH packets itself and
  hands every message of the read to the source in one call. Every other packet
  (CONNACK, SUBACK, PINGRESP, QoS 2 flows, MQTT 5 DISCONNECT) is given to paho
  unchanged, so paho keeps owning the session state.
* **Batched acks** (``docs/decisions/0061``). paho queues each PUBACK as its own
  packet, pokes a self-pipe and asks aiomqtt to register a writer
  (``call_soon_threadsafe``): about six system calls per ack. :func:`ack` only
  records the packet id; one callback per event-loop turn encodes every recorded
  PUBACK and writes them with one ``send`` (falling back to paho's queue when paho
  has unsent data of its own or the socket is full).
* **Reading pause.** When the pipeline is full we stop reading the socket
  (backpressure through TCP and the broker) by removing the event-loop reader, and
  install it again to resume.
* **Session-present flag and disconnect future**, which aiomqtt keeps private.
* **paho's debug logging** is switched off: formatting a log record per packet is a
  measurable share of the hot path.

Nothing outside this module may touch ``client._client`` or other private attributes.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

RawMessage = tuple[str, bytes, int, int, "PahoHandle"]
"""(topic, payload, qos, mid, handle). ``mid`` only means something on the connection
(``handle``) the message came from."""

OnMessages = Callable[[list[RawMessage]], None]

READ_SIZE = 1 << 16
"""Bytes asked for per ``recv``; a read holds at most this much beyond a partial packet."""

_PUBLISH = 0x30
_PUBACK = 0x40
_MQTT_V5 = 5
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


@dataclass(eq=False)
class PahoHandle:
    """State the adapter keeps for one configured client (one connection attempt)."""

    client: aiomqtt.Client
    paho: Any
    on_messages: OnMessages
    loop: asyncio.AbstractEventLoop
    session_present: bool = False
    paused: bool = False
    fd: int = -1
    v5: bool = False
    buffer: bytearray = field(default_factory=bytearray)
    acks: list[int] = field(default_factory=list)
    flush_scheduled: bool = False


def configure(client: aiomqtt.Client, on_messages: OnMessages) -> PahoHandle:
    """Switch ``client`` (not yet connected) to manual acks and our socket reader.

    ``on_messages`` receives every message of one socket read, in order, on the event
    loop thread.
    """
    inner = client._client  # noqa: SLF001
    loop = asyncio.get_running_loop()
    handle = PahoHandle(client=client, paho=inner, on_messages=on_messages, loop=loop)
    handle.v5 = inner._protocol == paho.MQTTv5  # noqa: SLF001
    inner.manual_ack_set(True)
    inner.disable_logger()
    original_on_connect: Any = inner.on_connect
    original_on_socket_open: Any = inner.on_socket_open

    def on_connect(
        c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None
    ) -> None:
        handle.session_present = bool(getattr(flags, "session_present", False))
        original_on_connect(c, userdata, flags, reason_code, properties)

    def on_paho_message(_c: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        # Only QoS 2 messages (and anything our reader handed to paho) come this way.
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = repr(message._topic)  # noqa: SLF001 - invalid UTF-8 topic, keep it visible
        on_messages([(topic, bytes(message.payload), message.qos, message.mid, handle)])

    def on_socket_open(c: Any, userdata: Any, sock: Any) -> None:
        # Called by paho on the thread that runs connect(). aiomqtt installs its
        # reader with call_soon_threadsafe; ours is queued after it and replaces it.
        original_on_socket_open(c, userdata, sock)
        handle.fd = sock.fileno()
        loop.call_soon_threadsafe(_install_reader, handle)

    inner.on_connect = on_connect
    inner.on_message = on_paho_message
    inner.on_socket_open = on_socket_open
    return handle


# -- reading ------------------------------------------------------------------


def _install_reader(handle: PahoHandle) -> None:
    if handle.paused or handle.fd < 0 or handle.paho._sock is None:  # noqa: SLF001
        return
    handle.loop.add_reader(handle.fd, _on_readable, handle)


def _fail(handle: PahoHandle, exc: BaseException) -> None:
    disconnected = handle.client._disconnected  # noqa: SLF001
    if not disconnected.done():
        disconnected.set_exception(exc)


def _on_readable(handle: PahoHandle) -> None:
    """Read what the socket has and dispatch every complete packet."""
    inner = handle.paho
    try:
        if inner._in_packet["command"]:  # noqa: SLF001
            # paho's own reader (before ours was installed) stopped mid-packet: let it
            # finish that packet so we start on a packet boundary.
            inner.loop_read()
            if inner._in_packet["command"]:  # noqa: SLF001
                return
        sock = inner._sock  # noqa: SLF001
        if sock is None:
            return
        while True:
            try:
                chunk = sock.recv(READ_SIZE)
            except _WOULD_BLOCK:
                break
            except OSError:
                inner.loop_read()  # paho sees the same error and reports the disconnect
                return
            if not chunk:
                inner.loop_read()  # end of stream: paho reports the disconnect
                return
            handle.buffer += chunk
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                break
        inner._last_bytes_received = time.monotonic()  # noqa: SLF001 - keepalive bookkeeping
        _dispatch(handle)
    except Exception as exc:
        _fail(handle, exc)


def _dispatch(handle: PahoHandle) -> None:
    """Parse complete packets from ``handle.buffer``; stop early when paused."""
    buf = handle.buffer
    data = bytes(buf)
    end = len(data)
    pos = 0
    messages: list[RawMessage] = []
    v5 = handle.v5
    while pos + 2 <= end and not handle.paused:
        header = data[pos]
        # Remaining length: 1 to 4 bytes, 7 bits each, least significant first.
        length = 0
        shift = 0
        i = pos + 1
        complete = False
        while i < end:
            byte = data[i]
            i += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                complete = True
                break
            shift += 7
            if shift > 21:
                raise aiomqtt.MqttError("malformed packet from the broker (remaining length)")
        body_end = i + length
        if not complete or body_end > end:
            break  # a partial packet: wait for more bytes
        qos = (header >> 1) & 3
        if header & 0xF0 == _PUBLISH and qos < 2:
            tlen = (data[i] << 8) | data[i + 1]
            t_end = i + 2 + tlen
            raw_topic = data[i + 2 : t_end]
            if qos:
                mid = (data[t_end] << 8) | data[t_end + 1]
                p_start = t_end + 2
            else:
                mid = 0
                p_start = t_end
            if v5:
                p_start = _skip_properties(data, p_start)
            if not raw_topic:  # MQTT 5 topic alias: let paho deal with it
                _to_paho(handle, messages, header, data[i:body_end], length)
            else:
                try:
                    topic = raw_topic.decode()
                except UnicodeDecodeError:
                    topic = repr(raw_topic)  # invalid UTF-8 topic, keep it visible
                messages.append((topic, data[p_start:body_end], qos, mid, handle))
        else:
            _to_paho(handle, messages, header, data[i:body_end], length)
            if handle.paho._sock is None:  # noqa: SLF001 - paho closed the connection
                pos = body_end
                break
        pos = body_end
    del buf[:pos]
    if messages:
        handle.on_messages(messages)


def _skip_properties(data: bytes, pos: int) -> int:
    length = 0
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return pos + length
        shift += 7


def _to_paho(
    handle: PahoHandle, messages: list[RawMessage], header: int, body: bytes, length: int
) -> None:
    """Let paho handle one complete packet (keeps message order: flush ours first)."""
    if messages:
        handle.on_messages(messages[:])
        messages.clear()
    inner = handle.paho
    inner._in_packet = {  # noqa: SLF001
        "command": header,
        "have_remaining": 1,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": length,
        "packet": bytearray(body),
        "to_process": 0,
        "pos": 0,
    }
    try:
        rc = inner._packet_handle()  # noqa: SLF001
    finally:
        inner._in_packet = {  # noqa: SLF001
            "command": 0,
            "have_remaining": 0,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": 0,
            "packet": bytearray(b""),
            "to_process": 0,
            "pos": 0,
        }
    if rc:
        inner._loop_rc_handle(rc)  # noqa: SLF001 - closes and reports the disconnect


def pause_reading(handle: PahoHandle) -> None:
    """Stop reading from the broker until :func:`resume_reading`."""
    if handle.paused:
        return
    handle.paused = True
    if handle.fd >= 0:
        handle.loop.remove_reader(handle.fd)


def resume_reading(handle: PahoHandle) -> None:
    """Read again: first what is already buffered, then the socket."""
    if not handle.paused:
        return
    handle.paused = False
    if handle.fd < 0 or handle.paho._sock is None:  # noqa: SLF001
        return
    handle.loop.add_reader(handle.fd, _on_readable, handle)

    def drain_buffered() -> None:
        try:
            _dispatch(handle)
        except Exception as exc:
            _fail(handle, exc)

    handle.loop.call_soon(drain_buffered)


# -- acknowledging -------------------------------------------------------------


def ack(handle: PahoHandle, mid: int, qos: int) -> bool:
    """Acknowledge ``mid`` (PUBACK for QoS 1, PUBCOMP for QoS 2) on the connection it
    came from. QoS 1 acks are written together at the end of the event-loop turn.
    Returns False if that connection is gone (the broker redelivers the message)."""
    inner = handle.paho
    if not inner.is_connected():
        return False
    if qos != 1:
        return bool(inner.ack(mid, qos) == paho.MQTT_ERR_SUCCESS)
    handle.acks.append(mid)
    if not handle.flush_scheduled:
        handle.flush_scheduled = True
        handle.loop.call_soon(flush_acks, handle)
    return True


def encode_pubacks(mids: list[int]) -> bytes:
    """PUBACK packets (``0x40 0x02 <mid>``) for ``mids``, back to back."""
    words = array("H", bytes(4 * len(mids)))
    words[0::2] = array("H", [0x4002]) * len(mids)
    words[1::2] = array("H", mids)
    if sys.byteorder == "little":
        words.byteswap()
    return words.tobytes()


def flush_acks(handle: PahoHandle) -> None:
    """Write every recorded PUBACK in one ``send``."""
    handle.flush_scheduled = False
    mids, handle.acks = handle.acks, []
    inner = handle.paho
    sock = inner._sock  # noqa: SLF001
    if not mids or sock is None or not inner.is_connected():
        return
    data = encode_pubacks(mids)
    sent = 0
    if not inner._out_packet:  # noqa: SLF001 - never write into the middle of paho's packet
        try:
            sent = sock.send(data)
        except _WOULD_BLOCK:
            sent = 0
        except OSError:
            return  # the reader sees the broken connection; the broker redelivers
        inner._last_msg_out = time.monotonic()  # noqa: SLF001 - keepalive bookkeeping
    if sent < len(data):
        inner._packet_queue(_PUBACK, data[sent:], 0, 0)  # noqa: SLF001 - paho writes the rest


async def wait_disconnected(handle: PahoHandle) -> BaseException | None:
    """Wait until the connection ends; returns the error that ended it, if any."""
    future: asyncio.Future[None] = handle.client._disconnected  # noqa: SLF001
    try:
        await asyncio.shield(future)
    except aiomqtt.MqttError as exc:
        return exc
    except Exception as exc:
        return exc
    return None
