"""Per-subscription mapping options through the router: include/exclude, renames and a
prefix to strip, a units map, a timezone for naive timestamps, nested ts_field paths —
with payloads as the devices publish them (sources cited at each sample)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.codecs.mapping import FieldMapping, resolve_timezone
from gateway.config import SubscriptionConfig
from gateway.errors import ConfigError
from gateway.models import Envelope
from gateway.router import Router
from gateway.validation import Limits, parse_iso_ms

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def route(message_topic: str, payload: bytes | dict[str, Any], **sub: Any) -> Envelope:
    config = SubscriptionConfig(**sub)
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    envelope = Router([config], Limits(), 1 << 20).route(message_topic, data, NOW)
    assert envelope.dead_letter is None, envelope.dead_letter
    return envelope


def stored(envelope: Envelope) -> dict[str, tuple[float, str | None]]:
    return {r.metric: (r.value, r.unit) for r in envelope.readings}


# Shelly Gen2 NotifyStatus on <id>/events/rpc: frame from
# https://shelly-api-docs.shelly.cloud/gen2/General/Notifications, Switch status fields
# from https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Switch.
SHELLY_GEN2 = {
    "src": "shellyplus1pm-a8032ab12345",
    "dst": "shellyplus1pm-a8032ab12345/events",
    "method": "NotifyStatus",
    "params": {
        "ts": 1699999000.43,
        "switch:0": {
            "id": 0,
            "source": "WS_in",
            "output": True,
            "apower": 8.9,
            "voltage": 237.5,
            "current": 0.068,
            "aenergy": {
                "total": 6.532,
                "by_minute": [45.199, 47.141, 88.397],
                "minute_ts": 1699998960,
            },
            "temperature": {"tC": 23.5, "tF": 74.4},
        },
    },
}
SHELLY_SUB: dict[str, Any] = {
    "topic": "+/events/rpc",
    "sensor_id_field": "src",
    "ts_field": "params.ts",
    "strip_prefix": "params.",
    "exclude": ["*.id", "*.minute_ts", "*.tF"],
    "rename": {"params.switch:0.temperature.tC": "switch:0.temperature"},
    "units": {
        "switch:0.apower": "W",
        "switch:0.voltage": "V",
        "switch:0.current": "A",
        "switch:0.aenergy.total": "Wh",
        "switch:0.temperature": "°C",
    },
}


def test_shelly_gen2_notify_status_with_every_option() -> None:
    envelope = route("shellyplus1pm-a8032ab12345/events/rpc", SHELLY_GEN2, **SHELLY_SUB)
    assert stored(envelope) == {
        "switch:0.output": (1.0, None),
        "switch:0.apower": (8.9, "W"),
        "switch:0.voltage": (237.5, "V"),
        "switch:0.current": (0.068, "A"),
        "switch:0.aenergy.total": (6.532, "Wh"),
        "switch:0.temperature": (23.5, "°C"),
    }
    assert {r.sensor_id for r in envelope.readings} == {"shellyplus1pm-a8032ab12345"}
    assert {r.ts_ms for r in envelope.readings} == {1_699_999_000_430}  # params.ts, not now
    # Skipped: three strings, one array, three excluded fields — counted and named.
    assert envelope.skipped == 7
    assert sorted(envelope.skipped_names or []) == sorted(
        [
            "dst",
            "method",
            "params.switch:0.source",
            "params.switch:0.aenergy.by_minute",
            "params.switch:0.id",
            "params.switch:0.aenergy.minute_ts",
            "params.switch:0.temperature.tF",
        ]
    )


def test_include_keeps_only_matching_fields() -> None:
    envelope = route(
        "shellyplus1pm-a8032ab12345/events/rpc",
        SHELLY_GEN2,
        **{**SHELLY_SUB, "include": ["params.switch:?.apower", "params.*.aenergy.total"]},
    )
    assert set(stored(envelope)) == {"switch:0.apower", "switch:0.aenergy.total"}


# Tasmota telemetry (tele/<topic>/SENSOR), local time without an offset, ENERGY fields
# as in Tasmota's docs (docs/Home-Assistant.md sensor list; units from the firmware's
# xdrv_12_home_assistant.ino kHAssJsonSensorUnits: W, VA, VAr, V, A, kWh).
TASMOTA_ENERGY = {
    "Time": "2023-11-14T22:59:00",
    "ENERGY": {
        "TotalStartTime": "2023-01-01T00:00:00",
        "Total": 12.345,
        "Yesterday": 0.5,
        "Today": 0.12,
        "Power": 45,
        "ApparentPower": 50,
        "ReactivePower": 21,
        "Factor": 0.9,
        "Voltage": 230,
        "Current": 0.2,
    },
}


def test_tasmota_energy_with_units_map_and_timezone() -> None:
    envelope = route(
        "tele/plug/SENSOR",
        TASMOTA_ENERGY,
        topic="tele/+/SENSOR",
        topic_template="tele/{sensor_id}/SENSOR",
        ts_field="Time",
        timezone="Europe/Berlin",
        strip_prefix="ENERGY.",
        units={"Power": "W", "ApparentPower": "VA", "ReactivePower": "var", "Voltage": "V",
               "Current": "A", "Total": "kWh", "Today": "kWh", "Yesterday": "kWh"},
    )  # fmt: skip
    got = stored(envelope)
    assert got["Power"] == (45.0, "W")
    assert got["Factor"] == (0.9, None)
    # 22:59 in Berlin (CET, UTC+1) is 21:59Z — not an hour in the future.
    assert {r.ts_ms for r in envelope.readings} == {parse_iso_ms("2023-11-14T21:59:00Z")}
    assert envelope.skipped_names == ["ENERGY.TotalStartTime"]


def test_units_map_wins_over_the_payload_unit() -> None:
    envelope = route(
        "s/a",
        {"sensor_id": "a", "metric": "t", "value": 70, "unit": "F"},
        topic="s/+",
        units={"t": "°F"},
    )
    assert stored(envelope) == {"t": (70.0, "°F")}


def test_units_apply_to_every_format() -> None:
    line = b"weather temp=21.5,hum=40"  # no host tag: the measurement is the sensor
    envelope = route("lp", line, topic="lp", format="influx", units={"temp": "°C"})
    assert stored(envelope) == {"temp": (21.5, "°C"), "hum": (40.0, None)}
    raw = route(
        "esphome/kitchen/sensor/temperature/state",
        b"21.5",
        topic="esphome/+/sensor/+/state",
        format="raw",
        topic_template="esphome/{sensor_id}/sensor/{metric}/state",
        units={"temperature": "°C"},
    )
    assert stored(raw) == {"temperature": (21.5, "°C")}


def test_a_rename_beats_the_prefix_and_a_prefix_never_empties_a_name() -> None:
    mapping = FieldMapping.from_options(
        SubscriptionConfig(topic="#", strip_prefix="a.", rename={"a.x": "ex"}), Limits()
    )
    assert mapping is not None
    assert mapping.decide("a.x") == ("ex", None)
    assert mapping.decide("a.y") == ("y", None)
    assert mapping.decide("a.") == ("a.", None)
    assert mapping.decide("b") == ("b", None)


def test_no_options_no_mapping() -> None:
    assert FieldMapping.from_options(SubscriptionConfig(topic="#"), Limits()) is None


def test_a_rename_longer_than_the_name_limit_dead_letters_the_message() -> None:
    config = SubscriptionConfig(topic="#", rename={"x": "y" * 100})
    envelope = Router([config], Limits(max_name_length=50), 1024).route(
        "t", b'{"sensor_id": "s", "x": 1}', NOW
    )
    assert envelope.dead_letter is not None and "longer than 50" in envelope.dead_letter.reason


def test_timezone_names() -> None:
    assert resolve_timezone(None) is None
    assert str(resolve_timezone("Europe/Berlin")) == "Europe/Berlin"
    assert resolve_timezone("local") is not None
    with pytest.raises(ValueError, match="unknown time zone"):
        resolve_timezone("Mars/Olympus")


@pytest.mark.parametrize(
    ("toml", "key", "fragment"),
    [
        ('timezone = "Mars/Olympus"', "subscriptions[0].timezone", "unknown time zone"),
        ('units = { t = "" }', "subscriptions[0].units", "unit is empty"),
        ('rename = { t = "a\\u0001" }', "subscriptions[0].rename", "control characters"),
        ('include = "x"', "subscriptions[0].include", "list"),
    ],
)
def test_bad_mapping_options_name_the_key(
    tmp_path: Any, toml: str, key: str, fragment: str
) -> None:
    from gateway.config import load_settings

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[[subscriptions]]\ntopic = "a/#"\n{toml}\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    assert info.value.key == key
    assert fragment in str(info.value)
