"""The running gateway: wires config → store → pipeline → source, and shuts down in reverse.

Start order: open the store (lock, check, create/migrate the database), start the
writer, start the MQTT connections. Shutdown (SIGINT/SIGTERM or :meth:`Gateway.request_stop`): stop
reading, drain the queue, commit, ack, disconnect, close the database — bounded by
``pipeline.shutdown_timeout_s``.

**Supervision** (:class:`Supervisor`): every long-lived task — the writer, each
connection's runner and reader, every service (maintenance, HTTP API) — is watched. One
that raises or returns while the gateway is not stopping is logged with its traceback,
``/readyz`` turns 503, and the gateway shuts down as above (bounded) and
``tidegate run`` exits with :data:`EXIT_TASK_FAILED`, so systemd or Docker restart it.
Never a live process that stopped ingesting: nothing unacknowledged is lost, the broker
redelivers it to the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from gateway import faults
from gateway.config import Settings, local_gateway_id
from gateway.discovery.service import DiscoveryService
from gateway.errors import StorageError
from gateway.health import readiness
from gateway.lag import LagTracker
from gateway.metrics import Metrics
from gateway.models import DeadLetter, Reading
from gateway.parsing import parse_size
from gateway.pipeline import Pipeline
from gateway.receive_time import ReceiveClock
from gateway.router import Router
from gateway.series_gate import SeriesGate
from gateway.sources._paho_adapter import check_compatible
from gateway.sources.mqtt import MqttSource
from gateway.status import STATUS_INTERVAL_S, snapshot, status_path, write_status
from gateway.storage.backends import outbox_of, slot_locks, write_store
from gateway.storage.base import WriteResult, WriteStore

log = logging.getLogger(__name__)

Service = Callable[["Gateway"], Coroutine[Any, Any, None]]
"""An extra long-running coroutine run alongside the pipeline (HTTP API, maintenance);
it is cancelled at shutdown after the source stopped reading. It must not return or
raise before that: the supervisor treats either as a failure of the gateway."""

EXIT_TASK_FAILED = 70
"""``tidegate run``'s exit status after a long-lived task failed (EX_SOFTWARE)."""


class Supervisor:
    """Watches long-lived tasks; the first one that ends while the gateway is running
    fails the gateway (``on_failure`` is called once, with a one-line reason)."""

    def __init__(self, metrics: Metrics, on_failure: Callable[[], None]) -> None:
        self.metrics = metrics
        self.on_failure = on_failure
        self.stopping = False
        self.watched: list[asyncio.Task[Any]] = []

    def watch(self, task: asyncio.Task[Any]) -> None:
        """Fail the gateway if ``task`` ends before :attr:`stopping` is set."""
        self.watched.append(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if self.stopping:
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "task %s failed during shutdown", task.get_name(), exc_info=task.exception()
                )
            return
        if task.cancelled():
            reason = f"task {task.get_name()} was cancelled"
            log.error("%s while the gateway was running", reason)
        elif (exc := task.exception()) is not None:
            reason = f"task {task.get_name()} failed: {type(exc).__name__}: {exc}"
            log.error("%s; shutting down to be restarted", reason, exc_info=exc)
        else:
            reason = f"task {task.get_name()} ended unexpectedly"
            log.error("%s; shutting down to be restarted", reason)
        if not self.metrics.failure:
            self.metrics.failure = reason
            self.on_failure()


async def storage_maintenance(gateway: Gateway) -> None:
    """The :data:`Service` running the store's background upkeep (compaction, rollups,
    retention, checkpoints…) until the gateway stops."""
    await gateway.store.maintain()
    # A store without upkeep returns at once; a service must only end when cancelled
    # (the supervisor counts an early end as a failure).
    await asyncio.Future()


async def status_service(gateway: Gateway) -> None:
    """Re-evaluate the lag every second (caught up is noticed when traffic stops too)
    and keep ``<database>.status.json`` for ``tidegate stats`` (:mod:`gateway.status`):
    every :data:`~gateway.status.STATUS_INTERVAL_S`, on each readiness change, and once
    more when stopped."""
    path = status_path(gateway.settings.storage.path)
    last_write = 0.0
    last_status = ""
    try:
        while True:
            gateway.lag.evaluate()
            now = time.monotonic()
            connected = gateway.source.connected
            state = readiness(gateway.metrics, connected).status
            if now - last_write >= STATUS_INTERVAL_S or state != last_status:
                write_status(path, snapshot(gateway.metrics, connected))
                last_write = now
                last_status = state
            await asyncio.sleep(1.0)
    finally:
        write_status(path, snapshot(gateway.metrics, gateway.source.connected, running=False))


def subscription_state_path(settings: Settings) -> Path:
    """Where the broker sessions' subscriptions are remembered: next to the database
    (``docs/decisions/0090``)."""
    db = Path(settings.storage.path)
    return db.with_name(db.name + ".subscriptions.json")


class _FaultyStore:
    """Test faults (:mod:`gateway.faults`) around the store's batch writes:
    ``storage-outage=<after>:<seconds>`` fails every write with a storage error during
    that window (counted from the first write); ``writer-crash=<n>`` raises an
    unexpected error on the n-th write."""

    def __init__(self, sink: WriteStore) -> None:
        self.sink = sink
        after, _, seconds = (faults.value("storage-outage") or "").partition(":")
        self.outage = (float(after), float(seconds)) if seconds else None
        self.crash_at = int(faults.value("writer-crash") or 0)
        self.first: float | None = None
        self.writes = 0

    async def open(self) -> None:
        await self.sink.open()

    async def maintain(self) -> None:
        await self.sink.maintain()

    async def close(self) -> None:
        await self.sink.close()

    async def write_batch(
        self, readings: Sequence[Reading], dead_letters: Sequence[DeadLetter]
    ) -> WriteResult:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.writes += 1
        if self.writes == self.crash_at:
            raise RuntimeError(f"test fault writer-crash: write {self.writes} fails")
        if self.outage is not None:
            start = self.first + self.outage[0]
            if start <= now < start + self.outage[1]:
                raise StorageError(
                    f"test fault storage-outage: writes fail for {self.outage[1]:g}s"
                )
        return await self.sink.write_batch(readings, dead_letters)


class Gateway:
    """One gateway instance. ``await Gateway(settings).run()`` until stopped."""

    def __init__(self, settings: Settings, services: list[Service] | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        # The write side of the database (docs/storage.md), with its lifecycle.
        # Receive times for readings without a timestamp: the store keeps its floor
        # across restarts (docs/decisions/0082).
        self.receive_clock = ReceiveClock()
        # Caps on new series (storage.max_series, storage.max_new_series_per_message):
        # seeded by the store at open, enforced by the router with the payload at hand.
        self.series_gate = SeriesGate(
            settings.storage.max_series, settings.storage.max_new_series_per_message
        )
        # Forwarding to the central store (docs/upstream.md): the store keeps an outbox
        # and the forwarder runs as a supervised task.
        upstream = settings.upstream
        if upstream is not None:
            self.metrics.upstream.configured = True
            self.metrics.upstream.degraded_after_s = upstream.degraded_after_s
        self.store = write_store(
            settings.storage,
            self.metrics,
            self.receive_clock,
            self.series_gate,
            gateway_id=local_gateway_id(settings),
            forward=None if upstream is None else upstream.full_policy,
        )
        writer: WriteStore = self.store
        if faults.value("storage-outage") or faults.value("writer-crash"):
            writer = _FaultyStore(self.store)
        self.pipeline = Pipeline(writer, settings.pipeline, self.metrics)
        # Devices that announce themselves (docs/formats.md, decision 0130).
        self.discovery: DiscoveryService | None = None
        if settings.discovery.active:
            self.discovery = DiscoveryService(
                settings.discovery,
                Path(settings.storage.path),
                settings.validation.limits(),
                settings.subscriptions,
            )
            self.discovery.load()
        self.router = Router(
            settings.subscriptions,
            settings.validation.limits(),
            settings.pipeline.max_payload_bytes,
            self.receive_clock,
            self.discovery,
            series_gate=self.series_gate,
        )
        # How far behind it is (docs/decisions/0094): commits and the broker's $SYS
        # counters feed the tracker; the status service re-evaluates it every second.
        self.lag = LagTracker(
            self.metrics.lag,
            settings.pipeline.lag_threshold_s,
            self.pipeline.queue.qsize,
            idle_at=self.pipeline.idle_at,
        )
        self.pipeline.on_commit = self.lag.committed
        self.source = MqttSource(
            settings.mqtt,
            settings.subscriptions,
            self.router,
            self.pipeline,
            self.metrics,
            # A direct-mode group's slot sessions move between processes: what they
            # hold is recorded in PostgreSQL instead (decision 0124).
            state_path=None if settings.slot_group else subscription_state_path(settings),
            broker_stats=self.lag.broker_value,
            slot_locks=slot_locks(settings),
        )
        if self.discovery is not None:
            self.discovery.attach(
                self.source.filters("discovery", shared=False),
                self.source.filters("discovery-states", shared=True),
            )
        self.services = list(services or [])
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        self.supervisor = Supervisor(self.metrics, self.request_stop)

    @property
    def failure(self) -> str:
        """Why a long-lived task failed ("" when none did)."""
        return self.metrics.failure

    def request_stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler)."""
        self._stop.set()

    async def _drain(self, timeout: float) -> bool:
        """Stop reading, then commit and ack what was received — all within ``timeout``.

        While writes keep failing (a full disk), readers wait forever for queue room and
        the writer retries forever; the deadline bounds both, and whatever is left stays
        unacked at the broker, which redelivers it on the next start. After a task
        failure the same deadline bounds a drain that may not finish (a dead writer).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not self.pipeline.running:
            # The writer failed: nothing more can commit, and readers waiting for queue
            # room would wait out the whole timeout. Stop reading and leave the rest
            # unacknowledged for the broker to redeliver.
            await self.source.stop_reading(wait=False)
            return False
        try:
            await asyncio.wait_for(self.source.stop_reading(), timeout)
        except TimeoutError:
            log.warning("shutdown: readers still waiting for queue room after %.1fs", timeout)
        try:
            return await self.pipeline.stop(max(0.1, deadline - loop.time()))
        except Exception:  # the writer failed: the supervisor logged it already
            return False

    async def _forward(self) -> None:
        """The forwarder (:mod:`gateway.upstream`) until cancelled."""
        # Imported here, not at the top: it needs asyncpg, an optional extra that the
        # SQLite-only gateway (armv7 has no wheels) must run without.
        from gateway.upstream.forwarder import Forwarder

        upstream = self.settings.upstream
        outbox = outbox_of(self.store)
        if upstream is None or outbox is None:
            raise StorageError("forwarding is configured but the store keeps no outbox")
        storage = self.settings.storage
        limits = (parse_size(storage.max_size), parse_size(storage.min_free_disk))
        forwarder = Forwarder(
            upstream, outbox, self.metrics, local_gateway_id(self.settings), limits=limits
        )
        await forwarder.run()

    async def run(self) -> bool:
        """Run until :meth:`request_stop` or a task failure. Returns True when the
        shutdown drained cleanly; after a failure (:attr:`failure`) always False."""
        check_compatible()  # IncompatibleLibrary before anything is opened
        if faults.active():
            log.warning("TEST FAULTS ENABLED (%s): %s", faults.ENV, faults.active())
        await self.store.open()
        supervisor = self.supervisor
        service_tasks: list[asyncio.Task[None]] = []
        try:
            self.pipeline.start()
            self.source.start()
            for task in (*self.pipeline.tasks, *self.source.tasks):
                supervisor.watch(task)
            for index, service in enumerate(self.services):
                name = getattr(service, "__qualname__", "") or type(service).__name__
                task = asyncio.create_task(service(self), name=f"service-{index}-{name}")
                service_tasks.append(task)
                supervisor.watch(task)
            if self.discovery is not None:
                connected = lambda: self.source.connected  # noqa: E731
                task = asyncio.create_task(self.discovery.run(connected), name="discovery")
                service_tasks.append(task)
                supervisor.watch(task)
            task = asyncio.create_task(status_service(self), name="status")
            service_tasks.append(task)
            supervisor.watch(task)
            if self.settings.upstream is not None:
                task = asyncio.create_task(self._forward(), name="upstream")
                service_tasks.append(task)
                supervisor.watch(task)
            self.started.set()
            storage = self.settings.storage
            log.info(
                "tidegate running: broker %s:%d, database %s",
                self.settings.mqtt.host,
                self.settings.mqtt.port,
                storage.postgresql.shown_url if storage.postgresql else storage.path,
            )
            await self._stop.wait()
            if self.failure:
                log.error("failed (%s): drain, commit, ack, disconnect, exit", self.failure)
            else:
                log.info("shutting down: stop reading, drain, commit, ack, disconnect")
            supervisor.stopping = True
            clean = await self._drain(self.settings.pipeline.shutdown_timeout_s)
            await self.source.close()
            log.info(
                "stopped: %d messages received, %d readings stored, %d dead letters",
                self.metrics.messages_received,
                self.metrics.readings_stored,
                self.metrics.messages_dead_lettered,
            )
            return clean and not self.failure
        finally:
            supervisor.stopping = True
            for task in service_tasks:
                task.cancel()
            await asyncio.gather(*service_tasks, return_exceptions=True)
            await self.store.close()


GIL_SWITCH_INTERVAL_S = 0.0005
"""See :func:`tune_interpreter`."""


def tune_interpreter() -> None:
    """Process-wide settings for a process whose job is running the gateway
    (``tidegate run``; not applied to an embedded :class:`Gateway`).

    A shorter GIL switch interval (0.5 ms instead of CPython's 5 ms): the SQLite writer
    thread gives up the GIL around every statement, and while the event-loop thread is
    busy decoding, each time it wants it back it can wait a whole interval. A batch
    takes 6–10 such hand-offs, so under load commits stretched to 50–90 ms and set the
    p99 latency; at 0.5 ms the p99 at 56,000 msg/s dropped from 45 ms–3.5 s to 32–36 ms
    with no loss of drain throughput (``docs/decisions/0066-gil-switch-interval.md``).
    """
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


def install_signal_handlers(gateway: Gateway) -> None:
    """SIGINT and SIGTERM start a graceful shutdown; a second one is ignored (the
    shutdown timeout bounds it)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, gateway.request_stop)


async def serve(settings: Settings, services: list[Service] | None = None) -> int:
    """Run a gateway with signal handling; returns the process exit status: 0 after a
    clean drain, 1 when the shutdown timeout left messages unacknowledged (the broker
    redelivers them), :data:`EXIT_TASK_FAILED` after a task failure."""
    gateway = Gateway(settings, services)
    install_signal_handlers(gateway)
    clean = await gateway.run()
    if gateway.failure:
        return EXIT_TASK_FAILED
    return 0 if clean else 1
