"""Human units in the ``[storage]`` config: sizes and retention durations."""

from __future__ import annotations

import re

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


def parse_size(text: str | int) -> int:
    """``"2GB"`` (10⁹), ``"512MiB"`` (2²⁰), ``"200 MB"``, ``1048576`` → bytes.

    Raises ``ValueError`` with a human message on anything else.
    """
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

    Everything but years and ``forever`` goes through
    :func:`gateway.query.parse_duration_ms`, so the grammar matches the query side.
    Raises ``ValueError``.
    """
    from gateway.errors import QueryError
    from gateway.query import parse_duration_ms

    if text.strip().lower() in FOREVER:
        return None
    years = _YEARS.match(text)
    if years is not None:
        value = round(float(years.group(1)) * YEAR_MS)
    else:
        try:
            value = parse_duration_ms(text)
        except QueryError as exc:
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
