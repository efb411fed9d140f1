"""SenML (RFC 8428): ``senml`` (JSON) and ``senml-cbor`` (CBOR) packs.

A pack is an array of records. Base fields (``bn`` name, ``bt`` time, ``bu`` unit,
``bv`` value, ``bs`` sum, ``bver`` version) apply to their record and every later
record until replaced. Each record resolves to:

* name = ``bn`` + ``n``; it must match RFC 8428's character rules
  (``[A-Za-z0-9][A-Za-z0-9-:./_]*``), else the pack is rejected;
* time = ``bt`` + ``t`` seconds; a result below 2**28 is relative to the receive time
  (0 = now, negative = seconds ago), otherwise it is absolute Unix time;
* unit = ``u``, else ``bu``;
* value = ``bv`` + ``v``; ``vb`` booleans become 1/0; ``vs`` (string) and ``vd`` (data)
  values are skipped and counted; sum = ``bs`` + ``s`` (either missing counts as 0, no
  sum when both are missing) is stored as metric ``<metric>.sum`` with unit ``<unit>*s``.

Rejected (the whole message is dead-lettered, nothing half-stored): a pack that is not
an array of objects/maps, or an empty one (``[]``); ``bver`` above 10; an unknown field whose label ends in
``_`` (RFC 8428 "must understand"); a field of the wrong type; a record with no value
field and no sum, or with more than one value field; a bad resolved name; a timestamp
outside the validation window.

Mapping the resolved name to sensor_id/metric (``docs/decisions/0041-senml-names.md``):

1. the topic template has ``{sensor_id}``: that is the sensor, the whole resolved name
   is the metric;
2. otherwise the name is split at its last ``:`` or ``/``:
   ``urn:dev:ow:10e2073a01080063:temp`` → (``urn:dev:ow:10e2073a01080063``, ``temp``),
   ``device1/temperature`` → (``device1``, ``temperature``);
3. a name with no separator (or ending in one) is the sensor, and the metric is the
   template's ``{metric}``, else ``value``.

In CBOR the labels are the integers of RFC 8428 Table 6 (string labels are accepted
too); numbers may be integers, bignums (tags 2/3, up to 128 bytes) or floats, or decimal
fractions (tag 4). No other semantic tag is accepted (checked before decoding).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import cbor2
import pydantic_core

from gateway.codecs import register
from gateway.codecs._cbor import scan
from gateway.codecs._common import NameCache, checked, finite
from gateway.errors import DecodeError
from gateway.models import Decoded, Reading
from gateway.validation import DecodeContext, check_ts_ms

SENML_VERSION = 10
RELATIVE_LIMIT = 2**28
"""Resolved times below this many seconds are relative to "now" (RFC 8428 §4.5.3)."""

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*")

CBOR_LABELS: dict[int, str] = {
    -1: "bver",
    -2: "bn",
    -3: "bt",
    -4: "bu",
    -5: "bv",
    -6: "bs",
    0: "n",
    1: "u",
    2: "v",
    3: "vs",
    4: "vb",
    5: "s",
    6: "t",
    7: "ut",
    8: "vd",
    9: "l",
}
KNOWN = frozenset(CBOR_LABELS.values())
VALUE_FIELDS = ("v", "vs", "vb", "vd")
SENML_KEYS = KNOWN
"""Labels that identify a JSON object as a SenML record (used by the ``auto`` codec)."""


def _labels(raw: Mapping[Any, Any], index: int, cbor: bool) -> dict[str, Any]:
    """Record map → ``{json_label: value}``; unknown labels dropped unless they end in ``_``."""
    if not cbor and raw.__class__ is dict and KNOWN.issuperset(raw):
        return raw  # JSON with only known labels: as is
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(key, int) and not isinstance(key, bool) and cbor:
            label = CBOR_LABELS.get(key)
            if label is None:
                continue  # RFC 8428: ignore fields we don't recognise
        elif isinstance(key, str):
            label = key
            if label not in KNOWN:
                if label.endswith("_"):
                    raise DecodeError(
                        f"record {index}: field {label[:40]!r} must be understood (ends in '_'),"
                        " but is unknown"
                    )
                continue
        else:
            raise DecodeError(f"record {index}: bad label {str(key)[:40]!r}")
        out[label] = value
    return out


def _number(value: object, label: str, index: int) -> float:
    if value.__class__ is float and value - value == 0.0:
        return value  # the common case: a finite float
    if isinstance(value, Decimal):  # CBOR decimal fraction (tag 4)
        try:
            value = float(value)
        except (OverflowError, ValueError):
            raise DecodeError(f"record {index}: {label} is not a usable number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"record {index}: {label} must be a number, got {type(value).__name__}")
    return finite(value, f"record {index}: {label}")


def _text(value: object, label: str, index: int) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"record {index}: {label} must be a string, got {type(value).__name__}")
    return value


def _split_name(name: str, ctx: DecodeContext) -> tuple[str, str]:
    topic_sensor = ctx.topic_fields.get("sensor_id")
    if topic_sensor is not None:
        return topic_sensor, name
    cut = max(name.rfind(":"), name.rfind("/"))
    if 0 < cut < len(name) - 1:
        return name[:cut], name[cut + 1 :]
    sensor = name[:-1] if cut == len(name) - 1 else name
    return sensor, ctx.topic_fields.get("metric") or "value"


class _Base:
    """The base fields in effect while walking a pack, and per-pack caches."""

    __slots__ = ("bn", "bs", "bt", "bu", "bv", "names", "splits")

    def __init__(self, ctx: DecodeContext) -> None:
        self.bn = ""
        self.bt = 0.0
        self.bu: str | None = None
        self.bv = 0.0
        self.bs: float | None = None
        self.names = NameCache(ctx.limits)
        self.splits: dict[str, tuple[str, str]] = {}
        """Resolved name → checked (sensor_id, metric): records repeat names."""


def decode_pack(records: object, ctx: DecodeContext, cbor: bool = False) -> Decoded:
    """Resolve an already parsed SenML pack (a list of records) into readings."""
    if not isinstance(records, list | tuple):
        raise DecodeError(f"SenML pack must be an array of records, got {type(records).__name__}")
    if not records:
        raise DecodeError("SenML pack is empty (RFC 8428: a pack holds one or more records)")
    limit = ctx.limits.max_readings_per_message
    if len(records) > limit:
        raise DecodeError(f"{len(records)} SenML records in one message (limit {limit})")
    base = _Base(ctx)
    readings: list[Reading] = []
    skipped = 0
    for index, raw in enumerate(records):
        if raw.__class__ is not dict and not isinstance(raw, Mapping):
            raise DecodeError(f"record {index}: must be an object, got {type(raw).__name__}")
        rec = _labels(raw, index, cbor)
        skipped += _resolve(rec, index, base, ctx, readings, cbor)
    return checked(Decoded(readings, skipped), ctx)


_BASE_LABELS = frozenset({"bver", "bn", "bt", "bu", "bv", "bs"})
_RARE_LABELS = frozenset({"ut", "l"})
_OTHER_VALUES = frozenset({"vs", "vb", "vd"})


def _apply_base(rec: dict[str, Any], index: int, base: _Base) -> None:
    """Check the version and take over the record's base fields."""
    if "bver" in rec:
        version = rec["bver"]
        if isinstance(version, bool) or not isinstance(version, int | float):
            raise DecodeError(f"record {index}: bver must be a number")
        if version > SENML_VERSION:
            raise DecodeError(
                f"SenML version {version} is newer than the supported version {SENML_VERSION}"
            )
    if "bn" in rec:
        base.bn = _text(rec["bn"], "bn", index)
    if "bt" in rec:
        base.bt = _number(rec["bt"], "bt", index)
    if "bu" in rec:
        base.bu = _text(rec["bu"], "bu", index)
    if "bv" in rec:
        base.bv = _number(rec["bv"], "bv", index)
    if "bs" in rec:
        base.bs = _number(rec["bs"], "bs", index)


def _resolve(
    rec: dict[str, Any],
    index: int,
    base: _Base,
    ctx: DecodeContext,
    out: list[Reading],
    cbor: bool,
) -> int:
    """Apply one record (updating ``base``); append its readings; return skipped count."""
    if not _BASE_LABELS.isdisjoint(rec):
        _apply_base(rec, index, base)
    name = base.bn + (_text(rec["n"], "n", index) if "n" in rec else "")
    split = base.splits.get(name)
    if split is None:
        split = base.splits[name] = _checked_split(name, index, ctx, base.names)
    has_sum = "s" in rec
    if "v" in rec and _OTHER_VALUES.isdisjoint(rec):
        kind: str | None = "v"  # the common record
    else:
        present = [label for label in VALUE_FIELDS if label in rec]
        if len(present) > 1:
            raise DecodeError(f"record {index}: more than one value field ({', '.join(present)})")
        if not present and not has_sum:
            raise DecodeError(f"record {index}: no value (v, vs, vb, vd) and no sum (s)")
        kind = present[0] if present else None
    if not _RARE_LABELS.isdisjoint(rec):
        if "ut" in rec:
            _number(rec["ut"], "ut", index)
        if "l" in rec:
            _text(rec["l"], "l", index)

    seconds = base.bt + (_number(rec["t"], "t", index) if "t" in rec else 0.0)
    millis = seconds * 1000
    if not math.isfinite(millis):
        raise DecodeError(f"record {index}: time is out of range")
    when = check_ts_ms(round(millis) + (ctx.now_ms if seconds < RELATIVE_LIMIT else 0), ctx)
    unit = _text(rec["u"], "u", index) if "u" in rec else base.bu
    sensor_id, metric = split
    if unit is not None:
        unit = None if unit == "" else _named(base.names, "unit", unit, index)
    tags = ctx.topic_tags
    skipped = 0
    if kind == "v":
        value = base.bv + _number(rec["v"], "v", index)
        out.append(Reading(sensor_id, metric, when, _finite_total(value, index), unit, tags))
    elif kind == "vb":
        flag = rec["vb"]
        if not isinstance(flag, bool):
            raise DecodeError(f"record {index}: vb must be a boolean, got {type(flag).__name__}")
        out.append(Reading(sensor_id, metric, when, 1.0 if flag else 0.0, unit, tags))
    elif kind == "vs":
        _text(rec["vs"], "vs", index)
        skipped += 1
    elif kind == "vd":
        data = rec["vd"]
        if not isinstance(data, bytes if cbor else str):
            expected = "a byte string" if cbor else "a base64url string"
            raise DecodeError(f"record {index}: vd must be {expected}, got {type(data).__name__}")
        skipped += 1
    if has_sum or base.bs is not None:
        total = (base.bs or 0.0) + (_number(rec["s"], "s", index) if has_sum else 0.0)
        sum_unit = f"{unit}*s" if unit else None
        out.append(
            Reading(
                sensor_id,
                _named(base.names, "metric", f"{metric}.sum", index),
                when,
                _finite_total(total, index),
                None if sum_unit is None else _named(base.names, "unit", sum_unit, index),
                tags,
            )
        )
    return skipped


def _checked_split(name: str, index: int, ctx: DecodeContext, names: NameCache) -> tuple[str, str]:
    if not NAME_RE.fullmatch(name):
        shown = name[:60] if name else "(empty)"
        raise DecodeError(
            f"record {index}: name {shown!r} breaks RFC 8428 name rules"
            " (letters, digits and - : . / _, starting with a letter or digit)"
        )
    sensor_id, metric = _split_name(name, ctx)
    return _named(names, "sensor_id", sensor_id, index), _named(names, "metric", metric, index)


def _named(names: NameCache, kind: str, value: str, index: int) -> str:
    try:
        return names(kind, value)
    except DecodeError as exc:
        raise DecodeError(f"record {index}: {exc.reason}") from None


def _finite_total(value: float, index: int) -> float:
    if not math.isfinite(value):
        raise DecodeError(f"record {index}: base plus record value is not finite")
    return value


def decode_json(payload: bytes, ctx: DecodeContext) -> Decoded:
    """SenML JSON (``application/senml+json``)."""
    try:
        records = pydantic_core.from_json(payload, allow_inf_nan=False)
    except ValueError as exc:
        raise DecodeError(f"invalid SenML JSON: {exc}") from None
    return decode_pack(records, ctx, cbor=False)


def decode_cbor(payload: bytes, ctx: DecodeContext) -> Decoded:
    """SenML CBOR (``application/senml+cbor``). The payload is pre-scanned
    (:func:`gateway.codecs._cbor.scan`): semantic tags other than the ones SenML uses,
    oversized bignums and deep nesting are refused before cbor2 builds anything."""
    end = scan(payload)
    if end != len(payload):
        raise DecodeError(f"invalid SenML CBOR: {len(payload) - end} bytes after the pack")
    try:
        records = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types on hostile input; convert here
        raise DecodeError(f"invalid SenML CBOR: {str(exc)[:120]}") from None
    return decode_pack(records, ctx, cbor=True)


register("senml", decode_json)
register("senml-cbor", decode_cbor)
