"""Small helpers shared by the codecs: timestamps in a configured unit, safe numbers,
the per-message reading limit, and where sensor_id/metric come from.

Everything here is pure and raises only :class:`~gateway.errors.DecodeError`.
"""

from __future__ import annotations

import math
import re
from typing import Any

from gateway.errors import DecodeError
from gateway.models import Decoded
from gateway.validation import (
    DecodeContext,
    Limits,
    check_name,
    check_ts_ms,
    parse_iso_ms,
    to_ts_ms,
)

TsFormat = str
"""One of ``auto``, ``s``, ``ms``, ``us``, ``ns``, ``iso`` (``SubscriptionConfig.ts_format``)."""

_SCALE_TO_MS = {"s": 1000.0, "ms": 1.0, "us": 0.001, "ns": 0.000001}
_INT_DIV = {"us": 1000, "ns": 1_000_000}

NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
"""A plain decimal number: no ``inf``/``nan``, no ``_`` separators, no hex (unlike ``float()``)."""


MIN_EPOCH_MS = 100_000_000_000
"""Smallest number ``auto`` reads as epoch milliseconds (below it: seconds)."""
MAX_EPOCH_MS = 100_000_000_000_000
"""From here on ``auto`` reads numbers as microseconds."""


class NameCache:
    """Checks sensor ids, metrics and units once per message.

    A batched payload repeats the same few names many times; :func:`check_name`'s
    rules do not depend on the kind of name, so one set of accepted names serves all.
    Call it like ``check_name``: ``names("metric", value)``.
    """

    __slots__ = ("limits", "seen")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.seen: set[str] = set()

    def __call__(self, kind: str, value: object) -> str:
        if value.__class__ is str and value in self.seen:
            return value
        name = check_name(kind, value, self.limits)
        self.seen.add(name)
        return name


def option(ctx: DecodeContext, name: str, default: Any) -> Any:
    """A codec option from the subscription config, or ``default`` without one."""
    opts = ctx.options
    return default if opts is None else getattr(opts, name, default)


def finite(value: object, where: str = "value") -> float:
    """``value`` (bool → 1.0/0.0, int, float) as a finite float, else DecodeError.

    Unlike a bare ``float()`` this never raises OverflowError for huge integers.
    """
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            # Never str(value): above 4300 digits that raises ValueError itself.
            raise DecodeError(f"{where} is too large ({value.bit_length()} bits)") from None
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise DecodeError(f"{where} is not finite ({value})")
    raise DecodeError(f"{where} must be a number, got {type(value).__name__}")


def ts_ms(raw: object, fmt: TsFormat, ctx: DecodeContext) -> int:
    """A timestamp in the configured format → checked epoch ms (None → receive time).

    ``auto`` tells s/ms/µs/ns apart by magnitude and also takes ISO 8601 text;
    ``s``/``ms``/``us``/``ns`` take numbers (or numeric text) in that unit; ``iso``
    takes ISO 8601 text only (naive times are UTC).
    """
    if raw is None:
        return ctx.now_ms
    try:
        if fmt == "auto":
            return to_ts_ms(raw, ctx)
        if fmt == "iso":
            if not isinstance(raw, str):
                raise DecodeError(
                    f"timestamp must be ISO 8601 text (ts_format=iso), got {type(raw).__name__}"
                )
            return check_ts_ms(parse_iso_ms(raw, ctx.tz), ctx)
        scaled = _scaled(raw, fmt)
        try:
            return check_ts_ms(scaled, ctx)
        except DecodeError as exc:
            hint = precision_hint(scaled, fmt, "ts_format", ctx)
            raise DecodeError(exc.reason + hint) from None
    except (OverflowError, ValueError, OSError):
        raise DecodeError("timestamp out of range") from None


_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
_MS_PER_UNIT = {"s": 1000.0, "ms": 1.0, "us": 0.001, "ns": 0.000001}


def precision_hint(ts_ms: int, configured: str, option_name: str, ctx: DecodeContext) -> str:
    """When a timestamp read in unit ``configured`` fell outside the validation window,
    a hint naming the unit that would put it inside (``""`` if none would)::

        " (1714557600 looks like epoch seconds: set influx_precision = \"s\" or \"auto\")"
    """
    scale = _MS_PER_UNIT.get(configured)
    if scale is None:
        return ""
    number = ts_ms / scale  # the number as it was written
    lowest = ctx.limits.min_ts_ms
    highest = ctx.now_ms + ctx.limits.max_future_ms
    for unit, per in _MS_PER_UNIT.items():
        if unit != configured and lowest <= number * per <= highest:
            return (
                f" ({number:.0f} looks like epoch {_UNIT_NAMES[unit]}:"
                f' set {option_name} = "{unit}" or "auto")'
            )
    return ""


def _scaled(raw: object, fmt: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise DecodeError(
            f"timestamp must be a number of {fmt} (ts_format={fmt}), got {type(raw).__name__}"
        )
    number: int | float
    if isinstance(raw, str):
        text = raw.strip()
        if not NUMBER_RE.fullmatch(text):
            raise DecodeError(f"timestamp {raw[:40]!r} is not a number of {fmt} (ts_format={fmt})")
        number = int(text) if text.lstrip("+-").isdigit() else float(text)
    else:
        number = raw
    if isinstance(number, float) and not math.isfinite(number):
        raise DecodeError(f"timestamp is not finite ({number})")
    if isinstance(number, int) and fmt in _INT_DIV:
        return number // _INT_DIV[fmt]  # exact for big ns integers (floats lose digits)
    return round(number * _SCALE_TO_MS[fmt])


def checked(decoded: Decoded, ctx: DecodeContext) -> Decoded:
    """Enforce ``max_readings_per_message``."""
    limit = ctx.limits.max_readings_per_message
    if len(decoded.readings) > limit:
        raise DecodeError(f"{len(decoded.readings)} readings in one message (limit {limit})")
    return decoded


def topic_sensor(ctx: DecodeContext) -> str | None:
    """The sensor_id captured by the topic template, if any."""
    return ctx.topic_fields.get("sensor_id")


def topic_metric(ctx: DecodeContext) -> str | None:
    """The metric captured by the topic template, if any."""
    return ctx.topic_fields.get("metric")


def text_of(payload: bytes, what: str) -> str:
    """Payload bytes as UTF-8 text, or a DecodeError naming the format."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what} payload is not UTF-8 (bad byte at offset {exc.start})") from None
