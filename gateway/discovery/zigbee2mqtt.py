"""Zigbee2MQTT's device list (``<base>/bridge/devices``, retained) → units per state field.

Each device in the list has a ``definition`` whose ``exposes`` describe what its state
message (``<base>/<friendly_name>``) carries: a ``numeric`` expose names the JSON
``property`` and its ``unit``; ``composite`` exposes nest their ``features`` under their
own property (``color`` → ``color.x``); specific exposes (``light``, ``climate``, …) group
features at the top level (zigbee2mqtt.io docs/guide/usage/exposes.md).

The result gives units to the readings a hand-written ``zigbee2mqtt/+`` subscription
decodes, keyed by the flattened field name the JSON codec produces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic_core

from gateway.errors import DiscoveryError

MAX_DEPTH = 8


def devices_topic(base: str) -> str:
    """Where Zigbee2MQTT publishes its device list."""
    return f"{base.rstrip('/')}/bridge/devices"


def _walk(expose: Any, prefix: str, out: dict[str, str], depth: int) -> None:
    if not isinstance(expose, Mapping) or depth > MAX_DEPTH:
        return
    features = expose.get("features")
    prop = expose.get("property")
    if isinstance(features, list):
        nested = prefix
        if expose.get("type") == "composite" and isinstance(prop, str) and prop:
            nested = f"{prefix}{prop}."
        for feature in features:
            _walk(feature, nested, out, depth + 1)
        return
    unit = expose.get("unit")
    if (
        expose.get("type") == "numeric"
        and isinstance(prop, str)
        and prop
        and isinstance(unit, str)
        and unit.strip()
    ):
        out[prefix + prop] = unit.strip()


def parse_devices(payload: bytes, base: str) -> dict[str, dict[str, str]]:
    """State topic → {field path: unit} for every device with numeric exposes that
    have units. Raises :class:`~gateway.errors.DiscoveryError` for a payload that is not
    a JSON array."""
    try:
        data = pydantic_core.from_json(payload)
    except ValueError as exc:
        raise DiscoveryError(f"Zigbee2MQTT device list is not JSON: {exc}") from None
    if not isinstance(data, list):
        raise DiscoveryError("Zigbee2MQTT device list must be a JSON array")
    head = base.rstrip("/")
    out: dict[str, dict[str, str]] = {}
    for device in data:
        if not isinstance(device, Mapping):
            continue
        name = device.get("friendly_name")
        definition = device.get("definition")
        if not isinstance(name, str) or not name or not isinstance(definition, Mapping):
            continue
        exposes = definition.get("exposes")
        units: dict[str, str] = {}
        if isinstance(exposes, list):
            for expose in exposes:
                _walk(expose, "", units, 0)
        if units:
            out[f"{head}/{name}"] = units
    return out
