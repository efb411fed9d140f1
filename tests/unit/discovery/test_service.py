"""Discovery through the router, its subscriptions, the saved state and
``tidegate discovery list`` — with fake filter groups (the real broker is in
tests/integration/test_devices.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main
from gateway.config import DiscoveryConfig, SubscriptionConfig
from gateway.discovery import store
from gateway.discovery.service import DiscoveryService
from gateway.router import Router
from gateway.validation import Limits
from tests.support import devices
from tests.support.devices import PREFIX

NOW = 1_700_000_000_000


class FakeGroup:
    """Records what the service asks of a filter group."""

    def __init__(self) -> None:
        self.filters: dict[str, int] = {}
        self.calls: list[tuple[str, Any]] = []

    def set_initial(self, filters: dict[str, int]) -> None:
        self.filters = dict(filters)
        self.calls.append(("initial", dict(filters)))

    async def add(self, topic_filter: str, qos: int = 1) -> bool:
        self.filters[topic_filter] = qos
        self.calls.append(("add", topic_filter))
        return True

    async def remove(self, topic_filter: str) -> bool:
        self.filters.pop(topic_filter, None)
        self.calls.append(("remove", topic_filter))
        return True

    async def replace(self, filters: dict[str, int]) -> bool:
        self.filters = dict(filters)
        self.calls.append(("replace", dict(filters)))
        return True


def service(
    tmp_path: Path, subscriptions: list[SubscriptionConfig] | None = None, **options: Any
) -> tuple[DiscoveryService, Router, FakeGroup, FakeGroup]:
    config = DiscoveryConfig(**{"homeassistant": True, **options})
    subs = subscriptions if subscriptions is not None else [SubscriptionConfig(topic="sensors/#")]
    svc = DiscoveryService(config, tmp_path / "t.db", Limits(), subs)
    svc.load()
    configs, states = FakeGroup(), FakeGroup()
    svc.attach(configs, states)
    return svc, Router(subs, Limits(), 1 << 20, discovery=svc), configs, states


def feed(router: Router, messages: list[tuple[str, bytes]]) -> list[Any]:
    return [router.route(topic, payload, NOW) for topic, payload in messages]


def test_configs_then_states_through_the_router(tmp_path: Path) -> None:
    _svc, router, configs, _states = service(tmp_path)
    assert set(configs.filters) == {f"{PREFIX}/+/+/config", f"{PREFIX}/+/+/+/config"}
    envelopes = feed(router, devices.ESPHOME.configs)
    assert all(e.dead_letter is None and e.readings == [] for e in envelopes)
    assert {e.subscription for e in envelopes} == {"discovery-config"}
    states = feed(router, devices.ESPHOME.states)
    stored = {(r.sensor_id, r.metric, r.unit, r.value) for e in states for r in e.readings}
    assert stored == {(x.sensor_id, x.metric, x.unit, x.value) for x in devices.ESPHOME.expected}
    assert {e.subscription for e in states} == {"discovery"}
    nan = next(e for e in states if e.skipped)
    assert nan.skipped_names == ["Living Room Climate · Humidity"]


def test_an_unreadable_config_is_a_dead_letter(tmp_path: Path) -> None:
    _svc, router, _c, _s = service(tmp_path)
    (envelope,) = feed(router, [(f"{PREFIX}/sensor/x/config", b"{oops")])
    assert envelope.dead_letter is not None and "not JSON" in envelope.dead_letter.reason


def test_a_hand_written_subscription_wins_and_its_topics_are_not_subscribed_twice(
    tmp_path: Path,
) -> None:
    subs = [SubscriptionConfig(topic="livingroom/sensor/+/state", format="raw",
                               topic_template="{sensor_id}/sensor/{metric}/state")]  # fmt: skip
    svc, router, _configs, _states = service(tmp_path, subs)
    feed(router, devices.ESPHOME.configs)
    assert "livingroom/sensor/temperature/state" not in svc.state_filters()
    assert "livingroom/binary_sensor/window/state" in svc.state_filters()
    (envelope,) = feed(router, [("livingroom/sensor/temperature/state", b"21.5")])
    assert [(r.sensor_id, r.metric) for r in envelope.readings] == [("livingroom", "temperature")]


async def test_state_subscriptions_follow_the_registry_and_the_file_is_saved(
    tmp_path: Path,
) -> None:
    svc, router, configs, states = service(tmp_path)
    task = asyncio.create_task(svc.run(lambda: True))
    try:
        feed(router, devices.SHELLY_GEN2.configs + devices.HA_DOCS.configs)
        for _ in range(100):
            if states.calls and states.calls[-1][0] == "replace" and svc.path.exists():
                break
            await asyncio.sleep(0.05)
        assert states.filters == {
            f"{devices.SHELLY2_ID}/status/switch:0": 1,
            "homeassistant/sensor/sensorBedroom/state": 1,
            "sensorBedroom/state": 1,
        }
        # At start the config filters were subscribed afresh (retained configs again).
        assert ("remove", f"{PREFIX}/+/+/config") in configs.calls
        assert configs.calls[-1] == ("add", f"{PREFIX}/+/+/+/config")
        feed(router, [(devices.SHELLY_GEN2.configs[0][0], b"")])  # the device is removed
        for _ in range(100):
            if f"{devices.SHELLY2_ID}/status/switch:0" not in states.filters:
                break
            await asyncio.sleep(0.05)
        assert set(states.filters) == {
            "homeassistant/sensor/sensorBedroom/state",
            "sensorBedroom/state",
        }
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    saved = store.read(svc.path)
    assert saved is not None and set(saved.configs) == {t for t, _ in devices.HA_DOCS.configs}


def test_a_restart_keeps_the_entities(tmp_path: Path) -> None:
    svc, router, _c, _s = service(tmp_path)
    feed(router, devices.TASMOTA.configs)
    store.write(svc.path, store.Snapshot(configs=dict(svc.registry.configs)))
    again, router2, _c2, states2 = service(tmp_path)
    assert f"tele/{devices.TASMOTA_TOPIC}/SENSOR" in states2.filters  # subscribed from the start
    (envelope,) = feed(router2, devices.TASMOTA.states[:1])
    assert {(r.sensor_id, r.metric) for r in envelope.readings} == {
        ("Tasmota", "AM2301 Temperature"),
        ("Tasmota", "AM2301 Humidity"),
        ("Tasmota", "ENERGY Power"),
        ("Tasmota", "ENERGY Total"),
    }
    assert again.registry.entities.keys() == svc.registry.entities.keys()


def test_a_damaged_state_file_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = store.state_path(tmp_path / "t.db")
    path.write_text("{half a file")
    svc, _router, _c, _s = service(tmp_path)
    assert svc.registry.entities == {}
    assert path.with_name(path.name + ".bad").exists() and not path.exists()
    assert any("damaged" in r.getMessage() for r in caplog.records)


def test_zigbee2mqtt_units_fill_in_for_a_hand_written_subscription(tmp_path: Path) -> None:
    subs = [SubscriptionConfig(topic="zigbee2mqtt/+", topic_template="zigbee2mqtt/{sensor_id}",
                               exclude=["linkquality"])]  # fmt: skip
    _svc, router, configs, _s = service(tmp_path, subs, homeassistant=False, zigbee2mqtt=True)
    assert "zigbee2mqtt/bridge/devices" in configs.filters  # zigbee2mqtt/+ does not cover it
    (envelope,) = feed(router, [("zigbee2mqtt/bridge/devices", devices.Z2M_BRIDGE_DEVICES)])
    assert envelope.dead_letter is None and envelope.readings == []
    state = json.dumps(
        {"temperature": 27.34, "humidity": 44.72, "linkquality": 65, "battery": 97}
    ).encode()
    (envelope,) = feed(router, [("zigbee2mqtt/living_room", state)])
    assert {(r.metric, r.unit) for r in envelope.readings} == {
        ("temperature", "°C"),
        ("humidity", "%"),
        ("battery", "%"),
    }


def test_discovery_list_shows_names_units_and_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, router, _c, _s = service(tmp_path)
    feed(router, devices.SHELLY_GEN1.configs + devices.ZIGBEE2MQTT.configs)
    store.write(svc.path, store.Snapshot(configs=dict(svc.registry.configs),
                                         errors={devices.SHELLY_GEN1.configs[0][0]: {
                                             "count": 3, "last": "float got 'x'", "at_ms": NOW}}))  # fmt: skip
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[storage]\npath = "{tmp_path / "t.db"}"\n[discovery]\nhomeassistant = true\n')
    monkeypatch.chdir(tmp_path)
    assert main(["discovery", "list", "--config", str(cfg), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_metric = {(r["sensor_id"], r["metric"]): r for r in rows}
    assert by_metric[("weather_sensor", "Atmospheric pressure")]["unit"] == "hPa"
    assert by_metric[("weather_sensor", "Atmospheric pressure")]["status"] == "ok"
    assert "statements" in by_metric[("Garage Plug", "overpower")]["status"]
    assert by_metric[("Garage Plug", "relay 0 power")]["status"].startswith("template failed 3x")
    assert main(["discovery", "list", "--config", str(cfg), "--problems", "-f", "json"]) == 0
    problems = json.loads(capsys.readouterr().out)
    assert {r["metric"] for r in problems} == {"overpower", "relay 0 power", "value", "Action"}


def test_discovered_states_in_one_millisecond_get_their_own_receive_times(tmp_path: Path) -> None:
    svc, router, _c, _s = service(tmp_path)
    feed(router, devices.ESPHOME.configs)
    first, second = feed(
        router,
        [
            ("livingroom/sensor/temperature/state", b"21.5"),
            ("livingroom/sensor/temperature/state", b"21.6"),
        ],
    )
    assert [r.ts_ms for r in first.readings + second.readings] == [NOW, NOW + 1]
    stats = svc.registry.stats[f"{PREFIX}/sensor/livingroom/temperature/config"]
    assert (stats.messages, stats.readings) == (2, 2)  # not counted twice


def test_the_state_file_is_owner_only(tmp_path: Path) -> None:
    import os
    import stat

    path = store.state_path(tmp_path / "t.db")
    old = os.umask(0o022)
    try:
        store.write(path, store.Snapshot(configs={"homeassistant/sensor/x/config": "{}"}))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.read(path) == store.Snapshot(configs={"homeassistant/sensor/x/config": "{}"})
