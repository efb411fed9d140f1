"""Simulator payloads against the gateway's real codec; topic templates; MQTT packets."""

from __future__ import annotations

import pytest

from gateway.codecs import get_codec
from gateway.errors import DecodeError
from gateway.topics import TopicTemplate
from gateway.validation import DecodeContext
from simulators.cli import main
from simulators.formats import FORMATS, make_target
from simulators.mqtt import _remaining_length, connect_packet, publish_packet
from simulators.signals import UNITS

NOW = 1_750_000_000_000
METRICS = ("temperature", "co2", "counter")
VALUES = [21.234, 455.2, 17.0]
CASES = [
    ("json-reading", "sensors/{sensor_id}/{metric}"),
    ("json-reading", "site/{sensor_id}"),  # metric in the payload
    ("json-reading", "all"),  # sensor id and metric in the payload
    ("json-multi", "sensors/{sensor_id}"),
    ("json-multi", "multi"),
    ("senml", "sensors/{sensor_id}"),
    ("senml", "packs"),  # sensor id in the base name
    ("influx", "sensors/{sensor_id}"),
    ("influx", "lines"),  # sensor id as a tag
]


def decode(
    fmt: str, topic: str, template: str, payload: bytes
) -> list[tuple[str, str, int, float, str | None]]:
    fields, tags = TopicTemplate.parse(template).match(topic)
    ctx = DecodeContext(topic, NOW, topic_fields=fields, topic_tags=tags)
    codec = get_codec(FORMATS[fmt].subscription_format)
    return [(r.sensor_id, r.metric, r.ts_ms, r.value, r.unit) for r in codec(payload, ctx).readings]


@pytest.mark.parametrize(("name", "template"), CASES)
def test_valid_messages_decode_to_exactly_the_covered_readings(name: str, template: str) -> None:
    fmt = FORMATS[name]
    target = make_target(fmt, template, "sim-00001", METRICS)
    messages = fmt.encode(target, NOW, VALUES)
    got = []
    for message in messages:
        readings = decode(name, message.topic, template, message.payload)
        assert [r[1] for r in readings] == [fmt.stored_metric(METRICS[i]) for i in message.covers]
        got.extend(readings)
    names = {fmt.stored_metric(m): m for m in METRICS}
    assert sorted(r[1] for r in got) == sorted(names)
    for sensor, stored, ts, value, unit in got:
        metric = names[stored]
        assert sensor == "sim-00001" and ts == NOW
        assert value == pytest.approx(VALUES[METRICS.index(metric)], abs=0.5)  # rounded
        assert (unit or "") == fmt.stored_unit(metric)
    assert fmt.stored_unit("counter") == "" and UNITS["counter"] is None


@pytest.mark.parametrize(("name", "template"), CASES)
@pytest.mark.parametrize("kind", ["malformed", "out_of_range"])
@pytest.mark.parametrize("variant", range(6))
def test_every_fault_is_rejected_by_the_gateway_and_marked(
    name: str, template: str, kind: str, variant: int
) -> None:
    fmt = FORMATS[name]
    target = make_target(fmt, template, "sim-00001", METRICS)
    message = fmt.fault(target, NOW, VALUES, kind, "ab12cd-7", variant)
    assert message.covers == ()
    assert b"tgfault:ab12cd-7" in message.payload
    with pytest.raises(DecodeError):
        decode(name, message.topic, template, message.payload)


@pytest.mark.parametrize(
    ("name", "template", "problem"),
    [
        ("json-multi", "s/{sensor_id}/{metric}", "makes no sense"),
        ("json-reading", "s/+/{metric}", "wildcards"),
        ("json-reading", "s/{site}/{sensor_id}", "placeholders"),
    ],
)
def test_bad_topic_templates(name: str, template: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        make_target(FORMATS[name], template, "s", METRICS)


def test_mqtt_packets() -> None:
    assert _remaining_length(0) == b"\x00"
    assert _remaining_length(127) == b"\x7f"
    assert _remaining_length(128) == b"\x80\x01"
    assert _remaining_length(16_383) == b"\xff\x7f"
    assert _remaining_length(2_097_152) == b"\x80\x80\x80\x01"
    assert publish_packet(b"a/b", b"xy", 1, 258) == b"\x32\x09\x00\x03a/b\x01\x02xy"
    assert publish_packet(b"a", b"", 0, 5) == b"\x30\x03\x00\x01a"
    packet = connect_packet("id", 30)
    assert packet == b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x1e\x00\x02id"
    with_auth = connect_packet("id", 30, "u", "p")
    assert with_auth[9] == 0xC2 and with_auth.endswith(b"\x00\x01u\x00\x01p")


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--rate", "0"],
        ["run", "--malformed", "2"],
        ["run", "--qos", "3"],
        ["run", "--duration", "1", "--count", "2"],
        ["run", "--metrics", "wind"],
        ["verify"],
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err


def test_cli_option_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--rate", "2000"]) == 2
    assert "--rate" in capsys.readouterr().err
    assert main(["run", "--tls-cert", "x.pem"]) == 2
    assert main(["run", "--format", "json-multi", "--topic", "s/{sensor_id}/{metric}"]) == 2


def test_cli_unreachable_broker_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from simulators.broker import free_port

    code = main(["run", "--host", "127.0.0.1", "--port", str(free_port()), "--count", "1", "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot connect" in err and "Traceback" not in err
