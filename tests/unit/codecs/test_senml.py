"""SenML JSON and CBOR (RFC 8428): the RFC's own examples, resolution and rejection
rules, name mapping, and robustness."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs import get_codec
from gateway.codecs.senml import CBOR_LABELS
from gateway.errors import DecodeError
from gateway.models import Decoded, Reading
from gateway.validation import DecodeContext, Limits
from tests.support.codecs import context_factory

NOW = 1_700_000_000_000
decode_json = get_codec("senml")
decode_cbor = get_codec("senml-cbor")
TO_CBOR = {label: key for key, label in CBOR_LABELS.items()}
DEV = "urn:dev:ow:10e2073a01080063"


ctx = context_factory(NOW, {})


def as_cbor(pack: list[dict[str, Any]]) -> bytes:
    return cbor2.dumps(
        [{TO_CBOR[k]: (v.encode() if k == "vd" else v) for k, v in rec.items()} for rec in pack]
    )


def both(pack: list[dict[str, Any]], context: DecodeContext | None = None) -> Decoded:
    """Decode a pack as JSON and as CBOR; both must agree."""
    context = context or ctx()
    from_json = decode_json(json.dumps(pack).encode(), context)
    from_cbor = decode_cbor(as_cbor(pack), context)
    assert from_json == from_cbor
    return from_json


# --- RFC 8428 §5 examples --------------------------------------------------------


def test_rfc_single_datapoint() -> None:
    got = both([{"n": DEV, "u": "Cel", "v": 23.1}])
    # No separator after the device id: split at the last ':' (documented rule).
    assert got.readings == [Reading("urn:dev:ow", "10e2073a01080063", NOW, 23.1, "Cel")]
    with_topic = both([{"n": DEV, "u": "Cel", "v": 23.1}], ctx({"sensor_id": "probe"}))
    assert with_topic.readings == [Reading("probe", DEV, NOW, 23.1, "Cel")]


def test_rfc_multiple_datapoints() -> None:
    got = both(
        [
            {"bn": f"{DEV}:", "n": "voltage", "u": "V", "v": 120.1},
            {"n": "current", "u": "A", "v": 1.2},
        ]
    )
    assert got.readings == [
        Reading(DEV, "voltage", NOW, 120.1, "V"),
        Reading(DEV, "current", NOW, 1.2, "A"),
    ]


RFC_EX3 = [
    {
        "bn": "urn:dev:ow:10e2073a0108006:",
        "bt": 1.276020076001e09,
        "bu": "A",
        "bver": 5,
        "n": "voltage",
        "u": "V",
        "v": 120.1,
    },
    {"n": "current", "t": -5, "v": 1.2},
    {"n": "current", "t": -4, "v": 1.3},
    {"n": "current", "t": -3, "v": 1.4},
    {"n": "current", "t": -2, "v": 1.5},
    {"n": "current", "t": -1, "v": 1.6},
    {"n": "current", "v": 1.7},
]


def test_rfc_base_time_and_relative_offsets() -> None:
    got = both(RFC_EX3)
    base = 1_276_020_076_001
    assert got.readings[0] == Reading("urn:dev:ow:10e2073a0108006", "voltage", base, 120.1, "V")
    currents = [(r.ts_ms, r.value, r.unit) for r in got.readings[1:]]
    assert currents == [
        (base - 5000, 1.2, "A"),
        (base - 4000, 1.3, "A"),
        (base - 3000, 1.4, "A"),
        (base - 2000, 1.5, "A"),
        (base - 1000, 1.6, "A"),
        (base, 1.7, "A"),
    ]


def test_rfc_cbor_example_bytes() -> None:
    # RFC 8428 §6: the pack above in CBOR, integer labels, as the RFC prints it.
    pack = bytes.fromhex(
        "87"
        "a7" + "21781b" + b"urn:dev:ow:10e2073a0108006:".hex() + "22fb41d303a15b001062"
        "23614120050067" + b"voltage".hex() + "01615602fb405e066666666666"
        "a30067" + b"current".hex() + "062402fb3ff3333333333333"
        "a30067" + b"current".hex() + "062302fb3ff4cccccccccccd"
        "a30067" + b"current".hex() + "062202fb3ff6666666666666"
        "a30067" + b"current".hex() + "062102f93e00"
        "a30067" + b"current".hex() + "062002fb3ff999999999999a"
        "a20067" + b"current".hex() + "02fb3ffb333333333333"
    )
    assert decode_cbor(pack, ctx()) == decode_json(json.dumps(RFC_EX3).encode(), ctx())


RFC_EX5 = [
    {"bn": DEV, "bt": 1.320067464e09, "bu": "%RH", "v": 20},
    {"u": "lon", "v": 24.30621},
    {"u": "lat", "v": 60.07965},
    {"t": 60, "v": 20.3},
    {"u": "lon", "t": 60, "v": 24.30622},
    {"u": "lat", "t": 60, "v": 60.07965},
    {"t": 120, "v": 20.7},
    {"u": "lon", "t": 120, "v": 24.30623},
    {"u": "lat", "t": 120, "v": 60.07966},
    {"u": "%EL", "t": 150, "v": 98},
    {"t": 180, "v": 21.2},
    {"u": "lon", "t": 180, "v": 24.30628},
    {"u": "lat", "t": 180, "v": 60.07967},
]


def test_rfc_multiple_measurements_resolve_like_the_rfc() -> None:
    got = both(RFC_EX5, ctx({"sensor_id": "phone"}))
    base = 1_320_067_464_000
    assert [(r.metric, r.ts_ms, r.value, r.unit) for r in got.readings[:4]] == [
        (DEV, base, 20.0, "%RH"),
        (DEV, base, 24.30621, "lon"),
        (DEV, base, 60.07965, "lat"),
        (DEV, base + 60_000, 20.3, "%RH"),
    ]
    assert got.readings[9] == Reading("phone", DEV, base + 150_000, 98.0, "%EL")
    assert len(got.readings) == 13


def test_rfc_multiple_data_types() -> None:
    got = both(
        [
            {"bn": f"{DEV}:", "n": "temp", "u": "Cel", "v": 23.1},
            {"n": "label", "vs": "Machine Room"},
            {"n": "open", "vb": False},
            {"n": "nfc-reader", "vd": "aGkgCg"},
        ]
    )
    assert got.readings == [
        Reading(DEV, "temp", NOW, 23.1, "Cel"),
        Reading(DEV, "open", NOW, 0.0, None),
    ]
    assert got.skipped == 2  # the string and the data value


def test_rfc_collection_of_resources() -> None:
    got = both(
        [
            {
                "bn": "urn:dev:mac:0024befffe804ff1/",
                "bt": 1.320078429e09,
                "n": "temperature",
                "u": "Cel",
                "v": 27.2,
            },
            {"n": "humidity", "u": "%RH", "v": 80},
            {"bn": "urn:dev:mac:0024befffe805ff2/", "n": "temperature", "u": "Cel", "v": 12.3},
            {"n": "humidity", "u": "%RH", "v": 67},
        ]
    )
    base = 1_320_078_429_000
    # The last record uses the third record's base name and the first record's base time.
    assert [(r.sensor_id, r.metric, r.ts_ms, r.value) for r in got.readings] == [
        ("urn:dev:mac:0024befffe804ff1", "temperature", base, 27.2),
        ("urn:dev:mac:0024befffe804ff1", "humidity", base, 80.0),
        ("urn:dev:mac:0024befffe805ff2", "temperature", base, 12.3),
        ("urn:dev:mac:0024befffe805ff2", "humidity", base, 67.0),
    ]


def test_rfc_actuator_and_relative_future_times() -> None:
    got = both(
        [
            {"bn": f"{DEV}:", "n": "temp", "u": "Cel", "v": 23.1},
            {"n": "heat", "u": "/", "v": 1},
            {"n": "fan", "u": "/", "v": 0},
        ]
    )
    assert [r.metric for r in got.readings] == ["temp", "heat", "fan"]
    lights = both(
        [
            {"bn": "urn:dev:mac:0024befffe804ff1:", "t": 0.02, "n": "light1", "vb": True},
            {"n": "light2", "vb": True},
        ]
    )
    # Times below 2**28 are relative to now; bt is 0, so light2 has no offset.
    assert [r.ts_ms for r in lights.readings] == [NOW + 20, NOW]


# --- resolution -------------------------------------------------------------------


def test_base_value_and_base_sum_are_added() -> None:
    got = both(
        [
            {"bn": "meter1/", "bv": 100, "bs": 1000, "n": "energy", "u": "W", "v": 5, "s": 7},
            {"n": "energy", "v": 6, "t": -1},
        ]
    )
    assert got.readings == [
        Reading("meter1", "energy", NOW, 105.0, "W"),
        Reading("meter1", "energy.sum", NOW, 1007.0, "W*s"),
        Reading("meter1", "energy", NOW - 1000, 106.0, None),
        # bs is still in effect: the missing s counts as zero (RFC 8428 §4.5.4).
        Reading("meter1", "energy.sum", NOW - 1000, 1000.0, None),
    ]


def test_sum_only_record_is_valid() -> None:
    got = both([{"n": "m/x", "s": 3}])
    assert got.readings == [Reading("m", "x.sum", NOW, 3.0)]


def test_base_value_does_not_apply_to_booleans() -> None:
    got = both([{"bv": 10, "n": "d/on", "vb": True}])
    assert got.readings[0].value == 1.0


def test_base_unit_is_replaced_by_later_base_unit() -> None:
    got = both([{"bu": "A", "n": "d/a", "v": 1}, {"bu": "V", "n": "d/b", "v": 2}])
    assert [r.unit for r in got.readings] == ["A", "V"]


def test_name_mapping_rules() -> None:
    assert both([{"n": "device1/temperature", "v": 1}]).readings[0][:2] == (
        "device1",
        "temperature",
    )
    assert both([{"n": "urn:dev:ow:1234:temp", "v": 1}]).readings[0][:2] == (
        "urn:dev:ow:1234",
        "temp",
    )
    assert both([{"n": "plain", "v": 1}]).readings[0][:2] == ("plain", "value")
    assert both([{"n": "plain", "v": 1}], ctx({"metric": "t"})).readings[0][:2] == ("plain", "t")
    assert both([{"bn": "dev:", "v": 1}]).readings[0][:2] == ("dev", "value")


def test_relative_time_limit_is_2_to_the_28() -> None:
    # 2**28 s is absolute (1978: before the validation window); one less is relative
    # (8.5 years from now: too far in the future).
    with pytest.raises(DecodeError, match="before"):
        both([{"n": "a/b", "t": 2**28, "v": 1}])
    with pytest.raises(DecodeError, match="future"):
        both([{"n": "a/b", "t": 2**28 - 1, "v": 1}])
    assert both([{"n": "a/b", "t": -60, "v": 1}]).readings[0].ts_ms == NOW - 60_000


def test_empty_pack_is_refused() -> None:
    # RFC 8428 §4: "a SenML Pack ... consists of one or more SenML Records".
    with pytest.raises(DecodeError, match="empty"):
        both([])


# --- rejection rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pack", "reason"),
    [
        ([{"n": "a/b"}], "no value"),
        ([{"n": "a/b", "v": 1, "vs": "x"}], "more than one value"),
        ([{"n": "a/b", "v": 1, "bver": 11}], "version 11"),
        ([{"n": "a/b", "v": 1, "x_": 1}], "must be understood"),
        ([{"v": 1}], "name"),
        ([{"n": "-bad", "v": 1}], "name"),
        ([{"n": "sp ace/x", "v": 1}], "name"),
        ([{"n": "a/ü", "v": 1}], "name"),
        ([{"n": "a/b", "v": "1"}], "v must be a number"),
        ([{"n": "a/b", "v": True}], "v must be a number"),
        ([{"n": "a/b", "vb": 1}], "vb must be a boolean"),
        ([{"n": 5, "v": 1}], "n must be a string"),
        ([{"n": "a/b", "v": 1, "t": "now"}], "t must be a number"),
        ([{"n": "a/b", "v": 1, "bt": 1e300}], "time"),
        ([{"n": "a/b", "v": 1, "t": 9.0e8}], "before"),
        ([{"n": "a/b", "v": 1, "t": 1.0e10}], "future"),
        ([{"n": "a/b", "v": 1e308, "bv": 1e308}], "not finite"),
        ([{"n": "a/b", "v": 1}, "x"], "record 1"),
    ],
)
def test_rejections(pack: list[Any], reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_json(json.dumps(pack).encode(), ctx())


def test_unknown_fields_are_ignored() -> None:
    assert both([{"n": "a/b", "v": 1, "l": "link"}]).readings[0].value == 1.0
    assert decode_json(b'[{"n": "a/b", "v": 1, "custom": {"x": 1}}]', ctx()).readings


def test_not_a_pack() -> None:
    with pytest.raises(DecodeError, match="array of records"):
        decode_json(b'{"n": "a/b", "v": 1}', ctx())
    with pytest.raises(DecodeError, match="invalid SenML JSON"):
        decode_json(b"[{", ctx())


def test_record_limit() -> None:
    pack = [{"n": f"a/m{i}", "v": i} for i in range(4)]
    with pytest.raises(DecodeError, match="limit 3"):
        decode_json(json.dumps(pack).encode(), ctx(limits=Limits(max_readings_per_message=3)))


# --- CBOR specifics ------------------------------------------------------------------


def test_cbor_data_value_must_be_bytes() -> None:
    good = cbor2.dumps([{0: "a/b", 8: b"\x00\x01"}])
    assert decode_cbor(good, ctx()) == Decoded([], 1)
    with pytest.raises(DecodeError, match="byte string"):
        decode_cbor(cbor2.dumps([{0: "a/b", 8: "text"}]), ctx())


def test_cbor_decimal_fraction_and_string_labels() -> None:
    got = decode_cbor(cbor2.dumps([{"n": "a/b", 2: Decimal("273.15")}]), ctx())
    assert got.readings[0].value == 273.15


def test_cbor_self_describe_tag_and_trailing_bytes() -> None:
    packed = cbor2.dumps([{0: "a/b", 2: 1.5}])
    assert decode_cbor(b"\xd9\xd9\xf7" + packed, ctx()).readings[0].value == 1.5
    with pytest.raises(DecodeError, match="after the pack"):
        decode_cbor(packed + b"\x00", ctx())


@pytest.mark.parametrize(
    "payload", [b"", b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", b"\x9f" * 1000, b"\xff", b"\x81\x01"]
)
def test_cbor_garbage(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_cbor(payload, ctx())


# --- robustness -------------------------------------------------------------------------

_labels = st.sampled_from([*sorted(TO_CBOR), "x_", "other"])
_values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=6)
    | st.binary(max_size=4)
)
_records = st.lists(st.dictionaries(_labels, _values, max_size=6), max_size=5)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_only_raise_decode_error(payload: bytes) -> None:
    for codec in (decode_json, decode_cbor):
        try:
            codec(payload, ctx())
        except DecodeError:
            pass


@settings(max_examples=200, deadline=None)
@given(_records)
def test_any_records_only_raise_decode_error(pack: list[dict[str, Any]]) -> None:
    cbor_pack = [{TO_CBOR.get(k, k): v for k, v in rec.items()} for rec in pack]
    try:
        decode_cbor(cbor2.dumps(cbor_pack), ctx())
    except DecodeError:
        pass
    try:
        text = json.dumps(pack, default=lambda b: b.hex())
    except ValueError:
        return
    try:
        decode_json(text.encode(), ctx())
    except DecodeError:
        pass
