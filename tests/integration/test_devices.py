"""The devices people own, end to end through a real Mosquitto and a gateway process:
discovery configs published retained (Zigbee2MQTT, Tasmota, ESPHome, Shelly Gen1 and
Gen2, Home Assistant's own examples — samples and their sources in
tests/support/devices.py), then their states; ``tidegate sensors --format json`` lists
the right names, units and values with no hand-written subscription for any of them.
A Shelly Gen2 NotifyStatus subscription shows the mapping options on the same run.
Removal by an empty retained config, and a restart against a broker that lost
everything (no retained configs, no session) keep working from the saved state."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from gateway.discovery import store
from tests.support import HOST, Broker, GatewayProcess, db_rows, devices, wait_for
from tests.support.devices import PREFIX, dumps
from tests.support.mqtt import gateway_config

pytestmark = pytest.mark.integration

SHELLY_NOTIFY_SUB = """
[[subscriptions]]
topic = "+/events/rpc"
name = "shelly-gen2"
sensor_id_field = "src"
ts_field = "params.ts"
strip_prefix = "params."
exclude = ["*.id", "*.minute_ts", "*.tF"]
units = { "switch:0.apower" = "W", "switch:0.voltage" = "V", "switch:0.aenergy.total" = "Wh", "switch:0.temperature.tC" = "°C" }
"""

# Shelly Gen2 NotifyStatus on <id>/events/rpc (shelly-api-docs gen2/General/Notifications).
NOTIFY_TS = int(time.time()) - 30


def notify_status(apower: float) -> bytes:
    return dumps(
        {
            "src": devices.SHELLY2_ID,
            "dst": f"{devices.SHELLY2_ID}/events",
            "method": "NotifyStatus",
            "params": {
                "ts": NOTIFY_TS + apower / 1000,
                "switch:0": {
                    "id": 0,
                    "apower": apower,
                    "voltage": 231.4,
                    "aenergy": {"total": 6.6, "by_minute": [1.0, 2.0, 3.0], "minute_ts": NOTIFY_TS},
                    "temperature": {"tC": 40.2, "tF": 104.4},
                },
            },
        }
    )


def publish(port: int, messages: list[tuple[str, bytes]], retain: bool = False) -> None:
    """Publish at QoS 1 and wait for every PUBACK."""
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=f"devices-{time.monotonic_ns()}"
    )
    client.connect(HOST, port)
    client.loop_start()
    try:
        infos = [client.publish(t, p, qos=1, retain=retain) for t, p in messages]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def cli(*args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def sensors(cfg: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (r["sensor_id"], r["metric"]): r
        for r in cli("sensors", "--config", str(cfg), "--format", "json")
    }


def readings(db: Path) -> int:
    rows = db_rows(db, "SELECT count(*) FROM readings")
    return int(rows[0][0]) if rows else 0


def saved_configs(db: Path) -> set[str]:
    snapshot = store.read(store.state_path(db))
    return set(snapshot.configs) if snapshot is not None else set()


ALL_CONFIGS = [c for sample in devices.ALL for c in sample.configs]
EXPECTED = [e for sample in devices.ALL for e in sample.expected]
STATES = [s for sample in devices.ALL for s in sample.states]


def test_discovered_devices_end_to_end(fresh_broker: Broker, tmp_path: Path) -> None:
    db = tmp_path / "devices.db"
    cfg = gateway_config(
        tmp_path / "devices.toml",
        fresh_broker.port,
        db,
        client_id="tidegate-devices",
        subscriptions=SHELLY_NOTIFY_SUB,
        extra=f'[discovery]\nhomeassistant = true\nprefix = "{PREFIX}"\n',
    )
    # The devices announced themselves before the gateway ever ran.
    publish(fresh_broker.port, ALL_CONFIGS, retain=True)
    gateway = GatewayProcess(cfg, tmp_path / "gateway.log").start()
    try:
        # Saved after the state topics were subscribed (the file follows the SUBACKs).
        wanted = {topic for topic, _ in ALL_CONFIGS}
        wait_for(lambda: saved_configs(db) == wanted, 30, what="every discovery config saved")
        publish(
            fresh_broker.port, [*STATES, (f"{devices.SHELLY2_ID}/events/rpc", notify_status(8.9))]
        )
        total = (
            len(EXPECTED) + 4
        )  # + apower, voltage, aenergy.total, temperature.tC via the subscription
        wait_for(lambda: readings(db) >= total, 30, what=f"{total} readings")
        time.sleep(0.5)  # anything unexpected would arrive now
        got = sensors(cfg)
        for e in EXPECTED:
            row = got.get((e.sensor_id, e.metric))
            assert row is not None, (e, sorted(got))
            assert (row["unit"], round(row["last_value"], 6)) == (e.unit, e.value), row
        assert got[(devices.SHELLY2_ID, "switch:0.apower")]["unit"] == "W"
        assert got[(devices.SHELLY2_ID, "switch:0.temperature.tC")]["last_value"] == 40.2
        assert len(got) == total, sorted(set(got) - {(e.sensor_id, e.metric) for e in EXPECTED})
        assert readings(db) == total
        # Nothing was dead-lettered: nan, unknown states and text were skipped.
        assert db_rows(db, "SELECT count(*) FROM dead_letters") == [(0,)]

        # What stores nothing says why, once, in the log and in `discovery list`.
        listing = cli("discovery", "list", "--config", str(cfg), "--problems", "--format", "json")
        reasons = {row["discovery_topic"]: row["status"] for row in listing}
        for sample in devices.ALL:
            for key, fragment in sample.problems.items():
                assert fragment in reasons[key], (key, reasons.get(key))
        log = gateway.log_text()
        overpower = f"{PREFIX}/binary_sensor/{devices.SHELLY1_ID}-overpower/config"
        assert log.count(overpower) == 1, log

        # Removal: an empty retained config, then the device's state is no longer stored.
        bedroom = f"{PREFIX}/sensor/sensorBedroomT/config"
        publish(fresh_broker.port, [(bedroom, b"")], retain=True)
        wait_for(lambda: bedroom not in saved_configs(db), 30, what="the removal saved")
        before = readings(db)
        publish(
            fresh_broker.port,
            [("homeassistant/sensor/sensorBedroom/state", dumps({"temperature": 30.0}))],
        )
        publish(fresh_broker.port, [("livingroom/sensor/temperature/state", b"22.25")])
        wait_for(lambda: readings(db) == before + 1, 30, what="the ESPHome marker reading")
        assert sensors(cfg)[("Bedroom", "Temperature")]["last_value"] == 23.2
    finally:
        assert gateway.terminate() == 0

    # The broker loses everything: sessions, subscriptions, retained configs.
    fresh_broker.stop()
    (fresh_broker.workdir / "mosquitto.db").unlink()
    fresh_broker.start()
    gateway = GatewayProcess(cfg, tmp_path / "gateway.log").start()  # subscribed before "ready"
    try:
        before = readings(db)
        publish(
            fresh_broker.port,
            [
                ("zigbee2mqtt/weather_sensor", dumps({"temperature": 19.5, "humidity": 51.0})),
                (f"tele/{devices.TASMOTA_TOPIC}/SENSOR", dumps({"AM2301": {"Temperature": 18.25}})),
                (f"{devices.SHELLY2_ID}/status/switch:0", dumps({"apower": 120.5})),
                ("sensorBedroom/state", dumps({"humidity": 55.5})),
            ],
        )
        wait_for(lambda: readings(db) >= before + 5, 30, what="readings after the restart")
        time.sleep(0.3)
        got = sensors(cfg)
        assert got[("weather_sensor", "Temperature")]["last_value"] == 19.5
        assert got[("weather_sensor", "Humidity")]["last_value"] == 51.0
        assert got[("Tasmota", "AM2301 Temperature")]["last_value"] == 18.25
        assert got[("Boiler Switch", "Power")]["last_value"] == 120.5
        assert got[("Kitchen", "Humidity")]["last_value"] == 55.5
        assert readings(db) == before + 5
        assert saved_configs(db) == {topic for topic, _ in ALL_CONFIGS} - {
            f"{PREFIX}/sensor/sensorBedroomT/config"
        }
    finally:
        assert gateway.terminate() == 0
