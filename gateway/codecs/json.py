"""JSON payloads.

Accepted shapes (field names configurable per subscription):

* one reading: ``{"sensor_id": "s1", "metric": "temp", "value": 21.5, "ts": …, "unit": "C"}``
* an array of such objects;
* a multi-metric object: ``{"temperature": 21.5, "humidity": 40.2, "ts": …}`` — every
  numeric (or boolean) leaf is a metric, nested objects are flattened with ``.``
  (Tasmota's ``{"AM2301": {"Temperature": 21.3}}`` → ``AM2301.Temperature``), and
  non-numeric leaves (``"state": "ON"``, nulls, arrays) are skipped and counted, not
  errors. A ``{metric}`` from the topic template becomes a prefix
  (``…/climate`` + ``{"temperature": 21}`` → ``climate.temperature``);
* a bare JSON number or boolean (ESPHome state topics): one reading, sensor_id and
  metric from the topic template (metric ``value`` if the template has none); a bare
  string or null is a skipped leaf.

Booleans become 1/0. ``sensor_id`` (and ``metric``) missing from the payload come from
the topic template. Payload fields win over the topic unless the subscription sets
``topic_wins``. The timestamp field is read as ``ts_format`` says (auto, s, ms, us, ns,
iso; see :func:`gateway.codecs._common.ts_ms`).

The single/array shapes are validated by a pydantic ``TypeAdapter`` straight from the
bytes (one pass in Rust); the multi-metric shape is parsed by pydantic-core and walked.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

import pydantic_core
from pydantic import Field, StrictBool, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from gateway.codecs import register
from gateway.codecs._common import (
    MAX_EPOCH_MS,
    MIN_EPOCH_MS,
    NameCache,
    checked,
    finite,
    option,
    ts_ms,
)
from gateway.errors import DecodeError
from gateway.models import Decoded, Reading
from gateway.validation import (
    DecodeContext,
    check_tags,
    make_reading,
    merge_tags,
)

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Scalar = str | int | float | bool


class ReadingObject(TypedDict):
    """One reading as JSON, with the default field names."""

    sensor_id: NotRequired[str]
    metric: NotRequired[str]
    value: StrictBool | FiniteFloat
    ts: NotRequired[int | float | str | None]
    unit: NotRequired[str | None]
    tags: NotRequired[dict[str, Scalar]]


_ONE = TypeAdapter(ReadingObject)
_MANY = TypeAdapter(list[ReadingObject])
_DEFAULT_FIELDS = ("sensor_id", "metric", "value", "ts", "unit", "tags")


def _reason(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    parts = [str(part) for part in first["loc"]]
    if parts and parts[-1] in ("float", "bool"):
        # A union member failed: say what the field accepts, not which member failed.
        loc = ".".join(parts[:-1])
        given = first.get("input")
        message = f"must be a finite number or boolean, got {given!r:.40}"
        errors = [e for e in errors if [str(p) for p in e["loc"][:-1]] != parts[:-1]]
    else:
        loc = ".".join(parts)
        message = first["msg"]
        errors = errors[1:]
    more = len(errors)
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{loc or 'payload'}: {message}{suffix}"


def _fields(ctx: DecodeContext) -> tuple[str, str, str, str, str, str]:
    opts = ctx.options
    if opts is None:
        return _DEFAULT_FIELDS
    return (
        opts.sensor_id_field,
        opts.metric_field,
        opts.value_field,
        opts.ts_field,
        opts.unit_field,
        opts.tags_field,
    )


def _pick(payload_value: object, topic_value: str | None, topic_wins: bool) -> object:
    if topic_wins and topic_value is not None:
        return topic_value
    return payload_value if payload_value is not None else topic_value


def _from_objects(items: list[Any], ctx: DecodeContext, names: tuple[str, ...]) -> list[Reading]:
    """Readings from objects already validated by ``ReadingObject`` (so ``value`` is a
    finite float or a bool, names are strings).

    This is the hot loop of batched JSON: names are checked once per message
    (:class:`NameCache`), and the common timestamp (epoch ms inside the validation
    window) skips the general parser.
    """
    sid_key, metric_key, value_key, ts_key, unit_key, tags_key = names
    topic_sid = ctx.topic_fields.get("sensor_id")
    topic_metric = ctx.topic_fields.get("metric")
    topic_wins = ctx.topic_wins
    topic_tags = ctx.topic_tags
    ts_format = option(ctx, "ts_format", "auto")
    fast_ts = ts_format in ("auto", "ms")
    lowest = max(ctx.limits.min_ts_ms, MIN_EPOCH_MS)
    highest = min(ctx.now_ms + ctx.limits.max_future_ms, MAX_EPOCH_MS - 1)
    checked = NameCache(ctx.limits)
    readings: list[Reading] = []
    append = readings.append
    for index, item in enumerate(items):
        try:
            sensor_id = _pick(item.get(sid_key), topic_sid, topic_wins)
            if sensor_id is None:
                raise DecodeError("no sensor_id in payload or topic")
            metric = _pick(item.get(metric_key), topic_metric, topic_wins)
            if metric is None:
                raise DecodeError("no metric in payload or topic")
            raw_tags = item.get(tags_key)
            tags = (
                topic_tags
                if raw_tags is None
                else merge_tags(topic_tags, check_tags(raw_tags, ctx))
            )
            raw_ts = item.get(ts_key)
            if fast_ts and raw_ts.__class__ is int and lowest <= raw_ts <= highest:
                when = raw_ts  # already epoch ms in range: the common case
            else:
                when = ts_ms(raw_ts, ts_format, ctx)
            unit = item.get(unit_key)
            append(
                Reading(
                    checked("sensor_id", sensor_id),
                    checked("metric", metric),
                    when,
                    float(item[value_key]),  # bool → 1.0/0.0; finiteness checked by pydantic
                    None if unit is None or unit == "" else checked("unit", unit),
                    tags,
                )
            )
        except DecodeError as exc:
            if len(items) == 1:
                raise
            raise DecodeError(f"[{index}]: {exc.reason}") from None
    return readings


def _flatten(node: dict[str, Any], prefix: str, sep: str, out: list[tuple[str, str, Any]]) -> None:
    """Leaves of ``node`` as ``(flattened name, own key, value)``."""
    for key, value in node.items():
        name = f"{prefix}{sep}{key}" if prefix else key
        if isinstance(value, dict):
            _flatten(value, name, sep, out)
        else:
            out.append((name, key, value))


def path_get(data: dict[str, Any], path: str) -> tuple[bool, Any]:
    """``(found, value)`` of field ``path`` in ``data``: the key itself if present (keys
    may contain dots: Tasmota's ``PM2.5``), else a dotted path into nested objects
    (``params.ts``)."""
    if path in data:
        return True, data[path]
    if "." not in path:
        return False, None
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _without(data: dict[str, Any], path: str) -> dict[str, Any]:
    """``data`` minus the field at ``path`` (copying only the objects on the path), so a
    nested timestamp or sensor id is not also stored as a metric."""
    if path in data:
        return {k: v for k, v in data.items() if k != path}
    head, _, rest = path.partition(".")
    child = data.get(head)
    if not rest or not isinstance(child, dict):
        return data
    return {**data, head: _without(child, rest)}


TASMOTA_UNITS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "TempUnit": (("Temperature", "DewPoint"), {"C": "°C", "F": "°F"}),
    "PressureUnit": (("Pressure",), {}),
    "SpeedUnit": (("Speed",), {}),
}
"""Tasmota's unit fields (``"TempUnit":"C"`` next to the sensors), the leaf keys each
applies to (any key containing one of the words, as Tasmota itself decides when to add
the field), and spellings to translate."""


def _unit_rules(data: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    rules: list[tuple[tuple[str, ...], str]] = []
    for field_name, (words, spellings) in TASMOTA_UNITS.items():
        unit = data.get(field_name)
        if isinstance(unit, str) and unit.strip():
            rules.append((words, spellings.get(unit, unit)))
    return rules


def _unit_for(key: str, rules: list[tuple[tuple[str, ...], str]]) -> str | None:
    for words, unit in rules:
        if any(word in key for word in words):
            return unit
    return None


def _from_multi_metric(data: dict[str, Any], ctx: DecodeContext, names: tuple[str, ...]) -> Decoded:
    sid_key, metric_key, _value_key, ts_key, unit_key, tags_key = names
    found, payload_sid = path_get(data, sid_key)
    sensor_id = _pick(
        payload_sid if found else None, ctx.topic_fields.get("sensor_id"), ctx.topic_wins
    )
    if sensor_id is None:
        raise DecodeError("no sensor_id in payload or topic")
    found, raw_ts = path_get(data, ts_key)
    when = ts_ms(raw_ts if found else None, option(ctx, "ts_format", "auto"), ctx)
    tags = merge_tags(ctx.topic_tags, check_tags(data.get(tags_key), ctx))
    reserved = {sid_key, metric_key, ts_key, unit_key, tags_key}
    rules = _unit_rules(data)
    if rules:
        reserved.update(TASMOTA_UNITS)  # used as units, not skipped values
    body = {k: v for k, v in data.items() if k not in reserved}
    for path in (ts_key, sid_key):
        if path not in data and "." in path:
            body = _without(body, path)
    sep = option(ctx, "flatten_separator", ".")
    # A {metric} captured from the topic names the group these leaves belong to.
    prefix = ctx.topic_fields.get("metric") or ""
    leaves: list[tuple[str, str, Any]] = []
    _flatten(body, prefix, sep, leaves)
    decoded = Decoded([])
    append = decoded.readings.append
    for name, key, value in leaves:
        if isinstance(value, bool | int | float) and value == value:  # NaN != NaN
            number = finite(value, f"{name}")
            unit = _unit_for(key, rules) if rules else None
            append(make_reading(sensor_id, name, when, number, unit, tags, ctx))
        else:
            decoded.skip(name)  # strings, nulls, NaN, arrays: not numbers, not errors
    return decoded


def _from_scalar(data: object, ctx: DecodeContext) -> Decoded:
    """A bare JSON number/boolean: one reading named entirely by the topic."""
    metric = ctx.topic_fields.get("metric") or "value"
    if not isinstance(data, bool | int | float) or data != data:
        decoded = Decoded([])  # a bare string, null or NaN: a non-numeric leaf
        decoded.skip(metric)
        return decoded
    sensor_id = ctx.topic_fields.get("sensor_id")
    if sensor_id is None:
        raise DecodeError("a bare JSON value needs {sensor_id} in the topic_template")
    value = finite(data)
    return Decoded([make_reading(sensor_id, metric, ctx.now_ms, value, None, ctx.topic_tags, ctx)])


def decode(payload: bytes, ctx: DecodeContext) -> Decoded:
    """Decode a JSON payload into readings (see the module docstring for shapes).

    Raises only :class:`DecodeError`.
    """
    try:
        return _decode(payload, ctx)
    except (OverflowError, ValueError, RecursionError) as exc:
        # Numbers beyond float/str limits surface as these from the stdlib; a
        # sensor's payload must never crash the decoder.
        raise DecodeError(f"unusable JSON value: {exc}"[:200]) from None


def _decode(payload: bytes, ctx: DecodeContext) -> Decoded:
    names = _fields(ctx)
    start = payload.lstrip()[:1]
    if start == b"[" and names == _DEFAULT_FIELDS:
        try:
            items: list[Any] = _MANY.validate_json(payload)
        except ValidationError as exc:
            raise DecodeError(_reason(exc)) from None
        return checked(Decoded(_from_objects(items, ctx, names)), ctx)
    try:
        # NaN/Infinity are parsed so that a NaN leaf can be skipped like null (ESPHome);
        # reading objects still refuse them (FiniteFloat) and Infinity is an error.
        data = pydantic_core.from_json(payload, allow_inf_nan=True)
    except ValueError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    if isinstance(data, list):
        if not all(isinstance(item, dict) for item in data):
            raise DecodeError("array items must be reading objects")
        try:
            renamed = [_canonical(item, names) for item in data]
            items = _MANY.validate_python(renamed)
        except ValidationError as exc:
            raise DecodeError(_reason(exc)) from None
        return checked(Decoded(_from_objects(items, ctx, _DEFAULT_FIELDS)), ctx)
    if isinstance(data, dict):
        if names[2] in data:
            try:
                item = _ONE.validate_python(_canonical(data, names))
            except ValidationError as exc:
                raise DecodeError(_reason(exc)) from None
            return Decoded(_from_objects([item], ctx, _DEFAULT_FIELDS))
        return checked(_from_multi_metric(data, ctx, names), ctx)
    return _from_scalar(data, ctx)


def _canonical(item: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    if names == _DEFAULT_FIELDS:
        return item
    out = {k: v for k, v in item.items() if k not in names}
    for canonical, custom in zip(_DEFAULT_FIELDS, names, strict=True):
        if custom in item:
            out[canonical] = item[custom]
    return out


register("json", decode)
