"""Raw payloads: one bare number or boolean, named by the topic template."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs import get_codec
from gateway.errors import DecodeError
from gateway.models import Reading
from tests.support.codecs import context_factory

NOW = 1_700_000_000_000
decode = get_codec("raw")


ctx = context_factory(NOW, {"sensor_id": "node1", "metric": "temperature"})


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        (b"21.5", 21.5),
        (b"-3", -3.0),
        (b"+7", 7.0),
        (b"1e3", 1000.0),
        (b".5", 0.5),
        (b"  42\n", 42.0),
        (b"true", 1.0),
        (b"FALSE", 0.0),
        (b"True\r\n", 1.0),
    ],
)
def test_numbers_and_booleans(payload: bytes, value: float) -> None:
    assert decode(payload, ctx()).readings == [Reading("node1", "temperature", NOW, value)]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"ON", "not a number"),
        (b"nanx", "not a number"),
        (b"inf", "not a number"),
        (b"1e999", "not a number"),
        (b"1_000", "not a number"),
        (b"0x1f", "not a number"),
        (b"21.5 C", "not a number"),
        (b'"21.5"', "not a number"),
        (b"\xff\xfe", "not a number"),
        ("٣".encode(), "not a number"),
        (b"1" * 100, "not a number"),
    ],
)
def test_rejections(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(payload, ctx())


@pytest.mark.parametrize("payload", [b"nan", b"NaN", b"-nan", b"None", b"null", b" nan\n"])
def test_esphome_no_value_is_skipped_and_counted(payload: bytes) -> None:
    # ESPHome's MQTT sensor publishes value_accuracy_to_string(NAN) = "nan" when a sensor
    # fails, or "None" with publish_nan_as_none (esphome/components/mqtt/mqtt_sensor.cpp).
    got = decode(payload, ctx())
    assert (got.readings, got.skipped, got.skipped_names) == ([], 1, ["temperature"])


def test_topic_supplies_names_and_tags() -> None:
    got = decode(b"1", ctx({"sensor_id": "s"}, tags=(("site", "a"),)))
    assert got.readings == [Reading("s", "value", NOW, 1.0, None, (("site", "a"),))]


def test_needs_a_sensor_from_the_topic() -> None:
    with pytest.raises(DecodeError, match="sensor_id"):
        decode(b"1", ctx({}))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80) | st.text(max_size=30).map(str.encode))
def test_any_bytes_only_raise_decode_error(payload: bytes) -> None:
    try:
        got = decode(payload, ctx())
    except DecodeError:
        return
    assert len(got.readings) + got.skipped == 1
