"""Reading rules: timestamps by magnitude, names, values."""

from __future__ import annotations

import pytest

from gateway.errors import DecodeError
from gateway.validation import (
    DecodeContext,
    check_name,
    check_value,
    epoch_to_ms,
    format_ms,
    to_ts_ms,
)

NOW = 1_732_000_000_000  # 2024-11-19


def ctx() -> DecodeContext:
    return DecodeContext(topic="t", now_ms=NOW)


@pytest.mark.parametrize(
    "raw",
    [
        1_732_000_000,
        1_732_000_000.0,
        1_732_000_000_000,
        1_732_000_000_000_000,
        1_732_000_000_000_000_000,
    ],
)
def test_epoch_units_told_apart_by_magnitude(raw: float) -> None:
    assert epoch_to_ms(raw) == NOW


def test_timestamp_forms() -> None:
    c = ctx()
    assert to_ts_ms(None, c) == NOW
    assert to_ts_ms("2024-11-19T07:06:40Z", c) == NOW
    assert to_ts_ms("2024-11-19T07:06:40", c) == NOW  # naive = UTC
    assert to_ts_ms("2024-11-19T08:06:40+01:00", c) == NOW
    assert to_ts_ms("1732000000", c) == NOW
    assert to_ts_ms(1_732_000_000.5, c) == NOW + 500


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (5, "before"),
        ("1999-12-31T23:59:59Z", "before"),
        (NOW / 1000 + 2 * 86400, "future"),
        ("tomorrow", "ISO 8601"),
        (True, "bool"),
        (float("nan"), "finite"),
        ([1], "list"),
    ],
)
def test_bad_timestamps_rejected_with_reason(raw: object, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment):
        to_ts_ms(raw, ctx())


def test_names() -> None:
    c = ctx()
    assert check_name("sensor_id", "living room 🌡", c.limits) == "living room 🌡"
    for bad, fragment in [
        ("", "empty"),
        ("x" * 129, "longer"),
        ("a\nb", "control"),
        ("a\x00", "control"),
        (3, "string"),
    ]:
        with pytest.raises(DecodeError, match=fragment):
            check_name("sensor_id", bad, c.limits)


def test_values() -> None:
    assert check_value(True) == 1.0
    assert check_value(False) == 0.0
    assert check_value(3) == 3.0
    for bad in (float("nan"), float("inf"), "1", None, 10**400):
        with pytest.raises(DecodeError):
            check_value(bad)


def test_format_ms() -> None:
    assert format_ms(NOW + 5) == "2024-11-19T07:06:40.005Z"
