"""``/metrics``: the gateway's counters in the Prometheus text exposition format 0.0.4.

Hand-written (a dozen families do not need a client library): counters end in
``_total``, histograms have cumulative ``_bucket{le=…}``, ``_sum`` and ``_count``, label
values are escaped. Database figures come from :class:`DatabaseGauges`, read on a
worker thread and cached by the caller.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.api.connections import CLOSE_REASONS, ConnectionStats
from gateway.metrics import Histogram, Metrics
from gateway.storage.base import Forwarding, GatewayInfo

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class DatabaseGauges:
    """Figures read from the database for a scrape."""

    database_bytes: int
    wal_bytes: int
    series: int
    oldest_ts_ms: int | None
    newest_ts_ms: int | None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        if labels:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{inner}}} {_number(value)}")
        else:
            self.lines.append(f"{name} {_number(value)}")

    def single(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text)
        self.sample(name, value)

    def histogram(self, name: str, help_text: str, hist: Histogram) -> None:
        self.family(name, "histogram", help_text)
        for bound, count in hist.cumulative():
            self.sample(f"{name}_bucket", count, {"le": _number(bound)})
        self.sample(f"{name}_sum", hist.total)
        self.sample(f"{name}_count", hist.count)


def resident_memory_bytes() -> int:
    """This process's resident set size (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def render(
    metrics: Metrics,
    db: DatabaseGauges | None,
    *,
    started_at: float,
    version: str,
    connections: ConnectionStats | None = None,
    now: float | None = None,
) -> str:
    """The whole exposition text for one scrape."""
    now = time.time() if now is None else now
    out = _Writer()
    _process(out, started_at, version)

    subs = sorted(metrics.by_subscription.items())
    for name, attr, help_text in (
        ("tidegate_messages_received_total", "received", "MQTT messages received."),
        (
            "tidegate_messages_stored_total",
            "stored_messages",
            "Messages whose readings were committed.",
        ),
        (
            "tidegate_messages_dead_lettered_total",
            "dead_lettered",
            "Messages stored as dead letters (could not be decoded).",
        ),
        ("tidegate_leaves_skipped_total", "skipped", "Payload fields skipped (not numeric)."),
    ):
        out.family(name, "counter", help_text + " By subscription.")
        for label, counters in subs:
            out.sample(name, getattr(counters, attr), {"subscription": label})

    for name, value, help_text in (
        ("tidegate_messages_committed_total", metrics.messages_committed, "Messages committed."),
        ("tidegate_messages_empty_total", metrics.messages_empty, "Messages with no readings."),
        ("tidegate_readings_stored_total", metrics.readings_stored, "Readings stored."),
        (
            "tidegate_duplicates_ignored_total",
            metrics.duplicates_ignored,
            "Readings already stored (redeliveries), ignored.",
        ),
        ("tidegate_batches_total", metrics.batches, "Batches committed."),
        ("tidegate_write_errors_total", metrics.write_errors, "Failed batch writes (retried)."),
        ("tidegate_reconnects_total", metrics.reconnects, "Broker reconnections."),
        ("tidegate_acks_sent_total", metrics.acks_sent, "Acknowledgements sent after commit."),
        (
            "tidegate_acks_dropped_total",
            metrics.acks_dropped,
            "Acks not sent because their connection was gone (the broker redelivers).",
        ),
        (
            "tidegate_queue_full_waits_total",
            metrics.queue_full_waits,
            "Times a reader waited for room in the full queue (backpressure).",
        ),
        (
            "tidegate_paused_reads_total",
            metrics.paused_reads,
            "Times a connection's buffer reached mqtt.buffer_bytes and the socket was held.",
        ),
        (
            "tidegate_messages_rejected_by_reader_total",
            metrics.messages_rejected_by_reader,
            "Messages dead-lettered before decoding (payload or topic over its bound).",
        ),
    ):
        out.single(name, "counter", help_text, value)

    out.single(
        "tidegate_broker_connections", "gauge", "Open broker connections.", metrics.connected
    )
    out.single(
        "tidegate_storage_ok",
        "gauge",
        "1 while the last database write succeeded.",
        1 if metrics.storage_ok else 0,
    )
    out.single(
        "tidegate_queue_depth", "gauge", "Messages waiting for the writer.", metrics.queue_depth()
    )
    buffered_messages, buffered_bytes = metrics.buffered()
    out.single(
        "tidegate_mqtt_buffered_messages",
        "gauge",
        "Messages read from the broker, not yet handed to the pipeline.",
        buffered_messages,
    )
    out.single(
        "tidegate_mqtt_buffered_bytes",
        "gauge",
        "Bytes of those messages (bounded by mqtt.buffer_bytes per connection).",
        buffered_bytes,
    )
    out.single(
        "tidegate_failed",
        "gauge",
        "1 once a long-lived task failed (the process drains and exits with 70).",
        1 if metrics.failure else 0,
    )
    lag = metrics.lag
    out.single(
        "tidegate_falling_behind",
        "gauge",
        "1 while the gateway is falling behind (see /readyz for the reason).",
        1 if lag.behind else 0,
    )
    out.single(
        "tidegate_lag_reading_age_seconds",
        "gauge",
        "Age of the readings being committed (commit time minus their timestamps; smoothed).",
        lag.reading_age_s,
    )
    out.single(
        "tidegate_lag_receipt_to_commit_seconds",
        "gauge",
        "Seconds from the slowest message's arrival to its commit, last batch.",
        lag.receipt_to_commit_s,
    )
    broker: tuple[tuple[str, int | None, str], ...] = (
        (
            "tidegate_broker_messages_dropped",
            lag.broker_dropped,
            "The broker's $SYS/broker/publish/messages/dropped (broker-wide).",
        ),
        (
            "tidegate_broker_messages_dropped_since_start",
            lag.dropped_since_start if lag.broker_dropped is not None else None,
            "Messages the broker dropped since this gateway started (broker-wide).",
        ),
        (
            "tidegate_broker_store_messages",
            lag.broker_stored,
            "The broker's $SYS/broker/store/messages/count: messages it holds.",
        ),
        (
            "tidegate_broker_store_bytes",
            lag.broker_stored_bytes,
            "The broker's $SYS/broker/store/messages/bytes.",
        ),
    )
    for gauge, figure, text in broker:
        if figure is not None:  # a broker that does not publish it: no sample
            out.single(gauge, "gauge", text, figure)
    out.single(
        "tidegate_queue_capacity", "gauge", "Queue capacity (messages).", metrics.queue_capacity
    )
    out.histogram(
        "tidegate_batch_readings", "Readings per committed batch.", metrics.batch_readings
    )
    out.histogram(
        "tidegate_commit_latency_seconds",
        "Seconds from a message's arrival to its batch committing.",
        metrics.commit_latency,
    )
    out.histogram(
        "tidegate_commit_duration_seconds",
        "Seconds one batch transaction took.",
        metrics.commit_duration,
    )
    storage = metrics.storage
    out.single(
        "tidegate_storage_compacted_rows_total",
        "counter",
        "Readings moved from the hot table into the per-series table.",
        storage.compacted_rows,
    )
    out.single(
        "tidegate_storage_purged_rows_total",
        "counter",
        "Rows deleted by retention and by the size guard.",
        sum(storage.purged_rows.values()) + storage.purged_for_space_rows,
    )
    out.single(
        "tidegate_storage_paused",
        "gauge",
        "1 while the size guard holds writes.",
        1 if storage.paused else 0,
    )
    out.single(
        "tidegate_storage_write_bytes_per_reading",
        "gauge",
        "Bytes written to storage per stored reading over the last maintenance round.",
        storage.bytes_per_reading,
    )
    out.histogram(
        "tidegate_storage_maintenance_step_seconds",
        "Seconds each maintenance step (compaction, rollups, retention) held the writer.",
        storage.maintenance_step,
    )
    if metrics.upstream.configured:
        _upstream(out, metrics)

    slots = metrics.slots
    if slots is not None:  # a member of a direct-mode group (docs/central.md)
        out.single(
            "tidegate_mqtt_slots",
            "gauge",
            "Client-id slots of the group (mqtt.slots).",
            slots.total,
        )
        out.single(
            "tidegate_mqtt_slots_held",
            "gauge",
            "Slots this process drives (one MQTT session each).",
            len(slots.held),
        )
        out.single(
            "tidegate_mqtt_slot_members", "gauge", "Live members of the group.", slots.members
        )
        out.single(
            "tidegate_mqtt_slot_locks_ok",
            "gauge",
            "1 while the slot claims can be checked in PostgreSQL.",
            1 if slots.locks_ok else 0,
        )
        for name, value, text in (
            ("claims", slots.claims, "Slots claimed."),
            ("takeovers", slots.takeovers, "Slots taken over from a member that left."),
            ("releases", slots.releases, "Slots handed over gracefully."),
            ("drops", slots.drops, "Slots closed at once: their claim was gone or unknown."),
        ):
            out.single(f"tidegate_mqtt_slot_{name}_total", "counter", text, value)

    _connections(out, connections)
    _database(out, db, now)
    return "\n".join(out.lines) + "\n"


def _upstream(out: _Writer, metrics: Metrics) -> None:
    """Forwarding to the central store (``docs/upstream.md``)."""
    up = metrics.upstream
    out.single(
        "tidegate_upstream_connected",
        "gauge",
        "1 while the central store is connected.",
        1 if up.connected else 0,
    )
    out.single(
        "tidegate_upstream_unreachable_seconds",
        "gauge",
        "Seconds the central store has been unreachable (0 when it is not).",
        round(time.time() - up.unreachable_since, 3) if up.unreachable_since else 0,
    )
    out.single(
        "tidegate_upstream_pending_readings",
        "gauge",
        "Readings stored locally and not yet committed centrally (the outbox).",
        up.pending,
    )
    out.single(
        "tidegate_upstream_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest unforwarded reading (0 when none).",
        round(up.oldest_pending_age_s, 3),
    )
    out.single(
        "tidegate_upstream_forwarded_readings_total",
        "counter",
        "Readings committed centrally by this process (new there).",
        up.forwarded,
    )
    out.single(
        "tidegate_upstream_sent_readings_total",
        "counter",
        "Readings sent to the central store, duplicates included.",
        up.sent,
    )
    out.single(
        "tidegate_upstream_forward_rate",
        "gauge",
        "Readings forwarded per second, smoothed over about a minute.",
        round(up.forward_rate, 3),
    )
    if up.buffer_hours_left is not None:
        out.single(
            "tidegate_upstream_buffer_hours_left",
            "gauge",
            "Hours of local buffer left at the current ingest rate if nothing is forwarded.",
            round(up.buffer_hours_left, 3),
        )
    out.single(
        "tidegate_upstream_position",
        "gauge",
        "The last outbox sequence number the central store committed.",
        up.position,
    )
    out.single(
        "tidegate_upstream_errors_total",
        "counter",
        "Failed central transactions and connections (each retried).",
        up.errors,
    )
    out.single(
        "tidegate_upstream_conflicts_total",
        "counter",
        "Batches rolled back because the central position was not the expected one.",
        up.conflicts,
    )
    out.single(
        "tidegate_upstream_dropped_readings_total",
        "counter",
        "Unforwarded readings dropped for space (upstream.full_policy = drop_oldest).",
        up.dropped,
    )
    out.histogram(
        "tidegate_upstream_batch_seconds",
        "Seconds one central batch transaction took.",
        up.forward_seconds,
    )


# --- tidegate serve (the hub): the same writer, its own families ----------------------


def _connections(out: _Writer, connections: ConnectionStats | None) -> None:
    if connections is None:
        return
    out.single("tidegate_api_connections", "gauge", "Open HTTP API connections.", connections.open)
    out.family(
        "tidegate_api_connections_closed_total",
        "counter",
        "HTTP API connections the server closed or refused, by reason.",
    )
    for reason in CLOSE_REASONS:
        out.sample(
            "tidegate_api_connections_closed_total",
            connections.closed[reason],
            {"reason": reason},
        )


def _database(out: _Writer, db: DatabaseGauges | None, now: float) -> None:
    if db is None:
        return
    out.family("tidegate_database_size_bytes", "gauge", "Size of the database files.")
    out.sample("tidegate_database_size_bytes", db.database_bytes, {"file": "main"})
    out.sample("tidegate_database_size_bytes", db.wal_bytes, {"file": "wal"})
    out.single("tidegate_series", "gauge", "Stored series (sensor × metric).", db.series)
    now_ms = now * 1000
    if db.oldest_ts_ms is not None:
        out.single(
            "tidegate_oldest_reading_age_seconds",
            "gauge",
            "Age of the oldest stored reading.",
            round((now_ms - db.oldest_ts_ms) / 1000, 3),
        )
    if db.newest_ts_ms is not None:
        out.single(
            "tidegate_newest_reading_age_seconds",
            "gauge",
            "Age of the newest stored reading (negative if it is stamped in the future).",
            round((now_ms - db.newest_ts_ms) / 1000, 3),
        )


def _process(out: _Writer, started_at: float, version: str) -> None:
    out.family("tidegate_info", "gauge", "Build information.")
    out.sample("tidegate_info", 1, {"version": version})
    out.single(
        "process_start_time_seconds", "gauge", "Start time of the process (epoch s).", started_at
    )
    out.single(
        "process_resident_memory_bytes", "gauge", "Resident memory size.", resident_memory_bytes()
    )


def render_hub(
    store_up: bool,
    db: DatabaseGauges | None,
    gateways: Sequence[GatewayInfo],
    *,
    started_at: float,
    version: str,
    connections: ConnectionStats | None = None,
    now: float | None = None,
) -> str:
    """The exposition text of ``tidegate serve``: the process, whether the central store
    answers, its figures, and per gateway what it last reported with a forwarded batch
    (``docs/fleet.md``)."""
    now = time.time() if now is None else now
    out = _Writer()
    _process(out, started_at, version)
    out.single(
        "tidegate_central_up", "gauge", "1 while the central store answers.", 1 if store_up else 0
    )
    out.single(
        "tidegate_gateways", "gauge", "Gateways with data in the central store.", len(gateways)
    )
    out.family("tidegate_gateway_series", "gauge", "Series of each gateway.")
    for g in gateways:
        out.sample("tidegate_gateway_series", g.series, {"gateway": g.gateway_id})
    forwarding = [(g.gateway_id, g.forwarding) for g in gateways if g.forwarding is not None]
    families: list[tuple[str, str, str, Callable[[Forwarding], float]]] = [
        (
            "tidegate_gateway_forwarded_total",
            "counter",
            "Readings the central store committed from each edge gateway.",
            lambda f: f.forwarded,
        ),
        (
            "tidegate_gateway_backlog_readings",
            "gauge",
            "Readings each edge still held unforwarded at its last batch.",
            lambda f: f.backlog,
        ),
        (
            "tidegate_gateway_last_forward_timestamp_seconds",
            "gauge",
            "When each edge's last batch was committed centrally (epoch s).",
            lambda f: f.last_forward_ms / 1000,
        ),
        (
            "tidegate_gateway_behind_seconds",
            "gauge",
            "How far behind each edge is: age of its oldest unforwarded reading (0: none).",
            lambda f: (
                0
                if f.oldest_pending_ms is None
                else max(0.0, round(now - f.oldest_pending_ms / 1000, 3))
            ),
        ),
    ]
    for name, kind, help_text, value in families:
        out.family(name, kind, help_text)
        for gateway_id, f in forwarding:
            out.sample(name, value(f), {"gateway": gateway_id})
    _connections(out, connections)
    _database(out, db, now)
    return "\n".join(out.lines) + "\n"
