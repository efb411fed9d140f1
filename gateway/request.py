"""The request vocabulary: what a reader may ask the store, parsed and checked once.

The CLI (``tidegate query|aggregate|dead-letters``), the HTTP API and the storage
backends share these names, rules and error messages: aggregate names, rollup tiers,
bucket sizes, points in time and time ranges, and the limits on them. A parser takes
the *name* the caller knows the value by (``agg`` in the API, ``--agg`` in the CLI) and
puts it in front of its message, so every refusal says which input was wrong. Every
refusal is a :class:`~gateway.errors.QueryError` (HTTP 400, CLI exit 1).

:class:`ReadingsQuery` and :class:`AggregateQuery` are what the read side of a store
(:class:`gateway.storage.base.ReadStore`) takes; they check themselves when built, so
a backend never sees an invalid one, whoever built it.

Second floor (``docs/architecture.md``): imports only the ground floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import QueryError
from gateway.parsing import parse_duration_ms, parse_time_ms

AGGREGATES = ("min", "max", "avg", "sum", "count", "last")
"""What a bucket can report, in this order."""
DEFAULT_AGGREGATES = ("avg",)
TIERS = ("auto", "raw", "1m", "1h")
"""Where aggregates come from: ``auto`` (each bucket from the coarsest rollup tier that
answers it exactly, else raw readings), ``raw`` readings only, or a rollup tier where
it can answer (raw elsewhere)."""
MIN_BUCKET_MS = 1000
MAX_TS_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: times outside [0, this] are refused (database integers and
Python datetimes both stay in range)."""
MAX_GATEWAY_LENGTH = 128
"""The longest gateway id (``upstream.gateway_id``, ``storage.gateway_id``)."""
DEFAULT_MAX_BUCKETS = 100_000

Cursor = tuple[int, int]
"""A keyset position in ``(ts_ms, series_id)`` order: the last row of the previous page."""
SeriesCursor = tuple[str, str, int]
"""A keyset position in ``(sensor_id, metric, series_id)`` order: the last series of the
previous page of a series listing."""


def _named(name: str, message: str) -> QueryError:
    return QueryError(f"{name}: {message}" if name else message)


def time_ms(text: str, name: str = "", now_ms: int | None = None) -> int:
    """A point in time: ISO 8601, epoch seconds or ms, ``now``, or a duration ago
    (``2h``), within 1970 to 9999."""
    try:
        value = parse_time_ms(text, now_ms)
    except ValueError as exc:
        raise _named(name, str(exc)) from None
    except (OverflowError, OSError):
        raise _named(name, "time out of range") from None
    if not 0 <= value <= MAX_TS_MS:
        raise _named(name, "time out of range (1970 to 9999)")
    return value


def duration_ms(text: str, name: str = "") -> int:
    """A duration such as ``90s``, ``15m``, ``2h``, ``14d``, ``1w``."""
    if len(text) > 1024 or not text.isascii():
        raise _named(name, "use a number with ms, s, m, h, d or w (e.g. 1h)")
    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        raise _named(name, str(exc)) from None
    except OverflowError:
        raise _named(name, "duration out of range") from None


def bucket_ms(text: str, name: str = "bucket", high_ms: int | None = None) -> int:
    """A bucket size: a duration of at least one second (and at most ``high_ms``)."""
    value = duration_ms(text, name)
    if value < MIN_BUCKET_MS or (high_ms is not None and value > high_ms):
        top = f"{high_ms // 1000}s" if high_ms is not None else "any length"
        raise QueryError(f"{name} must be between 1s and {top}")
    return value


def aggregates(values: Sequence[str], name: str = "agg") -> tuple[str, ...]:
    """``min,max`` and/or repeated values → the chosen aggregates, each once, in the
    order asked (case does not matter; nothing asked means :data:`DEFAULT_AGGREGATES`)."""
    chosen: list[str] = []
    for value in values:
        for part in value.split(","):
            agg = part.strip().lower()
            if not agg:
                continue
            if agg not in AGGREGATES:
                raise _named(
                    name, f"unknown aggregate {agg[:40]!r}; choose from {', '.join(AGGREGATES)}"
                )
            if agg not in chosen:
                chosen.append(agg)
    return tuple(chosen) or DEFAULT_AGGREGATES


def tier(value: str, name: str = "tier") -> str:
    """One of :data:`TIERS`."""
    if value not in TIERS:
        raise _named(name, f"unknown tier {value[:40]!r}; choose from {', '.join(TIERS)}")
    return value


def gateway_filter(value: str | None, name: str = "gateway") -> str | None:
    """A gateway filter: the id one edge forwards under (``upstream.gateway_id``) or a
    direct-mode group writes under; ``None`` (or empty) means every gateway. An id no
    gateway has is not an error: it matches nothing, as an unknown sensor does."""
    if value is None or value == "":
        return None
    if len(value) > MAX_GATEWAY_LENGTH:
        raise _named(name, f"longer than {MAX_GATEWAY_LENGTH} characters")
    if not value.isprintable():
        raise _named(name, "contains control characters")
    return value


def check_order(since_ms: int | None, until_ms: int | None, what: str = "") -> None:
    """``since`` must come before ``until`` (both given)."""
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise QueryError(what or "the start of the time range must be before its end")


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A checked ``[since, until)`` range; ``until`` None means open-ended."""

    since_ms: int
    until_ms: int | None


@dataclass(frozen=True, slots=True)
class Limit:
    """A limit together with the setting a user changes it with (named in refusals)."""

    value: int
    setting: str = ""

    def exceeded(self, what: str, advice: str) -> QueryError:
        where = f" ({self.setting})" if self.setting else ""
        return QueryError(f"more than {self.value} {what}{where}; {advice}")


def time_range(
    since_ms: int | None,
    until_ms: int | None,
    *,
    now_ms: int,
    default_span_ms: int,
    max_range: Limit | None = None,
    open_end: bool = False,
    names: tuple[str, str] = ("since", "until"),
) -> TimeRange:
    """``[since, until)`` with defaults (``until``: now, or open-ended with
    ``open_end``; ``since``: ``until`` minus ``default_span_ms``) and at most
    ``max_range`` long."""
    end = until_ms if until_ms is not None else now_ms
    if since_ms is None:
        since_ms = max(0, min(end, MAX_TS_MS) - default_span_ms)
    check_order(since_ms, until_ms, f"{names[0]} must be before {names[1]}")
    if max_range is not None and max(end, since_ms) - since_ms > max_range.value:
        where = f" ({max_range.setting})" if max_range.setting else ""
        raise QueryError(
            f"the time range is longer than the limit of {max_range.value // 1000}s{where};"
            f" narrow {names[0]}/{names[1]}"
        )
    if until_ms is None and not open_end:
        until_ms = max(now_ms, since_ms + 1)
    return TimeRange(since_ms, until_ms)


def check_buckets(since_ms: int, until_ms: int, bucket: int, limit: Limit) -> None:
    """At most ``limit`` buckets per series in ``[since, until)``."""
    if (until_ms - since_ms) // bucket > limit.value:
        raise limit.exceeded("buckets per series", "use a larger bucket or a shorter range")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadingsQuery:
    """Raw readings in ``[since, until)`` ordered by ``(ts, series_id)`` (descending
    with ``descending``), optionally of one gateway, sensor and/or metric, starting
    after the keyset ``after``. ``limit`` 0 means all (for streams)."""

    sensor: str | None = None
    metric: str | None = None
    gateway: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int = 1000
    after: Cursor | None = None
    descending: bool = False

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise QueryError("limit must be >= 0")
        check_order(self.since_ms, self.until_ms)
        gateway_filter(self.gateway)


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregateQuery:
    """Per-series buckets of ``bucket_ms`` (aligned to the epoch: hourly buckets start
    on the hour, UTC) over ``[since, until)`` with the chosen aggregates, each bucket
    from ``tier`` (see :data:`TIERS`). ``limit`` caps the buckets returned in total
    (0: no cap; the per-series cap is ``max_buckets``). ``gateway`` narrows to one
    gateway's series."""

    since_ms: int
    until_ms: int
    bucket_ms: int
    sensor: str | None = None
    metric: str | None = None
    gateway: str | None = None
    aggregates: tuple[str, ...] = DEFAULT_AGGREGATES
    tier: str = "auto"
    max_buckets: Limit = Limit(DEFAULT_MAX_BUCKETS)
    limit: int = 0

    def __post_init__(self) -> None:
        if not self.aggregates:
            raise QueryError("choose at least one aggregate")
        for agg in self.aggregates:
            if agg not in AGGREGATES:
                raise QueryError(
                    f"unknown aggregate {agg[:40]!r}; choose from {', '.join(AGGREGATES)}"
                )
        tier(self.tier)
        if self.bucket_ms <= 0:
            raise QueryError("bucket must be positive")
        check_order(self.since_ms, self.until_ms)
        check_buckets(self.since_ms, self.until_ms, self.bucket_ms, self.max_buckets)
        if self.limit < 0:
            raise QueryError("limit must be >= 0")
        gateway_filter(self.gateway)
