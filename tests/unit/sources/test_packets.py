"""The hand-written MQTT packet reader and the ack encoders: exact packets, any chunking,
bounded buffering of oversized messages, and — property tested — any byte stream gives
packets or a ProtocolError, nothing else."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ProtocolError
from gateway.sources._paho_adapter import encode_acks, encode_pubacks
from gateway.sources.packets import (
    MAX_CONTROL_BYTES,
    Message,
    PacketReader,
    message_size,
)

TAG = object()


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(
    topic: bytes, payload: bytes, qos: int = 1, mid: int = 1, props: bytes | None = None
) -> bytes:
    body = struct.pack(">H", len(topic)) + topic
    if qos:
        body += struct.pack(">H", mid)
    if props is not None:
        body += varint(len(props)) + props
    body += payload
    return bytes((0x30 | (qos << 1),)) + varint(len(body)) + body


def control(header: int, body: bytes) -> bytes:
    return bytes((header,)) + varint(len(body)) + body


class Collector:
    """A reader whose output is recorded as ("M", message) / ("C", header, body)."""

    def __init__(self, max_payload: int = 1000, max_topic: int = 100, v5: bool = False) -> None:
        self.out: list[tuple[object, ...]] = []
        self.sizes = 0
        self.reader = PacketReader(
            self.on_messages,
            self.on_control,
            max_payload=max_payload,
            max_topic=max_topic,
            v5=v5,
            tag=TAG,
        )

    def on_messages(self, messages: list[Message], size: int) -> None:
        assert messages
        self.sizes += size
        assert size == sum(message_size(m[0], m[1]) for m in messages)
        self.out.extend(("M", *m[:5]) for m in messages)
        assert all(m[5] is TAG for m in messages)

    def on_control(self, header: int, body: bytes) -> None:
        self.out.append(("C", header, body))

    def feed(self, data: bytes, chunk: int = 0) -> list[tuple[object, ...]]:
        if chunk <= 0:
            self.reader.feed(data)
        else:
            for start in range(0, len(data), chunk):
                self.reader.feed(data[start : start + chunk])
        return self.out


def test_publishes_of_every_qos_and_controls_in_order() -> None:
    stream = (
        control(0x20, b"\x00\x00")  # CONNACK
        + publish(b"a/b", b"1", qos=0)
        + publish(b"a/c", b"22", qos=1, mid=7)
        + control(0xD0, b"")  # PINGRESP
        + publish(b"a/d", b"333", qos=2, mid=0xFFFF)
        + control(0x62, b"\x00\x05")  # PUBREL
    )
    out = Collector().feed(stream)
    assert out == [
        ("C", 0x20, b"\x00\x00"),
        ("M", "a/b", b"1", 0, 0, ""),
        ("M", "a/c", b"22", 1, 7, ""),
        ("C", 0xD0, b""),
        ("M", "a/d", b"333", 2, 0xFFFF, ""),
        ("C", 0x62, b"\x00\x05"),
    ]


def test_mqtt5_properties_are_skipped() -> None:
    props = b"\x01\x01" + b"\x26" + struct.pack(">H", 1) + b"k" + struct.pack(">H", 1) + b"v"
    out = Collector(v5=True).feed(publish(b"t", b"x", qos=1, mid=3, props=props))
    assert out == [("M", "t", b"x", 1, 3, "")]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 16])
def test_any_chunking_gives_the_same_packets(chunk: int) -> None:
    stream = b"".join(publish(f"s/{i}".encode(), bytes(i % 50), 1, i + 1) for i in range(200))
    stream += control(0x90, b"\x00\x01\x01")  # SUBACK
    whole = Collector().feed(stream)
    assert Collector().feed(stream, chunk) == whole
    assert len(whole) == 201


def test_a_long_topic_is_truncated_and_marked_with_its_payload_kept() -> None:
    topic = b"t" * 5000
    out = Collector(max_payload=10_000, max_topic=100).feed(publish(topic, b"21.5", 1, 9))
    assert out == [
        ("M", "t" * 100 + "…", b"21.5", 1, 9, "topic of 5,000 bytes exceeds max_topic_bytes=100")
    ]
    # A packet beyond topic + payload bounds is skipped as it streams: payload dropped.
    out = Collector(max_payload=1000, max_topic=100).feed(publish(topic, b"21.5", 1, 9))
    assert out == [
        ("M", "t" * 100 + "…", b"", 1, 9, "topic of 5,000 bytes exceeds max_topic_bytes=100")
    ]


def test_invalid_utf8_topic_is_marked() -> None:
    out = Collector().feed(publish(b"a/\xff", b"1", qos=0))
    assert out[0][5] == "topic is not valid UTF-8"


def test_payload_over_the_limit_but_small_is_marked() -> None:
    out = Collector(max_payload=10).feed(publish(b"a", b"x" * 11, qos=1, mid=2))
    assert out == [("M", "a", b"x" * 11, 1, 2, "payload of 11 bytes exceeds max_payload_bytes=10")]


@pytest.mark.parametrize("v5", [False, True])
def test_an_oversized_payload_is_skipped_as_it_streams_in(v5: bool) -> None:
    """A 3 MB payload against a 1,000-byte limit, fed 64 KiB at a time: the reader never
    holds more than one read plus the limit, hands over topic, size and reason, and the
    next packet is parsed normally."""
    collector = Collector(max_payload=1000, max_topic=100, v5=v5)
    reader = collector.reader
    big = publish(b"cam/snap", b"\x00" * 3_000_000, qos=1, mid=42, props=b"" if v5 else None)
    stream = big + publish(b"s/1", b"1", qos=1, mid=43, props=b"" if v5 else None)
    peak = 0
    for start in range(0, len(stream), 1 << 16):
        reader.feed(stream[start : start + (1 << 16)])
        peak = max(peak, reader.buffered)
    assert peak <= 1 << 16
    assert collector.out == [
        (
            "M",
            "cam/snap",
            b"",
            1,
            42,
            "payload of 3,000,000 bytes exceeds max_payload_bytes=1,000"
            " (skipped as it arrived, not stored)",
        ),
        ("M", "s/1", b"1", 1, 43, ""),
    ]
    assert reader.skipped_bytes == len(big) - 1 - len(varint(len(big)))


def test_an_oversized_packet_in_one_read_is_skipped_whole() -> None:
    stream = publish(b"a", b"y" * 5000, qos=0) + publish(b"b", b"2", qos=0)
    out = Collector(max_payload=100).feed(stream)
    assert [m[1] for m in out] == ["a", "b"]
    assert out[0][2] == b"" and "5,000 bytes" in str(out[0][5])


@pytest.mark.parametrize(
    ("stream", "problem"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "four bytes"),
        (bytes((0x36,)) + varint(3) + b"\x00\x01a", "QoS 3"),
        (bytes((0x30,)) + varint(1) + b"\x00", "no topic"),
        (bytes((0x32,)) + varint(4) + b"\x00\x05ab", "overruns"),
        (bytes((0x30,)) + varint(3) + b"\x00\x00x", "empty topic"),
        (bytes((0x20,)) + varint(MAX_CONTROL_BYTES + 1), "of 1,048,577 bytes"),
    ],
)
def test_malformed_streams_raise_protocol_error(stream: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        Collector().feed(stream)


def test_malformed_v5_properties() -> None:
    bad = bytes((0x32,)) + varint(6) + b"\x00\x01a\x00\x01" + b"\x09"  # props say 9, 0 left
    with pytest.raises(ProtocolError, match="properties"):
        Collector(v5=True).feed(bad)


# --- properties ------------------------------------------------------------------------

packets = st.one_of(
    st.builds(
        lambda t, p, q, m: ("M", t, p, q, m if q else 0),
        st.text(min_size=1, max_size=30).filter(lambda t: len(t.encode()) <= 100),
        st.binary(max_size=300),
        st.integers(0, 2),
        st.integers(1, 0xFFFF),
    ),
    st.builds(
        lambda h, b: ("C", h, b),
        st.sampled_from([0x20, 0x62, 0x90, 0xB0, 0xD0, 0xE0]),
        st.binary(max_size=40),
    ),
)


def _encode(packet: tuple[object, ...]) -> bytes:
    if packet[0] == "M":
        _m, topic, payload, qos, mid = packet
        assert isinstance(topic, str) and isinstance(payload, bytes)
        assert isinstance(qos, int) and isinstance(mid, int)
        return publish(topic.encode(), payload, qos, mid)
    _c, header, body = packet
    assert isinstance(header, int) and isinstance(body, bytes)
    return control(header, body)


@settings(max_examples=300, deadline=None)
@given(st.lists(packets, max_size=20), st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_round_trip_in_any_chunks(packets_: list[tuple[object, ...]], cuts: list[int]) -> None:
    stream = b"".join(_encode(p) for p in packets_)
    collector = Collector(max_payload=1000, max_topic=100)
    pos = 0
    index = 0
    while pos < len(stream):
        step = cuts[index % len(cuts)]
        collector.reader.feed(stream[pos : pos + step])
        pos += step
        index += 1
    expected = [(*p, "") if p[0] == "M" else p for p in packets_]
    assert collector.out == expected
    assert collector.reader.buffered == 0


@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=400), st.lists(st.integers(1, 64), min_size=1, max_size=10), st.booleans()
)
def test_any_byte_stream_gives_packets_or_a_protocol_error(
    data: bytes, cuts: list[int], v5: bool
) -> None:
    """Arbitrary bytes in arbitrary chunks: the reader hands over well-formed messages and
    control packets, or raises ProtocolError — never any other exception — and never
    holds more than the stream it was given."""
    collector = Collector(max_payload=64, max_topic=16, v5=v5)
    pos = 0
    index = 0
    try:
        while pos < len(data):
            step = cuts[index % len(cuts)]
            collector.reader.feed(data[pos : pos + step])
            pos += step
            index += 1
    except ProtocolError:
        return
    assert collector.reader.buffered <= len(data)
    for item in collector.out:
        if item[0] == "M":
            _m, topic, payload, qos, mid, problem = item
            assert isinstance(topic, str) and isinstance(payload, bytes)
            assert qos in (0, 1, 2) and 0 <= mid <= 0xFFFF  # type: ignore[operator]
            assert isinstance(problem, str)
            assert len(topic) <= 16 * 4 + 1 or problem  # type: ignore[arg-type]
        else:
            _c, header, body = item
            assert isinstance(header, int) and header & 0xF0 != 0x30
            assert isinstance(body, bytes)


# --- ack encoders ---------------------------------------------------------------------


def test_encode_pubacks_exact_bytes() -> None:
    assert encode_pubacks([]) == b""
    assert encode_pubacks([1]) == b"\x40\x02\x00\x01"
    assert encode_pubacks([0x1234, 0xFFFF]) == b"\x40\x02\x12\x34\x40\x02\xff\xff"


def test_encode_pubrec_and_pubcomp() -> None:
    assert encode_acks(0x50, [7]) == b"\x50\x02\x00\x07"
    assert encode_acks(0x70, [0x0102, 3]) == b"\x70\x02\x01\x02\x70\x02\x00\x03"


@given(st.lists(st.integers(1, 0xFFFF), max_size=300), st.sampled_from([0x40, 0x50, 0x70]))
def test_encoded_acks_parse_back(mids: list[int], kind: int) -> None:
    data = encode_acks(kind, mids)
    assert len(data) == 4 * len(mids)
    parsed = [struct.unpack(">BBH", data[i : i + 4]) for i in range(0, len(data), 4)]
    assert parsed == [(kind, 2, mid) for mid in mids]


def test_dollar_topics_go_to_the_hook_as_they_arrive() -> None:
    seen: list[tuple[str, bytes, int]] = []

    def hook(topic: str, payload: bytes, qos: int) -> bool:
        seen.append((topic, payload, qos))
        return topic.startswith("$SYS/")

    collector = Collector()
    collector.reader.on_dollar = hook
    out = collector.feed(
        publish(b"$SYS/broker/publish/messages/dropped", b"880", qos=0)
        + publish(b"a/b", b"1", qos=1, mid=4)
        + publish(b"$other", b"x", qos=0)
    )
    assert seen == [("$SYS/broker/publish/messages/dropped", b"880", 0), ("$other", b"x", 0)]
    assert out == [("M", "a/b", b"1", 1, 4, ""), ("M", "$other", b"x", 0, 0, "")]
