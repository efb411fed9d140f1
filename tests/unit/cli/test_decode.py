"""``tidegate decode``: readings as JSON, dead-letter reasons with exit code 1, and the
config's subscription/template or the flags' override."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main

CONFIG = """
[[subscriptions]]
topic = "sensors/+/+"
topic_template = "sensors/{sensor_id}/{metric}"

[[subscriptions]]
topic = "lp/#"
format = "influx"
topic_template = "lp/{site}/#"

[[subscriptions]]
topic = "esp/+/sensor/+/state"
format = "raw"
topic_template = "esp/{sensor_id}/sensor/{metric}/state"

[[subscriptions]]
topic = "tele/+/SENSOR"
topic_template = "tele/{sensor_id}/SENSOR"
ts_field = "Time"
ts_format = "iso"

[pipeline]
max_payload_bytes = 64
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("TIDEGATE_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


def decode(
    config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    topic: str,
    payload: bytes,
    *flags: str,
) -> tuple[int, Any, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(payload)))
    code = main(["decode", "--config", str(config), "--topic", topic, *flags])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out else None), err


def test_readings_as_json(config: Path, capsys: Any, monkeypatch: Any) -> None:
    code, out, _err = decode(
        config,
        capsys,
        monkeypatch,
        "sensors/k1/temp",
        b'{"value": 21.5, "ts": 1700000000123, "unit": "C"}',
    )
    assert code == 0
    assert out == [
        {
            "sensor_id": "k1",
            "metric": "temp",
            "ts": "2023-11-14T22:13:20.123Z",
            "value": 21.5,
            "unit": "C",
            "tags": {},
        }
    ]


def test_influx_subscription_with_tags(config: Path, capsys: Any, monkeypatch: Any) -> None:
    code, out, err = decode(
        config, capsys, monkeypatch, "lp/berlin/x", b'env,host=h1 t=1,note="hi" 1700000000000000000'
    )
    assert code == 0
    assert out == [
        {
            "sensor_id": "h1",
            "metric": "env.t",
            "ts": "2023-11-14T22:13:20.000Z",
            "value": 1.0,
            "unit": None,
            "tags": {"site": "berlin"},
        }
    ]
    assert "1 field skipped" in err and ": env.note" in err


def test_tasmota_subscription_options_apply(config: Path, capsys: Any, monkeypatch: Any) -> None:
    payload = b'{"Time":"2023-11-14T22:00:00","AM2301":{"Temperature":21.3}}'
    code, out, _ = decode(config, capsys, monkeypatch, "tele/t1/SENSOR", payload)
    assert code == 0
    assert [(r["metric"], r["ts"]) for r in out] == [
        ("AM2301.Temperature", "2023-11-14T22:00:00.000Z")
    ]


def test_dead_letter_reason_exits_1(config: Path, capsys: Any, monkeypatch: Any) -> None:
    code, out, err = decode(config, capsys, monkeypatch, "esp/n1/sensor/t/state", b"ON")
    assert (code, out) == (1, None)
    assert "dead letter" in err and "not a number" in err


def test_nothing_storable_prints_empty_array(config: Path, capsys: Any, monkeypatch: Any) -> None:
    code, out, err = decode(config, capsys, monkeypatch, "sensors/a/b", b'{"state": "ON"}')
    assert (code, out) == (0, [])
    assert "1 field skipped" in err and "b.state" in err


def test_skipped_fields_are_counted_and_named(config: Path, capsys: Any, monkeypatch: Any) -> None:
    # Zigbee2MQTT state (zigbee2mqtt.io docs/guide/usage/mqtt_topics_and_messages.md) plus
    # the strings and nulls a real Aqara sensor's state carries.
    payload = b'{"t":21.2,"state":"ON","update":{"state":"idle"},"color":null}'  # < 64 bytes
    code, out, err = decode(config, capsys, monkeypatch, "sensors/a/b", payload)
    assert code == 0 and len(out) == 1
    assert "3 fields skipped" in err
    assert "b.state, b.update.state, b.color" in err


def test_esphome_nan_is_skipped_not_dead_lettered(
    config: Path, capsys: Any, monkeypatch: Any
) -> None:
    code, out, err = decode(config, capsys, monkeypatch, "esp/n1/sensor/t/state", b"nan")
    assert (code, out) == (0, [])
    assert "1 field skipped" in err and ": t" in err


def test_no_matching_subscription(config: Path, capsys: Any, monkeypatch: Any) -> None:
    code, _out, err = decode(config, capsys, monkeypatch, "other/x", b"1")
    assert code == 1 and "no subscription matches" in err


def test_oversize_payload(config: Path, capsys: Any, monkeypatch: Any) -> None:
    code, _out, err = decode(config, capsys, monkeypatch, "sensors/a/b", b"1" * 500)
    assert code == 1 and "max_payload_bytes" in err


def test_flags_override_format_and_template(config: Path, capsys: Any, monkeypatch: Any) -> None:
    code, out, _ = decode(
        config,
        capsys,
        monkeypatch,
        "sensors/a/b",
        b"7",
        "--format",
        "raw",
        "--template",
        "sensors/{room}/{sensor_id}",
    )
    assert code == 0
    assert [(r["sensor_id"], r["metric"], r["tags"]) for r in out] == [
        ("b", "value", {"room": "a"})
    ]
    # A topic no subscription matches can still be tried with --format.
    code, out, _ = decode(
        config, capsys, monkeypatch, "new/x", b'[{"n": "a/b", "v": 1}]', "--format", "senml"
    )
    assert (code, [(r["sensor_id"], r["metric"]) for r in out]) == (0, [("a", "b")])


def test_bad_template_flag_is_a_usage_error(config: Path, capsys: Any, monkeypatch: Any) -> None:
    code, _out, err = decode(config, capsys, monkeypatch, "a/b", b"1", "--template", "a/{x")
    assert code == 2 and "--template" in err


def test_wildcard_topic_is_refused(config: Path, capsys: Any, monkeypatch: Any) -> None:
    code, _out, err = decode(config, capsys, monkeypatch, "sensors/+/b", b"1")
    assert code == 2 and "wildcards" in err


def test_payload_flag(config: Path, capsys: Any) -> None:
    code = main(["decode", "-c", str(config), "-t", "esp/n/sensor/t/state", "--payload", "21.5"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out[0]["value"] == 21.5


def test_real_process_exit_codes(config: Path) -> None:
    base = [sys.executable, "-m", "gateway", "decode", "-c", str(config)]
    ok = subprocess.run(
        [*base, "-t", "sensors/a/b"], input=b'{"value": 1}', capture_output=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)[0]["sensor_id"] == "a"
    bad = subprocess.run(
        [*base, "-t", "sensors/a/b"], input=b"{nope", capture_output=True, timeout=60
    )
    assert bad.returncode == 1
    assert b"invalid JSON" in bad.stderr
