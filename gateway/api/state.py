"""What the endpoints share: the gateway they report on, the API settings, the read side
of the store, and a small ingest-rate meter sampled by the service."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.api.connections import ConnectionTable
from gateway.config import ApiConfig
from gateway.metrics import Metrics
from gateway.request import duration_ms
from gateway.storage.base import ReadStore


class SourceView(Protocol):
    @property
    def connected(self) -> bool: ...


class GatewayView(Protocol):
    """The parts of :class:`gateway.app.Gateway` the API reads."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def source(self) -> SourceView: ...


class RateMeter:
    """Readings and messages per second over a sliding window of samples.

    :meth:`sample` is called about once a second; memory is ``window`` samples.
    """

    def __init__(self, window: int = 10) -> None:
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=window + 1)

    def sample(self, metrics: Metrics, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._samples.append((now, metrics.readings_stored, metrics.messages_received))

    def rates(self) -> tuple[float, float, float]:
        """``(readings_per_s, messages_per_s, window_s)``; zeros until two samples exist."""
        if len(self._samples) < 2:
            return 0.0, 0.0, 0.0
        (t0, r0, m0), (t1, r1, m1) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span <= 0:
            return 0.0, 0.0, 0.0
        return (r1 - r0) / span, (m1 - m0) / span, span


@dataclass
class ApiState:
    """Everything the handlers need, built once by the service."""

    gateway: GatewayView
    config: ApiConfig
    store: ReadStore
    version: str
    started_at: float = field(default_factory=time.time)
    meter: RateMeter = field(default_factory=RateMeter)
    exports_running: int = 0
    cache: dict[str, tuple[float, object]] = field(default_factory=dict)
    connections: ConnectionTable[Any] | None = None
    """The server's connection table (None when the app runs without our server)."""
    hub: bool = False
    """``tidegate serve``: the API over the central store, no MQTT (:mod:`.hub`)."""
    store_ok: bool = True
    """Hub: whether the store answered its last probe (``store_error`` says why not)."""
    store_error: str = ""

    @property
    def max_range_ms(self) -> int:
        return duration_ms(self.config.max_range, "api.max_range")
