"""From one MQTT message to one :class:`Envelope`: pick the subscription, map the topic,
run the codec, turn any failure into a dead letter, and give readings without a
timestamp receive times that never collide within a series (:mod:`gateway.receive_time`).

With discovery on (:mod:`gateway.discovery`), a topic is, in this order: a discovery
config (never decoded as readings), a ``[[subscriptions]]`` match (hand-written
subscriptions win over discovered entities; Zigbee2MQTT units fill in missing units),
or a discovered state topic.

This is the only place that catches :class:`DecodeError`; nothing a sensor sends can
raise out of :meth:`Router.route`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import tzinfo
from typing import Protocol

from gateway.codecs import Codec, get_codec
from gateway.codecs.mapping import FieldMapping, resolve_timezone
from gateway.config import SubscriptionConfig
from gateway.errors import DecodeError
from gateway.models import DeadLetter, Decoded, Envelope, Reading
from gateway.receive_time import ReceiveClock
from gateway.series_gate import SeriesGate
from gateway.topics import TopicTemplate
from gateway.validation import DecodeContext, Limits

log = logging.getLogger(__name__)

_TOPIC_CACHE_BYTES = 32 << 20
"""Byte budget of the per-topic cache: each entry is charged :func:`_entry_cost` (about
1 KB of objects plus its topic, measured with tracemalloc), so a fleet of 10,000 sensors ×
3 metrics fits and a flood of distinct long topics cannot grow memory past it."""


def _entry_cost(topic: str) -> int:
    return 1024 + 2 * len(topic)


DISCOVERY_LABEL = "discovery"
DISCOVERY_CONFIG_LABEL = "discovery-config"


class DiscoveryRoutes(Protocol):
    """What the router asks discovery (:class:`gateway.discovery.service.DiscoveryService`)."""

    @property
    def version(self) -> int:
        """Changes whenever the answers below may change."""
        ...

    def is_config_topic(self, topic: str) -> bool: ...
    def handle_config(self, topic: str, payload: bytes) -> Decoded: ...
    def has_state_topic(self, topic: str) -> bool: ...
    def decode_state(self, topic: str, payload: bytes, now_ms: int) -> Decoded: ...
    def unit_hints(self, topic: str) -> dict[str, str] | None: ...


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest). ``$share/g/`` is
    stripped from the filter; topics starting with ``$`` never match wildcards."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2]
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_parts = topic_filter.split("/")
    t_parts = topic.split("/")
    for index, part in enumerate(f_parts):
        if part == "#":
            return True
        if index >= len(t_parts):
            return False
        if part != "+" and part != t_parts[index]:
            return False
    return len(f_parts) == len(t_parts)


class _CrashLog:
    """Codec crashes (our bugs, triggered by a payload) as one WARNING line per
    ``every_s`` at most, with how many were not logged: a device repeating the payload
    must not flood the log. The traceback goes to DEBUG; the dead letter keeps the
    reason."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self.logged_at = -every_s
        self.suppressed = 0

    def note(self, label: str, topic: str, reason: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self.logged_at < self.every_s:
            self.suppressed += 1
        else:
            more = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
            log.warning("codec %s failed on a message from %s: %s%s", label, topic, reason, more)
            self.logged_at = now
            self.suppressed = 0
        log.debug("codec %s failure", label, exc_info=exc)


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """A subscription ready to decode: its codec, parsed template, field mapping and the
    zone of its naive timestamps."""

    config: SubscriptionConfig
    codec: Codec
    template: TopicTemplate | None
    label: str = ""
    mapping: FieldMapping | None = None
    tz: tzinfo | None = None

    @classmethod
    def build(cls, sub: SubscriptionConfig, limits: Limits) -> Route:
        return cls(
            sub,
            get_codec(sub.format),
            TopicTemplate.parse(sub.topic_template) if sub.topic_template else None,
            sub.label,
            FieldMapping.from_options(sub, limits),
            resolve_timezone(sub.timezone),
        )


@dataclass(slots=True)
class _Prepared:
    """Everything about one topic that does not change from message to message."""

    route: Route | None
    label: str
    ctx: DecodeContext | None
    """Reused for every message on this topic (codecs are pure and keep no reference);
    only ``now_ms`` changes. None when the topic cannot be decoded."""
    error: str = ""
    kind: str = "codec"
    """``codec`` (a subscription), ``config`` / ``state`` (discovery), ``none``."""
    units: dict[str, str] | None = None
    """Units learned for this topic's fields (Zigbee2MQTT), for readings without one."""


class Router:
    """Decodes messages for a set of subscriptions."""

    def __init__(
        self,
        subscriptions: list[SubscriptionConfig],
        limits: Limits,
        max_payload_bytes: int,
        clock: ReceiveClock | None = None,
        discovery: DiscoveryRoutes | None = None,
        series_gate: SeriesGate | None = None,
    ) -> None:
        self.routes = [Route.build(sub, limits) for sub in subscriptions]
        self.limits = limits
        self.max_payload_bytes = max_payload_bytes
        self.discovery = discovery
        self._discovery_version = discovery.version if discovery is not None else 0
        self._by_topic: dict[str, _Prepared] = {}
        self._cache_bytes = 0
        self.clock = clock or ReceiveClock()
        """Gives readings without a timestamp receive times that never collide within a
        series (gateway.receive_time)."""
        self._crash_log = _CrashLog()
        self.series_gate = series_gate
        """Caps new series per message and in total (None: no caps)."""

    def route_for(self, topic: str) -> Route | None:
        """The first subscription (in config order) whose filter matches ``topic``."""
        return self._prepared(topic).route

    def _prepared(self, topic: str) -> _Prepared:
        """The cached per-topic work: subscription lookup, topic template match and the
        decode context (bounded in bytes: the cache is dropped and rebuilt when full)."""
        discovery = self.discovery
        if discovery is not None and discovery.version != self._discovery_version:
            self._discovery_version = discovery.version
            self._by_topic.clear()  # entities or units changed
            self._cache_bytes = 0
        cached = self._by_topic.get(topic)
        if cached is not None:
            return cached
        prepared = self._prepare(topic)
        cost = _entry_cost(topic)
        if self._cache_bytes + cost > _TOPIC_CACHE_BYTES:
            self._by_topic.clear()  # bounded in bytes; rebuilt on demand
            self._cache_bytes = 0
        self._by_topic[topic] = prepared
        self._cache_bytes += cost
        return prepared

    def _prepare(self, topic: str) -> _Prepared:
        discovery = self.discovery
        if discovery is not None and discovery.is_config_topic(topic):
            return _Prepared(None, DISCOVERY_CONFIG_LABEL, None, kind="config")
        route = next((r for r in self.routes if topic_matches(r.config.topic, topic)), None)
        if route is None:
            if discovery is not None and discovery.has_state_topic(topic):
                return _Prepared(None, DISCOVERY_LABEL, None, kind="state")
            return _Prepared(None, "", None, f"no subscription matches topic {topic!r}", "none")
        config = route.config
        ctx = DecodeContext(
            topic=topic,
            now_ms=0,
            limits=self.limits,
            options=config,
            topic_wins=config.topic_wins,
            tz=route.tz,
        )
        if route.template is not None:
            try:
                ctx.topic_fields, ctx.topic_tags = route.template.match(topic, self.limits)
            except DecodeError as exc:
                return _Prepared(route, route.label, None, exc.reason)
        units = discovery.unit_hints(topic) if discovery is not None else None
        return _Prepared(route, route.label, ctx, units=units)

    @staticmethod
    def _decode(prepared: _Prepared, payload: bytes, ctx: DecodeContext) -> Decoded:
        """Codec, learned units, then the subscription's mapping."""
        route = prepared.route
        assert route is not None
        decoded = route.codec(payload, ctx)
        if prepared.units is not None:
            decoded.readings = with_units(decoded.readings, prepared.units)
        if route.mapping is not None:
            decoded = route.mapping.apply(decoded)
        return decoded

    def _check_size(self, payload: bytes) -> None:
        if len(payload) > self.max_payload_bytes:
            raise DecodeError(
                f"payload of {len(payload)} bytes exceeds max_payload_bytes={self.max_payload_bytes}"
            )

    def route(self, topic: str, payload: bytes, now_ms: int | None = None) -> Envelope:
        """Decode one message. Never raises for anything in ``topic`` or ``payload``."""
        received = time.monotonic()
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        prepared = self._prepared(topic)
        label = prepared.label
        ctx = prepared.ctx
        discovery = self.discovery
        try:
            if prepared.kind in ("config", "state") and discovery is not None:
                self._check_size(payload)
                if prepared.kind == "config":
                    decoded = discovery.handle_config(topic, payload)
                else:
                    decoded = discovery.decode_state(topic, payload, now_ms)
            else:
                if ctx is None or prepared.route is None:
                    raise DecodeError(prepared.error)
                self._check_size(payload)
                ctx.now_ms = now_ms
                decoded = self._decode(prepared, payload, ctx)
            if self.series_gate is not None:
                refusal = self.series_gate.admit(decoded.readings)
                if refusal is not None:
                    raise DecodeError(refusal)
        except DecodeError as exc:
            return Envelope(
                [],
                DeadLetter(now_ms, topic, payload, exc.reason, label),
                subscription=label,
                received_at=received,
            )
        except Exception as exc:  # a codec bug must not stop the pipeline: dead-letter it
            reason = f"internal decoder error: {type(exc).__name__}: {str(exc)[:200]}"
            self._crash_log.note(label, topic, reason, exc)
            return Envelope(
                [],
                DeadLetter(now_ms, topic, payload, reason, label),
                subscription=label,
                received_at=received,
            )
        readings = decoded.readings
        if readings:
            if ctx is None:
                # Discovered states always take the receive time: one millisecond later
                # every reading moves (decoding again would count the entity twice).
                first = readings

                def redecode() -> list[Reading]:
                    return [r._replace(ts_ms=r.ts_ms + 1) for r in first]

            else:
                context = ctx

                def redecode() -> list[Reading]:
                    """The same message (codec, units, mapping), one millisecond later."""
                    context.now_ms = now_ms + 1
                    try:
                        return self._decode(prepared, payload, context).readings
                    except Exception:  # deterministic codecs never get here; be safe anyway
                        return []
                    finally:
                        context.now_ms = now_ms

            readings = self.clock.stamp(readings, now_ms, redecode)
        return Envelope(
            readings,
            None,
            subscription=label,
            skipped=decoded.skipped,
            skipped_names=decoded.skipped_names,
            received_at=received,
        )


def with_units(readings: list[Reading], units: dict[str, str]) -> list[Reading]:
    """``readings`` with a unit from ``units`` (by metric) where they have none."""
    out = readings
    for index, reading in enumerate(readings):
        if reading.unit is None:
            unit = units.get(reading.metric)
            if unit is not None:
                if out is readings:
                    out = list(readings)
                out[index] = reading._replace(unit=unit)
    return out
