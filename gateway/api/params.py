"""Request parameters → checked values. Every problem is a :class:`QueryError` (HTTP 400)
with a message naming the parameter; nothing here touches the database."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.errors import QueryError
from gateway.query import AGGREGATES, parse_duration_ms, parse_time_ms

MAX_TS_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: times outside [0, this] are refused (SQLite integers and
Python datetimes both stay in range)."""
MAX_TEXT = 1024
MIN_BUCKET_MS = 1000
INT64_MAX = 2**63 - 1


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
    """A point in time: ISO 8601, epoch seconds or ms, ``now``, or a duration ago
    (``2h``). ``None`` when absent."""
    raw = text(params, name)
    if raw is None:
        return None
    try:
        value = parse_time_ms(raw, now_ms)
    except (OverflowError, ValueError, OSError):
        raise QueryError(f"{name}: time out of range") from None
    except QueryError as exc:
        raise QueryError(f"{name}: {exc}") from None
    if not 0 <= value <= MAX_TS_MS:
        raise QueryError(f"{name}: time out of range (1970 to 9999)")
    return value


def duration_ms(params: Mapping[str, str], name: str, default: str, high_ms: int) -> int:
    """A duration such as ``1m``, ``1h``, ``1d`` within ``[1s, high_ms]``."""
    raw = params.get(name)
    if raw is None:
        raw = default
    elif len(raw) > MAX_TEXT or not raw.isascii():
        raise QueryError(f"{name}: use a number with ms, s, m, h, d or w (e.g. 1h)")
    try:
        value = parse_duration_ms(raw)
    except (OverflowError, ValueError):
        raise QueryError(f"{name}: duration out of range") from None
    except QueryError as exc:
        raise QueryError(f"{name}: {exc}") from None
    if not MIN_BUCKET_MS <= value <= high_ms:
        raise QueryError(f"{name} must be between 1s and {high_ms // 1000}s")
    return value


def aggregates(values: Sequence[str]) -> list[str]:
    """``agg=min,max`` and/or ``agg=min&agg=max`` → a de-duplicated list (default avg)."""
    chosen: list[str] = []
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in AGGREGATES:
                raise QueryError(
                    f"agg: unknown aggregate {name[:40]!r}; choose from {', '.join(AGGREGATES)}"
                )
            if name not in chosen:
                chosen.append(name)
    return chosen or ["avg"]


def wants_csv(params: Mapping[str, str], accept: str) -> bool:
    """CSV when ``format=csv``, or when ``Accept`` names ``text/csv`` and no ``format``
    says otherwise."""
    if params.get("format") is not None:
        return choice(params, "format", ("json", "csv"), "json") == "csv"
    return "text/csv" in accept.lower()


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A checked ``[since, until)`` range; ``until`` None means open-ended."""

    since_ms: int
    until_ms: int | None


def time_range(
    params: Mapping[str, str],
    now_ms: int,
    default_span_ms: int,
    max_range_ms: int,
    open_end: bool,
) -> TimeRange:
    """``from``/``to`` with defaults (``to`` = now, or open-ended when ``open_end``;
    ``from`` = ``to`` minus ``default_span_ms``) and the per-request range limit."""
    until = time_ms(params, "to", now_ms)
    since = time_ms(params, "from", now_ms)
    end = until if until is not None else now_ms
    if since is None:
        since = max(0, min(end, MAX_TS_MS) - default_span_ms)
    if until is not None and since >= until:
        raise QueryError("from must be before to")
    if max(end, since) - since > max_range_ms:
        raise QueryError(
            f"the time range is longer than the limit of {max_range_ms // 1000}s"
            " (api.max_range); narrow from/to"
        )
    if until is None and not open_end:
        until = max(now_ms, since + 1)
    return TimeRange(since, until)


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
