"""Grafana's query interpolation, so tests can run the SQL of ``deploy/grafana/``.

Grafana turns a panel's ``rawSql`` into the statement it sends in two steps, done here
the same way:

1. **Template variables** (the frontend): ``$name``, ``${name}`` and ``[[name]]`` of a
   known variable, and ``$__interval`` / ``$__interval_ms``. For SQL data sources a
   multi-value or include-All variable becomes a list of quoted literals (``'a','b'``),
   a single-value one its text with single quotes doubled (``SqlDatasource.
   interpolateVariable``): here a ``list`` value is the first kind, a ``str`` the second.
   Names that are no variable (``$__timeFilter``) are left alone, as Grafana does.
2. **Macros** (the backend, ``pkg/tsdb/grafana-postgresql-datasource/macros.go``, not
   TimescaleDB): ``$__timeFilter(col)``, ``$__timeFrom()``, ``$__timeTo()``,
   ``$__timeGroup(col, interval)`` and ``$__timeGroupAlias(col, interval)``. Grafana's
   macro pattern admits no ``)`` inside the arguments; neither does this one. Any other
   macro raises, so the dashboard cannot use one these tests do not expand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

Value = str | list[str]

_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+)\]\]|\$\{(\w+)\}")
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# Grafana's rounding of an automatic interval (kbn.roundInterval), as the values it picks.
_NICE_MS = [
    10, 20, 50, 100, 200, 500,
    1_000, 2_000, 5_000, 10_000, 15_000, 20_000, 30_000,
    60_000, 120_000, 300_000, 600_000, 900_000, 1_200_000, 1_800_000,
    3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000,
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime
    end: datetime

    def literal(self, at: datetime) -> str:
        """Go's ``time.RFC3339Nano`` of the UTC instant, as Grafana writes it."""
        text = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
        return text + "Z"


def interval_ms(text: str) -> int:
    """``"30s"`` → 30000 (Grafana's interval syntax, one unit)."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text.strip().strip("'"))
    if match is None:
        raise ValueError(f"not an interval: {text!r}")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def interval_text(ms: int) -> str:
    for unit in ("d", "h", "m", "s"):
        if ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"


def auto_interval(time_range: TimeRange, minimum: str | None, max_points: int = 1000) -> str:
    """The ``$__interval`` Grafana picks: the range over the panel's data points,
    rounded to a nice value, and not below the panel's (or datasource's) minimum."""
    span = (time_range.end - time_range.start).total_seconds() * 1000
    raw = span / max_points
    ms = next((nice for nice in _NICE_MS if nice >= raw), _NICE_MS[-1])
    if minimum:
        ms = max(ms, interval_ms(minimum))
    return interval_text(ms)


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def interpolate(sql: str, variables: Mapping[str, Value], interval: str) -> str:
    """Step 1: the template variables and ``$__interval``."""
    known: dict[str, Value] = {
        **variables,
        "__interval": interval,
        "__interval_ms": str(interval_ms(interval)),
    }

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in known:
            return match.group(0)
        value = known[name]
        if isinstance(value, list):
            return ",".join(quote_literal(v) for v in value)
        return value.replace("'", "''") if not name.startswith("__") else value

    return _VARIABLE.sub(replace, sql)


def expand_macros(sql: str, time_range: TimeRange) -> str:
    """Step 2: Grafana's PostgreSQL macros."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        args = [a.strip() for a in match.group(2).split(",")] if match.group(2).strip() else []
        start, end = time_range.literal(time_range.start), time_range.literal(time_range.end)
        if name == "__timeFilter" and len(args) == 1:
            return f"{args[0]} BETWEEN '{start}' AND '{end}'"
        if name == "__timeFrom" and not args:
            return f"'{start}'"
        if name == "__timeTo" and not args:
            return f"'{end}'"
        if name in ("__timeGroup", "__timeGroupAlias") and len(args) == 2:
            seconds = interval_ms(args[1]) / 1000
            step = int(seconds) if seconds == int(seconds) else seconds
            group = f"floor(extract(epoch from {args[0]})/{step})*{step}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        raise ValueError(f"macro not expanded by tests/support/grafana.py: {match.group(0)}")

    out = _MACRO.sub(replace, sql)
    if "$__" in out:
        raise ValueError(f"unexpanded macro left in: {out}")
    return out


def render(
    sql: str,
    variables: Mapping[str, Value],
    time_range: TimeRange,
    *,
    minimum_interval: str | None = None,
) -> str:
    """The statement Grafana sends for ``sql`` with these variables over ``time_range``."""
    interval = auto_interval(time_range, minimum_interval)
    return expand_macros(interpolate(sql, variables, interval), time_range)
