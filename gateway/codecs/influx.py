"""InfluxDB line protocol: ``measurement[,tag=v…] field=value[,field=value…] [timestamp]``.

Several lines per payload; blank lines and ``#`` comment lines are ignored. Escapes
follow the InfluxDB reference: ``\\,`` and ``\\ `` in the measurement; ``\\,`` ``\\=``
``\\ `` in tag keys, tag values and field keys; ``\\"`` in string field values; and
everywhere ``\\\\`` is one backslash. A backslash before any other character is a
literal backslash.

Field values: float (``1``, ``-1.5e3``), integer ``1i`` (int64), unsigned ``1u`` (uint64),
boolean (``t T true True TRUE f F false False FALSE`` → 1/0); string fields
(``"…"``) are skipped and counted.

Mapping (``docs/decisions/0042-influx-mapping.md``):

* sensor_id = the tag named by ``sensor_id_field`` (default ``sensor_id``), else the
  ``host`` tag, else the topic template's ``{sensor_id}`` (with ``topic_wins`` the
  topic comes first), else **the measurement**. The tag used is not repeated as a tag;
* metric = ``<measurement>.<field key>``, or just ``<field key>`` when the measurement
  already names the sensor (``weather temp=21.5`` → sensor ``weather``, metric ``temp``);
* unit = the tag named by ``unit_field`` (default ``unit``), if present;
* every other tag is kept as a tag (topic template tags merged in, line tags win);
* timestamp in ``influx_precision`` (``ns`` by default like InfluxDB; ``auto`` tells
  s/ms/µs/ns apart by magnitude); missing → receive time.

Any malformed line rejects the whole message, so a payload is stored entirely or
dead-lettered entirely.
"""

from __future__ import annotations

import re

from gateway.codecs import register
from gateway.codecs._common import NameCache, checked, option, precision_hint, text_of
from gateway.errors import DecodeError
from gateway.models import Decoded, Reading, Tags
from gateway.validation import (
    DecodeContext,
    check_ts_ms,
    epoch_to_ms,
    merge_tags,
)

_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INT_RE = re.compile(r"[+-]?\d+", re.ASCII)
_UINT_RE = re.compile(r"\d+", re.ASCII)
_TS_RE = re.compile(r"-?\d+", re.ASCII)
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})
_INT64 = 2**63
_UINT64 = 2**64
_NS_PER_MS = {"ns": 1_000_000, "us": 1_000, "ms": 1}
_MAX_TS_DIGITS = 25


class _Line:
    """One parsed line."""

    __slots__ = ("fields", "head", "measurement", "tags", "timestamp")

    def __init__(
        self,
        measurement: str,
        tags: list[tuple[str, str]],
        fields: list[tuple[str, str | None]],
        timestamp: str | None,
        head: str | None = None,
    ) -> None:
        self.head = head
        """The unparsed ``measurement,tags`` text when it had no escapes (a cache key)."""
        self.measurement = measurement
        self.tags = tags
        self.fields = fields
        """(key, raw value text); value None for a string field."""
        self.timestamp = timestamp


# --- parsing -----------------------------------------------------------------------


def _parse_simple(line: str) -> _Line | None:
    """Fast path for lines without backslashes or quotes; None if the line needs the
    full scanner."""
    if "\\" in line or '"' in line:
        return None
    parts = line.split(" ")
    if len(parts) == 2:
        head, fieldset = parts
        timestamp = None
    elif len(parts) == 3:
        head, fieldset, timestamp = parts
    else:
        return None  # let the scanner report the exact problem
    measurement, *tag_parts = head.split(",")
    tags: list[tuple[str, str]] = []
    for part in tag_parts:
        key, eq, value = part.partition("=")
        if not eq or "=" in value:
            return None
        tags.append((key, value))
    fields: list[tuple[str, str | None]] = []
    for part in fieldset.split(","):
        key, eq, value = part.partition("=")
        if not eq or "=" in value:
            return None
        fields.append((key, value))
    return _Line(measurement, tags, fields, timestamp, head)


class _Scanner:
    """Character scanner for one line with escapes and quoted strings."""

    __slots__ = ("line", "number", "pos")

    def __init__(self, line: str, number: int) -> None:
        self.line = line
        self.pos = 0
        self.number = number

    def fail(self, problem: str) -> DecodeError:
        return DecodeError(f"line {self.number}: {problem}")

    def token(self, stops: str, escapable: str) -> str:
        """Read until an unescaped char in ``stops`` (or the end)."""
        line = self.line
        out: list[str] = []
        pos = self.pos
        end = len(line)
        while pos < end:
            char = line[pos]
            if char == "\\" and pos + 1 < end and line[pos + 1] in escapable:
                out.append(line[pos + 1])
                pos += 2
                continue
            if char in stops:
                break
            out.append(char)
            pos += 1
        self.pos = pos
        return "".join(out)

    def peek(self) -> str:
        return self.line[self.pos] if self.pos < len(self.line) else ""

    def string_value(self) -> None:
        """Skip a quoted string field value (the opening quote is at ``pos``)."""
        line = self.line
        pos = self.pos + 1
        end = len(line)
        while pos < end:
            char = line[pos]
            if char == "\\" and pos + 1 < end and line[pos + 1] in '"\\':
                pos += 2
                continue
            if char == '"':
                self.pos = pos + 1
                return
            pos += 1
        raise self.fail("unterminated string field value")

    def parse(self) -> _Line:
        measurement = self.token(", ", ", \\")
        if not measurement:
            raise self.fail("missing measurement")
        tags: list[tuple[str, str]] = []
        while self.peek() == ",":
            self.pos += 1
            key = self.token("=, ", ",= \\")
            if self.peek() != "=":
                raise self.fail(f"tag {key[:40]!r} has no '='")
            self.pos += 1
            value = self.token("=, ", ",= \\")
            if self.peek() == "=":
                raise self.fail(f"unescaped '=' in tag value of {key[:40]!r}")
            tags.append((key, value))
        if self.peek() != " ":
            raise self.fail("expected a space before the fields")
        self.pos += 1
        fields: list[tuple[str, str | None]] = []
        while True:
            key = self.token("=, ", ",= \\")
            if self.peek() != "=":
                raise self.fail(f"field {key[:40]!r} has no '='")
            self.pos += 1
            if self.peek() == '"':
                self.string_value()
                fields.append((key, None))
            else:
                start = self.pos
                while self.pos < len(self.line) and self.line[self.pos] not in ", ":
                    self.pos += 1
                fields.append((key, self.line[start : self.pos]))
            if self.peek() != ",":
                break
            self.pos += 1
        timestamp = None
        if self.peek() == " ":
            self.pos += 1
            timestamp = self.line[self.pos :]
            self.pos = len(self.line)
        if self.pos != len(self.line):
            raise self.fail(f"unexpected {self.line[self.pos : self.pos + 20]!r}")
        return _Line(measurement, tags, fields, timestamp)


def _lines(text: str) -> list[tuple[int, str]]:
    """Split a payload into (line number, line), dropping blanks and comments.

    A quoted string field value may contain a newline, so lines are split outside
    quotes only (quotes count only after a '=' in the field set, where they can start
    a string; elsewhere they are ordinary characters).
    """
    raw_lines = text.split("\n") if '"' not in text else _split_quoted(text)
    out: list[tuple[int, str]] = []
    for number, line in enumerate(raw_lines, start=1):
        stripped = line.strip(" \t\r")
        if not stripped or stripped.startswith("#"):
            continue
        out.append((number, stripped))
    return out


def _split_quoted(text: str) -> list[str]:
    lines: list[str] = []
    start = 0
    pos = 0
    end = len(text)
    in_string = False
    while pos < end:
        char = text[pos]
        if in_string:
            if char == "\\" and pos + 1 < end and text[pos + 1] in '"\\':
                pos += 2
                continue
            if char == '"':
                in_string = False
        elif char == "\\":
            pos += 2
            continue
        elif char == '"' and pos > start and text[pos - 1] == "=":
            in_string = True
        elif char == "\n":
            lines.append(text[start:pos])
            start = pos + 1
        pos += 1
    lines.append(text[start:])
    return lines


# --- values ------------------------------------------------------------------------


def _field_value(raw: str, key: str, number: int) -> float:
    if not raw:
        raise DecodeError(f"line {number}: field {key[:40]!r} has no value")
    last = raw[-1]
    if last in "iu" and len(raw) > 22:  # longer than any int64/uint64 with sign and suffix
        raise DecodeError(f"line {number}: integer field {key[:40]!r} out of range")
    if last == "i" and _INT_RE.fullmatch(raw, 0, len(raw) - 1):
        value = int(raw[:-1])
        if not -_INT64 <= value < _INT64:
            raise DecodeError(f"line {number}: integer field {key[:40]!r} out of int64 range")
        return float(value)
    if last == "u" and _UINT_RE.fullmatch(raw, 0, len(raw) - 1):
        value = int(raw[:-1])
        if value >= _UINT64:
            raise DecodeError(f"line {number}: unsigned field {key[:40]!r} out of uint64 range")
        return float(value)
    if raw in _TRUE:
        return 1.0
    if raw in _FALSE:
        return 0.0
    if _FLOAT_RE.fullmatch(raw):
        result = float(raw)
        if result in (float("inf"), float("-inf")):
            raise DecodeError(f"line {number}: field {key[:40]!r} is out of float range")
        return result
    raise DecodeError(f"line {number}: field {key[:40]!r} has a bad value {raw[:40]!r}")


def _timestamp_ms(raw: str | None, precision: str, number: int, ctx: DecodeContext) -> int:
    if raw is None or raw == "":
        return ctx.now_ms
    if not _TS_RE.fullmatch(raw) or len(raw) > _MAX_TS_DIGITS:
        raise DecodeError(f"line {number}: bad timestamp {raw[:40]!r}")
    stamp = int(raw)
    if precision == "auto":
        ts_ms = epoch_to_ms(stamp)
    elif precision == "s":
        ts_ms = stamp * 1000
    else:
        ts_ms = stamp // _NS_PER_MS[precision]
    try:
        return check_ts_ms(ts_ms, ctx)
    except DecodeError as exc:
        hint = precision_hint(ts_ms, precision, "influx_precision", ctx)
        raise DecodeError(f"line {number}: {exc.reason}{hint}") from None


# --- mapping -----------------------------------------------------------------------


Series = tuple[str, str | None, Tags, str]
"""What a line's measurement and tags resolve to: sensor_id, unit, tags, and the
metric prefix (``"<measurement>."``, or ``""`` when the measurement is the sensor)."""


def _series(line: _Line, number: int, ctx: DecodeContext, names: NameCache) -> Series:
    limits = ctx.limits
    sid_tag = option(ctx, "sensor_id_field", "sensor_id")
    unit_tag = option(ctx, "unit_field", "unit")
    tags: dict[str, str] = {}
    for key, value in line.tags:
        if not key:
            raise DecodeError(f"line {number}: empty tag key")
        if not value:
            raise DecodeError(f"line {number}: tag {key[:40]!r} has an empty value")
        if key in tags:
            raise DecodeError(f"line {number}: tag {key[:40]!r} appears twice")
        tags[key] = value
    from_tag = tags.pop(sid_tag, None)
    if from_tag is None:
        from_tag = tags.pop("host", None)
    topic_sid = ctx.topic_fields.get("sensor_id")
    if ctx.topic_wins and topic_sid is not None:
        sensor_id: str | None = topic_sid
    else:
        sensor_id = from_tag if from_tag is not None else topic_sid
    if not line.measurement:
        raise DecodeError(f"line {number}: missing measurement")
    prefix = line.measurement + "."
    if sensor_id is None:
        # No tag and no template names a sensor: the measurement does (Telegraf's and
        # most devices' lines carry no host tag), and the field key is the metric.
        sensor_id = line.measurement
        prefix = ""
    unit = tags.pop(unit_tag, None)
    if len(tags) + len(ctx.topic_tags) > limits.max_tags:
        raise DecodeError(f"line {number}: more than {limits.max_tags} tags")
    try:
        line_tags: Tags = tuple(
            sorted((names("tag name", k), names("tag value", v)) for k, v in tags.items())
        )
        return (
            names("sensor_id", sensor_id),
            None if unit is None else names("unit", unit),
            merge_tags(ctx.topic_tags, line_tags),
            prefix,
        )
    except DecodeError as exc:
        raise DecodeError(f"line {number}: {exc.reason}") from None


def _to_readings(
    line: _Line, series: Series, number: int, ts_ms: int, names: NameCache, out: Decoded
) -> None:
    sensor_id, unit, tags, prefix = series
    append = out.readings.append
    for key, raw in line.fields:
        if not key:
            raise DecodeError(f"line {number}: empty field key")
        if raw is None:
            out.skip(prefix + key)  # string field: not a number, not an error
            continue
        value = _field_value(raw, key, number)  # finite by construction
        try:
            metric = names("metric", prefix + key)
        except DecodeError as exc:
            raise DecodeError(f"line {number}: {exc.reason}") from None
        append(Reading(sensor_id, metric, ts_ms, value, unit, tags))


def decode(payload: bytes, ctx: DecodeContext) -> Decoded:
    """Decode line protocol (one or more lines) into readings. Raises only DecodeError."""
    text = text_of(payload, "line protocol")
    precision = option(ctx, "influx_precision", "ns")
    limit = ctx.limits.max_readings_per_message
    decoded = Decoded([])
    readings = decoded.readings
    lines = _lines(text)
    if not lines:
        raise DecodeError("line protocol payload has no lines")
    names = NameCache(ctx.limits)
    heads: dict[str, Series] = {}  # lines of one payload usually share measurement and tags
    for number, line in lines:
        parsed = _parse_simple(line) or _Scanner(line, number).parse()
        head = parsed.head
        series = heads.get(head) if head is not None else None
        if series is None:
            series = _series(parsed, number, ctx, names)
            if head is not None:
                heads[head] = series
        ts_ms = _timestamp_ms(parsed.timestamp, precision, number, ctx)
        _to_readings(parsed, series, number, ts_ms, names, decoded)
        if len(readings) > limit:
            break  # checked() below reports it; stop parsing a flood early
    return checked(decoded, ctx)


register("influx", decode)
