"""The one place that reaches below aiomqtt's public API into the paho client it wraps.

Checked against aiomqtt 2.5.1 / paho-mqtt 2.2.0 (pinned in ``pyproject.toml``);
:func:`check_compatible` refuses to start when an installed version lacks an attribute
used here. Why each workaround exists:

* **Our own packet reader** (``docs/decisions/0060``, ``0091``). paho reads each packet
  with three ``recv`` calls and runs a dozen Python calls, two locks and a topic matcher
  per message; it also buffers a whole packet of any size, and at QoS 2 it sends PUBREC
  the moment a PUBLISH arrives (a crash before the commit loses the message) and never
  answers a PUBREL for a packet id it does not know (a restarted client leaks the
  broker's in-flight slots until delivery stops). So every byte from the socket goes
  through :class:`~gateway.sources.packets.PacketReader` instead: ``loop_read`` of the
  paho instance is replaced, so whichever event-loop reader calls it (aiomqtt's, or ours
  after a pause) reads up to :data:`READ_SIZE` bytes per ``recv``. PUBLISH packets of
  every QoS go to the source; PUBREL is answered with PUBCOMP at once for any packet id;
  every other packet (CONNACK, SUBACK, UNSUBACK, PINGRESP, DISCONNECT, AUTH) is handed to
  paho's ``_packet_handle`` unchanged, so paho keeps owning connection state and
  keepalive. paho's ``MalformedPacket`` is converted to ``ProtocolError`` there.
* **Manual acks after commit**, batched (``docs/decisions/0061``). aiomqtt PUBACKs a
  message as it enters its own queue and has no manual ack (aiomqtt #345). :func:`ack`
  records the packet id — PUBACK for QoS 1, PUBREC for QoS 2, after the commit — and one
  callback per event-loop turn writes every recorded ack (and pending PUBCOMPs) with one
  ``send``, falling back to paho's queue when paho has unsent data or the socket is full.
* **Holding the socket** (:func:`pause_reading`). Normally the socket is always read,
  so PINGRESP and PUBREL are handled even while the pipeline is full (the broker's
  in-flight window bounds what arrives). Only when a connection's buffer passes its byte
  bound (a broker releasing past its window, a QoS 0 flood) is the reader removed; while
  it is, paho's keepalive bookkeeping is held so the unread PINGRESPs do not make paho
  drop a healthy connection — PINGREQs still go out, so the broker keeps it too
  (``docs/decisions/0092``).
* **Session-present flag and disconnect future**, which aiomqtt keeps private.
* **paho's debug logging** is switched off: formatting a log record per packet is a
  measurable share of the hot path.

Nothing outside this module may touch ``client._client`` or other private attributes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

from gateway import faults
from gateway.errors import IncompatibleLibrary, ProtocolError
from gateway.sources.packets import Message, OnDollar, PacketReader

log = logging.getLogger(__name__)

RawMessage = Message
"""``(topic, payload, qos, mid, problem, handle)``: see :data:`packets.Message`. ``mid``
only means something on the connection (``handle``) the message came from."""

OnMessages = Callable[[list[RawMessage], int], None]

READ_SIZE = 1 << 16
"""Bytes asked for per ``recv``; a read holds at most this much beyond a partial packet."""

TESTED = {"aiomqtt": ((2, 5), (2, 6)), "paho-mqtt": ((2, 2), (2, 3))}
"""Versions this module was checked against: [low, high) per distribution."""

_PAHO_ATTRIBUTES = (
    "_sock",
    "_in_packet",
    "_packet_handle",
    "_loop_rc_handle",
    "_last_bytes_received",
    "_last_msg_out",
    "_ping_t",
    "_out_packet",
    "_packet_queue",
    "_protocol",
    "_keepalive",
)
_AIOMQTT_ATTRIBUTES = ("_client", "_disconnected")

_PUBACK = 0x40
_PUBREC = 0x50
_PUBREL = 0x60
_PUBCOMP = 0x70
_HOLD_INTERVAL_S = 0.5
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_EMPTY_PACKET: dict[str, Any] = {
    "command": 0,
    "have_remaining": 0,
    "remaining_count": [],
    "remaining_mult": 1,
    "remaining_length": 0,
    "packet": bytearray(b""),
    "to_process": 0,
    "pos": 0,
}


def _version(dist: str) -> tuple[int, ...] | None:
    try:
        text = metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
    parts: list[int] = []
    for part in text.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_compatible() -> None:
    """Refuse to run on an aiomqtt/paho that lacks what this module uses.

    Raises :class:`IncompatibleLibrary` naming the missing attributes and the versions
    this module was checked against. Versions outside the tested range that still have
    every attribute only get a warning. Call with an event loop running.
    """
    probe = aiomqtt.Client("127.0.0.1")
    missing = [f"aiomqtt.Client.{a}" for a in _AIOMQTT_ATTRIBUTES if not hasattr(probe, a)]
    inner = getattr(probe, "_client", None)
    if inner is not None:
        missing += [f"paho Client.{a}" for a in _PAHO_ATTRIBUTES if not hasattr(inner, a)]
    if missing:
        found = ", ".join(f"{d} {'.'.join(map(str, _version(d) or ()))}" for d in TESTED)
        raise IncompatibleLibrary(
            f"the MQTT adapter needs {', '.join(missing)}, missing in the installed "
            f"libraries ({found}); install the tested versions: "
            "pip install 'aiomqtt>=2.5.1,<2.6' 'paho-mqtt>=2.2,<2.3'"
        )
    for dist, (low, high) in TESTED.items():
        version = _version(dist)
        if version is not None and not (low <= version[:2] < high):
            log.warning(
                "%s %s is outside the versions the MQTT adapter was tested with (%s.x)",
                dist,
                ".".join(map(str, version)),
                ".".join(map(str, low)),
            )


@dataclass(eq=False)
class PahoHandle:
    """State the adapter keeps for one configured client (one connection attempt)."""

    client: aiomqtt.Client
    paho: Any
    loop: asyncio.AbstractEventLoop
    reader: PacketReader = field(init=False)
    session_present: bool = False
    paused: bool = False
    fd: int = -1
    acks: list[int] = field(default_factory=list)
    """Packet ids to PUBACK (QoS 1, committed)."""
    recs: list[int] = field(default_factory=list)
    """Packet ids to PUBREC (QoS 2, committed)."""
    comps: list[int] = field(default_factory=list)
    """Packet ids to PUBCOMP (answers to PUBREL)."""
    flush_scheduled: bool = False
    hold: asyncio.TimerHandle | None = None


def configure(
    client: aiomqtt.Client,
    on_messages: OnMessages,
    *,
    max_payload: int,
    max_topic: int,
    on_dollar: OnDollar | None = None,
) -> PahoHandle:
    """Switch ``client`` (not yet connected) to our packet reader and manual acks.

    ``on_messages`` receives the messages of one socket read, in order, with their
    buffer size, on the event loop thread.
    """
    inner: Any = client._client  # noqa: SLF001
    loop = asyncio.get_running_loop()
    handle = PahoHandle(client=client, paho=inner, loop=loop)
    handle.reader = PacketReader(
        on_messages,
        functools.partial(_on_control, handle),
        max_payload=max_payload,
        max_topic=max_topic,
        v5=inner._protocol == paho.MQTTv5,  # noqa: SLF001
        tag=handle,
        on_dollar=on_dollar,
    )
    inner.manual_ack_set(True)  # belt and braces: no PUBLISH reaches paho any more
    inner.disable_logger()
    # aiomqtt's socket reader calls client.loop_read(): an instance attribute shadows the
    # method, so from the very first byte (CONNACK and the session's queued messages
    # right behind it) everything goes through our reader — no race with paho's.
    inner.loop_read = functools.partial(_loop_read, handle)
    original_on_connect: Any = inner.on_connect
    original_on_socket_open: Any = inner.on_socket_open

    def on_connect(
        c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None
    ) -> None:
        handle.session_present = bool(getattr(flags, "session_present", False))
        original_on_connect(c, userdata, flags, reason_code, properties)

    def on_socket_open(c: Any, userdata: Any, sock: Any) -> None:
        # Called by paho on the thread that runs connect(); aiomqtt installs its reader.
        original_on_socket_open(c, userdata, sock)
        handle.fd = sock.fileno()

    inner.on_connect = on_connect
    inner.on_socket_open = on_socket_open
    return handle


# -- reading ------------------------------------------------------------------


def _loop_read(handle: PahoHandle, max_packets: int = 1) -> int:
    """Stands in for paho's ``loop_read`` (see :func:`configure`)."""
    _on_readable(handle)
    return int(MQTTErrorCode.MQTT_ERR_SUCCESS)


def _close(handle: PahoHandle, rc: MQTTErrorCode) -> None:
    """Close the socket and let paho report the disconnect (aiomqtt then ends the
    connection's disconnect future)."""
    inner = handle.paho
    if inner._sock is not None:  # noqa: SLF001
        inner._loop_rc_handle(rc)  # noqa: SLF001


def _fail(handle: PahoHandle, exc: BaseException) -> None:
    """An unexpected error (a bug): end the connection with it, so the source's
    supervisor sees it."""
    disconnected = handle.client._disconnected  # noqa: SLF001
    if not disconnected.done():
        disconnected.set_exception(exc)
    _close(handle, MQTTErrorCode.MQTT_ERR_UNKNOWN)


def _on_readable(handle: PahoHandle) -> None:
    """Read what the socket has and parse it."""
    inner = handle.paho
    sock = inner._sock  # noqa: SLF001
    if sock is None:
        return
    reader = handle.reader
    try:
        while True:
            try:
                chunk = sock.recv(READ_SIZE)
            except _WOULD_BLOCK:
                break
            except OSError:
                _close(handle, MQTTErrorCode.MQTT_ERR_CONN_LOST)
                return
            if not chunk:
                _close(handle, MQTTErrorCode.MQTT_ERR_CONN_LOST)  # end of stream
                return
            inner._last_bytes_received = time.monotonic()  # noqa: SLF001 - keepalive
            reader.feed(chunk)
            if inner._sock is not sock or handle.paused:  # noqa: SLF001
                break  # closed by a packet (DISCONNECT), or held
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                break
    except ProtocolError as exc:
        log.error("closing the connection: %s", exc)
        _close(handle, MQTTErrorCode.MQTT_ERR_PROTOCOL)
    except Exception as exc:
        _fail(handle, exc)


def _on_control(handle: PahoHandle, header: int, body: bytes) -> None:
    """Every packet but PUBLISH. PUBREL is answered with PUBCOMP here, for any packet
    id: the message was committed before our PUBREC, so there is nothing left to do,
    and a restarted client must release the broker's slot too. The rest is paho's."""
    kind = header & 0xF0
    if kind == _PUBREL:
        if header != 0x62 or len(body) < 2:
            raise ProtocolError("malformed PUBREL from the broker")
        if not faults.enabled("hold-pubcomp"):
            _queue_ack(handle, handle.comps, (body[0] << 8) | body[1])
        return
    inner = handle.paho
    inner._in_packet = {  # noqa: SLF001
        "command": header,
        "have_remaining": 1,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": len(body),
        "packet": bytearray(body),
        "to_process": 0,
        "pos": 0,
    }
    try:
        rc = inner._packet_handle()  # noqa: SLF001
    except MalformedPacket as exc:
        raise ProtocolError(f"malformed packet from the broker: {exc}") from None
    finally:
        inner._in_packet = dict(_EMPTY_PACKET, remaining_count=[], packet=bytearray())  # noqa: SLF001
    if rc:
        _close(handle, rc)


def _hold_keepalive(handle: PahoHandle) -> None:
    """While the socket is not read, PINGRESPs stay unread: keep paho from counting
    that as a dead connection (it still sends PINGREQ, which keeps the broker's side
    alive). Normal checking resumes with reading."""
    handle.hold = None
    inner = handle.paho
    if not handle.paused or inner._sock is None:  # noqa: SLF001
        return
    inner._ping_t = 0  # noqa: SLF001
    inner._last_bytes_received = time.monotonic()  # noqa: SLF001
    handle.hold = handle.loop.call_later(_HOLD_INTERVAL_S, _hold_keepalive, handle)


def pause_reading(handle: PahoHandle) -> None:
    """Stop reading the socket until :func:`resume_reading` (TCP backpressure)."""
    if handle.paused:
        return
    handle.paused = True
    if handle.fd >= 0:
        handle.loop.remove_reader(handle.fd)
    _hold_keepalive(handle)


def resume_reading(handle: PahoHandle) -> None:
    """Read the socket again."""
    if not handle.paused:
        return
    handle.paused = False
    if handle.hold is not None:
        handle.hold.cancel()
        handle.hold = None
    if handle.fd < 0 or handle.paho._sock is None:  # noqa: SLF001
        return
    handle.loop.add_reader(handle.fd, _on_readable, handle)


# -- acknowledging -------------------------------------------------------------


def _queue_ack(handle: PahoHandle, queue: list[int], mid: int) -> None:
    queue.append(mid)
    if not handle.flush_scheduled:
        handle.flush_scheduled = True
        handle.loop.call_soon(flush_acks, handle)


def ack(handle: PahoHandle, mid: int, qos: int) -> bool:
    """Acknowledge a committed message on the connection it came from: PUBACK for QoS 1,
    PUBREC for QoS 2 (the broker then sends PUBREL, answered with PUBCOMP). Written
    together at the end of the event-loop turn. Returns False if that connection is
    gone (the broker redelivers the message)."""
    if not handle.paho.is_connected():
        return False
    _queue_ack(handle, handle.acks if qos == 1 else handle.recs, mid)
    return True


def encode_acks(kind: int, mids: list[int]) -> bytes:
    """Two-byte acknowledgement packets ``<kind> 0x02 <mid>`` for ``mids``, back to back
    (``kind`` 0x40 PUBACK, 0x50 PUBREC, 0x70 PUBCOMP)."""
    words = array("H", bytes(4 * len(mids)))
    words[0::2] = array("H", [(kind << 8) | 0x02]) * len(mids)
    words[1::2] = array("H", mids)
    if sys.byteorder == "little":
        words.byteswap()
    return words.tobytes()


def encode_pubacks(mids: list[int]) -> bytes:
    """PUBACK packets (``0x40 0x02 <mid>``) for ``mids``, back to back."""
    return encode_acks(_PUBACK, mids)


def flush_acks(handle: PahoHandle) -> None:
    """Write every recorded PUBACK, PUBREC and PUBCOMP in one ``send``."""
    handle.flush_scheduled = False
    parts = [
        encode_acks(kind, mids)
        for kind, mids in ((_PUBACK, handle.acks), (_PUBREC, handle.recs), (_PUBCOMP, handle.comps))
        if mids
    ]
    handle.acks, handle.recs, handle.comps = [], [], []
    inner = handle.paho
    sock = inner._sock  # noqa: SLF001
    if not parts or sock is None or not inner.is_connected():
        return
    data = parts[0] if len(parts) == 1 else b"".join(parts)
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
    except Exception as exc:
        return exc
    return None


def stop_holding(handle: PahoHandle) -> None:
    """Cancel the keepalive hold timer (the connection is over)."""
    if handle.hold is not None:
        handle.hold.cancel()
        handle.hold = None
