"""The JSON codec: reading objects, arrays, multi-metric objects from real firmware
(Tasmota, Zigbee2MQTT, ESPHome), field names, timestamp formats, and robustness."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs import get_codec
from gateway.errors import DecodeError
from gateway.models import Decoded, Reading
from gateway.validation import DecodeContext, Limits, parse_iso_ms
from tests.support.codecs import context_factory

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z
decode = get_codec("json")


ctx = context_factory(NOW, {}, with_options=True)


def run(payload: bytes | str | object, context: DecodeContext | None = None) -> Decoded:
    if not isinstance(payload, bytes | str):
        payload = json.dumps(payload)
    data = payload.encode() if isinstance(payload, str) else payload
    return decode(data, context or ctx({"sensor_id": "dev"}))


def metrics(decoded: Decoded) -> dict[str, float]:
    return {r.metric: r.value for r in decoded.readings}


# --- shapes ---------------------------------------------------------------------


def test_single_reading_object() -> None:
    got = run({"sensor_id": "s1", "metric": "temp", "value": 21.5, "ts": NOW - 5, "unit": "C"})
    assert got.readings == [Reading("s1", "temp", NOW - 5, 21.5, "C")]


def test_array_of_readings_with_tags() -> None:
    got = run(
        [
            {"sensor_id": "a", "metric": "m", "value": 1, "ts": NOW - 2, "tags": {"room": "k"}},
            {"sensor_id": "b", "metric": "m", "value": 2, "ts": NOW - 1},
        ]
    )
    assert got.readings == [
        Reading("a", "m", NOW - 2, 1.0, None, (("room", "k"),)),
        Reading("b", "m", NOW - 1, 2.0),
    ]


def test_array_item_error_names_its_index() -> None:
    with pytest.raises(DecodeError, match=r"\[1\]"):
        run([{"sensor_id": "a", "metric": "m", "value": 1}, {"metric": "m", "value": 2}], ctx())


def test_tasmota_nested_sensor_is_flattened() -> None:
    payload = {
        "Time": "2023-11-14T22:00:00",
        "AM2301": {"Temperature": 21.3, "Humidity": 45.2},
        "TempUnit": "C",
    }
    got = run(payload, ctx({"sensor_id": "tasmota_1"}, ts_field="Time"))
    assert metrics(got) == {"AM2301.Temperature": 21.3, "AM2301.Humidity": 45.2}
    assert {r.ts_ms for r in got.readings} == {parse_iso_ms("2023-11-14T22:00:00Z")}
    # TempUnit is used as the temperature's unit, not skipped.
    assert {r.metric: r.unit for r in got.readings} == {
        "AM2301.Temperature": "°C",
        "AM2301.Humidity": None,
    }
    assert got.skipped == 0


def test_tasmota_energy_payload() -> None:
    payload = {
        "Time": "2023-11-14T21:59:00",
        "ENERGY": {
            "TotalStartTime": "2023-01-01T00:00:00",
            "Total": 12.345,
            "Yesterday": 0.5,
            "Today": 0.12,
            "Power": 45,
            "ApparentPower": 50,
            "Voltage": 230,
            "Factor": 0.9,
            "Current": 0.2,
        },
    }
    got = run(payload, ctx({"sensor_id": "plug"}, ts_field="Time", ts_format="iso"))
    assert len(got.readings) == 8
    assert metrics(got)["ENERGY.Power"] == 45.0
    assert got.skipped == 1


def test_zigbee2mqtt_states_are_skipped_and_booleans_are_numbers() -> None:
    payload = {
        "battery": 100,
        "humidity": 58.3,
        "linkquality": 65,
        "temperature": 21.2,
        "voltage": 3000,
        "state": "ON",
        "contact": True,
        "tamper": False,
        "last_seen": "2023-11-14T22:00:00Z",
        "update": {"state": "idle", "installed_version": 16},
        "color": None,
        "scenes": [1, 2],
    }
    got = run(payload, ctx({"sensor_id": "living_room"}))
    assert metrics(got) == {
        "battery": 100.0,
        "humidity": 58.3,
        "linkquality": 65.0,
        "temperature": 21.2,
        "voltage": 3000.0,
        "contact": 1.0,
        "tamper": 0.0,
        "update.installed_version": 16.0,
    }
    # state, last_seen, update.state, color (null) and scenes (array) are not numbers.
    assert got.skipped == 5
    assert got.skipped_names == ["state", "last_seen", "update.state", "color", "scenes"]
    assert {r.ts_ms for r in got.readings} == {NOW}


def test_esphome_bare_state_value() -> None:
    context = ctx({"sensor_id": "node1", "metric": "temperature"})
    assert run(b"21.5", context).readings == [Reading("node1", "temperature", NOW, 21.5)]
    assert run(b"true", context).readings[0].value == 1.0
    assert run(b'"ON"', context) == Decoded([], 1, ["temperature"])
    assert run(b"null", context) == Decoded([], 1, ["temperature"])
    assert run(b"NaN", context) == Decoded([], 1, ["temperature"])


def test_nan_leaves_are_skipped_like_null_and_infinity_is_an_error() -> None:
    got = run(b'{"temperature": NaN, "humidity": 40.5}', ctx({"sensor_id": "n"}))
    assert metrics(got) == {"humidity": 40.5}
    assert (got.skipped, got.skipped_names) == (1, ["temperature"])
    with pytest.raises(DecodeError, match="not finite"):
        run(b'{"temperature": Infinity}', ctx({"sensor_id": "n"}))
    with pytest.raises(DecodeError, match="finite"):
        run(b'{"sensor_id": "s", "metric": "m", "value": NaN}', ctx())


# Tasmota's telemetry, with the unit fields its firmware appends after the sensors
# (tasmota/support_tasmota.ino MqttShowSensor: "PressureUnit" when a Pressure is in the
# payload, "TempUnit" when a Temperature is, "SpeedUnit" when a Speed is), as in the
# BME280 payloads quoted in Tasmota's docs and forum.
TASMOTA_BME280 = {
    "Time": "2021-08-17T07:31:36",
    "BME280": {"Temperature": 26.1, "Humidity": 47.2, "DewPoint": 14.0, "Pressure": 973.8},
    "SR04": {"Distance": 59.368},
    "PressureUnit": "hPa",
    "TempUnit": "C",
}


def test_tasmota_unit_fields_become_units() -> None:
    got = run(TASMOTA_BME280, ctx({"sensor_id": "weather"}, ts_field="Time"))
    assert {r.metric: r.unit for r in got.readings} == {
        "BME280.Temperature": "°C",
        "BME280.Humidity": None,
        "BME280.DewPoint": "°C",
        "BME280.Pressure": "hPa",
        "SR04.Distance": None,
    }
    assert got.skipped == 0
    fahrenheit = run({**TASMOTA_BME280, "TempUnit": "F"}, ctx({"sensor_id": "w"}, ts_field="Time"))
    assert {r.unit for r in fahrenheit.readings if "Temp" in r.metric} == {"°F"}


def test_tasmota_local_time_in_the_configured_timezone() -> None:
    # Tasmota sends local time without an offset (unless SetOption52 1).
    from zoneinfo import ZoneInfo

    context = ctx({"sensor_id": "w"}, ts_field="Time")
    context.tz = ZoneInfo("Europe/Berlin")
    got = run({"Time": "2023-11-14T22:00:00", "T": 1}, context)
    assert got.readings[0].ts_ms == parse_iso_ms("2023-11-14T21:00:00Z")  # CET = UTC+1
    summer = run({"Time": "2023-07-01T12:00:00", "T": 1}, context)
    assert summer.readings[0].ts_ms == parse_iso_ms("2023-07-01T10:00:00Z")  # CEST
    offset = run({"Time": "2023-07-01T12:00:00+00:00", "T": 1}, context)
    assert offset.readings[0].ts_ms == parse_iso_ms("2023-07-01T12:00:00Z")  # offset wins


# Shelly Gen2 status notification over MQTT (topic <id>/events/rpc), the frame shape of
# https://shelly-api-docs.shelly.cloud/gen2/General/Notifications with the Switch
# component's status fields of .../gen2/ComponentsAndServices/Switch.
SHELLY_GEN2_NOTIFY = {
    "src": "shellyplus1pm-a8032ab12345",
    "dst": "shellyplus1pm-a8032ab12345/events",
    "method": "NotifyStatus",
    "params": {
        "ts": 1699999000.43,
        "switch:0": {
            "id": 0,
            "apower": 8.9,
            "voltage": 237.5,
            "aenergy": {
                "total": 6.532,
                "by_minute": [45.199, 47.141, 88.397],
                "minute_ts": 1699998960,
            },
            "temperature": {"tC": 23.5, "tF": 74.4},
        },
    },
}


def test_nested_ts_field_is_the_timestamp_and_not_a_metric() -> None:
    got = run(
        SHELLY_GEN2_NOTIFY,
        ctx({"sensor_id": "topic-id"}, ts_field="params.ts", sensor_id_field="src"),
    )
    assert {r.ts_ms for r in got.readings} == {1_699_999_000_430}
    assert {r.sensor_id for r in got.readings} == {"shellyplus1pm-a8032ab12345"}
    assert "params.ts" not in metrics(got)
    assert "src" not in metrics(got)
    assert metrics(got)["params.switch:0.apower"] == 8.9
    assert SHELLY_GEN2_NOTIFY["params"]["ts"] == 1699999000.43  # the payload is not modified
    assert sorted(got.skipped_names or []) == ["dst", "method", "params.switch:0.aenergy.by_minute"]


def test_a_key_with_a_dot_wins_over_a_path() -> None:
    got = run(
        {"a.b": 1_699_999_000, "a": {"b": 5}, "x": 1}, ctx({"sensor_id": "s"}, ts_field="a.b")
    )
    assert got.readings[0].ts_ms == 1_699_999_000_000
    assert metrics(got) == {"a.b": 5.0, "x": 1.0}


def test_bare_value_without_metric_in_topic_is_named_value() -> None:
    assert run(b"3", ctx({"sensor_id": "n"})).readings[0].metric == "value"


def test_bare_value_needs_a_sensor_from_the_topic() -> None:
    with pytest.raises(DecodeError, match="sensor_id"):
        run(b"3", ctx())


def test_esphome_light_json_gets_the_topic_metric_as_prefix() -> None:
    payload = {
        "state": "ON",
        "brightness": 255,
        "color_mode": "rgb",
        "color": {"r": 255, "g": 0, "b": 10},
    }
    got = run(payload, ctx({"sensor_id": "node1", "metric": "lamp"}))
    assert metrics(got) == {
        "lamp.brightness": 255.0,
        "lamp.color.r": 255.0,
        "lamp.color.g": 0.0,
        "lamp.color.b": 10.0,
    }
    assert got.skipped == 2


def test_flatten_separator_is_configurable() -> None:
    got = run({"a": {"b": 1}}, ctx({"sensor_id": "s"}, flatten_separator="_"))
    assert metrics(got) == {"a_b": 1.0}


def test_empty_object_is_well_formed_and_stores_nothing() -> None:
    assert run({}, ctx({"sensor_id": "s"})) == Decoded([], 0)


# --- field names ------------------------------------------------------------------


def test_custom_field_names() -> None:
    context = ctx(
        sensor_id_field="dev",
        metric_field="name",
        value_field="val",
        ts_field="time",
        unit_field="u",
        tags_field="labels",
    )
    payload = {
        "dev": "d1",
        "name": "co2",
        "val": 415,
        "time": NOW - 10,
        "u": "ppm",
        "labels": {"a": 1},
    }
    assert run(payload, context).readings == [
        Reading("d1", "co2", NOW - 10, 415.0, "ppm", (("a", "1"),))
    ]
    many = run([payload, {**payload, "time": NOW - 9}], context)
    assert [r.ts_ms for r in many.readings] == [NOW - 10, NOW - 9]


def test_payload_fields_win_over_topic_unless_topic_wins() -> None:
    payload = {"sensor_id": "from_payload", "value": 1}
    fields = {"sensor_id": "from_topic", "metric": "m"}
    assert run(payload, ctx(fields)).readings[0].sensor_id == "from_payload"
    assert run(payload, ctx(fields, topic_wins=True)).readings[0].sensor_id == "from_topic"


def test_topic_tags_merge_with_payload_tags() -> None:
    got = run(
        {"value": 1, "tags": {"room": "k"}},
        ctx({"sensor_id": "s", "metric": "m"}, tags=(("room", "topic"), ("site", "x"))),
    )
    assert got.readings[0].tags == (("room", "k"), ("site", "x"))


# --- timestamps -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "raw", "expected"),
    [
        ("auto", 1_699_999_999, 1_699_999_999_000),
        ("auto", 1_699_999_999_123, 1_699_999_999_123),
        ("auto", 1_699_999_999_123_456, 1_699_999_999_123),
        ("auto", 1_699_999_999_123_456_789, 1_699_999_999_123),
        ("auto", "2023-11-14T22:00:00Z", parse_iso_ms("2023-11-14T22:00:00Z")),
        ("auto", "2023-11-14T23:00:00+01:00", parse_iso_ms("2023-11-14T22:00:00Z")),
        ("s", 1_699_999_999.5, 1_699_999_999_500),
        ("s", "1699999999", 1_699_999_999_000),
        ("ms", 1_699_999_999_123, 1_699_999_999_123),
        ("us", 1_699_999_999_123_456, 1_699_999_999_123),
        ("ns", 1_699_999_999_123_456_789, 1_699_999_999_123),
        ("ns", "1699999999123456789", 1_699_999_999_123),
        ("iso", "2023-11-14T22:00:00.250Z", parse_iso_ms("2023-11-14T22:00:00.250Z")),
        ("iso", "2023-11-14T22:00:00", parse_iso_ms("2023-11-14T22:00:00Z")),
    ],
)
def test_timestamp_formats(fmt: str, raw: object, expected: int) -> None:
    got = run({"value": 1, "ts": raw}, ctx({"sensor_id": "s", "metric": "m"}, ts_format=fmt))
    assert got.readings[0].ts_ms == expected
    multi = run({"x": 1, "ts": raw}, ctx({"sensor_id": "s"}, ts_format=fmt))
    assert multi.readings[0].ts_ms == expected


@pytest.mark.parametrize(
    ("fmt", "raw", "reason"),
    [
        ("iso", 1_699_999_999, "ISO 8601"),
        ("s", "2023-11-14T22:00:00Z", "not a number of s"),
        ("ms", True, "before|must be a number"),
        ("s", 1_699_999_999_000, "future"),  # milliseconds read as seconds
        ("ms", 1_699_999_999, "before"),  # seconds read as milliseconds
        ("auto", "yesterday", "ISO 8601"),
        ("ns", "1e400", "finite"),
        ("auto", 10**400, "timestamp"),
    ],
)
def test_timestamp_errors(fmt: str, raw: object, reason: str) -> None:
    payload = (
        b'{"value": 1, "ts": '
        + (
            str(raw).encode()
            if isinstance(raw, int) and not isinstance(raw, bool)
            else json.dumps(raw).encode()
        )
        + b"}"
    )
    with pytest.raises(DecodeError, match=reason):
        run(payload, ctx({"sensor_id": "s", "metric": "m"}, ts_format=fmt))


def test_missing_timestamp_is_receive_time() -> None:
    assert run({"value": 1}, ctx({"sensor_id": "s", "metric": "m"})).readings[0].ts_ms == NOW


# --- errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"", "invalid JSON"),
        (b'{"value": "warm"}', "finite number or boolean"),
        (b'{"value": NaN}', "must be a finite number"),
        (b'{"value": 1e999}', "finite"),
        (b'{"x": 1e999}', "finite"),
        (b'{"x": ' + b"9" * 400 + b"}", "too large"),
        (b"[1, 2]", "object"),
        (b'{"value": 1, "sensor_id": "a\\u0000b"}', "control"),
        (b'{"value": 1, "tags": [1]}', "tags"),
        (b'{"value": 1, "metric": ""}', "metric is empty"),
    ],
)
def test_bad_payloads_are_decode_errors(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        run(payload, ctx({"sensor_id": "s", "metric": "m"}))


def test_no_sensor_anywhere() -> None:
    with pytest.raises(DecodeError, match="no sensor_id"):
        run({"temperature": 1}, ctx())


def test_reading_limit_per_message() -> None:
    context = ctx({"sensor_id": "s"}, limits=Limits(max_readings_per_message=3))
    with pytest.raises(DecodeError, match="limit 3"):
        run({f"m{i}": i for i in range(4)}, context)
    with pytest.raises(DecodeError, match="limit 3"):
        run([{"metric": f"m{i}", "value": i} for i in range(4)], context)


# --- robustness -------------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["value", "ts", "sensor_id", "metric", "unit", "tags", "a", "b"])
            | st.text(max_size=5),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_only_raise_decode_error(payload: bytes) -> None:
    try:
        run(payload, ctx({"sensor_id": "s", "metric": "m"}))
    except DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(_json_values, st.sampled_from(["auto", "s", "ms", "us", "ns", "iso"]))
def test_any_json_only_raises_decode_error(value: object, fmt: str) -> None:
    for context in (ctx({"sensor_id": "s", "metric": "m"}, ts_format=fmt), ctx(value_field="a")):
        try:
            got = run(json.dumps(value), context)
        except DecodeError:
            continue
        assert all(isinstance(r, Reading) for r in got.readings)
