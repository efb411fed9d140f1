"""Discovery configs and state payloads as the devices people own publish them.

Each sample is built the way the project's own source or documentation builds it; the
source is named above each one. Topics use made-up device ids (MAC-like suffixes).
Shared by the unit tests (``tests/unit/discovery``) and the end-to-end test through a
real Mosquitto (``tests/integration/test_devices.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PREFIX = "homeassistant"


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Expected:
    """One reading a sample must produce: sensor, metric, unit and value."""

    sensor_id: str
    metric: str
    unit: str | None
    value: float


@dataclass
class DeviceSample:
    """One device: its retained discovery configs, the states it then publishes, and
    what tidegate must store from them."""

    family: str
    source: str
    configs: list[tuple[str, bytes]]
    states: list[tuple[str, bytes]]
    expected: list[Expected]
    problems: dict[str, str] = field(default_factory=dict)
    """Discovery topic (or entity key) → a fragment of the reason it stores nothing."""


# --- Zigbee2MQTT ----------------------------------------------------------------------------
# Configs: Koenkk/zigbee2mqtt lib/extension/homeassistant.ts, exactly as asserted in its
# test/extensions/homeassistant.test.ts ("Should discover devices and groups") for the
# Aqara WSDCGQ11LM weather sensor: no "name" for entities with a device class,
# "Linkquality" named, value_template '{{ value_json["temperature"] }}'. The light
# (name null, component light) and the event entity (a {% … %} template) store nothing.
# State: zigbee2mqtt.io docs/guide/usage/mqtt_topics_and_messages.md ("Xiaomi MiJia
# temperature & humidity sensor": {"temperature": 27.34, "humidity": 44.72}) plus the
# weather sensor's pressure, battery and linkquality fields.

Z2M_ORIGIN = {"name": "Zigbee2MQTT", "sw": "2.1.1", "url": "https://www.zigbee2mqtt.io"}
Z2M_AVAILABILITY = [
    {"topic": "zigbee2mqtt/bridge/state", "value_template": "{{ value_json.state }}"}
]
Z2M_WEATHER_DEVICE = {
    "identifiers": ["zigbee2mqtt_0x0017880104e45522"],
    "name": "weather_sensor",
    "model": "Temperature and humidity sensor",
    "model_id": "WSDCGQ11LM",
    "manufacturer": "Aqara",
    "via_device": "zigbee2mqtt_bridge_0x00124b00120144ae",
}


def _z2m_sensor(prop: str, unit: str, device_class: str | None, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "unit_of_measurement": unit,
        "state_class": "measurement",
        "value_template": '{{ value_json["' + prop + '"] }}',
        "state_topic": "zigbee2mqtt/weather_sensor",
        "object_id": f"weather_sensor_{prop}",
        "default_entity_id": f"sensor.weather_sensor_{prop}",
        "unique_id": f"0x0017880104e45522_{prop}_zigbee2mqtt",
        "origin": Z2M_ORIGIN,
        "device": Z2M_WEATHER_DEVICE,
        "availability": Z2M_AVAILABILITY,
        "enabled_by_default": True,
    }
    if device_class:
        payload["device_class"] = device_class
    payload.update(extra)
    return payload


ZIGBEE2MQTT = DeviceSample(
    family="Zigbee2MQTT",
    source="Koenkk/zigbee2mqtt test/extensions/homeassistant.test.ts; zigbee2mqtt.io mqtt_topics_and_messages.md",
    configs=[
        (f"{PREFIX}/sensor/0x0017880104e45522/temperature/config", dumps(_z2m_sensor("temperature", "°C", "temperature"))),
        (f"{PREFIX}/sensor/0x0017880104e45522/humidity/config", dumps(_z2m_sensor("humidity", "%", "humidity"))),
        (f"{PREFIX}/sensor/0x0017880104e45522/pressure/config", dumps(_z2m_sensor("pressure", "hPa", "atmospheric_pressure"))),
        (f"{PREFIX}/sensor/0x0017880104e45522/battery/config", dumps(_z2m_sensor("battery", "%", "battery", entity_category="diagnostic"))),
        (
            f"{PREFIX}/sensor/0x0017880104e45522/linkquality/config",
            dumps(_z2m_sensor("linkquality", "lqi", None, name="Linkquality", icon="mdi:signal", entity_category="diagnostic", enabled_by_default=False)),
        ),
        (
            f"{PREFIX}/light/0x000b57fffec6a5b2/light/config",
            dumps({
                "availability": Z2M_AVAILABILITY, "brightness": True, "brightness_scale": 254,
                "command_topic": "zigbee2mqtt/bulb/set",
                "device": {"identifiers": ["zigbee2mqtt_0x000b57fffec6a5b2"], "manufacturer": "IKEA",
                           "model": "TRADFRI bulb E26/E27, white spectrum, globe, opal, 980 lm",
                           "model_id": "LED1545G12", "name": "bulb"},
                "name": None, "schema": "json", "state_topic": "zigbee2mqtt/bulb",
                "object_id": "bulb", "default_entity_id": "light.bulb",
                "unique_id": "0x000b57fffec6a5b2_light_zigbee2mqtt", "origin": Z2M_ORIGIN,
            }),
        ),
        (
            f"{PREFIX}/event/0x0017880104e45520/action/config",
            dumps({
                "availability": Z2M_AVAILABILITY,
                "device": {"identifiers": ["zigbee2mqtt_0x0017880104e45520"], "manufacturer": "Aqara",
                           "model": "Wireless mini switch", "model_id": "WXKG11LM", "name": "button"},
                "event_types": ["single", "double", "hold", "release"], "icon": "mdi:gesture-double-tap",
                "name": "Action", "object_id": "button_action", "origin": Z2M_ORIGIN,
                "state_topic": "zigbee2mqtt/button", "unique_id": "0x0017880104e45520_action_zigbee2mqtt",
                "value_template": "{% set action_value = value_json.action|default('') %}{{ action_value }}",
            }),
        ),
    ],
    states=[
        (
            "zigbee2mqtt/weather_sensor",
            dumps({"temperature": 27.34, "humidity": 44.72, "pressure": 1013.1, "battery": 97,
                   "linkquality": 65, "voltage": 3005}),
        ),
        ("zigbee2mqtt/bulb", dumps({"state": "ON", "brightness": 215, "color_temp": 325})),
    ],
    expected=[
        Expected("weather_sensor", "Temperature", "°C", 27.34),
        Expected("weather_sensor", "Humidity", "%", 44.72),
        Expected("weather_sensor", "Atmospheric pressure", "hPa", 1013.1),
        Expected("weather_sensor", "Battery", "%", 97.0),
        Expected("weather_sensor", "Linkquality", "lqi", 65.0),
    ],
    problems={
        f"{PREFIX}/light/0x000b57fffec6a5b2/light/config": "component 'light' is not stored",
        f"{PREFIX}/event/0x0017880104e45520/action/config": "component 'event' is not stored",
    },
)  # fmt: skip


# --- Tasmota ----------------------------------------------------------------------------------
# Configs: arendst/Tasmota tasmota/xdrv_12_home_assistant.ino (SetOption19 1, the Home
# Assistant discovery): HASS_DISCOVER_BASE + HASS_DISCOVER_SENSOR_LWT +
# HASS_DISCOVER_DEVICE_INFO_SHORT + HASS_DISCOVER_SENSOR for each sensor value — the
# name is "<DeviceName> <sensor> <value>", unique id "%06X_<sensor>_<value>", only the
# device's identifiers, unit from TempUnit for Temperature, " " when none, the template
# {{value_json['<sensor>']['<value>']}}; the status sensor (HASS_DISCOVER_SENSOR_HASS_STATUS
# + HASS_DISCOVER_DEVICE_INFO) is the config that carries the device's name.
# States: tele/<topic>/SENSOR as in Tasmota's docs (docs/MQTT.md "Telemetry data ...")
# with the AM2301 and ENERGY fields and the TempUnit the firmware appends
# (tasmota/support_tasmota.ino MqttShowSensor); tele/<topic>/HASS_STATE as the firmware's
# HAssPublishStatus writes it.

TASMOTA_TOPIC = "tasmota_35EBF6"
TASMOTA_SHORT_DEVICE = {"ids": ["35EBF6"]}


def _tasmota_sensor(sensor: str, value: str, unit: str, cls: str) -> tuple[str, bytes]:
    uniq = f"35EBF6_{sensor}_{value}"
    text = (
        '{"name":"Tasmota ' + f'{sensor} {value}","stat_t":"tele/{TASMOTA_TOPIC}/SENSOR",'
        f'"avty_t":"tele/{TASMOTA_TOPIC}/LWT","pl_avail":"Online","pl_not_avail":"Offline",'
        f'"uniq_id":"{uniq}","dev":{{"ids":["35EBF6"]}},"unit_of_meas":"{unit}","{cls}",'
        f'"frc_upd":true,"val_tpl":"{{{{value_json[\'{sensor}\'][\'{value}\']}}}}"}}'
    )
    return f"{PREFIX}/sensor/{uniq}/config", text.encode()


TASMOTA = DeviceSample(
    family="Tasmota",
    source="arendst/Tasmota tasmota/xdrv_12_home_assistant.ino; tasmota/docs docs/MQTT.md",
    configs=[
        _tasmota_sensor("AM2301", "Temperature", "°C", 'dev_cla":"temperature'),
        _tasmota_sensor("AM2301", "Humidity", "%", 'dev_cla":"humidity'),
        _tasmota_sensor("ENERGY", "Power", "W", 'dev_cla":"power'),
        _tasmota_sensor("ENERGY", "Total", "kWh", 'dev_cla":"power'),
        _tasmota_sensor("ENERGY", "TotalStartTime", " ", 'ic":"mdi:progress-clock'),
        (
            f"{PREFIX}/sensor/35EBF6_status/config",
            dumps({
                "name": "Tasmota status", "stat_t": f"tele/{TASMOTA_TOPIC}/HASS_STATE",
                "avty_t": f"tele/{TASMOTA_TOPIC}/LWT", "pl_avail": "Online", "pl_not_avail": "Offline",
                "json_attr_t": f"tele/{TASMOTA_TOPIC}/HASS_STATE", "unit_of_meas": "%",
                "val_tpl": "{{value_json['RSSI']}}", "ic": "mdi:information-outline",
                "uniq_id": "35EBF6_status",
                "dev": {"ids": ["35EBF6"], "name": "Tasmota", "mdl": "Sonoff Pow R2",
                        "sw": "9.1.0(tasmota)", "mf": "Tasmota"},
            }),
        ),
        (
            f"{PREFIX}/switch/35EBF6_RL_1/config",
            dumps({
                "name": "Tasmota", "cmd_t": f"cmnd/{TASMOTA_TOPIC}/POWER",
                "stat_t": f"tele/{TASMOTA_TOPIC}/STATE", "val_tpl": "{{value_json.POWER}}",
                "pl_off": "OFF", "pl_on": "ON", "avty_t": f"tele/{TASMOTA_TOPIC}/LWT",
                "pl_avail": "Online", "pl_not_avail": "Offline", "uniq_id": "35EBF6_RL_1",
                "dev": TASMOTA_SHORT_DEVICE,
            }),
        ),
    ],
    states=[
        (
            f"tele/{TASMOTA_TOPIC}/SENSOR",
            dumps({"Time": "2021-01-01T12:00:00",
                   "AM2301": {"Temperature": 21.3, "Humidity": 45.2, "DewPoint": 8.9},
                   "ENERGY": {"TotalStartTime": "2020-12-01T09:00:00", "Total": 1.234,
                              "Yesterday": 0.5, "Today": 0.12, "Power": 45},
                   "TempUnit": "C"}),
        ),
        (
            f"tele/{TASMOTA_TOPIC}/HASS_STATE",
            dumps({"Version": "9.1.0(tasmota)", "Module or Template": "Sonoff Pow R2",
                   "RestartReason": "Software/System restart", "Uptime": "0T00:02:10",
                   "Hostname": TASMOTA_TOPIC, "IPAddress": "192.168.1.50", "RSSI": "88",
                   "Signal (dBm)": "-56", "WiFi LinkCount": 1, "WiFi Downtime": "0T00:00:03",
                   "MqttCount": 1, "LoadAvg": 19}),
        ),
    ],
    expected=[
        Expected("Tasmota", "AM2301 Temperature", "°C", 21.3),
        Expected("Tasmota", "AM2301 Humidity", "%", 45.2),
        Expected("Tasmota", "ENERGY Power", "W", 45.0),
        Expected("Tasmota", "ENERGY Total", "kWh", 1.234),
        Expected("Tasmota", "status", "%", 88.0),
    ],
    problems={f"{PREFIX}/switch/35EBF6_RL_1/config": "component 'switch' is not stored"},
)  # fmt: skip


# --- ESPHome ------------------------------------------------------------------------------------
# Configs: esphome/esphome esphome/components/mqtt/mqtt_component.cpp send_discovery_ and
# mqtt_sensor.cpp send_discovery (abbreviated keys of mqtt_const.h): topic
# <prefix>/sensor/<node>/<object_id>/config, "ids" a plain MAC string, device name the
# node's friendly name, "name" "" for an entity without a name of its own (the device's
# main feature), unique id "ESP" + component + object id. States: mqtt_sensor.cpp
# publish_state: value_accuracy_to_string(value, accuracy), "nan" for a failed sensor.

ESPHOME_DEVICE = {
    "ids": "a4cf12abcdef",
    "name": "Living Room Climate",
    "sw": "2024.6.0 (config hash 0x1234abcd)",
    "mdl": "nodemcuv2",
    "mf": "Espressif",
    "cns": [["mac", "a4cf12abcdef"]],
}

ESPHOME = DeviceSample(
    family="ESPHome",
    source="esphome/esphome esphome/components/mqtt/mqtt_component.cpp, mqtt_sensor.cpp",
    configs=[
        (
            f"{PREFIX}/sensor/livingroom/temperature/config",
            dumps({"dev_cla": "temperature", "unit_of_meas": "°C", "stat_cla": "measurement",
                   "name": "Temperature", "stat_t": "livingroom/sensor/temperature/state",
                   "avty_t": "livingroom/status", "uniq_id": "ESPsensortemperature",
                   "dev": ESPHOME_DEVICE}),
        ),
        (
            f"{PREFIX}/sensor/livingroom/humidity/config",
            dumps({"dev_cla": "humidity", "unit_of_meas": "%", "stat_cla": "measurement",
                   "name": "", "stat_t": "livingroom/sensor/humidity/state",
                   "avty_t": "livingroom/status", "uniq_id": "ESPsensorhumidity",
                   "dev": ESPHOME_DEVICE}),
        ),
        (
            f"{PREFIX}/sensor/livingroom/wifi_signal/config",
            dumps({"dev_cla": "signal_strength", "unit_of_meas": "dBm", "stat_cla": "measurement",
                   "name": "WiFi Signal", "ent_cat": "diagnostic",
                   "stat_t": "livingroom/sensor/wifi_signal/state", "avty_t": "livingroom/status",
                   "uniq_id": "ESPsensorwifi_signal", "dev": ESPHOME_DEVICE}),
        ),
        (
            f"{PREFIX}/binary_sensor/livingroom/window/config",
            dumps({"dev_cla": "window", "name": "Window", "stat_t": "livingroom/binary_sensor/window/state",
                   "avty_t": "livingroom/status", "uniq_id": "ESPbinary_sensorwindow",
                   "dev": ESPHOME_DEVICE}),
        ),
    ],
    states=[
        ("livingroom/sensor/temperature/state", b"21.5"),
        ("livingroom/sensor/humidity/state", b"nan"),
        ("livingroom/sensor/humidity/state", b"48.3"),
        ("livingroom/sensor/wifi_signal/state", b"-61"),
        ("livingroom/binary_sensor/window/state", b"ON"),
    ],
    expected=[
        Expected("Living Room Climate", "Temperature", "°C", 21.5),
        Expected("Living Room Climate", "Humidity", "%", 48.3),
        Expected("Living Room Climate", "WiFi Signal", "dBm", -61.0),
        Expected("Living Room Climate", "Window", None, 1.0),
    ],
)  # fmt: skip


# --- Shelly Gen1 ----------------------------------------------------------------------------------
# Gen1 firmware publishes shellies/<id>/relay/0/power (W), .../relay/0/energy (watt-minutes)
# and shellies/<id>/temperature (°C) as bare numbers (Shelly Gen1 API docs, "Shelly1PM:
# MQTT"); it announces nothing to Home Assistant itself. Shelly users get discovery from
# bieniu/ha-shellies-discovery (python_scripts/shellies_discovery.py), whose configs
# are built here from its KEY_* abbreviations and TPL_* templates:
# TPL_POWER "{{value|float|round(1)}}", TPL_ENERGY_WMIN "{{(value|float/60/1000)|round(2)}}",
# TPL_TEMPERATURE "{{value|float|round(1)}}", and TPL_OVERPOWER — a {% if %} statement,
# which tidegate refuses and reports.

SHELLY1_ID = "shelly1pm-8CAAB5051234"
SHELLY1_DEVICE = {"ids": ["8caab5051234"], "name": "Garage Plug", "mdl": "Shelly1PM",
                  "sw": "20230913-114010/v1.14.0-gcb84623", "mf": "Allterco Robotics"}  # fmt: skip


def _shelly1(entity: str, component: str, extra: dict[str, Any]) -> tuple[str, bytes]:
    payload = {
        "name": f"Garage Plug {entity.replace('_', ' ')}",
        "uniq_id": f"8caab5051234-{entity}",
        "qos": 0,
        "avty_t": f"shellies/{SHELLY1_ID}/online",
        "pl_avail": "true",
        "pl_not_avail": "false",
        "dev": SHELLY1_DEVICE,
        **extra,
    }
    return f"{PREFIX}/{component}/{SHELLY1_ID}-{entity}/config", dumps(payload)


SHELLY_GEN1 = DeviceSample(
    family="Shelly Gen1",
    source="bieniu/ha-shellies-discovery python_scripts/shellies_discovery.py; Shelly Gen1 MQTT API",
    configs=[
        _shelly1("relay_0_power", "sensor", {"stat_t": f"shellies/{SHELLY1_ID}/relay/0/power",
                 "unit_of_meas": "W", "dev_cla": "power", "val_tpl": "{{value|float|round(1)}}"}),
        _shelly1("relay_0_energy", "sensor", {"stat_t": f"shellies/{SHELLY1_ID}/relay/0/energy",
                 "unit_of_meas": "kWh", "dev_cla": "energy", "stat_cla": "total_increasing",
                 "val_tpl": "{{(value|float/60/1000)|round(2)}}"}),
        _shelly1("temperature", "sensor", {"stat_t": f"shellies/{SHELLY1_ID}/temperature",
                 "unit_of_meas": "°C", "dev_cla": "temperature", "val_tpl": "{{value|float|round(1)}}"}),
        _shelly1("overpower", "binary_sensor", {"stat_t": f"shellies/{SHELLY1_ID}/relay/0",
                 "pl_on": "ON", "pl_off": "OFF", "dev_cla": "problem",
                 "val_tpl": "{% if value_json.overpower == true %}ON{% else %}OFF{% endif %}"}),
    ],
    states=[
        (f"shellies/{SHELLY1_ID}/relay/0/power", b"36.72"),
        (f"shellies/{SHELLY1_ID}/relay/0/energy", b"123456"),
        (f"shellies/{SHELLY1_ID}/temperature", b"41.83"),
        (f"shellies/{SHELLY1_ID}/relay/0", b"on"),
    ],
    expected=[
        Expected("Garage Plug", "relay 0 power", "W", 36.7),
        Expected("Garage Plug", "relay 0 energy", "kWh", 2.06),
        Expected("Garage Plug", "temperature", "°C", 41.8),
    ],
    problems={f"{PREFIX}/binary_sensor/{SHELLY1_ID}-overpower/config": "statements"},
)  # fmt: skip


# --- Shelly Gen2 ----------------------------------------------------------------------------------
# Gen2 firmware publishes <id>/status/switch:0 with the Switch component's status
# (https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Switch, GetStatus
# example) when "generic status update over MQTT" is on, and NotifyStatus frames on
# <id>/events/rpc. Discovery comes from bieniu/ha-shellies-discovery-gen2
# (python_scripts/shellies_discovery_gen2.py): "~" = "<id>/", TOPIC_SWITCH_RELAY
# "~status/switch:{id}", TPL_POWER "{{value_json.apower}}", TPL_ENERGY
# "{{value_json.aenergy.total}}", TPL_VOLTAGE "{{value_json.voltage}}", TPL_CURRENT
# "{{value_json.current}}", TPL_TEMPERATURE "{{value_json.temperature.tC}}" — here in
# the device-level form with "cmps" (Home Assistant 2024.12), which shares "~", the
# state topic and the device across the components.

SHELLY2_ID = "shellyplus1pm-a8032ab12345"


def _gen2_component(name: str, template: str, unit: str, cls: str) -> dict[str, Any]:
    return {"p": "sensor", "name": name, "val_tpl": template, "unit_of_meas": unit,
            "dev_cla": cls, "stat_cla": "measurement",
            "uniq_id": f"a8032ab12345-switch:0-{name.lower()}"}  # fmt: skip


SHELLY_GEN2 = DeviceSample(
    family="Shelly Gen2",
    source="Shelly Gen2 API docs (Switch status); bieniu/ha-shellies-discovery-gen2; HA device discovery (cmps)",
    configs=[
        (
            f"{PREFIX}/device/{SHELLY2_ID}/config",
            dumps({
                "~": f"{SHELLY2_ID}/",
                "dev": {"ids": ["a8032ab12345"], "name": "Boiler Switch", "mdl": "Shelly Plus 1PM",
                        "mdl_id": "SNSW-001P16EU", "sw": "1.4.4", "mf": "Shelly",
                        "cu": "http://192.168.1.60/"},
                "o": {"name": "Shellies Discovery Gen2", "sw": "3.4.0",
                      "url": "https://github.com/bieniu/ha-shellies-discovery-gen2"},
                "stat_t": "~status/switch:0",
                "cmps": {
                    "switch_0_power": _gen2_component("Power", "{{value_json.apower}}", "W", "power"),
                    "switch_0_energy": _gen2_component("Energy", "{{value_json.aenergy.total}}", "Wh", "energy"),
                    "switch_0_voltage": _gen2_component("Voltage", "{{value_json.voltage}}", "V", "voltage"),
                    "switch_0_current": _gen2_component("Current", "{{value_json.current}}", "A", "current"),
                    "switch_0_temperature": _gen2_component("Temperature", "{{value_json.temperature.tC}}", "°C", "temperature"),
                },
            }),
        ),
    ],
    states=[
        (
            f"{SHELLY2_ID}/status/switch:0",
            dumps({"id": 0, "source": "WS_in", "output": True, "apower": 8.9, "voltage": 237.5,
                   "freq": 50, "current": 0.068, "pf": 0.56,
                   "aenergy": {"total": 6.532, "by_minute": [45.199, 47.141, 88.397], "minute_ts": 1654511972},
                   "temperature": {"tC": 23.5, "tF": 74.4}}),
        ),
    ],
    expected=[
        Expected("Boiler Switch", "Power", "W", 8.9),
        Expected("Boiler Switch", "Energy", "Wh", 6.532),
        Expected("Boiler Switch", "Voltage", "V", 237.5),
        Expected("Boiler Switch", "Current", "A", 0.068),
        Expected("Boiler Switch", "Temperature", "°C", 23.5),
    ],
)  # fmt: skip


# --- Home Assistant's own examples -----------------------------------------------------------------
# home-assistant.io source/_integrations/mqtt.markdown: the single-component sensor
# example (device "Bedroom", unique_id "temp01ae") and the device-based example with
# "cmps" (device "Kitchen", components temp01ae_t / temp01ae_h sharing state_topic
# "sensorBedroom/state", qos 2).

HA_DOCS = DeviceSample(
    family="Home Assistant docs",
    source="home-assistant.io source/_integrations/mqtt.markdown (discovery examples)",
    configs=[
        (
            f"{PREFIX}/sensor/sensorBedroomT/config",
            dumps({"device_class": "temperature", "state_topic": "homeassistant/sensor/sensorBedroom/state",
                   "unit_of_measurement": "°C", "value_template": "{{ value_json.temperature}}",
                   "unique_id": "temp01ae", "device": {"identifiers": ["bedroom01ae"], "name": "Bedroom"}}),
        ),
        (
            f"{PREFIX}/device/kitchen01ae/config",
            dumps({
                "dev": {"ids": "ea334450945afc", "name": "Kitchen", "mf": "Bla electronics", "mdl": "xya",
                        "sw": "1.0", "sn": "ea334450945afc", "hw": "1.0rev2"},
                "o": {"name": "bla2mqtt", "sw": "2.1", "url": "https://bla2mqtt.example.com/support"},
                "cmps": {
                    "some_unique_component_id1": {"p": "sensor", "device_class": "temperature",
                                                  "unit_of_measurement": "°C",
                                                  "value_template": "{{ value_json.temperature}}",
                                                  "unique_id": "temp01ae_t"},
                    "some_unique_id2": {"p": "sensor", "device_class": "humidity", "unit_of_measurement": "%",
                                        "value_template": "{{ value_json.humidity}}", "unique_id": "temp01ae_h"},
                },
                "state_topic": "sensorBedroom/state",
                "qos": 2,
            }),
        ),
    ],
    states=[
        ("homeassistant/sensor/sensorBedroom/state", dumps({"temperature": 23.2})),
        ("sensorBedroom/state", dumps({"temperature": 22.5, "humidity": 43.7})),
    ],
    expected=[
        Expected("Bedroom", "Temperature", "°C", 23.2),
        Expected("Kitchen", "Temperature", "°C", 22.5),
        Expected("Kitchen", "Humidity", "%", 43.7),
    ],
)  # fmt: skip


ALL = [ZIGBEE2MQTT, TASMOTA, ESPHOME, SHELLY_GEN1, SHELLY_GEN2, HA_DOCS]


# --- Zigbee2MQTT device list ------------------------------------------------------------------------
# zigbee2mqtt.io docs/guide/usage/mqtt_topics_and_messages.md (bridge/devices) with
# exposes from docs/guide/usage/exposes.md (numeric temperature °C, composite color_xy,
# a light's features), for units on a hand-written zigbee2mqtt/+ subscription.

Z2M_BRIDGE_DEVICES = dumps([
    {"ieee_address": "0x00124b00120144ae", "type": "Coordinator", "network_address": 0,
     "supported": False, "friendly_name": "Coordinator", "definition": None},
    {"ieee_address": "0x00158d00018255df", "type": "EndDevice", "network_address": 29159,
     "supported": True, "friendly_name": "living_room",
     "definition": {"model": "WSDCGQ11LM", "vendor": "Aqara", "description": "Temperature and humidity sensor",
                    "options": [],
                    "exposes": [
                        {"type": "numeric", "name": "temperature", "property": "temperature", "unit": "°C", "access": 1},
                        {"type": "numeric", "name": "humidity", "property": "humidity", "unit": "%", "access": 1},
                        {"type": "numeric", "name": "pressure", "property": "pressure", "unit": "hPa", "access": 1},
                        {"type": "numeric", "name": "battery", "property": "battery", "unit": "%", "access": 1},
                        {"type": "numeric", "name": "linkquality", "property": "linkquality", "unit": "lqi", "access": 1},
                    ]},
     "power_source": "Battery", "interviewing": False, "interview_completed": True},
    {"ieee_address": "0x90fd9ffffe6494fc", "type": "Router", "network_address": 57440,
     "supported": True, "friendly_name": "my_bulb",
     "definition": {"model": "LED1624G9", "vendor": "IKEA", "description": "TRADFRI LED bulb E14/E26/E27 600 lumen",
                    "options": [],
                    "exposes": [
                        {"type": "light", "features": [
                            {"type": "binary", "name": "state", "property": "state", "value_on": "ON",
                             "value_off": "OFF", "value_toggle": "TOGGLE", "access": 7},
                            {"type": "numeric", "name": "brightness", "property": "brightness",
                             "value_min": 0, "value_max": 254, "access": 7},
                            {"type": "numeric", "name": "color_temp", "property": "color_temp", "unit": "mired", "access": 7},
                            {"type": "composite", "name": "color_xy", "property": "color", "features": [
                                {"type": "numeric", "name": "x", "property": "x", "access": 7},
                                {"type": "numeric", "name": "y", "property": "y", "access": 7}]},
                        ]},
                        {"type": "numeric", "name": "linkquality", "property": "linkquality", "unit": "lqi", "access": 1},
                    ]},
     "power_source": "Mains (single phase)", "interviewing": False, "interview_completed": True},
])  # fmt: skip
