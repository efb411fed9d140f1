"""HTTP query parameters → checked values. Every problem is a :class:`QueryError` (HTTP
400) with a message naming the parameter; nothing here touches the database. The rules
for times, durations, buckets, aggregates and tiers are the request vocabulary's
(:mod:`gateway.request`, shared with the CLI); this module reads them out of a query
string, and owns what only HTTP has (integers, choices, CSV negotiation, the opaque
page cursor)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence

from starlette.datastructures import QueryParams

from gateway import request
from gateway.errors import QueryError
from gateway.request import MAX_TS_MS, SeriesCursor, TimeRange

MAX_TEXT = 1024
INT64_MAX = 2**63 - 1

ALIASES = {"sensor_id": "sensor", "since": "from", "until": "to"}
"""Other names people try first, accepted where the name they stand for is: the field
name every response uses, and the CLI's ``--since``/``--until``."""
REPEATABLE = frozenset({"agg"})
"""Parameters that may be given more than once (their values add up)."""


class Checked(QueryParams):
    """Query parameters under their own names (aliases resolved), each known to the
    endpoint; ``given`` maps a name to the spelling the client used (for messages)."""

    given: dict[str, str]


def checked(raw: QueryParams, allowed: frozenset[str]) -> Checked:
    """The parameters of one request to an endpoint that takes ``allowed``: an unknown
    parameter, or a known one given twice (also as its alias), is a :class:`QueryError`
    naming it — a misspelt filter must not silently answer for everything."""
    unknown = sorted({key for key in raw if ALIASES.get(key, key) not in allowed})
    if unknown:
        shown = ", ".join(repr(key[:40]) for key in unknown[:10])
        takes = ", ".join(sorted(allowed))
        aliases = ", ".join(f"{a} for {n}" for a, n in ALIASES.items() if n in allowed)
        raise QueryError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {shown}: this endpoint takes"
            f" {takes}" + (f" (also {aliases})" if aliases else "")
        )
    items: list[tuple[str, str]] = []
    given: dict[str, str] = {}
    for key, value in raw.multi_items():
        name = ALIASES.get(key, key)
        if name in given and name not in REPEATABLE:
            twice = f"{given[name]} and {key}" if given[name] != key else f"{key} twice"
            raise QueryError(f"{name} given more than once ({twice}); give it once")
        given.setdefault(name, key)
        items.append((name, value))
    out = Checked(items)
    out.given = given
    return out


def text(params: Mapping[str, str], name: str) -> str | None:
    """An optional text parameter (``None`` when absent or empty)."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_TEXT:
        raise QueryError(f"{name} is longer than {MAX_TEXT} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError(f"{name} is not valid text") from None
    return value


def integer(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer parameter within ``[low, high]``."""
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise QueryError(f"{name} must be an integer, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise QueryError(f"{name} must be between {low} and {high}")
    return value


def choice(params: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    """One of ``choices`` (exact spelling), ``default`` when the parameter is absent."""
    value = params.get(name)
    if value is None:
        return default
    if value not in choices:
        raise QueryError(f"{name} must be one of {', '.join(choices)}")
    return value


def time_ms(params: Mapping[str, str], name: str, now_ms: int) -> int | None:
    """A point in time (:func:`gateway.request.time_ms`); ``None`` when absent."""
    raw = text(params, name)
    if raw is None:
        return None
    return request.time_ms(raw, name, now_ms)


def duration_ms(params: Mapping[str, str], name: str, default: str, high_ms: int) -> int:
    """A bucket size such as ``1m``, ``1h``, ``1d`` within ``[1s, high_ms]``."""
    raw = params.get(name)
    return request.bucket_ms(default if raw is None else raw, name, high_ms)


def aggregates(values: Sequence[str]) -> list[str]:
    """``agg=min,max`` and/or ``agg=min&agg=max`` → the chosen aggregates (default avg)."""
    return list(request.aggregates(values, "agg"))


def gateway(params: Mapping[str, str]) -> str | None:
    """``gateway``: one gateway's data only (:func:`gateway.request.gateway_filter`)."""
    return request.gateway_filter(text(params, "gateway"), "gateway")


def tier(params: Mapping[str, str]) -> str:
    """``tier`` (default ``auto``)."""
    return request.tier(params.get("tier", "auto"))


def wants_csv(params: Mapping[str, str], accept: str) -> bool:
    """CSV when ``format=csv`` (or ``csv-raw``), or when ``Accept`` names ``text/csv``
    and no ``format`` says otherwise."""
    if params.get("format") is not None:
        return choice(params, "format", ("json", "csv", "csv-raw"), "json") != "json"
    return "text/csv" in accept.lower()


def csv_raw(params: Mapping[str, str]) -> bool:
    """``format=csv-raw``: cells exactly as stored, without formula escaping."""
    return params.get("format") == "csv-raw"


def time_range(
    params: Mapping[str, str],
    now_ms: int,
    default_span_ms: int,
    max_range_ms: int,
    open_end: bool,
) -> TimeRange:
    """``from``/``to`` with defaults (``to`` = now, or open-ended when ``open_end``;
    ``from`` = ``to`` minus ``default_span_ms``) and the per-request range limit."""
    given = getattr(params, "given", {})
    names = (given.get("from", "from"), given.get("to", "to"))
    raw_from, raw_to = text(params, "from"), text(params, "to")
    return request.time_range(
        None if raw_from is None else request.time_ms(raw_from, names[0], now_ms),
        None if raw_to is None else request.time_ms(raw_to, names[1], now_ms),
        now_ms=now_ms,
        default_span_ms=default_span_ms,
        max_range=request.Limit(max_range_ms, "api.max_range"),
        open_end=open_end,
        names=names,
    )


CURSOR_PREFIX = "c1."


def encode_cursor(ts_ms: int, series_id: int) -> str:
    """An opaque page cursor for the keyset ``(ts, series_id)``."""
    raw = f"{ts_ms}:{series_id}".encode()
    return CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text_value: str | None) -> tuple[int, int] | None:
    """Inverse of :func:`encode_cursor`; a malformed cursor is a QueryError."""
    if text_value is None:
        return None
    bad = QueryError("cursor is not valid: pass next_cursor from the previous page")
    if not text_value.startswith(CURSOR_PREFIX) or len(text_value) > 100:
        raise bad
    body = text_value[len(CURSOR_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
        ts_text, sid_text = raw.split(":")
        ts_ms, series_id = int(ts_text), int(sid_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    if not (0 <= ts_ms <= MAX_TS_MS and 0 <= series_id <= INT64_MAX):
        raise bad
    return ts_ms, series_id


SERIES_CURSOR_PREFIX = "s1."
MAX_SERIES_CURSOR = 12_000
"""Characters: two names of up to 4,096 characters (``validation.max_name_length``),
base64-encoded, still fit in the 16 KiB of request headers."""


def encode_series_cursor(cursor: SeriesCursor) -> str:
    """An opaque page cursor for a series listing: the last series' keyset
    ``(sensor_id, metric, series_id)``."""
    raw = json.dumps(list(cursor), ensure_ascii=False, separators=(",", ":")).encode()
    return SERIES_CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_series_cursor(params: Mapping[str, str], name: str = "cursor") -> SeriesCursor | None:
    """Inverse of :func:`encode_series_cursor`; a malformed cursor is a QueryError."""
    value = params.get(name)
    if not value:
        return None
    bad = QueryError(f"{name} is not valid: pass next_cursor from the previous page")
    if not value.startswith(SERIES_CURSOR_PREFIX) or len(value) > MAX_SERIES_CURSOR:
        raise bad
    body = value[len(SERIES_CURSOR_PREFIX) :]
    try:
        sensor, metric, series_id = json.loads(
            base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8")
        )
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    if not (
        isinstance(sensor, str)
        and isinstance(metric, str)
        and isinstance(series_id, int)
        and not isinstance(series_id, bool)
        and 0 <= series_id <= INT64_MAX
    ):
        raise bad
    return sensor, metric, series_id
