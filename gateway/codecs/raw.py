"""Raw payloads: the whole payload is one number (``21.5``, ``-3``, ``1e3``) or a
boolean (``true``/``false``, any case → 1/0), surrounding whitespace ignored.

The topic names the reading: ``sensor_id`` from the template's ``{sensor_id}``
(required), ``metric`` from ``{metric}`` (``value`` if the template has none), other
captures become tags. The timestamp is the receive time. This is how ESPHome, Tasmota's
``stat/…`` topics and many hand-written sensors publish (``home/kitchen/temperature`` →
``21.5``).

A sensor that has no value publishes ``nan`` (ESPHome, any case, also ``-nan``),
``None`` (ESPHome with ``publish_nan_as_none``) or ``null``: like a JSON ``null`` that
is a skipped field, counted, not an error.
"""

from __future__ import annotations

from gateway.codecs import register
from gateway.codecs._common import NUMBER_RE
from gateway.errors import DecodeError
from gateway.models import Decoded
from gateway.validation import DecodeContext, make_reading

_MAX_TEXT = 64
"""Longer payloads cannot be a plain number (``float`` itself is 24 characters at most)."""

NO_VALUE = frozenset({b"nan", b"-nan", b"+nan", b"none", b"null"})
"""Payloads (lower-cased) that say "no value right now" rather than being malformed."""


def is_no_value(payload: bytes) -> bool:
    """Whether ``payload`` is one of :data:`NO_VALUE` (surrounding whitespace ignored)."""
    text = payload.strip()
    return len(text) <= 5 and text.lower() in NO_VALUE


def parse_scalar(payload: bytes) -> float | None:
    """The number a raw payload holds, or None if it is not a bare number/boolean."""
    text = payload.strip()
    if not text or len(text) > _MAX_TEXT:
        return None
    lowered = text.lower()
    if lowered == b"true":
        return 1.0
    if lowered == b"false":
        return 0.0
    try:
        decoded = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not NUMBER_RE.fullmatch(decoded):
        return None
    value = float(decoded)
    if value in (float("inf"), float("-inf")):
        return None
    return value


def decode(payload: bytes, ctx: DecodeContext) -> Decoded:
    """Decode a bare number/boolean payload; raises only DecodeError."""
    value = parse_scalar(payload)
    if value is None:
        if is_no_value(payload):
            decoded = Decoded([])
            decoded.skip(ctx.topic_fields.get("metric") or "value")
            return decoded
        shown = payload.strip()[:40].decode("utf-8", "replace")
        if not payload.strip():
            raise DecodeError("raw payload is empty")
        raise DecodeError(f"raw payload {shown!r} is not a number or true/false")
    sensor_id = ctx.topic_fields.get("sensor_id")
    if sensor_id is None:
        raise DecodeError("raw payloads need {sensor_id} in the subscription's topic_template")
    metric = ctx.topic_fields.get("metric") or "value"
    return Decoded([make_reading(sensor_id, metric, ctx.now_ms, value, None, ctx.topic_tags, ctx)])


register("raw", decode)
