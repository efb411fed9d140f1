"""Is the gateway ready? One answer for ``/readyz``, ``tidegate stats`` and the log.

* **not ready** (``/readyz`` 503): a long-lived task failed (the process is draining
  and will exit), the broker is not connected, a subscription was refused, or the
  database is not writable;
* **degraded** (``/readyz`` 200): running, but falling behind (``metrics.lag``), with
  the reason;
* **ready** otherwise.
"""

from __future__ import annotations

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
        return Readiness(DEGRADED, [metrics.lag.reason])
    return Readiness(READY)
