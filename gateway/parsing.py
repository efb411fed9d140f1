"""Pure parsers for the human units in config files and requests: durations, sizes,
points in time, retention periods, time zones, and whether a host is loopback.

Ground floor (``docs/architecture.md``): imports nothing of tidegate's but the other
ground-floor modules, does no I/O (but for reading the system's zone file for the
``local`` time zone), and raises only :class:`ValueError` with a message a person can
act on. Callers put the name of what was wrong in front: the config turns
it into a :class:`~gateway.errors.ConfigError` naming the key (through pydantic), the
request vocabulary (:mod:`gateway.request`) into a :class:`~gateway.errors.QueryError`
naming the parameter.
"""

from __future__ import annotations

import ipaddress
import re
import time
from datetime import tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import DecodeError
from gateway.validation import parse_iso_ms

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2, "mi": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4, "ti": 1024**4,
}  # fmt: skip
_YEARS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*y\s*$")
YEAR_MS = 365 * 86_400_000
FOREVER = ("forever", "never", "0")
LOCALTIME = Path("/etc/localtime")


def is_duration(text: str) -> bool:
    """Whether ``text`` has the form of a duration (``90s``, ``2h``, ``14d``)."""
    return _DURATION.match(text) is not None


def parse_duration_ms(text: str) -> int:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"14d"``, ``"1w"`` → milliseconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"bad duration {text!r}: use a number with ms, s, m, h, d or w (e.g. 2h)")
    return round(float(match.group(1)) * _UNIT_MS[match.group(2)])


def parse_time_ms(text: str, now_ms: int | None = None) -> int:
    """A point in time: ``now``, a duration ago (``2h``), ISO 8601, or epoch s/ms → ms."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    text = text.strip()
    if text == "now":
        return now_ms
    if is_duration(text):
        return now_ms - parse_duration_ms(text)
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return round(number * 1000) if abs(number) < 1e11 else round(number)
    try:
        return parse_iso_ms(text)
    except DecodeError:
        raise ValueError(
            f"bad time {text!r}: use ISO 8601, epoch seconds, 'now' or a duration like 2h"
        ) from None


def parse_size(text: str | int) -> int:
    """``"2GB"`` (10⁹), ``"512MiB"`` (2²⁰), ``"200 MB"``, ``1048576`` → bytes."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must not be negative: {text}")
        return text
    match = _SIZE.match(text)
    if match is None or match.group(2).lower() not in _SIZE_FACTORS:
        raise ValueError(f"bad size {text!r}: use a number with B, KB, MB, GB (or KiB, MiB, GiB)")
    return int(float(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()])


def parse_retention_ms(text: str) -> int | None:
    """``"14d"``, ``"90d"``, ``"5y"`` (365 days a year) → ms; ``"forever"`` → ``None``.

    Everything but years and ``forever`` is a duration (:func:`parse_duration_ms`), so
    the grammar matches the query side.
    """
    if text.strip().lower() in FOREVER:
        return None
    years = _YEARS.match(text)
    if years is not None:
        value = round(float(years.group(1)) * YEAR_MS)
    else:
        try:
            value = parse_duration_ms(text)
        except ValueError as exc:
            raise ValueError(f"{exc} (or y for years, or 'forever')") from None
    if value <= 0:
        raise ValueError(f"retention must be positive: {text!r} (use 'forever' to keep everything)")
    return value


def format_size(n: int | float) -> str:
    """Bytes for people: ``1.5 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def is_loopback_host(host: str) -> bool:
    """True when ``host`` only reaches this machine: ``localhost`` or a loopback address
    (``127.0.0.0/8``, ``::1``). Any other name counts as exposed, since it may resolve
    to a public address."""
    text = host.strip().strip("[]").lower()
    if text == "localhost" or text.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def resolve_timezone(name: str | None) -> tzinfo | None:
    """The zone called ``name`` (None → None, meaning UTC); raises ``ValueError`` with a
    reason for an unknown zone."""
    if name is None:
        return None
    if name == "local":
        try:
            with LOCALTIME.open("rb") as handle:
                return ZoneInfo.from_file(handle, key="localtime")
        except (OSError, ValueError) as exc:
            raise ValueError(f"'local': cannot read the system zone {LOCALTIME}: {exc}") from None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin', 'UTC' or 'local'"
        ) from None
