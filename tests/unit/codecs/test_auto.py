"""Auto-detection: each format is recognised per message and decoded by its codec."""

from __future__ import annotations

import json

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs import get_codec
from gateway.codecs.auto import detect
from gateway.errors import DecodeError
from gateway.models import Reading
from tests.support.codecs import context_factory

NOW = 1_700_000_000_000
decode = get_codec("auto")


ctx = context_factory(NOW, {"sensor_id": "dev", "metric": "m"})


SENML = json.dumps([{"bn": "urn:dev:x:", "n": "temp", "v": 21.5}]).encode()
SENML_CBOR = cbor2.dumps([{-2: "urn:dev:x:", 0: "temp", 2: 21.5}])


@pytest.mark.parametrize(
    ("payload", "fmt"),
    [
        (SENML, "senml"),
        (b'  [{"n": "a/b", "v": 1}]', "senml"),
        (SENML_CBOR, "senml-cbor"),
        (b"\xd9\xd9\xf7" + SENML_CBOR, "senml-cbor"),
        (b'{"value": 1}', "json"),
        (b'[{"sensor_id": "a", "metric": "m", "value": 1}]', "json"),
        (b'[{"n": "a", "value": 1}]', "json"),  # not only SenML labels
        (b"[]", "json"),
        (b'"ON"', "json"),
        (b"21.5", "raw"),
        (b" true ", "raw"),
        (b"nan", "raw"),
        (b"None", "raw"),
        (b"cpu,host=a usage=1", "influx"),
        (b"garbage", "influx"),
        (b"", "raw"),
    ],
)
def test_detection(payload: bytes, fmt: str) -> None:
    assert detect(payload) == fmt


def test_each_format_decodes_like_its_codec() -> None:
    assert decode(SENML, ctx()).readings == [Reading("dev", "urn:dev:x:temp", NOW, 21.5)]
    assert decode(SENML_CBOR, ctx()) == get_codec("senml-cbor")(SENML_CBOR, ctx())
    assert decode(b'{"value": 2}', ctx()).readings == [Reading("dev", "m", NOW, 2.0)]
    assert decode(b"3", ctx()).readings == [Reading("dev", "m", NOW, 3.0)]
    assert decode(b"cpu usage=4", ctx()).readings == [Reading("dev", "cpu.usage", NOW, 4.0)]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"garbage", "auto-detected influx: line 1"),
        (b"{oops", "auto-detected json: invalid JSON"),
        (b'[{"n": "a/b"}]', "auto-detected senml: record 0: no value"),
        (b"\x81\x01", "auto-detected senml-cbor"),
        (b"", "auto-detected raw: raw payload is empty"),
    ],
)
def test_reasons_name_the_detected_format(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(payload, ctx())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=60).map(str.encode))
def test_any_bytes_only_raise_decode_error(payload: bytes) -> None:
    try:
        decode(payload, ctx())
    except DecodeError:
        pass
