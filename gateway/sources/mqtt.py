"""The MQTT source: N broker connections, each with one long-lived reader coroutine.

Per connection:

* a connect loop with exponential backoff and jitter, building a **fresh client per
  attempt** (a cancelled connect can leave an aiomqtt client's lock held);
* a persistent session (fixed client id; 3.1.1 ``clean_session=False``; MQTT 5
  ``clean_start=False`` plus a session expiry) whose subscriptions are reconciled on
  every connect with the wanted filters (:mod:`gateway.sources.subscriptions`): added
  filters subscribed, removed ones unsubscribed, the change logged;
* a buffer filled by the adapter's socket reader (every message of one read at once)
  and drained by the reader coroutine, which decodes each message (:class:`Router`)
  and submits it to the pipeline. When the pipeline is full the reader coroutine waits
  but the socket is still read, so keepalive (PINGRESP) and QoS 2 releases (PUBREL)
  keep working through a long storage outage; what arrives meanwhile is bounded by the
  broker's in-flight window. Only if the buffer passes ``mqtt.buffer_bytes`` (a broker
  releasing past its window, a QoS 0 flood) is the socket no longer read until it is
  half empty — backpressure reaches the broker, nothing is dropped;
* messages the reader marked (payload over ``pipeline.max_payload_bytes``, skipped as
  it streamed in; topic over ``pipeline.max_topic_bytes``; invalid UTF-8) become dead
  letters without touching the router or its caches, and are acked;
* acks sent only by the pipeline after commit, and only on the connection the message
  arrived on (a packet id from an earlier connection means nothing; the broker
  redelivers those and the sink ignores the repeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway import faults
from gateway.config import MqttConfig, PipelineConfig, SubscriptionConfig
from gateway.errors import ProtocolError, StorageError
from gateway.lag import BROKER_TOPICS
from gateway.metrics import Metrics, SlotState
from gateway.models import DeadLetter, Envelope
from gateway.pipeline import Pipeline
from gateway.router import Router
from gateway.sources import _paho_adapter as adapter
from gateway.sources.packets import MESSAGE_OVERHEAD
from gateway.sources.slots import SlotManager
from gateway.sources.subscriptions import (
    CONFIG_OWNER,
    FilterGroup,
    Record,
    Registry,
    SessionStore,
    decode_record,
    encode_record,
    plan,
)
from gateway.storage.base import SlotLocks

log = logging.getLogger(__name__)

BrokerStats = Callable[[str, bytes], None]
"""Receives the broker's ``$SYS`` counters (topic, payload) as they arrive."""
BROKER_STATS_OWNER = "broker-stats"


def max_packet_size(config: MqttConfig, pipeline: PipelineConfig) -> int:
    """The MQTT 5 Maximum Packet Size the gateway announces: ``mqtt.max_packet_size``,
    or (0) four times ``pipeline.max_payload_bytes``, at least 1 MiB. Messages between
    ``max_payload_bytes`` and this are received, skipped and dead-lettered (visible);
    an MQTT 5 broker does not send larger ones at all."""
    if config.max_packet_size:
        return config.max_packet_size
    return min(268_435_455, max(1 << 20, 4 * pipeline.max_payload_bytes))


def build_client(config: MqttConfig, client_id: str, packet_limit: int = 1 << 20) -> aiomqtt.Client:
    """A fresh, unconnected aiomqtt client for one connection attempt."""
    tls_params = None
    if config.tls.active:
        tls_params = aiomqtt.TLSParameters(
            ca_certs=str(config.tls.ca) if config.tls.ca else None,
            certfile=str(config.tls.cert) if config.tls.cert else None,
            keyfile=str(config.tls.key) if config.tls.key else None,
            cert_reqs=ssl.CERT_NONE if config.tls.insecure else ssl.CERT_REQUIRED,
        )
    common: dict[str, Any] = {
        "identifier": client_id,
        "username": config.username,
        "password": config.password.get_secret_value() if config.password else None,
        "keepalive": config.keepalive,
        "tls_params": tls_params,
        "tls_insecure": config.tls.insecure if tls_params else None,
        "timeout": config.connect_timeout_s,
    }
    if config.protocol == "5":
        # MQTT 5: clean_start must be False explicitly (the default "first only" wipes
        # the session on every reconnect of a reused client) plus a session expiry.
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = config.session_expiry_s
        props.ReceiveMaximum = config.receive_maximum
        props.MaximumPacketSize = packet_limit
        return aiomqtt.Client(
            config.host,
            config.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            **common,
        )
    return aiomqtt.Client(
        config.host,
        config.port,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=False,
        **common,
    )


def _list(filters: list[str], limit: int = 5) -> str:
    shown = ", ".join(filters[:limit])
    return shown + (f" and {len(filters) - limit} more" if len(filters) > limit else "")


class Connection:
    """One broker connection and its reader coroutine."""

    def __init__(
        self,
        index: int,
        config: MqttConfig,
        registry: Registry,
        store: SessionStore,
        router: Router,
        pipeline: Pipeline,
        metrics: Metrics,
        broker_stats: BrokerStats | None = None,
        *,
        client_id: str | None = None,
        may_connect: Callable[[], bool] | None = None,
        retiring: bool = False,
    ) -> None:
        self.index = index
        self.retiring = retiring
        """Bring the session to no subscriptions at all (a slot above ``mqtt.slots``
        being emptied: what is queued there still arrives and is stored)."""
        self.first = index == 0 and client_id is None
        """The connection that also carries the non-shared groups (never a slot's)."""
        self.may_connect = may_connect
        """Asked before every connect attempt; False ends :meth:`run` (a slot whose
        claim is gone must not take its session back from the new owner)."""
        self.broker_stats = broker_stats
        self.config = config
        self.limits: PipelineConfig = pipeline.config
        self.packet_limit = max_packet_size(config, self.limits)
        self.registry = registry
        self.store = store
        self.router = router
        self.pipeline = pipeline
        self.metrics = metrics
        self.client_id = client_id or (
            config.client_id if config.connections == 1 else f"{config.client_id}-{index}"
        )
        self.unacked = 0
        """QoS 1/2 messages handed to the pipeline and not acknowledged yet."""
        self.last_message = 0.0
        """``time.monotonic()`` when the last message arrived (0: none yet)."""
        self.pending: deque[adapter.RawMessage] = deque()
        self.pending_bytes = 0
        """Size of ``pending`` as the reader counts it (:func:`packets.message_size`)."""
        self.high_water = config.buffer_bytes
        self.low_water = self.high_water // 2
        self.handle: adapter.PahoHandle | None = None
        self.client: aiomqtt.Client | None = None
        self.session_key = f"{config.host}:{config.port}/{self.client_id}"
        self.subscribed: Record = {}
        """What the broker session holds now (valid while connected)."""
        self._sub_lock = asyncio.Lock()
        self.reader_task: asyncio.Task[None] | None = None
        self._connects = 0
        self.connected = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = asyncio.Event()
        self._stopped_reading = False
        self._backpressured = False
        self._last_state = ""

    # -- paho callback side (runs inside loop_read on the event loop thread) --

    def _on_messages(self, messages: list[adapter.RawMessage], size: int) -> None:
        """Everything one socket read brought (called by the adapter on the loop)."""
        self.pending.extend(messages)
        self.pending_bytes += size
        self.last_message = time.monotonic()
        self._idle.clear()
        self._wakeup.set()
        handle = messages[-1][5]
        if self._stopped_reading and not handle.paused:
            # Asked to stop while the connection was still being set up (a slot handed
            # over at once): the session's backlog must not keep flowing in.
            adapter.pause_reading(handle)
            return
        if self.pending_bytes >= self.high_water and not handle.paused:
            self._backpressured = True
            self.metrics.paused_reads += 1
            adapter.pause_reading(handle)

    def _on_dollar(self, topic: str, payload: bytes, qos: int) -> bool:
        """A ``$…`` topic as it arrives: the broker's counters go to ``broker_stats`` at
        once (not behind a backlog); consumed unless a ``[[subscriptions]]`` wants it too
        (or it needs an ack)."""
        if self.broker_stats is None or topic not in BROKER_TOPICS:
            return False
        self.broker_stats(topic, payload)
        return qos == 0 and self.router.route_for(topic) is None

    def _ack(self, handle: adapter.PahoHandle, mid: int, qos: int) -> None:
        # Acked on the connection the message came on; a packet id from an earlier
        # connection means nothing (the broker redelivers, the sink ignores repeats).
        self.unacked -= 1
        if adapter.ack(handle, mid, qos):
            self.metrics.acks_sent += 1
        else:
            self.metrics.acks_dropped += 1

    # -- reader coroutine --

    def _reject(self, topic: str, payload: bytes, problem: str) -> Envelope:
        """A dead letter for a message the reader marked; the router (and its caches)
        never see a topic that is too long or not UTF-8."""
        label = ""
        if not problem.startswith("topic"):
            route = self.router.route_for(topic)
            label = route.label if route is not None else ""
        self.metrics.messages_rejected_by_reader += 1
        return Envelope(
            [],
            DeadLetter(int(time.time() * 1000), topic, payload, problem, label),
            subscription=label,
            received_at=time.monotonic(),
        )

    async def read_loop(self) -> None:
        """Decode buffered messages and hand them to the pipeline, forever."""
        pending = self.pending
        route = self.router.route
        submit = self.pipeline.submit
        reject = self._reject
        crash_at = int(faults.value("reader-crash") or 0)
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while pending:
                topic, payload, qos, mid, problem, handle = pending.popleft()
                self.pending_bytes -= len(topic) + len(payload) + MESSAGE_OVERHEAD
                if crash_at:
                    crash_at -= 1
                    if not crash_at:
                        raise RuntimeError("test fault reader-crash: the reader fails")
                envelope = reject(topic, payload, problem) if problem else route(topic, payload)
                if qos:
                    envelope.ack = partial(self._ack, handle, mid, qos)
                    self.unacked += 1
                await submit(envelope)
                if self._backpressured and self.pending_bytes <= self.low_water:
                    self._backpressured = False
                    if self.handle is not None and not self._stopped_reading:
                        adapter.resume_reading(self.handle)
            self._idle.set()

    # -- connection lifecycle --

    def _state(self, state: str, detail: str = "", level: int = logging.INFO) -> None:
        """Log each state change once (a flapping broker does not flood the log)."""
        key = f"{state}:{detail}"
        if key != self._last_state:
            self._last_state = key
            log.log(level, "mqtt[%s] %s%s", self.client_id, state, f": {detail}" if detail else "")

    async def run(self) -> None:
        """Connect, subscribe, wait for the connection to end, reconnect; until closed."""
        attempt = 0
        while not self._closing.is_set():
            if self.may_connect is not None and not self.may_connect():
                self._state("not connecting", "this process no longer holds the slot")
                return
            client = build_client(self.config, self.client_id, self.packet_limit)
            # Session messages can arrive (and even commit) before __aenter__ returns:
            # each message carries its connection's handle for the ack.
            handle = adapter.configure(
                client,
                self._on_messages,
                max_payload=self.limits.max_payload_bytes,
                max_topic=self.limits.max_topic_bytes,
                on_dollar=self._on_dollar if self.broker_stats is not None else None,
            )
            try:
                async with asyncio.timeout(self.config.connect_timeout_s):
                    await client.__aenter__()
            except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
                self._state("connect failed", str(exc) or type(exc).__name__, logging.WARNING)
                attempt += 1
                await self._backoff(attempt)
                continue
            self.handle = handle
            self._connects += 1
            if attempt or self._connects > 1:
                self.metrics.reconnects += 1
            attempt = 0
            try:
                await self._on_connected(client, handle)
                if self._stopped_reading or self._backpressured:
                    adapter.pause_reading(handle)
                self.connected.set()
                self.metrics.connected += 1
                closing = asyncio.ensure_future(self._closing.wait())
                lost = asyncio.ensure_future(adapter.wait_disconnected(handle))
                try:
                    await asyncio.wait({closing, lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closing.cancel()
                    lost.cancel()
                if self._closing.is_set():
                    await self._disconnect(client)
                    self._state("disconnected")
                else:
                    error = lost.result() if lost.done() and not lost.cancelled() else None
                    if error is not None and not isinstance(
                        error, aiomqtt.MqttError | OSError | ProtocolError
                    ):
                        raise error  # a bug in the reader: the supervisor fails the gateway
                    self._state(
                        "connection lost", str(error or "closed by broker"), logging.WARNING
                    )
            except (aiomqtt.MqttError, TimeoutError) as exc:
                self._state("session setup failed", str(exc), logging.WARNING)
                await self._disconnect(client)
            finally:
                if self.connected.is_set():
                    self.metrics.connected -= 1
                self.connected.clear()
                adapter.stop_holding(handle)
                self.handle = None
                self.client = None
            if not self._closing.is_set():
                attempt += 1
                await self._backoff(attempt)

    async def _on_connected(self, client: aiomqtt.Client, handle: adapter.PahoHandle) -> None:
        """Reconcile the session's subscriptions; log "ready" once the broker confirmed
        them (messages published before that are not routed to a new session)."""
        self.client = client
        async with self._sub_lock:
            if handle.session_present:
                remembered = self.store.load(self.session_key)
                summary = await self._reconcile(client, remembered)
                prefix = "session resumed"
                if remembered is None:
                    prefix += ", no record of its subscriptions"
            else:
                summary = await self._reconcile(client, {})
                prefix = "new session"
        self._state("ready", f"{prefix}; {summary}")

    async def resync(self) -> bool:
        """Apply a runtime change of the wanted filters on this connection (if it is
        up). Returns False if the broker refused a filter."""
        client = self.client
        if client is None:
            return True
        async with self._sub_lock:
            if self.client is not client:
                return True  # reconnected meanwhile: the connect reconciled already
            refused_before = len(self.metrics.subscriptions_refused)
            try:
                summary = await self._reconcile(client, self.subscribed)
            except (aiomqtt.MqttError, TimeoutError) as exc:
                log.warning("mqtt[%s] subscription change failed: %s", self.client_id, exc)
                return False
            if summary != "nothing to change":
                log.info("mqtt[%s] subscriptions: %s", self.client_id, summary)
            return len(self.metrics.subscriptions_refused) <= refused_before

    async def _reconcile(self, client: aiomqtt.Client, remembered: Record | None) -> str:
        """Bring the session from ``remembered`` to the wanted filters; returns a summary
        for the log. Call with ``_sub_lock`` held."""
        first = self.first
        registry = self.registry
        if self.retiring:
            # Everything goes; without a record, at least what this group subscribes.
            known = remembered if remembered is not None else registry.wanted(False)
            change = plan({}, known, lambda _owner, _sent: True)
        else:
            change = plan(
                registry.wanted(first),
                remembered,
                lambda owner, sent: registry.disowned(owner, sent, first),
            )
        held = dict(change.target)
        refused = self.metrics.subscriptions_refused
        parts: list[str] = []
        if change.subscribe:
            items = list(change.subscribe.items())
            if self.config.protocol == "5":
                # Retain Handling 1: retained messages only for a subscription that did
                # not exist yet (an unknown session re-subscribes without a flood).
                topics: list[tuple[str, Any]] = [
                    (f, SubscribeOptions(qos=q, retainHandling=1)) for f, q in items
                ]
            else:
                topics = list(items)
            async with asyncio.timeout(self.config.connect_timeout_s):
                codes = await client.subscribe(topics)
            granted: list[str] = []
            for (sent, qos), code in zip(items, list(codes or []), strict=False):
                value = getattr(code, "value", code)
                if (
                    isinstance(value, int)
                    and value >= 0x80
                    and registry.optional(change.target.get(sent, (0, frozenset()))[1])
                ):
                    log.warning(
                        "mqtt[%s] broker refused optional subscription %r (code %#04x):"
                        " going without it",
                        self.client_id,
                        sent,
                        value,
                    )
                    held.pop(sent, None)
                    continue
                if isinstance(value, int) and value >= 0x80:
                    reason = (
                        str(getattr(code, "getName", lambda: "")() or "refused")
                        if self.config.protocol == "5"
                        else "failure"  # MQTT 3.1.1 has one failure code, no reason
                    )
                    refused[sent] = f"code {value:#04x} ({reason})"
                    log.error(
                        "mqtt[%s] broker REFUSED subscription %r: code %#04x (%s); nothing"
                        " from it is received (check the broker's ACL for %s)",
                        self.client_id,
                        sent,
                        value,
                        reason,
                        self.client_id,
                    )
                    previous = (remembered or {}).get(sent)
                    if previous is None:
                        held.pop(sent, None)
                    else:
                        held[sent] = previous
                    continue
                refused.pop(sent, None)
                granted.append(sent)
                if isinstance(value, int) and value < qos:
                    log.warning(
                        "mqtt[%s] broker granted %r QoS %d, asked %d",
                        self.client_id,
                        sent,
                        value,
                        qos,
                    )
            # The broker-statistics probe is summarised apart (internal, always the same).
            main = [f for f in granted if not registry.optional(held[f][1])]
            if main:
                parts.append(f"subscribed {len(main)} ({_list(main)})")
            if len(main) < len(granted):
                parts.append(f"broker statistics: {len(granted) - len(main)} $SYS topic(s)")
        if change.unsubscribe:
            async with asyncio.timeout(self.config.connect_timeout_s):
                await client.unsubscribe(list(change.unsubscribe))
            for sent in change.unsubscribe:
                refused.pop(sent, None)
            parts.append(
                f"unsubscribed {len(change.unsubscribe)} no longer wanted"
                f" ({_list(change.unsubscribe)})"
            )
        probe_unchanged = sum(
            1
            for f, (_q, owners) in held.items()
            if f not in change.subscribe and registry.optional(owners)
        )
        if change.unchanged - probe_unchanged:
            parts.append(f"{change.unchanged - probe_unchanged} unchanged")
        self.subscribed = held
        self.store.save(self.session_key, held)
        return "; ".join(parts) or "nothing to change"

    async def _disconnect(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):
            async with asyncio.timeout(5):
                await client.__aexit__(None, None, None)

    async def _backoff(self, attempt: int) -> None:
        delay = min(
            self.config.reconnect_max_s, self.config.reconnect_min_s * 2 ** min(attempt - 1, 16)
        )
        delay *= random.uniform(0.5, 1.0)  # jitter: a fleet of gateways does not reconnect in step
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closing.wait()

    async def stop_reading(self, wait: bool = True) -> None:
        """Stop taking messages from the broker and (``wait``) wait until everything
        already received was handed to the pipeline (not for a reader that failed)."""
        self._stopped_reading = True
        if self.handle is not None:
            adapter.pause_reading(self.handle)
        self._wakeup.set()
        if not wait or (self.reader_task is not None and self.reader_task.done()):
            return
        await self._idle.wait()

    def close(self) -> None:
        """Ask the connection to disconnect (after the pipeline acked what it could)."""
        self._closing.set()


class MqttSource:
    """All connections of one gateway.

    ``state_path``: where the subscriptions of each broker session are remembered
    (:class:`SessionStore`; None keeps them in memory, so each start re-subscribes).

    ``slot_locks``: the gateway is one member of a direct-mode group sharing
    ``mqtt.shared_group`` with other processes (:mod:`gateway.sources.slots`): instead
    of ``mqtt.connections`` fixed connections it drives one connection per client-id
    slot it holds, ``<client_id>-<slot>``, and takes over the slots of members that
    left. Those connections carry only the shared filter groups.
    """

    def __init__(
        self,
        config: MqttConfig,
        subscriptions: list[SubscriptionConfig],
        router: Router,
        pipeline: Pipeline,
        metrics: Metrics,
        state_path: Path | None = None,
        broker_stats: BrokerStats | None = None,
        slot_locks: SlotLocks | None = None,
    ) -> None:
        self.registry = Registry(config.shared_group)
        initial: dict[str, int] = {}
        for sub in subscriptions:
            initial[sub.topic] = max(sub.qos, initial.get(sub.topic, 0))
        self.filters(CONFIG_OWNER).set_initial(initial)
        if not config.broker_stats or slot_locks is not None:
            # Slot sessions move between processes: none carries per-process filters.
            broker_stats = None
        if broker_stats is not None:
            # The broker's $SYS counters (gateway.lag), once per gateway, QoS 0; a broker
            # that keeps $SYS to itself only costs a warning.
            probe = self.filters(BROKER_STATS_OWNER, shared=False, optional=True)
            probe.set_initial(dict.fromkeys(BROKER_TOPICS, 0))
        self.store = SessionStore(state_path)
        self._tasks: list[asyncio.Task[None]] = []
        self._records: set[asyncio.Task[None]] = set()
        metrics.buffered = self.buffered
        self.slots: SlotManager | None = None
        self._fixed: list[Connection] = []
        if slot_locks is None:
            self._fixed = [
                Connection(
                    i, config, self.registry, self.store, router, pipeline, metrics, broker_stats
                )
                for i in range(config.connections)
            ]
            return

        def slot_connection(slot: int, retiring: bool) -> Connection:
            return Connection(
                slot,
                config,
                self.registry,
                self.store,
                router,
                pipeline,
                metrics,
                client_id=f"{config.client_id}-{slot}",
                may_connect=lambda: self.slots is not None and self.slots.owns(slot),
                retiring=retiring,
            )

        locks = slot_locks
        self.store = SessionStore(None, on_save=self._record_slot)

        async def prepare(slot: int) -> None:
            # What the slot's session holds, as its last driver recorded it (a member
            # that takes it over must not subscribe again: Mosquitto re-sends retained
            # messages on a repeated SUBSCRIBE, shared or not).
            client_id = f"{config.client_id}-{slot}"
            text = await locks.load_record(slot)
            record: Record | None = None
            if text is not None:
                try:
                    record = decode_record(json.loads(text))
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    log.warning("mqtt[%s] unreadable subscription record: %s", client_id, exc)
            self.store.put(f"{config.host}:{config.port}/{client_id}", record)

        metrics.slots = SlotState()
        self.slots = SlotManager(
            slot_locks,
            config.slots,
            config.slot_claim_interval_s,
            slot_connection,
            metrics.slots,
            handover_timeout_s=pipeline.config.shutdown_timeout_s,
            survey_timeout_s=min(config.connect_timeout_s, config.slot_claim_interval_s * 2),
            prepare=prepare,
        )
        self._locks = locks

    def _record_slot(self, key: str, record: Record) -> None:
        """Record a slot session's subscriptions in the group's store (in the
        background; a lost record only means the next driver subscribes again)."""
        client_id = key.split("/", 1)[1]
        slot = int(client_id.rsplit("-", 1)[1])
        text = json.dumps(encode_record(record), separators=(",", ":"))

        async def save() -> None:
            try:
                await self._locks.save_record(slot, text)
            except StorageError as exc:  # the next driver subscribes again: logged only
                log.warning("mqtt[%s] cannot record its subscriptions: %s", client_id, exc)

        task = asyncio.ensure_future(save())
        self._records.add(task)
        task.add_done_callback(self._records.discard)

    @property
    def connections(self) -> list[Connection]:
        """The connections now: the fixed ones, or those of the slots held."""
        if self.slots is None:
            return self._fixed
        return [c for c in self.slots.connections if isinstance(c, Connection)]

    def buffered(self) -> tuple[int, int]:
        """Messages and bytes read from the broker but not yet handed to the pipeline."""
        return (
            sum(len(c.pending) for c in self.connections),
            sum(c.pending_bytes for c in self.connections),
        )

    def filters(self, owner: str, shared: bool = True, optional: bool = False) -> FilterGroup:
        """The filter group of ``owner`` (created on first use; register before
        :meth:`start` so the first connect knows the owner). See
        :mod:`gateway.sources.subscriptions` for the contract."""
        group = self.registry.groups.get(owner)
        if group is None:
            group = FilterGroup(owner, shared, self._apply, optional=optional)
            self.registry.groups[owner] = group
        return group

    async def _apply(self, group: FilterGroup) -> bool:
        scope = [c for c in self.connections if group.shared or c.first]
        results = await asyncio.gather(*(conn.resync() for conn in scope))
        return all(results)

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The long-lived tasks (each connection's runner and reader), for supervision."""
        return list(self._tasks)

    def start(self) -> None:
        """Start every connection and its reader (with slots: the slot manager)."""
        if self.slots is not None:
            self._tasks.append(asyncio.create_task(self.slots.run(), name="mqtt-slots"))
            return
        for conn in self.connections:
            self._tasks.append(asyncio.create_task(conn.run(), name=f"mqtt-{conn.client_id}"))
            conn.reader_task = asyncio.create_task(
                conn.read_loop(), name=f"reader-{conn.client_id}"
            )
            self._tasks.append(conn.reader_task)

    @property
    def connected(self) -> bool:
        """True when every connection is up (with slots: the claims are known and every
        held slot's connection is up)."""
        if self.slots is not None:
            return self.slots.connected
        return all(c.connected.is_set() for c in self.connections)

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until every connection is up (True) or the timeout passes (False)."""
        try:
            async with asyncio.timeout(timeout):
                if self.slots is not None:
                    while not self.slots.connected:
                        await asyncio.sleep(0.05)
                for conn in self.connections:
                    await conn.connected.wait()
        except TimeoutError:
            return False
        return True

    async def stop_reading(self, wait: bool = True) -> None:
        """Stop reading on every connection; with ``wait``, returns when buffers are
        handed over."""
        if self.slots is not None:
            await self.slots.stop_claiming()
        await asyncio.gather(*(c.stop_reading(wait) for c in self.connections))

    async def close(self) -> None:
        """Disconnect every connection and end all tasks (with slots: then release the
        claims, so no other member drives a session while this one still does)."""
        if self.slots is not None:
            # stop_claiming first: the manager also ends on its own, should the cancel
            # be lost (Python 3.11's asyncio.timeout can swallow one that coincides with
            # its deadline).
            await self.slots.stop_claiming()
            for task in self._tasks:
                task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*self._records, return_exceptions=True)
            await self.slots.close()
            return
        for conn in self.connections:
            conn.close()
        runners = self._tasks[0::2]
        readers = self._tasks[1::2]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*runners, return_exceptions=True)
        for task in (*readers, *runners):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
