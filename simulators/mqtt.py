"""Publishing MQTT connections driven by the asyncio loop, for thousands of clients.

Each :class:`Connection` is a bare paho client whose socket is registered with the
event loop (paho's ``on_socket_*`` hooks), so one thread serves any number of
connections — no paho thread per client and no future per message:

* ``publish`` hands paho the packet and remembers the message's ledger token under
  its packet id; paho's ``on_publish`` (PUBACK for QoS 1, PUBCOMP for QoS 2, the
  socket write for QoS 0) moves the token to the ledger as acknowledged;
* packets are written in one pass per event-loop turn (``call_soon``), so a scheduler
  pass that publishes 1,000 messages costs one flush, not 1,000 wake-ups; a full
  socket falls back to a writer callback;
* the blocking TCP connect (and TLS handshake) runs in a small thread pool; socket
  hooks that paho calls from there are forwarded to the loop thread;
* an unexpected disconnect reconnects with backoff; paho resends unacknowledged
  QoS ≥ 1 messages after the new CONNACK, and their acks still reach the ledger.

:class:`Flow` bounds the messages in flight over all connections (the broker and
paho's queues never grow without limit) and lets the runner wait for room, or for
every last acknowledgement at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from simulators.errors import BrokerUnreachable
from simulators.report import Ledger, Token

log = logging.getLogger("simulators.mqtt")


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


class Connection:
    """One MQTT client, publishing only, driven by the running event loop."""

    def __init__(
        self,
        options: BrokerOptions,
        client_id: str,
        ledger: Ledger,
        flow: Flow,
        *,
        inflight: int = 20,
        will: Will | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self.client_id = client_id
        self.ledger = ledger
        self.flow = flow
        self.on_event = on_event or (lambda _message: None)
        self.pending: dict[int, Token] = {}
        self.closing = False
        self.connected = False
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._fd: int | None = None
        self._writer = False
        self._flush_scheduled = False
        self._connack: asyncio.Future[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._executor: Executor | None = None

        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=paho.MQTTv311,
        )
        client.disable_logger()  # formatting a log record per packet is measurable
        client.max_inflight_messages_set(inflight)
        client.max_queued_messages_set(0)  # Flow bounds what we queue
        if options.username is not None:
            client.username_pw_set(options.username, options.password)
        if options.tls:
            client.tls_set_context(_tls_context(options))
            if options.tls_insecure:
                client.tls_insecure_set(True)
        if will is not None:
            client.will_set(will.topic, will.payload, will.qos, will.retain)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self.client = client

    # ------------------------------------------------------------------ event-loop glue

    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, _client: Any, _userdata: Any, sock: Any) -> None:
        self._in_loop(self._add_reader, sock.fileno())

    def _add_reader(self, fd: int) -> None:
        if fd < 0 or self._closed.is_set():
            return
        self._fd = fd
        self._loop.add_reader(fd, self._on_readable)

    def _on_socket_close(self, _client: Any, _userdata: Any, sock: Any) -> None:
        self._in_loop(self._remove_fd, sock.fileno())

    def _remove_fd(self, fd: int) -> None:
        if fd < 0:
            return
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)
        if self._fd == fd:
            self._fd = None
            self._writer = False

    def _on_register_write(self, _client: Any, _userdata: Any, _sock: Any) -> None:
        self._in_loop(self._schedule_flush)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._writer:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._write()
        if self.client.want_write() and not self._writer and self._fd is not None:
            # The socket is full: let the loop tell us when it drains.
            self._writer = True
            self._loop.add_writer(self._fd, self._write)

    def _write(self) -> None:
        try:
            self.client.loop_write()
        except Exception as exc:  # paho raises OS/SSL errors from send
            self._lost(exc)

    def _on_unregister_write(self, _client: Any, _userdata: Any, _sock: Any) -> None:
        self._in_loop(self._remove_writer)

    def _remove_writer(self) -> None:
        if self._writer and self._fd is not None:
            self._loop.remove_writer(self._fd)
        self._writer = False

    def _on_readable(self) -> None:
        client = self.client
        try:
            while True:
                client.loop_read()
                sock = client.socket()
                # TLS may hold decrypted bytes the selector cannot see.
                if sock is not None and hasattr(sock, "pending") and sock.pending() > 0:
                    continue
                break
        except Exception as exc:
            self._lost(exc)

    def _lost(self, exc: BaseException) -> None:
        self.on_event(f"{self.client_id}: connection error: {exc}")
        if self._fd is not None:
            self._remove_fd(self._fd)
        with contextlib.suppress(Exception):
            sock = self.client.socket()
            if sock is not None:
                sock.close()
        self._connection_dropped()

    # ------------------------------------------------------------------- paho callbacks

    def _on_connect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _properties: Any
    ) -> None:
        future = self._connack
        if reason.is_failure:
            if future is not None and not future.done():
                future.set_exception(
                    BrokerUnreachable(f"{self.options.where()} refused {self.client_id}: {reason}")
                )
            return
        self.connected = True
        if future is not None and not future.done():
            future.set_result(None)

    def _on_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _properties: Any
    ) -> None:
        self.connected = False
        if self.closing:
            self._closed.set()
            return
        self.on_event(f"{self.client_id}: disconnected ({reason}); reconnecting")
        self._connection_dropped()

    def _connection_dropped(self) -> None:
        self.connected = False
        if self.closing:
            self._closed.set()
            return
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = self._loop.create_task(self._reconnect())

    def _on_publish(
        self, _client: Any, _userdata: Any, mid: int, _reason: Any, _properties: Any
    ) -> None:
        token = self.pending.pop(mid, None)
        if token is not None:
            self.ledger.acked(token)
            self.flow.done()

    # ------------------------------------------------------------------------ public API

    async def connect(self, executor: Executor | None = None) -> None:
        """Connect and wait for the CONNACK; raises :class:`BrokerUnreachable`."""
        self._executor = executor
        self._connack = self._loop.create_future()
        opts = self.options
        try:
            await self._loop.run_in_executor(
                executor, self._blocking_connect, opts.host, opts.port, opts.keepalive
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise BrokerUnreachable(f"cannot connect to {opts.where()}: {exc}") from None
        try:
            await asyncio.wait_for(asyncio.shield(self._connack), opts.connect_timeout_s)
        except TimeoutError:
            raise BrokerUnreachable(
                f"{opts.where()} did not answer {self.client_id}'s CONNECT within "
                f"{opts.connect_timeout_s:g}s"
            ) from None

    def _blocking_connect(self, host: str, port: int, keepalive: int) -> None:
        self.client.connect(host, port, keepalive)

    async def _reconnect(self) -> None:
        delay = 0.1
        while not self.closing:
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            if self.closing:
                return
            self.ledger.totals.reconnects += 1
            self._connack = self._loop.create_future()
            try:
                await self._loop.run_in_executor(self._executor, self.client.reconnect)
                await asyncio.wait_for(
                    asyncio.shield(self._connack), self.options.connect_timeout_s
                )
            except (OSError, ssl.SSLError, TimeoutError, BrokerUnreachable) as exc:
                self.on_event(f"{self.client_id}: reconnect failed: {exc}")
                delay = min(5.0, delay * 2)
                continue
            self.on_event(f"{self.client_id}: reconnected")
            return

    def publish(self, topic: str, payload: bytes, qos: int, token: Token) -> bool:
        """Queue one message; False (and nothing recorded) if paho refused it."""
        info = self.client.publish(topic, payload, qos)
        rc = info.rc
        if rc == paho.MQTT_ERR_SUCCESS or (rc == paho.MQTT_ERR_NO_CONN and qos > 0):
            # NO_CONN at QoS ≥ 1: paho keeps the message and sends it after reconnecting.
            self.pending[info.mid] = token
            self.flow.add()
            return True
        self.ledger.totals.publish_errors += 1
        return False

    def misc(self) -> None:
        """Keepalive pings and timeouts; call about once a second."""
        if self.connected:
            with contextlib.suppress(Exception):
                self.client.loop_misc()

    def give_up_pending(self) -> int:
        """Record every unacknowledged message as unconfirmed; returns how many."""
        count = len(self.pending)
        for token in self.pending.values():
            self.ledger.unconfirmed(token)
        self.pending.clear()
        if count:
            self.flow.done(count)
        return count

    async def close(self, timeout: float = 5.0) -> None:
        """Send DISCONNECT (the last will is not published) and release the socket."""
        self.closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
        if self.connected:
            self.client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout)
        self._closed.set()
        if self._fd is not None:
            self._remove_fd(self._fd)
        with contextlib.suppress(Exception):
            sock = self.client.socket()
            if sock is not None:
                sock.close()
