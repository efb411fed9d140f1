"""Home Assistant MQTT discovery configs → entity descriptions.

A config is a retained message on ``<prefix>/<component>/[<node_id>/]<object_id>/config``
(``docs/decisions/0130-home-assistant-discovery.md``):

* keys may be abbreviated (``stat_t``, ``unit_of_meas``, ``val_tpl``, ``dev`` → ``ids``,
  ``name``, …: Home Assistant's own abbreviation lists, the subset that matters here);
* ``~`` is a base topic: a topic option starting (or ending) with ``~`` has it replaced;
* ``component`` ``device`` is a device-level config (Home Assistant 2024.12): shared
  options at the root (``dev``, ``o``, ``state_topic``, ``qos``, ``encoding``,
  ``availability``) and one entity per ``cmps`` entry, whose ``p`` (``platform``) names
  its component; an entry with only ``p`` removes that entity;
* an empty payload removes what that config topic announced.

:func:`parse` only describes: names are resolved across configs by
:mod:`gateway.discovery.registry` (a Tasmota sensor's config carries only its device's
identifiers; another config of the same device carries the device's name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydantic_core

from gateway.discovery.template import Template, compile_template
from gateway.errors import DiscoveryError

STORED_COMPONENTS = frozenset({"sensor", "binary_sensor", "number", "switch"})
"""Components whose state is a number or an on/off that can be stored as 1/0."""

DEFAULT_COMPONENTS = ("sensor", "binary_sensor")

ABBREVIATIONS: dict[str, str] = {
    "avty": "availability",
    "avty_t": "availability_topic",
    "cmd_t": "command_topic",
    "cmps": "components",
    "def_ent_id": "default_entity_id",
    "dev": "device",
    "dev_cla": "device_class",
    "e": "encoding",
    "en": "enabled_by_default",
    "ent_cat": "entity_category",
    "exp_aft": "expire_after",
    "frc_upd": "force_update",
    "json_attr_t": "json_attributes_topic",
    "json_attr_tpl": "json_attributes_template",
    "o": "origin",
    "obj_id": "object_id",
    "p": "platform",
    "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available",
    "pl_off": "payload_off",
    "pl_on": "payload_on",
    "stat_cla": "state_class",
    "stat_off": "state_off",
    "stat_on": "state_on",
    "stat_t": "state_topic",
    "stat_tpl": "state_template",
    "stat_val_tpl": "state_value_template",
    "sug_dsp_prc": "suggested_display_precision",
    "t": "topic",
    "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement",
    "val_tpl": "value_template",
}
"""Home Assistant's abbreviations (homeassistant/components/mqtt/abbreviations.py) for
every option read here; others are expanded by rule only where it matters (topics)."""

DEVICE_ABBREVIATIONS: dict[str, str] = {
    "cns": "connections",
    "cu": "configuration_url",
    "hw": "hw_version",
    "ids": "identifiers",
    "mdl": "model",
    "mdl_id": "model_id",
    "mf": "manufacturer",
    "sa": "suggested_area",
    "sn": "serial_number",
    "sw": "sw_version",
}

SHARED_DEVICE_OPTIONS = ("state_topic", "qos", "encoding", "availability", "device", "origin")
"""Root options of a device-level config that its components inherit."""

BASE = "~"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What a config says about its device (``device`` / ``dev``)."""

    key: str | None
    """The first identifier (or connection): one device, whatever its configs say."""
    name: str | None


@dataclass(frozen=True, slots=True)
class EntityConfig:
    """One entity as its discovery config describes it (names not yet resolved)."""

    key: str
    """Where it came from: the config topic, plus ``#<component id>`` for ``cmps``."""
    discovery_topic: str
    component: str
    node_id: str | None
    object_id: str
    state_topic: str | None
    template: Template | None
    template_source: str | None
    unit: str | None
    device_class: str | None
    name: str | None
    name_given: bool
    """False when the config has no ``name`` key at all (Home Assistant then names the
    entity after its device class); True with ``name`` None or ``""``: the device's main
    feature."""
    entity_object_id: str | None
    unique_id: str | None
    device: DeviceInfo
    payload_on: str
    payload_off: str
    qos: int
    problem: str | None = None
    """Why this entity stores nothing (unsupported template, no state topic, a
    component that is not stored); None when it works."""


@dataclass(frozen=True, slots=True)
class ConfigTopic:
    """A parsed discovery topic."""

    component: str
    node_id: str | None
    object_id: str


def parse_topic(topic: str, prefix: str) -> ConfigTopic | None:
    """``<prefix>/<component>/[<node_id>/]<object_id>/config`` → its parts, or None."""
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head) or not topic.endswith("/config"):
        return None
    parts = topic[len(head) : -len("/config")].split("/")
    if len(parts) == 2:
        component, object_id = parts
        node_id = None
    elif len(parts) == 3:
        component, node_id, object_id = parts
    else:
        return None
    if not component or not object_id or node_id == "":
        return None
    return ConfigTopic(component, node_id, object_id)


def expand(config: Mapping[str, Any]) -> dict[str, Any]:
    """Abbreviated keys → full keys, including inside ``device`` and ``availability``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        full = ABBREVIATIONS.get(key, key)
        if full == "device" and isinstance(value, Mapping):
            value = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in value.items()}
        elif full == "availability" and isinstance(value, list):
            value = [
                {ABBREVIATIONS.get(k, k): v for k, v in item.items()}
                if isinstance(item, Mapping)
                else item
                for item in value
            ]
        elif full == "components" and isinstance(value, Mapping):
            value = {cid: expand(c) if isinstance(c, Mapping) else c for cid, c in value.items()}
        out[full] = value
    return out


def replace_base(config: dict[str, Any], base: str | None = None) -> dict[str, Any]:
    """Expand ``~`` in every topic option (Home Assistant: a value of a key ending in
    ``topic`` that starts with ``~`` gets the base in front, one that ends with ``~``
    gets it at the end)."""
    base = config.pop(BASE, base)
    if not isinstance(base, str):
        return config

    def fix(key: str, value: Any) -> Any:
        if isinstance(value, str) and value and key.endswith("topic"):
            if value[0] == BASE:
                value = base + value[1:]
            if value and value[-1] == BASE:
                value = value[:-1] + base
        return value

    for key, value in list(config.items()):
        config[key] = fix(key, value)
    availability = config.get("availability")
    if isinstance(availability, list):
        config["availability"] = [
            {k: fix(k, v) for k, v in item.items()} if isinstance(item, dict) else item
            for item in availability
        ]
    return config


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return None


def _device(raw: Any) -> DeviceInfo:
    if not isinstance(raw, Mapping):
        return DeviceInfo(None, None)
    ids = raw.get("identifiers")
    key: str | None = None
    if isinstance(ids, str) and ids:
        key = ids
    elif isinstance(ids, list) and ids and _text(ids[0]):
        key = _text(ids[0])
    if key is None:
        connections = raw.get("connections")
        if isinstance(connections, list) and connections and isinstance(connections[0], list):
            key = ":".join(str(part) for part in connections[0])
    name = raw.get("name")
    return DeviceInfo(key, name.strip() if isinstance(name, str) and name.strip() else None)


def _unit(value: Any) -> str | None:
    text = _text(value)
    if text is None or not text.strip():
        return None  # Tasmota sends " " for "no unit"
    return text.strip()


def _entity(
    key: str,
    discovery_topic: str,
    component: str,
    where: ConfigTopic,
    config: Mapping[str, Any],
    components: frozenset[str],
) -> EntityConfig:
    problem: str | None = None
    state_topic = config.get("state_topic")
    if not isinstance(state_topic, str) or not state_topic:
        state_topic = None
        problem = "no state_topic"
    elif "+" in state_topic or "#" in state_topic:
        problem = f"state_topic {state_topic!r} contains a wildcard"
        state_topic = None
    source = config.get("value_template")
    if component == "switch" and "state_value_template" in config:
        source = config.get("state_value_template")
    template: Template | None = None
    if source is not None and not isinstance(source, str):
        problem = problem or "value_template is not text"
        source = None
    elif source:
        try:
            template = compile_template(source)
        except DiscoveryError as exc:
            problem = problem or f"value_template not supported: {exc.reason}"
    if component not in components:
        problem = f"component {component!r} is not stored" + (
            "" if component not in STORED_COMPONENTS else " (see [discovery] components)"
        )
    if config.get("encoding") == "":
        problem = problem or "binary payload (encoding = '') is not stored"
    name_given = "name" in config
    name = config.get("name")
    on_default, off_default = "ON", "OFF"
    payload_on = _text(config.get("payload_on", on_default)) or on_default
    payload_off = _text(config.get("payload_off", off_default)) or off_default
    if component == "switch":
        payload_on = _text(config.get("state_on")) or payload_on
        payload_off = _text(config.get("state_off")) or payload_off
    qos = config.get("qos", 0)
    object_id = config.get("default_entity_id") or config.get("object_id")
    if isinstance(object_id, str) and "." in object_id:
        object_id = object_id.split(".", 1)[1]  # default_entity_id is "sensor.kitchen_t"
    return EntityConfig(
        key=key,
        discovery_topic=discovery_topic,
        component=component,
        node_id=where.node_id,
        object_id=where.object_id,
        state_topic=state_topic,
        template=template,
        template_source=source or None,
        unit=_unit(config.get("unit_of_measurement")),
        device_class=_text(config.get("device_class")),
        name=name.strip() if isinstance(name, str) and name.strip() else None,
        name_given=name_given,
        entity_object_id=object_id if isinstance(object_id, str) and object_id else None,
        unique_id=_text(config.get("unique_id")),
        device=_device(config.get("device")),
        payload_on=payload_on,
        payload_off=payload_off,
        qos=qos if qos in (0, 1, 2) else 0,
        problem=problem,
    )


def parse(
    topic: str,
    payload: bytes,
    prefix: str,
    components: frozenset[str] = frozenset(DEFAULT_COMPONENTS),
) -> list[EntityConfig] | None:
    """The entities a discovery message announces.

    Returns None for a removal (empty payload: every entity of ``topic`` goes), else the
    complete list for ``topic`` (entities of the topic not in it are gone). Raises
    :class:`~gateway.errors.DiscoveryError` for a message that cannot be read at all.
    """
    where = parse_topic(topic, prefix)
    if where is None:
        raise DiscoveryError(
            f"not a discovery topic: expected {prefix}/<component>/[<node_id>/]<object_id>/config"
        )
    if not payload.strip():
        return None
    try:
        data = pydantic_core.from_json(payload)
    except ValueError as exc:
        raise DiscoveryError(f"discovery config is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DiscoveryError("discovery config must be a JSON object")
    expanded = expand(data)
    base = expanded.get(BASE)
    config = replace_base(expanded)
    if where.component != "device":
        return [_entity(topic, topic, where.component, where, config, components)]
    cmps = config.get("components")
    if not isinstance(cmps, dict) or not cmps:
        raise DiscoveryError("device discovery config has no components (cmps)")
    shared = {k: config[k] for k in SHARED_DEVICE_OPTIONS if k in config}
    entities: list[EntityConfig] = []
    for component_id, raw in cmps.items():
        if not isinstance(raw, dict):
            raise DiscoveryError(f"component {component_id!r} must be an object")
        platform = raw.get("platform")
        if not isinstance(platform, str) or not platform:
            raise DiscoveryError(f"component {component_id!r} has no platform (p)")
        if set(raw) <= {"platform"}:
            continue  # only the platform: Home Assistant's way to remove one component
        merged = replace_base({**shared, **raw}, base if isinstance(base, str) else None)
        entities.append(
            _entity(
                f"{topic}#{component_id}",
                topic,
                platform,
                ConfigTopic(platform, where.node_id, str(component_id)),
                merged,
                components,
            )
        )
    return entities
