"""Discovery configs → named entities with units → readings, for every device family's
real payloads (tests/support/devices.py names the source of each), plus the discovery
protocol's rules: abbreviations, ``~``, device-level ``cmps``, removal, names."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.discovery.homeassistant import expand, parse, parse_topic, replace_base
from gateway.discovery.registry import Registry, device_class_name
from gateway.errors import DiscoveryError
from gateway.validation import Limits
from tests.support import devices
from tests.support.devices import PREFIX, DeviceSample, dumps

NOW = 1_700_000_000_000


def loaded(*samples: DeviceSample, **options: Any) -> Registry:
    registry = Registry(**options)
    for sample in samples:
        for topic, payload in sample.configs:
            registry.apply_config(topic, payload)
    return registry


def readings_of(
    registry: Registry, sample: DeviceSample
) -> dict[tuple[str, str], tuple[str | None, float]]:
    out: dict[tuple[str, str], tuple[str | None, float]] = {}
    for topic, payload in sample.states:
        for r in registry.decode_state(topic, payload, NOW).readings:
            assert r.ts_ms == NOW
            out[(r.sensor_id, r.metric)] = (r.unit, round(r.value, 6))
    return out


@pytest.mark.parametrize("sample", devices.ALL, ids=[s.family for s in devices.ALL])
def test_each_family_is_named_with_units_and_values(sample: DeviceSample) -> None:
    registry = loaded(sample)
    got = readings_of(registry, sample)
    assert got == {(e.sensor_id, e.metric): (e.unit, e.value) for e in sample.expected}
    for key, fragment in sample.problems.items():
        entity = registry.entities[key]
        assert entity.problem is not None and fragment in entity.problem, entity
        assert entity.state_topic not in registry.by_state_topic or all(
            e.key != key for e in registry.by_state_topic[entity.state_topic]
        )


def test_all_families_together_keep_their_names_apart() -> None:
    registry = loaded(*devices.ALL)
    for sample in devices.ALL:
        expected = {(e.sensor_id, e.metric): (e.unit, e.value) for e in sample.expected}
        assert readings_of(registry, sample) == expected


# --- the protocol -----------------------------------------------------------------------------


def test_topic_forms() -> None:
    assert parse_topic("homeassistant/sensor/obj/config", PREFIX) is not None
    node = parse_topic("homeassistant/sensor/node/obj/config", PREFIX)
    assert node is not None and (node.component, node.node_id, node.object_id) == (
        "sensor",
        "node",
        "obj",
    )
    assert parse_topic("homeassistant/sensor/obj/state", PREFIX) is None
    assert parse_topic("homeassistant/a/b/c/d/config", PREFIX) is None
    assert parse_topic("other/sensor/obj/config", PREFIX) is None
    assert parse_topic("my/prefix/sensor/obj/config", "my/prefix") is not None


def test_abbreviations_and_base_topic() -> None:
    config = replace_base(
        expand(
            {
                "~": "shellies/x/",
                "stat_t": "~status",
                "json_attr_t": "attrs/~",
                "unit_of_meas": "W",
                "avty": [{"t": "~online"}],
                "dev": {"ids": ["a"], "mf": "Shelly"},
                "name": "~not a topic",
            }
        )
    )
    assert config["state_topic"] == "shellies/x/status"
    assert config["json_attributes_topic"] == "attrs/shellies/x/"
    assert config["availability"] == [{"topic": "shellies/x/online"}]
    assert config["device"] == {"identifiers": ["a"], "manufacturer": "Shelly"}
    assert config["unit_of_measurement"] == "W"
    assert config["name"] == "~not a topic"  # only topic options expand
    assert "~" not in config


def test_empty_payload_removes_the_entities_of_that_topic() -> None:
    registry = loaded(devices.HA_DOCS)
    assert ("homeassistant/sensor/sensorBedroom/state") in registry.by_state_topic
    assert registry.apply_config(f"{PREFIX}/sensor/sensorBedroomT/config", b"")
    assert "homeassistant/sensor/sensorBedroom/state" not in registry.by_state_topic
    assert not registry.apply_config(f"{PREFIX}/sensor/sensorBedroomT/config", b"")  # nothing left
    # Device-level: the whole device goes.
    assert registry.apply_config(f"{PREFIX}/device/kitchen01ae/config", b"")
    assert registry.entities == {}


def test_device_level_component_removal_and_update() -> None:
    topic, payload = devices.HA_DOCS.configs[1]
    registry = loaded(devices.HA_DOCS)
    assert {e.metric for e in registry.entities.values() if e.sensor_id == "Kitchen"} == {
        "Temperature",
        "Humidity",
    }
    config = json.loads(payload)
    config["cmps"]["some_unique_id2"] = {"p": "sensor"}  # only the platform: removed
    assert registry.apply_config(topic, dumps(config))
    assert {e.metric for e in registry.entities.values() if e.sensor_id == "Kitchen"} == {
        "Temperature"
    }
    assert not registry.apply_config(topic, dumps(config))  # the same again: no change


def test_an_unchanged_config_is_not_a_change() -> None:
    registry = loaded(devices.ESPHOME)
    version = registry.version
    for topic, payload in devices.ESPHOME.configs:
        assert not registry.apply_config(topic, payload)
    assert registry.version == version


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"cmps": {}}', "no components"),
        (b'{"cmps": {"a": {"name": "x"}}}', "no platform"),
    ],
)
def test_unreadable_configs_raise_and_keep_what_was_there(payload: bytes, reason: str) -> None:
    registry = loaded(devices.HA_DOCS)
    before = dict(registry.entities)
    topic = f"{PREFIX}/device/kitchen01ae/config"
    with pytest.raises(DiscoveryError, match=reason):
        registry.apply_config(topic, payload)
    assert registry.entities == before
    assert reason in registry.config_errors[topic]


def test_unsupported_template_is_a_problem_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    registry = loaded(devices.SHELLY_GEN1)
    key = f"{PREFIX}/binary_sensor/{devices.SHELLY1_ID}-overpower/config"
    warnings = [r.getMessage() for r in caplog.records if key in r.getMessage()]
    assert len(warnings) == 1 and "statements" in warnings[0]
    # More configs arriving (a rebuild) do not report it again.
    registry.apply_config(*devices.TASMOTA.configs[0])
    assert len([r for r in caplog.records if key in r.getMessage()]) == 1


def test_template_failures_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()
    registry.apply_config(
        f"{PREFIX}/sensor/x/config",
        dumps(
            {
                "name": "T",
                "stat_t": "x/state",
                "val_tpl": "{{ value | float }}",
                "dev": {"ids": "x"},
            }
        ),
    )
    for _ in range(3):
        got = registry.decode_state("x/state", b"warm", NOW)
        assert (got.readings, got.skipped) == ([], 1)
    stats = registry.stats[f"{PREFIX}/sensor/x/config"]
    assert (stats.messages, stats.errors, stats.readings) == (3, 3, 0)
    assert "not a number" in stats.last_error
    assert len([r for r in caplog.records if "failed on x/state" in r.getMessage()]) == 1


@pytest.mark.parametrize("payload", [b"unknown", b"unavailable", b"nan", b"None", b"", b"21.5 C"])
def test_states_that_are_not_numbers_are_skipped(payload: bytes) -> None:
    registry = loaded(devices.ESPHOME)
    got = registry.decode_state("livingroom/sensor/temperature/state", payload, NOW)
    assert (got.readings, got.skipped) == ([], 1)
    assert got.skipped_names == ["Living Room Climate · Temperature"]


def test_binary_states_follow_payload_on_and_off() -> None:
    registry = loaded(devices.ESPHOME)
    topic = "livingroom/binary_sensor/window/state"
    assert registry.decode_state(topic, b"OFF", NOW).readings[0].value == 0.0
    assert registry.decode_state(topic, b"ON", NOW).readings[0].value == 1.0
    assert registry.decode_state(topic, b"open", NOW).skipped == 1
    # Zigbee2MQTT's occupancy: payload_on true (JSON) renders "True", as in Home Assistant.
    registry.apply_config(
        f"{PREFIX}/binary_sensor/0x1/occupancy/config",
        dumps({"payload_on": True, "payload_off": False, "value_template": "{{ value_json.occupancy }}",
               "device_class": "motion", "state_topic": "zigbee2mqtt/hall",
               "device": {"identifiers": ["z_0x1"], "name": "hall"}}),
    )  # fmt: skip
    assert (
        registry.decode_state("zigbee2mqtt/hall", b'{"occupancy": true}', NOW).readings[0].value
        == 1.0
    )
    assert (
        registry.decode_state("zigbee2mqtt/hall", b'{"occupancy": false}', NOW).readings[0].value
        == 0.0
    )


def test_switches_and_numbers_when_asked_for() -> None:
    registry = loaded(devices.TASMOTA, components=frozenset({"sensor", "switch"}))
    got = registry.decode_state(f"tele/{devices.TASMOTA_TOPIC}/STATE", dumps({"POWER": "ON"}), NOW)
    assert [(r.sensor_id, r.metric, r.value) for r in got.readings] == [("Tasmota", "value", 1.0)]


# --- names ------------------------------------------------------------------------------------


def test_device_name_comes_from_another_config_of_the_same_device() -> None:
    # Tasmota's sensor configs carry only {"ids": [...]}; before the status config names
    # the device, the identifier stands in; afterwards the name does.
    registry = Registry()
    registry.apply_config(*devices.TASMOTA.configs[0])
    assert {e.sensor_id for e in registry.entities.values()} == {"35EBF6"}
    registry.apply_config(*devices.TASMOTA.configs[5])
    assert {e.sensor_id for e in registry.entities.values()} == {"Tasmota"}


def test_two_devices_with_one_name_are_told_apart() -> None:
    registry = Registry()
    for ident in ("aa", "bb"):
        registry.apply_config(
            f"{PREFIX}/sensor/{ident}/config",
            dumps(
                {
                    "dev_cla": "temperature",
                    "stat_t": f"{ident}/t",
                    "dev": {"ids": ident, "name": "Shelly Plus 1PM"},
                }
            ),
        )
    assert sorted(e.sensor_id for e in registry.entities.values()) == [
        "Shelly Plus 1PM",
        "Shelly Plus 1PM (bb)",
    ]


def test_two_entities_with_one_metric_name_are_told_apart() -> None:
    registry = Registry()
    for obj in ("t1", "t2"):
        registry.apply_config(
            f"{PREFIX}/sensor/{obj}/config",
            dumps({"dev_cla": "temperature", "stat_t": f"x/{obj}", "obj_id": f"probe_{obj}",
                   "dev": {"ids": "x", "name": "probe"}}),
        )  # fmt: skip
    assert sorted(e.metric for e in registry.entities.values()) == [
        "Temperature",
        "Temperature (t2)",
    ]


def test_names_without_a_device() -> None:
    registry = Registry()
    registry.apply_config(
        f"{PREFIX}/binary_sensor/garden/config",
        dumps(
            {
                "name": "garden",
                "device_class": "motion",
                "state_topic": "homeassistant/binary_sensor/garden/state",
            }
        ),
    )
    registry.apply_config(
        f"{PREFIX}/sensor/node1/cpu_temp/config", dumps({"state_topic": "n1/cpu"})
    )
    assert sorted((e.sensor_id, e.metric) for e in registry.entities.values()) == [
        ("garden", "Motion"),
        ("node1", "cpu_temp"),
    ]


def test_unusable_names_are_problems_not_crashes() -> None:
    registry = Registry(limits=Limits(max_name_length=10))
    registry.apply_config(
        f"{PREFIX}/sensor/x/config",
        dumps(
            {"name": "a name longer than ten", "stat_t": "x/s", "dev": {"ids": "x", "name": "dev"}}
        ),
    )
    (entity,) = registry.entities.values()
    assert entity.problem is not None and "longer than 10" in entity.problem
    assert registry.state_topics() == set()


def test_device_class_names() -> None:
    assert device_class_name("atmospheric_pressure") == "Atmospheric pressure"
    assert device_class_name("pm25") == "PM2.5"
    assert device_class_name("temperature") == "Temperature"


def test_parse_returns_none_for_removal_and_a_list_otherwise() -> None:
    topic, payload = devices.ESPHOME.configs[0]
    assert parse(topic, b"  ", PREFIX) is None
    (entity,) = parse(topic, payload, PREFIX) or []
    assert (entity.state_topic, entity.unit, entity.device.key, entity.device.name) == (
        "livingroom/sensor/temperature/state",
        "°C",
        "a4cf12abcdef",
        "Living Room Climate",
    )


def test_z2m_device_list_gives_units_by_field() -> None:
    from gateway.discovery.zigbee2mqtt import parse_devices

    units = parse_devices(devices.Z2M_BRIDGE_DEVICES, "zigbee2mqtt")
    assert units == {
        "zigbee2mqtt/living_room": {
            "temperature": "°C",
            "humidity": "%",
            "pressure": "hPa",
            "battery": "%",
            "linkquality": "lqi",
        },
        "zigbee2mqtt/my_bulb": {"color_temp": "mired", "linkquality": "lqi"},
    }
    with pytest.raises(DiscoveryError, match="array"):
        parse_devices(b"{}", "zigbee2mqtt")


def test_the_number_of_configs_is_bounded() -> None:
    registry = Registry(max_configs=3)
    for index in range(3):
        registry.apply_config(f"{PREFIX}/sensor/s{index}/config", dumps({"stat_t": f"s/{index}"}))
    with pytest.raises(DiscoveryError, match="more than 3 discovery configs"):
        registry.apply_config(f"{PREFIX}/sensor/s9/config", dumps({"stat_t": "s/9"}))
    # An update of one held, or a removal, still works; then there is room again.
    assert registry.apply_config(f"{PREFIX}/sensor/s0/config", dumps({"stat_t": "s/00"}))
    assert registry.apply_config(f"{PREFIX}/sensor/s1/config", b"")
    assert registry.apply_config(f"{PREFIX}/sensor/s9/config", dumps({"stat_t": "s/9"}))
    assert len(registry.configs) == 3
