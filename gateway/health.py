"""Is the gateway ready? One answer for ``/readyz``, ``tidegate stats`` and the log.

* **not ready** (``/readyz`` 503): a long-lived task failed (the process is draining
  and will exit), the broker is not connected, a subscription was refused, or the
  database is not writable;
* **degraded** (``/readyz`` 200): running, but falling behind (``metrics.lag``), or —
  when forwarding — forwarding to the central store failing (unreachable, refusing), or the oldest unforwarded reading
  older than ``upstream.degraded_after_s`` (ingestion goes on into the local store), with
  the reason;
* **ready** otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.metrics import Metrics

READY, DEGRADED, NOT_READY = "ready", "degraded", "not ready"


@dataclass(frozen=True, slots=True)
class Readiness:
    """``status`` is one of :data:`READY`, :data:`DEGRADED`, :data:`NOT_READY`."""

    status: str
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False only when not ready (degraded still serves)."""
        return self.status != NOT_READY


def readiness(metrics: Metrics, broker_connected: bool) -> Readiness:
    """The gateway's readiness from its metrics and its source's connection state."""
    reasons: list[str] = []
    if metrics.failure:
        reasons.append(f"gateway failing, exiting after a bounded drain: {metrics.failure}")
    slots = metrics.slots
    if slots is not None and not slots.locks_ok:
        why = slots.locks_error or "not joined yet"
        reasons.append(f"mqtt slots: cannot check the group's claims in PostgreSQL ({why})")
    elif not broker_connected:
        reasons.append("broker not connected")
    for topic_filter, why in sorted(metrics.subscriptions_refused.items()):
        reasons.append(f"broker refused subscription {topic_filter!r}: {why}")
    if not metrics.storage_ok:
        detail = metrics.storage_error or "last write failed"
        reasons.append(f"database not writable: {detail}")
    if reasons:
        return Readiness(NOT_READY, reasons)
    if metrics.lag.behind:
        reasons.append(metrics.lag.reason)
    reasons.extend(upstream_reasons(metrics))
    if reasons:
        return Readiness(DEGRADED, reasons)
    return Readiness(READY)


def upstream_reasons(metrics: Metrics, now: float | None = None) -> list[str]:
    """Why forwarding makes the gateway degraded (empty: it does not)."""
    up = metrics.upstream
    if not up.configured:
        return []
    now = time.time() if now is None else now
    backlog = f"{up.pending:,} readings buffered locally"
    if up.pending:
        backlog += f", the oldest {_span(up.oldest_pending_age_s)} old"
    if up.buffer_hours_left is not None:
        backlog += f", about {buffer_span(up.buffer_hours_left)} of local buffer left"
    if up.unreachable_since and now - up.unreachable_since >= up.degraded_after_s:
        detail = f": {up.last_error}" if up.last_error else ""
        return [
            f"forwarding to the central store failing for {_span(now - up.unreachable_since)}"
            f"{detail};"
            f" still ingesting, {backlog}"
        ]
    if up.pending and up.oldest_pending_age_s >= up.degraded_after_s:
        return [f"forwarding behind: {backlog}"]
    return []


def buffer_span(hours: float) -> str:
    """Hours of buffer as people read them: hours up to two days, then days."""
    return f"{hours:,.1f} h" if hours < 48 else f"{hours / 24:,.0f} days"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
