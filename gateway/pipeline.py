"""The bounded queue between sources and the sink, and the batch writer that drains it.

Contract:

* :meth:`Pipeline.submit` awaits while the queue is full — that is the backpressure:
  sources stop reading, unacknowledged messages pile up at the broker, nothing is dropped.
  "Full" is ``queue_size`` messages or ``max(batch_size, 10 000)`` readings, whichever
  comes first (one more message may always enter), so memory stays bounded for batched
  payloads too.
* The writer takes everything queued (up to ``batch_size`` readings), commits it in
  one transaction, then calls each envelope's ``ack``. With ``commit_on_idle`` (the
  default) it commits as soon as the queue runs dry (group commit): batches grow by
  themselves under load, and the broker's in-flight window never stalls waiting for
  a timer. Without it, the writer lingers up to ``flush_interval_ms`` to gather a
  bigger batch (fewer SD-card writes, more latency).
* A failed write is retried with exponential backoff and jitter, forever, with nothing
  acknowledged; ``stop`` gives up after its timeout and leaves the rest to redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections.abc import Callable

from gateway.config import PipelineConfig
from gateway.errors import StorageError
from gateway.metrics import Metrics
from gateway.models import DeadLetter, Envelope, Reading
from gateway.storage.base import WriteStore

log = logging.getLogger(__name__)

_POLL_S = 0.005
IDLE_S = 0.2
"""A wait for work at least this long counts as idle (see :meth:`Pipeline.idle_at`):
longer than the broker takes to refill its in-flight window after acks."""


class Pipeline:
    """Owns the queue and the writer task. Start with :meth:`start`, end with :meth:`stop`."""

    def __init__(
        self, sink: WriteStore, config: PipelineConfig, metrics: Metrics | None = None
    ) -> None:
        self.sink = sink
        self.config = config
        self.metrics = metrics or Metrics()
        self.queue: asyncio.Queue[Envelope | None] = asyncio.Queue(maxsize=config.queue_size)
        self.metrics.queue_depth = self.queue.qsize
        self.metrics.queue_capacity = config.queue_size
        # Readings waiting in the queue, at most (plus one message): a queue of
        # batched messages must not hold queue_size × 100 readings in memory.
        self.readings_limit = max(config.batch_size, 10_000)
        self._queued_readings = 0
        self._room = asyncio.Event()
        self._room.set()
        self._writer: asyncio.Task[None] | None = None
        self._waiting_since: float | None = None
        self._last_idle = time.monotonic()
        self.on_commit: Callable[[list[Reading], float], None] | None = None
        """Called after each commit with its readings and the slowest message's
        arrival-to-commit seconds (:class:`gateway.lag.LagTracker`)."""
        self._frozen = False
        self._failing_since: float | None = None

    @property
    def running(self) -> bool:
        """True while the writer task is alive."""
        return self._writer is not None and not self._writer.done()

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The long-lived tasks (the writer), for supervision."""
        return [self._writer] if self._writer is not None else []

    def start(self) -> None:
        """Start the writer task.

        Also moves every object allocated so far (modules, schemas, config, the warmed
        series cache) out of the garbage collector's reach with :func:`gc.freeze`: they
        live as long as the process, and a full collection walking them was a pause of
        up to 200 ms in the middle of ingestion (``docs/decisions/0063``). Undone by
        :meth:`stop`.
        """
        if self._writer is None:
            gc.collect()
            gc.freeze()
            self._frozen = True
            self._writer = asyncio.create_task(self._run(), name="tidegate-writer")

    async def submit(self, envelope: Envelope) -> None:
        """Queue one message's result; waits while the queue is full.

        A message with neither readings nor a dead letter (a well-formed message with
        nothing storable) is counted and acknowledged at once: there is nothing to commit.
        """
        metrics = self.metrics
        metrics.messages_received += 1
        sub = metrics.subscription(envelope.subscription)
        sub.received += 1
        if envelope.skipped:
            metrics.leaves_skipped += envelope.skipped
            sub.skipped += envelope.skipped  # fields, like leaves_skipped
        if not envelope.readings and envelope.dead_letter is None:
            metrics.messages_empty += 1
            envelope.ack()
            return
        if self._queued_readings >= self.readings_limit:
            metrics.queue_full_waits += 1  # backpressure: the reader waits for room
            while self._queued_readings >= self.readings_limit:
                self._room.clear()
                await self._room.wait()
        self._queued_readings += len(envelope.readings)
        try:
            self.queue.put_nowait(envelope)  # the common case, without a coroutine
        except asyncio.QueueFull:
            metrics.queue_full_waits += 1
            await self.queue.put(envelope)

    async def stop(self, timeout: float | None = None) -> bool:
        """Drain the queue, commit, ack, and end the writer. Call after sources stopped
        submitting. Returns False if the timeout ran out first (the writer is cancelled;
        unacknowledged messages will be redelivered by the broker)."""
        if self._writer is None:
            return True
        timeout = self.config.shutdown_timeout_s if timeout is None else timeout
        writer, self._writer = self._writer, None
        if self._frozen:
            self._frozen = False
            gc.unfreeze()
        try:
            await asyncio.wait_for(self.queue.put(None), timeout)
            await asyncio.wait_for(asyncio.shield(writer), timeout)
        except TimeoutError:
            log.warning(
                "shutdown timeout (%.1fs): %d messages left uncommitted",
                timeout,
                self.queue.qsize(),
            )
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            return False
        return True

    async def _gather(self, first: Envelope) -> tuple[list[Envelope], bool]:
        """Collect a batch starting with ``first``. Returns (batch, stop_seen)."""
        batch = [first]
        count = len(first.readings)
        limit = self.config.batch_size
        queue = self.queue
        deadline = time.monotonic() + self.config.flush_interval_ms / 1000
        while count < limit:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                if self.config.commit_on_idle or time.monotonic() >= deadline:
                    break
                # Linger for a bigger batch; polling avoids wait_for(get()) losing an item.
                await asyncio.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
                continue
            if item is None:
                return batch, True
            batch.append(item)
            count += len(item.readings)
        return batch, False

    def idle_at(self) -> float:
        """``time.monotonic()`` of the last moment the writer had waited
        :data:`IDLE_S` or more with nothing to do (now, if it is waiting that long now):
        a gateway that keeps up has such moments; one working off a backlog does not."""
        waiting = self._waiting_since
        if waiting is not None:
            now = time.monotonic()
            if now - waiting >= IDLE_S:
                return now
        return self._last_idle

    async def _run(self) -> None:
        queue = self.queue
        while True:
            if queue.empty():
                self._waiting_since = time.monotonic()
            first = await queue.get()
            if self._waiting_since is not None:
                now = time.monotonic()
                if now - self._waiting_since >= IDLE_S:
                    self._last_idle = now
                self._waiting_since = None
            if first is None:
                return
            batch, stop_seen = await self._gather(first)
            self._queued_readings -= sum(len(envelope.readings) for envelope in batch)
            if self._queued_readings < self.readings_limit:
                self._room.set()
            await self._commit(batch)
            if stop_seen:
                return

    async def _commit(self, batch: list[Envelope]) -> None:
        readings: list[Reading] = []
        dead: list[DeadLetter] = []
        for envelope in batch:
            if envelope.dead_letter is not None:
                dead.append(envelope.dead_letter)
            else:
                readings.extend(envelope.readings)
        delay = 0.05
        metrics = self.metrics
        while True:
            started = time.monotonic()
            try:
                result = await self.sink.write_batch(readings, dead)
                break
            except StorageError as exc:
                metrics.write_errors += 1
                metrics.storage_ok = False
                metrics.storage_error = str(exc)
                if self._failing_since is None:
                    self._failing_since = started
                    log.error("write failed, retrying with backoff (nothing is acked): %s", exc)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.config.retry_max_s)
        done = time.monotonic()
        if self._failing_since is not None:
            log.warning("writes recovered after %.1fs", done - self._failing_since)
            self._failing_since = None
        metrics.storage_ok = True
        metrics.storage_error = ""
        metrics.batches += 1
        metrics.readings_stored += result.stored
        metrics.duplicates_ignored += result.duplicates
        metrics.messages_dead_lettered += result.dead_letters
        metrics.commit_duration.observe(done - started)
        metrics.batch_readings.observe(len(readings))
        latency = metrics.commit_latency
        oldest = done
        for envelope in batch:
            received = envelope.received_at
            if received:
                latency.observe(done - received)
                if received < oldest:
                    oldest = received
            sub = metrics.subscription(envelope.subscription)
            if envelope.dead_letter is not None:
                sub.dead_lettered += 1
            else:
                sub.stored_messages += 1
            envelope.ack()
        metrics.messages_committed += len(batch)
        if self.on_commit is not None:
            self.on_commit(readings, done - oldest)
