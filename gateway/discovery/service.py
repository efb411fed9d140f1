"""Discovery at runtime: reads discovery messages (through the router), keeps the broker
subscriptions to the discovered state topics in step, and saves the state.

Subscriptions go through the MQTT source's filter groups
(:mod:`gateway.sources.subscriptions`): ``discovery`` (not shared) holds the config
filters — ``<prefix>/+/+/config``, ``<prefix>/+/+/+/config`` and Zigbee2MQTT's
``<base>/bridge/devices`` — and ``discovery-states`` the state topics of the entities
that work, except those a ``[[subscriptions]]`` filter already delivers (a hand-written
subscription wins: ``docs/decisions/0130``).

At every start, once connected, the config filters are subscribed afresh, so the broker
sends every retained config again: what changed while the gateway was away (or in the
moment before a crash, after a config was acked but before it was saved) is caught up.
Until then the saved state (:mod:`gateway.discovery.store`) already routes state
messages, so nothing is missed at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gateway.config import DiscoveryConfig, SubscriptionConfig
from gateway.discovery import store, zigbee2mqtt
from gateway.discovery.registry import Registry
from gateway.errors import DecodeError, DiscoveryError
from gateway.models import Decoded
from gateway.router import topic_matches
from gateway.validation import Limits

log = logging.getLogger(__name__)

SETTLE_S = 0.3
"""How long changes are gathered before subscriptions are updated and the file saved
(a device announces tens of entities in one burst)."""
ERROR_SAVE_INTERVAL_S = 60.0


class FilterGroupLike(Protocol):
    """What the discovery needs from :class:`gateway.sources.subscriptions.FilterGroup`."""

    def set_initial(self, filters: dict[str, int]) -> None: ...
    async def add(self, topic_filter: str, qos: int = 1) -> bool: ...
    async def remove(self, topic_filter: str) -> bool: ...
    async def replace(self, filters: dict[str, int]) -> bool: ...


class DiscoveryService:
    """The registry plus everything around it that does I/O."""

    def __init__(
        self,
        config: DiscoveryConfig,
        database: Path,
        limits: Limits,
        subscriptions: list[SubscriptionConfig],
    ) -> None:
        self.config = config
        self.registry = Registry(
            config.prefix, frozenset(config.components), limits, max_configs=config.max_configs
        )
        self.path = config.state_file or store.state_path(Path(database))
        self.subscriptions = subscriptions
        self.z2m_topics = (
            {zigbee2mqtt.devices_topic(base) for base in config.zigbee2mqtt}
            if config.zigbee2mqtt
            else set()
        )
        self.configs: FilterGroupLike | None = None
        self.states: FilterGroupLike | None = None
        self._changed = asyncio.Event()
        self._saved_version = -1
        self._saved_errors: dict[str, tuple[int, str]] = {}
        self.listeners: list[Callable[[], None]] = []

    # --- setup --------------------------------------------------------------------------

    def load(self) -> None:
        """Restore the saved state (before the source starts)."""
        snapshot = store.read(self.path)
        if snapshot is None:
            return
        if snapshot.prefix != self.config.prefix:
            log.warning(
                "discovery: saved state is for prefix %r, now %r: starting without it",
                snapshot.prefix,
                self.config.prefix,
            )
            return
        problems = self.registry.load(snapshot.configs, snapshot.z2m_units)
        for problem in problems:
            log.warning("discovery: saved config no longer usable: %s", problem)
        self._saved_version = self.registry.version
        working = sum(1 for e in self.registry.entities.values() if e.problem is None)
        log.info(
            "discovery: %d entities from %s (%d storing, %d state topics)",
            len(self.registry.entities),
            self.path,
            working,
            len(self.registry.state_topics()),
        )

    def config_filters(self) -> dict[str, int]:
        """The filters that bring discovery configs and Zigbee2MQTT device lists."""
        prefix = self.config.prefix.rstrip("/")
        filters: dict[str, int] = {}
        if self.config.homeassistant:
            filters[f"{prefix}/+/+/config"] = self.config.qos
            filters[f"{prefix}/+/+/+/config"] = self.config.qos
        for topic in sorted(self.z2m_topics):
            if not self.covered(topic):
                filters[topic] = self.config.qos
        return filters

    def state_filters(self) -> dict[str, int]:
        """The state topics to subscribe (those no ``[[subscriptions]]`` delivers)."""
        return {
            topic: self.config.qos
            for topic in sorted(self.registry.state_topics())
            if not self.covered(topic)
        }

    def covered(self, topic: str) -> str | None:
        """The label of the ``[[subscriptions]]`` that delivers ``topic``, if any."""
        for sub in self.subscriptions:
            if topic_matches(sub.topic, topic):
                return sub.label
        return None

    def attach(self, configs: FilterGroupLike, states: FilterGroupLike) -> None:
        """Use these filter groups (registered with the source before it starts)."""
        self.configs = configs
        self.states = states
        configs.set_initial(self.config_filters())
        states.set_initial(self.state_filters())

    # --- the router's side (synchronous, on the event loop) ------------------------------

    def is_config_topic(self, topic: str) -> bool:
        """Whether ``topic`` carries discovery configs rather than readings."""
        if topic in self.z2m_topics:
            return True
        return self.config.homeassistant and self.registry.is_config_topic(topic)

    def handle_config(self, topic: str, payload: bytes) -> Decoded:
        """Take a discovery message. Raises :class:`DecodeError` (dead letter) for one
        that cannot be read; the entities announced before stay."""
        try:
            if topic in self.z2m_topics:
                base = topic[: -len("/bridge/devices")]
                changed = self.registry.apply_z2m_devices(zigbee2mqtt.parse_devices(payload, base))
            else:
                changed = self.registry.apply_config(topic, payload)
        except DiscoveryError as exc:
            raise DecodeError(exc.reason) from None
        if changed:
            self._notify()
        return Decoded([])

    def decode_state(self, topic: str, payload: bytes, now_ms: int) -> Decoded:
        """Readings of the entities whose state topic is ``topic``."""
        return self.registry.decode_state(topic, payload, now_ms)

    def has_state_topic(self, topic: str) -> bool:
        return topic in self.registry.by_state_topic

    def unit_hints(self, topic: str) -> dict[str, str] | None:
        return self.registry.unit_hints(topic)

    @property
    def version(self) -> int:
        return self.registry.version

    def _notify(self) -> None:
        for listener in self.listeners:
            listener()
        self._changed.set()

    # --- the background task ---------------------------------------------------------------

    async def run(self, connected: Callable[[], bool]) -> None:
        """Refresh the configs once connected, then keep subscriptions and the saved
        file in step with the registry, until cancelled (a last save then)."""
        try:
            await self._refresh_configs(connected)
            await self._sync()
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ERROR_SAVE_INTERVAL_S):
                        await self._changed.wait()
                await asyncio.sleep(SETTLE_S)
                self._changed.clear()
                await self._sync()
        finally:
            await asyncio.shield(self._save_if_needed())

    async def _refresh_configs(self, connected: Callable[[], bool]) -> None:
        if self.configs is None:
            return
        while not connected():
            await asyncio.sleep(0.2)
        for topic_filter, qos in self.config_filters().items():
            # Unsubscribe + subscribe: the broker sends the retained configs again.
            await self.configs.remove(topic_filter)
            await self.configs.add(topic_filter, qos)

    async def _sync(self) -> None:
        if self.states is not None:
            wanted = self.state_filters()
            if not await self.states.replace(wanted):
                log.warning("discovery: the broker refused some state topics (see /readyz)")
        await self._save_if_needed()

    def _errors(self) -> dict[str, tuple[int, str]]:
        return {
            key: (stats.errors, stats.last_error)
            for key, stats in self.registry.stats.items()
            if stats.errors
        }

    async def _save_if_needed(self) -> None:
        """Write the file when the registry or the errors changed since the last save
        (the snapshot is taken here, on the loop; the write runs on a thread)."""
        errors = self._errors()
        version = self.registry.version
        if version == self._saved_version and errors == self._saved_errors:
            return
        snapshot = store.Snapshot(
            prefix=self.config.prefix,
            configs=dict(self.registry.configs),
            z2m_units={t: dict(u) for t, u in self.registry.z2m_units.items()},
            errors={
                key: {
                    "count": count,
                    "last": last,
                    "at_ms": self.registry.stats[key].last_error_ms,
                }
                for key, (count, last) in errors.items()
            },
        )
        try:
            await asyncio.to_thread(store.write, self.path, snapshot)
        except OSError as exc:
            log.warning("discovery: cannot save %s: %s", self.path, exc)
            return
        self._saved_version = version
        self._saved_errors = errors
