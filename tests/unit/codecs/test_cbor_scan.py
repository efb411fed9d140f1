"""The CBOR pre-scan: refuses what SenML does not need before any object is built,
and agrees with cbor2 on where a well-formed item ends."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs import get_codec
from gateway.codecs import senml as senml_module
from gateway.codecs._cbor import scan
from gateway.errors import DecodeError
from gateway.validation import DecodeContext, Limits

decode_cbor = get_codec("senml-cbor")


def ctx() -> DecodeContext:
    return DecodeContext(topic="t", now_ms=1_700_000_000_000, limits=Limits())


def test_a_plain_pack_scans_to_its_end() -> None:
    pack = cbor2.dumps([{-2: "dev/", 0: "t", 2: 21.5, 6: 1.7e9}, {0: "h", 2: 40, 8: b"\x00"}])
    assert scan(pack) == len(pack)
    assert scan(pack + b"\x00") == len(pack)


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        (re.compile("(a+)+$"), 35),  # compiles a regex in cbor2
        (cbor2.CBORTag(36, "Content-Type: text/plain\n\nhi"), 36),  # MIME parser
        ({1, 2}, 258),  # a set
        (cbor2.CBORTag(1, 1_700_000_000), 1),  # epoch datetime
        (cbor2.CBORTag(28, [1]), 28),  # value sharing
        (cbor2.CBORTag(256, ["x"]), 256),  # string references
        (cbor2.CBORTag(5, [1, 3]), 5),  # bigfloat: not in SenML
        (cbor2.CBORTag(99_999, 0), 99_999),
    ],
    ids=["regex", "mime", "set", "datetime", "shareable", "stringref", "bigfloat", "unknown"],
)
def test_tags_senml_does_not_use_are_refused_before_decoding(
    value: Any, tag: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = cbor2.dumps([{0: "a/b", 2: value}])

    def never(*args: object, **kwargs: object) -> object:
        raise AssertionError("cbor2 must not see a refused payload")

    monkeypatch.setattr(senml_module.cbor2, "loads", never)
    with pytest.raises(DecodeError, match=f"tag {tag} at byte \\d+ is not allowed"):
        decode_cbor(payload, ctx())


def test_the_tags_senml_needs_are_accepted() -> None:
    pack = [{0: "a/b", 2: Decimal("273.15")}, {0: "a/c", 2: 2**70}, {0: "a/d", 2: -(2**70)}]
    got = decode_cbor(b"\xd9\xd9\xf7" + cbor2.dumps(pack), ctx())
    assert [r.value for r in got.readings] == [273.15, float(2**70), float(-(2**70))]


@pytest.mark.parametrize("digits", [400, 4301, 100_000])
def test_huge_integers_are_refused_by_size_not_by_str(digits: int) -> None:
    payload = cbor2.dumps([{0: "a/b", 2: 10**digits - 1}])
    with pytest.raises(DecodeError) as caught:
        decode_cbor(payload, ctx())
    assert "integer of" in caught.value.reason or "too large" in caught.value.reason


def test_bignum_limit_is_128_bytes() -> None:
    fits = cbor2.dumps([{0: "a/b", 2: cbor2.CBORTag(2, b"\x01" * 128)}])
    assert scan(fits) == len(fits)
    too_big = cbor2.dumps([{0: "a/b", 2: cbor2.CBORTag(2, b"\x01" * 129)}])
    with pytest.raises(DecodeError, match="integer of 129 bytes"):
        scan(too_big)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"", "truncated"),
        (b"\x83\x01\x01", "items announced"),
        (b"\x19\x01", "truncated"),
        (b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", "items announced"),
        (b"\x9f" * 1000, "nesting deeper than 16"),
        (b"\x81" * 17 + b"\x01", "nesting deeper than 16"),
        (b"\xff", "unexpected break"),
        (b"\x1c", "reserved header value 28"),
        (b"\x1f", "indefinite length on a non-container"),
        (b"\x5f\x61a\xff", "bad chunk"),  # a text chunk inside a byte string
        (b"\x7f\x61", "truncated string"),
        (b"\x78\x10abc", "truncated string"),
        (b"\xc2\x01", "tag 2 (bignum) must hold a byte string"),
        (b"\xc4\x83\x01\x01\x01", "tag 4 (decimal fraction) must hold"),
        (b"\xc2\xff", "unexpected break"),
    ],
)
def test_malformed_input_is_named(payload: bytes, fragment: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(fragment)):
        scan(payload)


def test_indefinite_lengths_are_walked() -> None:
    payload = (
        b"\x9f\xbf\x00\x7f\x61a\x61b\xff\x02\xfb"
        + b"\x40\x35\x80\x00\x00\x00\x00\x00"
        + b"\xff\xff"
    )
    assert scan(payload) == len(payload)
    assert cbor2.loads(payload) == [{0: "ab", 2: 21.5}]


_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**100), max_value=2**100)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.binary(max_size=30)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3)
)
_values = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.integers(-10, 10), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_values, st.binary(max_size=5))
def test_scan_ends_where_cbor2_ends(value: Any, trailer: bytes) -> None:
    encoded = cbor2.dumps(value)
    try:
        end = scan(encoded + trailer)
    except DecodeError as exc:
        assert "nesting deeper" in exc.reason
        return
    assert end == len(encoded)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_decode_error(payload: bytes) -> None:
    try:
        decode_cbor(payload, ctx())
    except DecodeError:
        pass
