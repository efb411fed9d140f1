"""The discovered entities in force: their names, units and state topics, and how a state
message becomes readings.

Pure (no I/O, no asyncio): :class:`gateway.discovery.service.DiscoveryService` feeds it
messages, saves it (:mod:`gateway.discovery.store`) and keeps the broker subscriptions in
step; :class:`gateway.router.Router` asks it about topics.

**Names** (``docs/decisions/0130-home-assistant-discovery.md``): the sensor is named
after the device (``device.name``; a device whose configs carry only identifiers, like a
Tasmota sensor's, takes the name another config of the same device gives, else its first
identifier; an entity without a device takes its node id or object id), the metric after
the entity: its ``name`` without the device name in front; with ``name`` null or empty
(the device's main feature) or absent, the device class as Home Assistant shows it
("Temperature", "Atmospheric pressure"), else the object id without the device's slug.
Two devices with one name, or two entities of one device with one metric name, get the
device key or object id appended — deterministic for a given set of configs.

**States**: per entity, the value template (or the payload text) gives the state; a
``sensor`` / ``number`` stores it when it is a number, a ``binary_sensor`` / ``switch``
stores 1 for ``payload_on`` and 0 for ``payload_off``. Anything else (``unknown``,
``nan``, text states, a missing key) is a skipped field, counted; a template that fails
on a payload is counted per entity and logged the first time only.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pydantic_core

from gateway.codecs._common import NUMBER_RE
from gateway.discovery.homeassistant import DEFAULT_COMPONENTS, EntityConfig, parse, parse_topic
from gateway.discovery.template import UNDEFINED, render
from gateway.errors import DecodeError, DiscoveryError, TemplateError
from gateway.models import Decoded, Reading
from gateway.validation import Limits, check_name

log = logging.getLogger(__name__)

ON_OFF_COMPONENTS = frozenset({"binary_sensor", "switch"})
NO_VALUE = frozenset({"", "nan", "-nan", "none", "null", "unknown", "unavailable"})

DEVICE_CLASS_NAMES: dict[str, str] = {
    "aqi": "Air quality index",
    "co": "Carbon monoxide",
    "co2": "Carbon dioxide",
    "nitrogen_dioxide": "Nitrogen dioxide",
    "nitrogen_monoxide": "Nitrogen monoxide",
    "nitrous_oxide": "Nitrous oxide",
    "ph": "pH",
    "pm1": "PM1",
    "pm10": "PM10",
    "pm25": "PM2.5",
    "sulphur_dioxide": "Sulphur dioxide",
    "volatile_organic_compounds": "Volatile organic compounds",
    "volatile_organic_compounds_parts": "Volatile organic compounds parts",
}
"""Device classes whose English name in Home Assistant is not the id with spaces."""


def device_class_name(device_class: str) -> str:
    """``atmospheric_pressure`` → ``Atmospheric pressure`` (Home Assistant's names)."""
    known = DEVICE_CLASS_NAMES.get(device_class)
    if known is not None:
        return known
    text = device_class.replace("_", " ").strip()
    return text[:1].upper() + text[1:] if text else "value"


def _without_prefix(name: str, sensor: str) -> str:
    """``name`` without the device name in front ("Tasmota AM2301 Temperature" of device
    "Tasmota" → "AM2301 Temperature"), as Home Assistant strips it; "" when the name is
    just the device's name."""
    if name.lower() == sensor.lower():
        return ""
    if name.lower().startswith(sensor.lower()) and name[len(sensor)] in " _-:":
        return name[len(sensor) :].strip(" _-:")
    return name


def _object_name(config: EntityConfig, sensor: str) -> str:
    """The entity's object id without its device's slug in front
    (``weather_sensor_linkquality`` of ``weather_sensor`` → ``linkquality``)."""
    object_id = config.entity_object_id or config.object_id
    slug = _slug(sensor)
    if slug and object_id.lower().startswith(slug + "_") and len(object_id) > len(slug) + 1:
        return object_id[len(slug) + 1 :]
    return object_id


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


@dataclass(slots=True)
class EntityStats:
    """What an entity's state messages did since the gateway started."""

    messages: int = 0
    readings: int = 0
    skipped: int = 0
    errors: int = 0
    last_error: str = ""
    last_error_ms: int = 0


@dataclass(frozen=True, slots=True)
class Entity:
    """An entity with its names resolved."""

    config: EntityConfig
    sensor_id: str
    metric: str
    unit: str | None
    problem: str | None
    """Why it stores nothing (from its config, or an unusable name); None: it works."""

    @property
    def key(self) -> str:
        return self.config.key

    @property
    def state_topic(self) -> str | None:
        return self.config.state_topic


@dataclass(slots=True)
class Registry:
    """Discovery configs and Zigbee2MQTT units in force, and the entities they make."""

    prefix: str = "homeassistant"
    components: frozenset[str] = frozenset(DEFAULT_COMPONENTS)
    limits: Limits = field(default_factory=Limits)
    configs: dict[str, str] = field(default_factory=dict)
    """Discovery topic → the config payload in force (what is saved and reloaded)."""
    config_errors: dict[str, str] = field(default_factory=dict)
    """Discovery topic → why its last config could not be read at all."""
    z2m_units: dict[str, dict[str, str]] = field(default_factory=dict)
    """Zigbee2MQTT state topic → {field path: unit} from ``bridge/devices``."""
    stats: dict[str, EntityStats] = field(default_factory=dict)
    entities: dict[str, Entity] = field(default_factory=dict)
    by_state_topic: dict[str, list[Entity]] = field(default_factory=dict)
    version: int = 0
    """Bumped on every change of the entities or units (routers drop their caches)."""
    report: bool = True
    """Log each entity that stores nothing (once); off for ``tidegate discovery list``."""
    max_configs: int = 10_000
    """Discovery topics held at most: anyone who can publish under the prefix could
    otherwise grow the registry (and the subscriptions) without bound."""
    _configs_parsed: dict[str, list[EntityConfig]] = field(default_factory=dict)
    _reported: set[str] = field(default_factory=set)

    # --- changes ---------------------------------------------------------------------

    def is_config_topic(self, topic: str) -> bool:
        """Whether ``topic`` is a discovery config topic under the prefix."""
        return parse_topic(topic, self.prefix) is not None

    def apply_config(self, topic: str, payload: bytes) -> bool:
        """Take one discovery message (an empty payload removes). Returns whether the
        entities changed. Raises :class:`DiscoveryError` for an unreadable config (the
        entities announced earlier on ``topic`` stay)."""
        try:
            parsed = parse(topic, payload, self.prefix, self.components)
            full = len(self.configs) >= self.max_configs
            if parsed is not None and topic not in self.configs and full:
                raise DiscoveryError(
                    f"more than {self.max_configs} discovery configs ([discovery] max_configs)"
                )
        except DiscoveryError as exc:
            if len(self.config_errors) >= self.max_configs:
                self.config_errors.clear()  # bounded; a recent failure is listed again
            self.config_errors[topic] = exc.reason
            raise
        self.config_errors.pop(topic, None)
        if parsed is None:
            if topic not in self.configs:
                return False
            del self.configs[topic]
            self._configs_parsed.pop(topic, None)
        else:
            text = payload.decode("utf-8", "replace")
            if self.configs.get(topic) == text:
                return False
            self.configs[topic] = text
            self._configs_parsed[topic] = parsed
        self._rebuild()
        return True

    def load(self, configs: dict[str, str], z2m_units: dict[str, dict[str, str]]) -> list[str]:
        """Restore saved state; returns a line per config that no longer parses."""
        problems: list[str] = []
        for topic, text in configs.items():
            try:
                parsed = parse(topic, text.encode("utf-8"), self.prefix, self.components)
            except DiscoveryError as exc:
                problems.append(f"{topic}: {exc.reason}")
                continue
            if parsed is not None:
                self.configs[topic] = text
                self._configs_parsed[topic] = parsed
        self.z2m_units = {t: dict(u) for t, u in z2m_units.items()}
        self._rebuild()
        return problems

    def apply_z2m_devices(self, units: dict[str, dict[str, str]]) -> bool:
        """Take a parsed Zigbee2MQTT device list. Returns whether units changed."""
        if units == self.z2m_units:
            return False
        self.z2m_units = units
        self.version += 1
        return True

    # --- names -----------------------------------------------------------------------

    def _rebuild(self) -> None:
        configs = [c for topic in sorted(self._configs_parsed) for c in self._configs_parsed[topic]]
        device_names: dict[str, str] = {}
        for config in configs:
            device = config.device
            if device.key is not None and device.name and device.key not in device_names:
                device_names[device.key] = device.name
        # Sensor names, with two devices of one name told apart by their keys.
        sensor_of: dict[str, str] = {}
        owners: dict[str, set[str]] = {}
        for config in configs:
            name = self._sensor_name(config, device_names)
            sensor_of[config.key] = name
            owners.setdefault(name, set()).add(config.device.key or f"~{config.key}")
        for config in configs:
            name = sensor_of[config.key]
            if len(owners[name]) > 1 and config.device.key and name != config.device.key:
                first = sorted(owners[name])[0]
                if config.device.key != first:
                    sensor_of[config.key] = f"{name} ({config.device.key})"
        # Metric names, with two entities of one sensor and name told apart.
        metric_of = {c.key: self._metric_name(c, sensor_of[c.key]) for c in configs}
        taken: dict[tuple[str, str], str] = {}
        for config in configs:
            pair = (sensor_of[config.key], metric_of[config.key])
            if pair in taken and taken[pair] != config.key:
                metric_of[config.key] = f"{pair[1]} ({_object_name(config, pair[0])})"
            else:
                taken[pair] = config.key
        entities: dict[str, Entity] = {}
        by_topic: dict[str, list[Entity]] = {}
        for config in configs:
            entity = self._checked(config, sensor_of[config.key], metric_of[config.key])
            entities[config.key] = entity
            if entity.problem is None and entity.state_topic is not None:
                by_topic.setdefault(entity.state_topic, []).append(entity)
            if entity.problem is not None and self.report and entity.key not in self._reported:
                self._reported.add(entity.key)
                log.warning(
                    "discovery: %s (%s · %s) stores nothing: %s",
                    entity.key,
                    entity.sensor_id,
                    entity.metric,
                    entity.problem,
                )
            elif entity.problem is None:
                self._reported.discard(entity.key)
        self.entities = entities
        self.by_state_topic = by_topic
        self._reported &= set(entities)
        for key in list(self.stats):
            if key not in entities:
                del self.stats[key]
        self.version += 1

    @staticmethod
    def _sensor_name(config: EntityConfig, device_names: dict[str, str]) -> str:
        key = config.device.key
        if key is not None:
            return device_names.get(key) or key
        return config.node_id or config.object_id

    @staticmethod
    def _metric_name(config: EntityConfig, sensor: str) -> str:
        name = config.name
        if name is not None:
            rest = _without_prefix(name, sensor)
            if rest:
                return rest
        elif not config.name_given:
            # No name at all: Home Assistant names it after its device class.
            if config.device_class:
                return device_class_name(config.device_class)
            return _object_name(config, sensor)
        # name null or "", or just the device's name: the device's main feature.
        if config.device_class:
            return device_class_name(config.device_class)
        return "value"

    def _checked(self, config: EntityConfig, sensor: str, metric: str) -> Entity:
        problem = config.problem
        unit = config.unit
        try:
            check_name("sensor_id", sensor, self.limits)
            check_name("metric", metric, self.limits)
        except DecodeError as exc:
            problem = problem or f"unusable name: {exc.reason}"
        if unit is not None:
            try:
                check_name("unit", unit, self.limits)
            except DecodeError:
                unit = None
        if config.component in ON_OFF_COMPONENTS:
            unit = None
        return Entity(config, sensor, metric, unit, problem)

    # --- states ----------------------------------------------------------------------

    def state_topics(self) -> set[str]:
        """Every state topic an entity that works needs."""
        return set(self.by_state_topic)

    def decode_state(self, topic: str, payload: bytes, now_ms: int) -> Decoded:
        """The readings of every entity whose state topic is ``topic``. Never raises for
        the payload: what an entity cannot use is a skipped field (and, for a failing
        template, a counted error)."""
        entities = self.by_state_topic.get(topic, [])
        decoded = Decoded([])
        if not entities:
            return decoded
        text = payload.decode("utf-8", "replace")
        value_json: Any = UNDEFINED
        if any(e.config.template is not None and e.config.template.uses_json for e in entities):
            try:
                value_json = pydantic_core.from_json(payload, allow_inf_nan=True)
            except ValueError:
                value_json = UNDEFINED
        for entity in entities:
            stats = self.stats.get(entity.key)
            if stats is None:
                stats = self.stats[entity.key] = EntityStats()
            stats.messages += 1
            try:
                reading = self._reading(entity, text, value_json, now_ms)
            except TemplateError as exc:
                stats.errors += 1
                stats.last_error = exc.reason
                stats.last_error_ms = now_ms
                if stats.errors == 1:
                    log.warning(
                        "discovery: %s · %s: value_template %r failed on %s: %s"
                        " (counted from now on; tidegate discovery list)",
                        entity.sensor_id,
                        entity.metric,
                        entity.config.template_source,
                        topic,
                        exc.reason,
                    )
                reading = None
            if reading is None:
                stats.skipped += 1
                decoded.skip(f"{entity.sensor_id} · {entity.metric}")
            else:
                stats.readings += 1
                decoded.readings.append(reading)
        return decoded

    def _reading(self, entity: Entity, text: str, value_json: Any, now_ms: int) -> Reading | None:
        config = entity.config
        template = config.template
        result: Any = text if template is None else template.evaluate(text, value_json)
        if config.component in ON_OFF_COMPONENTS:
            rendered = render(result)
            if rendered == config.payload_on:
                number = 1.0
            elif rendered == config.payload_off:
                number = 0.0
            else:
                return None
        else:
            number_or_none = _number(result)
            if number_or_none is None:
                return None
            number = number_or_none
        return Reading(entity.sensor_id, entity.metric, now_ms, number, entity.unit)

    # --- units for hand-written subscriptions ------------------------------------------

    def unit_hints(self, topic: str) -> dict[str, str] | None:
        """{decoded field name: unit} for readings from ``topic`` (Zigbee2MQTT)."""
        return self.z2m_units.get(topic)

    # --- reporting ---------------------------------------------------------------------

    def listing(self) -> Iterable[Entity]:
        """Every entity, sorted by sensor and metric."""
        return sorted(self.entities.values(), key=lambda e: (e.sensor_id, e.metric, e.key))


def _number(result: Any) -> float | None:
    if result is UNDEFINED or result is None:
        return None
    if isinstance(result, bool):
        return 1.0 if result else 0.0
    if isinstance(result, int | float):
        try:
            number = float(result)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    if isinstance(result, str):
        stripped = result.strip()
        if stripped.lower() in NO_VALUE or not NUMBER_RE.fullmatch(stripped):
            return None
        number = float(stripped)
        return number if math.isfinite(number) else None
    return None
