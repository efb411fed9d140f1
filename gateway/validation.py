"""Rules every reading obeys, shared by all codecs.

All functions here are pure and raise :class:`~gateway.errors.DecodeError` with a
reason a person can act on. They are on the hot path: keep them cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from gateway.errors import DecodeError
from gateway.models import NO_TAGS, Reading, Tags

Y2000_MS = 946_684_800_000
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Limits:
    """Validation limits (``[validation]`` in config.toml)."""

    max_name_length: int = 128
    min_ts_ms: int = Y2000_MS
    max_future_ms: int = DAY_MS
    max_readings_per_message: int = 10_000
    max_tags: int = 32


@dataclass(slots=True)
class DecodeContext:
    """Everything a codec may know about one message besides its payload.

    ``topic_fields`` holds ``sensor_id``/``metric`` taken from the subscription's topic
    template (if any); ``topic_tags`` the template's other named segments. Payload
    fields win over the topic unless ``topic_wins`` is set.
    """

    topic: str
    now_ms: int
    limits: Limits = field(default_factory=Limits)
    topic_fields: dict[str, str] = field(default_factory=dict)
    topic_tags: Tags = NO_TAGS
    topic_wins: bool = False
    options: Any = None
    """The subscription's codec options (:class:`gateway.config.CodecOptions`) or None."""
    tz: tzinfo | None = None
    """The zone of timestamps written without an offset (the subscription's
    ``timezone``); None means UTC."""


def check_name(kind: str, value: object, limits: Limits) -> str:
    """Return ``value`` if it is a usable sensor id / metric / unit, else raise."""
    if not isinstance(value, str):
        raise DecodeError(f"{kind} must be a string, got {type(value).__name__}")
    if not value:
        raise DecodeError(f"{kind} is empty")
    if len(value) > limits.max_name_length:
        raise DecodeError(f"{kind} longer than {limits.max_name_length} characters")
    if not value.isprintable():
        raise DecodeError(f"{kind} {value[:40]!r} contains control characters")
    return value


def check_value(value: object, where: str = "value") -> float:
    """Return ``value`` as a finite float (bool → 1.0/0.0), else raise."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range, e.g. 10**400
            raise DecodeError(f"{where} is out of range") from None
        if math.isfinite(number):
            return number
        raise DecodeError(f"{where} is not finite ({value})")
    raise DecodeError(f"{where} must be a number, got {type(value).__name__}")


def epoch_to_ms(number: float) -> int:
    """Epoch number in s, ms, µs or ns (told apart by magnitude) → integer milliseconds.

    Seconds below 1e11 cover years up to 5138; ms below 1e14, µs below 1e17, ns above.
    """
    magnitude = abs(number)
    if magnitude < 1e11:
        return round(number * 1000)
    if magnitude < 1e14:
        return round(number)
    if magnitude < 1e17:
        return round(number / 1000)
    return round(number / 1_000_000)


def parse_iso_ms(text: str, tz: tzinfo | None = None) -> int:
    """ISO 8601 text → epoch ms. Times without an offset are in ``tz`` (UTC if None);
    in a zone's repeated autumn hour the first (summer-time) occurrence is taken."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise DecodeError(f"timestamp {text[:40]!r} is not ISO 8601 or an epoch number") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC if tz is None else tz)
    return round(parsed.timestamp() * 1000)


def to_ts_ms(raw: object, ctx: DecodeContext) -> int:
    """Any accepted timestamp form (None = receive time) → checked epoch ms."""
    if raw is None:
        return ctx.now_ms
    if isinstance(raw, bool):
        raise DecodeError("timestamp must be a number or ISO 8601 text, got bool")
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise DecodeError(f"timestamp is not finite ({raw})")
        ts_ms = epoch_to_ms(raw)
    elif isinstance(raw, str):
        try:
            ts_ms = epoch_to_ms(float(raw))
        except ValueError:
            ts_ms = parse_iso_ms(raw, ctx.tz)
        except OverflowError:
            raise DecodeError("timestamp out of range") from None
    else:
        raise DecodeError(f"timestamp must be a number or ISO 8601 text, got {type(raw).__name__}")
    return check_ts_ms(ts_ms, ctx)


def check_ts_ms(ts_ms: int, ctx: DecodeContext) -> int:
    """Reject timestamps before ``min_ts_ms`` or more than ``max_future_ms`` ahead."""
    limits = ctx.limits
    if ts_ms < limits.min_ts_ms:
        raise DecodeError(f"timestamp {format_ms(ts_ms)} is before {format_ms(limits.min_ts_ms)}")
    if ts_ms > ctx.now_ms + limits.max_future_ms:
        raise DecodeError(f"timestamp {format_ms(ts_ms)} is too far in the future")
    return ts_ms


def format_ms(ts_ms: int) -> str:
    """Epoch ms → ``2024-01-02T03:04:05.678Z`` (out-of-range values print as numbers)."""
    try:
        moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return str(ts_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def check_tags(raw: object, ctx: DecodeContext) -> Tags:
    """A mapping of tag names to scalar values → canonical sorted tuple of str pairs."""
    if raw is None:
        return NO_TAGS
    if not isinstance(raw, dict):
        raise DecodeError(f"tags must be an object, got {type(raw).__name__}")
    if len(raw) > ctx.limits.max_tags:
        raise DecodeError(f"more than {ctx.limits.max_tags} tags")
    pairs: list[tuple[str, str]] = []
    for key, value in raw.items():
        if isinstance(value, dict | list) or value is None:
            raise DecodeError(f"tag {key!r} must be a scalar")
        pairs.append(
            (
                check_name("tag name", key, ctx.limits),
                check_name("tag value", str(value), ctx.limits),
            )
        )
    pairs.sort()
    return tuple(pairs)


def merge_tags(first: Tags, second: Tags) -> Tags:
    """Union of two tag sets; ``second`` wins on equal keys."""
    if not first:
        return second
    if not second:
        return first
    merged = dict(first)
    merged.update(second)
    return tuple(sorted(merged.items()))


def make_reading(
    sensor_id: object,
    metric: object,
    ts_ms: int,
    value: object,
    unit: object,
    tags: Tags,
    ctx: DecodeContext,
) -> Reading:
    """Build one checked :class:`Reading`."""
    limits = ctx.limits
    return Reading(
        check_name("sensor_id", sensor_id, limits),
        check_name("metric", metric, limits),
        ts_ms,
        check_value(value),
        None if unit is None or unit == "" else check_name("unit", unit, limits),
        tags,
    )


def check_name_map(names: Mapping[str, str], value_kind: str, limits: Limits) -> None:
    """Raise ``ValueError`` naming the first unusable key or value of a ``units``
    (``value_kind="unit"``) or ``rename`` (``"metric"``) map."""
    for metric, value in names.items():
        for kind, text in (("metric", metric), (value_kind, value)):
            try:
                check_name(kind, text, limits)
            except DecodeError as exc:
                raise ValueError(f"{metric!r}: {exc.reason}") from None
