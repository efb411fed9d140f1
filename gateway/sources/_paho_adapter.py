"""The one place that reaches below aiomqtt's public API into the paho client it wraps.

Why each workaround exists (checked against aiomqtt 2.5.1 / paho-mqtt 2.2):

* **Manual acks.** aiomqtt PUBACKs a QoS 1 message as soon as it enters aiomqtt's own
  queue, before our code sees it, and has no public manual ack (aiomqtt #345). paho
  can hold acks (``manual_ack_set(True)``) but only if told *before* connecting — set
  later, session messages queued at the broker get auto-acked. :func:`configure` must
  therefore run on a fresh, unconnected client.
* **Message hand-off.** We replace paho's ``on_message`` so each message goes straight
  to the source's bounded buffer: no aiomqtt ``Message`` copy, no unbounded internal
  queue, and no per-message task or future.
* **Reading pause.** When the pipeline is full we stop reading the socket
  (backpressure through TCP and the broker) by removing the event-loop reader that
  aiomqtt installed, and install an equivalent one to resume.
* **Session-present flag and disconnect future**, which aiomqtt keeps private.
* **paho's debug logging** is switched off: formatting a log record per packet is a
  measurable share of the hot path.

Nothing outside this module may touch ``client._client`` or other private attributes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

# (topic, payload, qos, mid) — mid is only meaningful on the connection it came from.
RawMessage = tuple[str, bytes, int, int]


@dataclass
class PahoHandle:
    """State the adapter keeps for one configured client."""

    client: aiomqtt.Client
    paho: Any
    session_present: bool = False
    paused: bool = False


def configure(client: aiomqtt.Client, on_message: Callable[[RawMessage], None]) -> PahoHandle:
    """Switch ``client`` (not yet connected) to manual acks and direct message hand-off."""
    inner = client._client  # noqa: SLF001
    handle = PahoHandle(client=client, paho=inner)
    inner.manual_ack_set(True)
    inner.disable_logger()
    original_on_connect: Any = inner.on_connect

    def on_connect(
        c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None
    ) -> None:
        handle.session_present = bool(getattr(flags, "session_present", False))
        original_on_connect(c, userdata, flags, reason_code, properties)

    def on_paho_message(_c: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = repr(message._topic)  # noqa: SLF001 - invalid UTF-8 topic, keep it visible
        on_message((topic, bytes(message.payload), message.qos, message.mid))

    inner.on_connect = on_connect
    inner.on_message = on_paho_message
    return handle


def ack(handle: PahoHandle, mid: int, qos: int) -> bool:
    """Send the PUBACK (QoS 1) / PUBCOMP (QoS 2) for ``mid``. False if not connected."""
    if not handle.paho.is_connected():
        return False
    return bool(handle.paho.ack(mid, qos) == paho.MQTT_ERR_SUCCESS)


def _socket_fd(handle: PahoHandle) -> int | None:
    sock = handle.paho.socket()
    if sock is None:
        return None
    fd = sock.fileno()
    return fd if fd >= 0 else None


def pause_reading(handle: PahoHandle) -> None:
    """Stop reading from the broker until :func:`resume_reading`."""
    if handle.paused:
        return
    fd = _socket_fd(handle)
    if fd is not None:
        asyncio.get_running_loop().remove_reader(fd)
    handle.paused = True


def resume_reading(handle: PahoHandle) -> None:
    """Read again; also drains bytes TLS may already hold decrypted."""
    if not handle.paused:
        return
    handle.paused = False
    fd = _socket_fd(handle)
    if fd is None:
        return
    loop = asyncio.get_running_loop()
    client = handle.client
    inner = handle.paho

    def on_readable() -> None:
        # Mirrors aiomqtt's own reader callback (client.py, _on_socket_open).
        try:
            while True:
                inner.loop_read()
                sock = inner._sock  # noqa: SLF001
                if hasattr(sock, "pending") and sock.pending() > 0:
                    continue
                break
        except Exception as exc:
            disconnected = client._disconnected  # noqa: SLF001
            if not disconnected.done():
                disconnected.set_exception(exc)

    loop.add_reader(fd, on_readable)
    loop.call_soon(on_readable)


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
