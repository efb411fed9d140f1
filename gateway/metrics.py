"""Counters and histograms of the running gateway.

Plain attributes updated on the event loop thread (no locks needed); the HTTP API and
``tidegate stats`` read them. Histograms have fixed buckets, so memory stays constant.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS: tuple[float, ...] = (1, 10, 50, 100, 500, 1000, 5000, 10_000, 50_000, 100_000)


class Histogram:
    """A Prometheus-style cumulative histogram with fixed upper bounds."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # last slot: +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper_bound, cumulative_count)`` pairs, the last bound being ``inf``."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (0 when empty)."""
        if self.count == 0:
            return 0.0
        target = q * self.count
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            if running >= target:
                return bound
        return float("inf")


@dataclass
class SubscriptionCounters:
    """Per-subscription message counts (``skipped``: payload fields skipped, not messages)."""

    received: int = 0
    stored_messages: int = 0
    dead_lettered: int = 0
    skipped: int = 0


@dataclass
class StorageCounters:
    """The storage lifecycle (``gateway.storage``, ``docs/storage.md``)."""

    database_bytes: int = 0
    """Used pages plus WAL: what ``storage.max_size`` caps."""
    file_bytes: int = 0
    wal_bytes: int = 0
    disk_free_bytes: int = -1
    paused: bool = False
    """Writes held by the size guard (``full_policy = "stop"``, or nothing left to purge)."""
    pause_reason: str = ""
    purged_rows: dict[str, int] = field(default_factory=dict)
    """Rows deleted by retention, per tier (raw, 1m, 1h)."""
    purged_for_space_rows: int = 0
    vacuumed_pages: int = 0
    compacted_rows: int = 0
    """Readings moved from the hot table into the per-series table."""
    rollup_watermark_ms: dict[str, int] = field(default_factory=dict)
    rollup_late_buckets: int = 0
    rollup_too_late: int = 0
    checkpoints: int = 0
    checkpoint_frames: int = 0
    disk_write_bytes: int = 0
    """Bytes this process caused to be written to storage (``/proc/self/io``) since start."""
    bytes_per_reading: float = 0.0
    """``disk_write_bytes / readings_stored`` over the last maintenance window."""
    corrupt_recoveries: int = 0
    corrupt_moved_to: str = ""
    maintenance_errors: int = 0
    maintenance_step: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    """Seconds each maintenance step held the writer connection (= the ingestion stall)."""
    maintenance_step_max_s: float = 0.0


@dataclass
class UpstreamCounters:
    """Forwarding to the central store (:mod:`gateway.upstream`, ``docs/upstream.md``)."""

    configured: bool = False
    gateway_id: str = ""
    connected: bool = False
    """The forwarder's PostgreSQL connection is up."""
    unreachable_since: float = 0.0
    """``time.time()`` since which the centre could not be reached (0: it can)."""
    last_error: str = ""
    position: int = 0
    """The last outbox sequence number the centre committed."""
    pending: int = 0
    """Unforwarded readings in the outbox."""
    oldest_pending_age_s: float = 0.0
    """Age of the oldest unforwarded reading (its batch's write time to now)."""
    forwarded: int = 0
    """Readings committed centrally by this process (new there; duplicates not counted)."""
    sent: int = 0
    """Readings sent, duplicates included."""
    batches: int = 0
    forward_rate: float = 0.0
    """Readings forwarded per second, smoothed over the last minute."""
    ingest_rate: float = 0.0
    """Readings stored locally per second, smoothed (for the buffer estimate)."""
    buffer_hours_left: float | None = None
    """Hours until the local store is full at the current ingest rate if nothing is
    forwarded (``None``: no limit in sight); see ``docs/upstream.md``."""
    errors: int = 0
    conflicts: int = 0
    """Batches aborted because the central position was not the expected one."""
    reconnects: int = 0
    dropped: int = 0
    """Unforwarded readings dropped for space (``upstream.full_policy = "drop_oldest"``)."""
    maintenance_runs: int = 0
    degraded_after_s: float = 60.0
    """``upstream.degraded_after_s``: readiness turns degraded past it."""
    forward_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    """Seconds one central transaction took."""


@dataclass
class LagState:
    """How far behind the gateway is (maintained by :mod:`gateway.lag`)."""

    behind: bool = False
    reason: str = ""
    since: float = 0.0
    """``time.time()`` when it started falling behind (0 when not behind)."""
    reading_age_s: float = 0.0
    """Age of the newest reading in the last committed batch (its timestamp to the
    commit), smoothed; readings from the broker's backlog make it grow."""
    receipt_to_commit_s: float = 0.0
    """Seconds from a message's arrival to its commit, last batch (max)."""
    broker_dropped: int | None = None
    """Mosquitto's ``$SYS/broker/publish/messages/dropped`` (broker-wide), None when the
    broker does not publish it (or ``$SYS`` is not readable)."""
    broker_stored: int | None = None
    """``$SYS/broker/store/messages/count``: messages the broker holds."""
    broker_stored_bytes: int | None = None
    """``$SYS/broker/store/messages/bytes``."""
    dropped_since_start: int = 0
    """Growth of ``broker_dropped`` since the gateway first saw it."""


@dataclass
class SlotState:
    """The client-id slots of a direct-mode group as this process holds them
    (:mod:`gateway.sources.slots`)."""

    total: int = 0
    """``mqtt.slots``: broker sessions of the group."""
    held: tuple[int, ...] = ()
    """Slots this process drives now."""
    members: int = 0
    """Live members of the group at the last survey."""
    claims: int = 0
    takeovers: int = 0
    """Claims of a slot whose member had left the group (died or stopped)."""
    releases: int = 0
    """Slots handed over gracefully (to balance the group, or at shutdown)."""
    drops: int = 0
    """Slots closed at once because their claim was gone or could not be checked."""
    locks_ok: bool = False
    locks_error: str = ""


@dataclass
class Metrics:
    """Everything the gateway counts. Message counts are per MQTT message; ``readings_*``
    per reading."""

    messages_received: int = 0
    messages_committed: int = 0
    messages_dead_lettered: int = 0
    messages_empty: int = 0
    leaves_skipped: int = 0
    readings_stored: int = 0
    duplicates_ignored: int = 0
    batches: int = 0
    write_errors: int = 0
    reconnects: int = 0
    acks_sent: int = 0
    acks_dropped: int = 0
    """Acks not sent because their connection was gone (the broker redelivers those)."""
    queue_full_waits: int = 0
    """Times a reader had to wait for room in the pipeline queue (backpressure)."""
    paused_reads: int = 0
    """Times a connection's buffer reached ``mqtt.buffer_bytes`` and the socket was held."""
    messages_rejected_by_reader: int = 0
    """Messages dead-lettered before decoding: payload or topic over its bound, topic not
    UTF-8 (oversized payloads were skipped as they streamed in)."""
    connected: int = 0
    storage_ok: bool = True
    storage_error: str = ""
    subscriptions_refused: dict[str, str] = field(default_factory=dict)
    failure: str = ""
    """Set when a long-lived task failed: the gateway drains and exits non-zero."""
    lag: LagState = field(default_factory=lambda: LagState())
    """Broker filter → why the broker refused it (SUBACK failure code); /readyz reports it."""
    by_subscription: dict[str, SubscriptionCounters] = field(default_factory=dict)
    commit_latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    """Seconds from a message's arrival to its batch committing."""
    commit_duration: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    """Seconds one batch transaction took."""
    batch_readings: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    queue_depth: Callable[[], int] = lambda: 0
    buffered: Callable[[], tuple[int, int]] = lambda: (0, 0)
    """Messages and bytes read from the broker, not yet handed to the pipeline."""
    queue_capacity: int = 0
    storage: StorageCounters = field(default_factory=StorageCounters)
    upstream: UpstreamCounters = field(default_factory=UpstreamCounters)
    slots: SlotState | None = None
    """Set when the gateway shares an MQTT group through client-id slots."""

    def subscription(self, label: str) -> SubscriptionCounters:
        counters = self.by_subscription.get(label)
        if counters is None:
            counters = self.by_subscription[label] = SubscriptionCounters()
        return counters
