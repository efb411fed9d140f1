"""Per-subscription mapping of decoded fields: which to keep, what to call them, their
units, and the zone of timestamps written without an offset.

Applied by the router to whatever a codec produced, so every format gets the same
options (``[[subscriptions]]`` in config.toml):

* ``include`` / ``exclude`` — glob patterns (``*``, ``?``, ``[…]``; ``*`` also matches
  ``.``) on the metric names **as decoded**. With ``include``, only matching fields are
  kept; ``exclude`` then drops matching ones. Dropped fields are counted and named as
  skipped, like strings are.
* ``rename`` — ``{decoded name = "stored name"}``; a field not renamed loses
  ``strip_prefix`` if it starts with it (``params.switch:0.apower`` → ``switch:0.apower``).
* ``units`` — ``{metric = "unit"}``, by the stored name (or the decoded name); it wins
  over a unit in the payload.
* ``timezone`` — an IANA zone (``Europe/Berlin``), ``UTC``, or ``local`` (the system's
  zone from ``/etc/localtime``) for ISO 8601 timestamps without an offset.

Everything is pure; per-name decisions are cached (bounded) because a fleet repeats the
same few names in every message.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from gateway.models import Decoded, Reading
from gateway.parsing import resolve_timezone as resolve_timezone  # re-exported (config needs it)
from gateway.validation import Limits, check_name
from gateway.validation import check_name_map as check_name_map  # re-exported (config needs it)

_CACHE_MAX = 10_000


class MappingOptions(Protocol):
    """The subscription options this module reads (:class:`gateway.config.SubscriptionConfig`)."""

    @property
    def include(self) -> Sequence[str]: ...
    @property
    def exclude(self) -> Sequence[str]: ...
    @property
    def rename(self) -> Mapping[str, str]: ...
    @property
    def strip_prefix(self) -> str: ...
    @property
    def units(self) -> Mapping[str, str]: ...


def compile_patterns(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One regular expression matching any of the glob ``patterns`` (None for none)."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


class FieldMapping:
    """The compiled ``include``/``exclude``/``rename``/``strip_prefix``/``units`` of one
    subscription. Build with :meth:`from_options` (None when there is nothing to do)."""

    __slots__ = ("_cache", "exclude", "include", "limits", "rename", "strip_prefix", "units")

    def __init__(
        self,
        include: re.Pattern[str] | None,
        exclude: re.Pattern[str] | None,
        rename: Mapping[str, str],
        strip_prefix: str,
        units: Mapping[str, str],
        limits: Limits,
    ) -> None:
        self.include = include
        self.exclude = exclude
        self.rename = dict(rename)
        self.strip_prefix = strip_prefix
        self.units = dict(units)
        self.limits = limits
        self._cache: dict[str, tuple[str, str | None] | None] = {}

    @classmethod
    def from_options(cls, options: MappingOptions, limits: Limits) -> FieldMapping | None:
        """The mapping a subscription asks for, or None if it asks for none."""
        if not (
            options.include
            or options.exclude
            or options.rename
            or options.strip_prefix
            or options.units
        ):
            return None
        return cls(
            compile_patterns(options.include),
            compile_patterns(options.exclude),
            options.rename,
            options.strip_prefix,
            options.units,
            limits,
        )

    def decide(self, metric: str) -> tuple[str, str | None] | None:
        """``(stored name, configured unit or None)`` for a decoded metric, or None when
        the field is dropped."""
        cache = self._cache
        if metric in cache:
            return cache[metric]
        decision = self._decide(metric)
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[metric] = decision
        return decision

    def _decide(self, metric: str) -> tuple[str, str | None] | None:
        if self.include is not None and not self.include.fullmatch(metric):
            return None
        if self.exclude is not None and self.exclude.fullmatch(metric):
            return None
        name = self.rename.get(metric)
        if name is None:
            name = metric
            prefix = self.strip_prefix
            if prefix and metric.startswith(prefix) and len(metric) > len(prefix):
                name = metric[len(prefix) :]
        name = check_name("metric", name, self.limits)
        unit = self.units.get(name, self.units.get(metric))
        return name, unit

    def apply(self, decoded: Decoded) -> Decoded:
        """``decoded`` with fields dropped, renamed and given units (a new object)."""
        out = Decoded([], decoded.skipped, decoded.skipped_names)
        append = out.readings.append
        decide = self.decide
        for reading in decoded.readings:
            decision = decide(reading.metric)
            if decision is None:
                out.skip(reading.metric)
                continue
            name, unit = decision
            if unit is not None or name != reading.metric:
                reading = Reading(
                    reading.sensor_id,
                    name,
                    reading.ts_ms,
                    reading.value,
                    unit if unit is not None else reading.unit,
                    reading.tags,
                )
            append(reading)
        return out
