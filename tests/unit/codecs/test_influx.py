"""InfluxDB line protocol: the reference docs' examples (escaping included), field
types, precision, the sensor_id/tag mapping, rejection rules and robustness."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs import get_codec
from gateway.errors import DecodeError
from gateway.models import Decoded, Reading
from gateway.validation import DecodeContext, Limits
from tests.support.codecs import context_factory

NOW = 1_556_813_600_000  # shortly after the docs' example timestamp
TS_NS = "1556813561098000000"
TS_MS = 1_556_813_561_098
decode = get_codec("influx")


ctx = context_factory(NOW, {"sensor_id": "topic-sensor"}, with_options=True)


def run(text: str, context: DecodeContext | None = None) -> Decoded:
    return decode(text.encode(), context or ctx())


def one(text: str, context: DecodeContext | None = None) -> Reading:
    got = run(text, context)
    assert len(got.readings) == 1, got
    return got.readings[0]


# --- the InfluxDB docs' examples -----------------------------------------------------


def test_docs_basic_line() -> None:
    got = run(f"myMeasurement,tag1=value1,tag2=value2 fieldKey=1.5,other=2i {TS_NS}")
    assert got.readings == [
        Reading(
            "topic-sensor", "myMeasurement.fieldKey", TS_MS, 1.5, None,
            (("tag1", "value1"), ("tag2", "value2")),
        ),
        Reading(
            "topic-sensor", "myMeasurement.other", TS_MS, 2.0, None,
            (("tag1", "value1"), ("tag2", "value2")),
        ),
    ]  # fmt: skip


def test_docs_string_field_is_skipped_and_counted() -> None:
    got = run(f'myMeasurement,tag1=value1 fieldKey="fieldValue" {TS_NS}')
    assert got == Decoded([], 1, ["myMeasurement.fieldKey"])


def test_docs_measurement_with_spaces() -> None:
    assert one(r"my\ Measurement fieldKey=1").metric == "my Measurement.fieldKey"


def test_docs_double_quotes_in_string_field() -> None:
    got = run(r'myMeasurement fieldKey="\"string\" within a string",n=1')
    assert [r.metric for r in got.readings] == ["myMeasurement.n"]
    assert got.skipped == 1


def test_docs_tag_keys_and_values_with_spaces() -> None:
    reading = one(r"myMeasurement,tag\ Key1=tag\ Value1,tag\ Key2=tag\ Value2 fieldKey=100")
    assert reading.tags == (("tag Key1", "tag Value1"), ("tag Key2", "tag Value2"))


def test_docs_emojis() -> None:
    got = run(f'myMeasurement,tagKey=🍭 fieldKey="Launch 🚀",n=1 {TS_NS}')
    assert got.readings[0].tags == (("tagKey", "🍭"),)


def test_docs_escaped_commas_and_equals() -> None:
    reading = one(r"my\,Meas,tag\,key=a\=b,t\=k=v\,w field\=key\,x=1")
    assert reading.metric == "my,Meas.field=key,x"
    assert reading.tags == (("t=k", "v,w"), ("tag,key", "a=b"))


@pytest.mark.parametrize(
    ("escaped", "literal"),
    [
        ("\\", "\\"),
        ("\\\\", "\\"),
        ("\\\\\\", "\\\\"),
        ("\\\\\\\\", "\\\\"),
        ("\\\\\\\\\\", "\\\\\\"),
        ("\\\\\\\\\\\\", "\\\\\\"),
    ],
)
def test_docs_backslash_table(escaped: str, literal: str) -> None:
    # From the docs: two contiguous backslashes are one; a lone one is literal.
    assert one(f"m,tag=x{escaped}y f=1").tags == (("tag", f"x{literal}y"),)


def test_measurement_may_hold_an_equals_sign() -> None:
    assert one("a=b f=1").metric == "a=b.f"


def test_comments_blank_lines_and_crlf() -> None:
    text = "# a comment\r\n\r\ncpu,host=a usage=1 " + TS_NS + "\r\n  \n# end\n"
    got = run(text)
    assert [(r.sensor_id, r.metric) for r in got.readings] == [("a", "cpu.usage")]


def test_quoted_string_may_span_lines() -> None:
    got = run('m note="line one\nline two",v=1\nm v=2')
    assert [r.value for r in got.readings] == [1.0, 2.0]
    assert got.skipped == 1


# --- field types ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1.0", 1.0),
        ("1", 1.0),
        ("-1.234456e+78", -1.234456e78),
        (".5", 0.5),
        ("1i", 1.0),
        ("12485903i", 12485903.0),
        ("-12485903i", -12485903.0),
        ("9223372036854775807i", 9.223372036854775807e18),
        ("1u", 1.0),
        ("18446744073709551615u", 1.8446744073709551615e19),
        *[(t, 1.0) for t in ("t", "T", "true", "True", "TRUE")],
        *[(f, 0.0) for f in ("f", "F", "false", "False", "FALSE")],
    ],
)
def test_field_types(raw: str, value: float) -> None:
    assert one(f"m f={raw}").value == value


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("9223372036854775808i", "int64"),
        ("-9223372036854775809i", "int64"),
        ("18446744073709551616u", "uint64"),
        ("-1u", "bad value"),
        ("1.5i", "bad value"),
        ("tRuE", "bad value"),
        ("inf", "bad value"),
        ("NaN", "bad value"),
        ("1_000", "bad value"),
        ("0x10", "bad value"),
        ("1e999", "float range"),
        ("٣", "bad value"),
        ("", "no value"),
        ("1" * 40 + "i", "out of range"),
    ],
)
def test_bad_field_values(raw: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        run(f"m f={raw}")


# --- timestamps ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "stamp"),
    [
        ("ns", "1556813561098000000"),
        ("us", "1556813561098000"),
        ("ms", "1556813561098"),
        ("s", "1556813561"),
        ("auto", "1556813561098000000"),
        ("auto", "1556813561098"),
    ],
)
def test_precision(precision: str, stamp: str) -> None:
    expected = TS_MS if precision != "s" else 1_556_813_561_000
    assert one(f"m f=1 {stamp}", ctx(influx_precision=precision)).ts_ms == expected


def test_missing_timestamp_is_receive_time() -> None:
    assert one("m f=1").ts_ms == NOW


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [
        ("abc", "bad timestamp"),
        ("1.5", "bad timestamp"),
        ("1" * 30, "bad timestamp"),
        ("5", "before"),
    ],
)
def test_bad_timestamps(stamp: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        run(f"m f=1 {stamp}")


# --- mapping -------------------------------------------------------------------------


def test_sensor_id_tag_then_host_then_topic() -> None:
    assert one("m,sensor_id=s1,host=h f=1").sensor_id == "s1"
    reading = one("m,host=h,dc=x f=1")
    assert (reading.sensor_id, reading.tags) == ("h", (("dc", "x"),))
    assert one("m,dc=x f=1").sensor_id == "topic-sensor"
    assert one("m,host=h f=1", ctx(topic_wins=True)).sensor_id == "topic-sensor"


def test_sensor_id_tag_name_is_configurable() -> None:
    reading = one("m,device=d7,host=h f=1", ctx(sensor_id_field="device"))
    assert (reading.sensor_id, reading.tags) == ("d7", (("host", "h"),))


def test_without_tag_or_template_the_measurement_is_the_sensor() -> None:
    got = run(
        'weather,room=k temp=21.5,wind=3i,note="gusty" 1556813561',
        ctx(fields={}, influx_precision="s"),
    )
    assert got.readings == [
        Reading("weather", "temp", 1_556_813_561_000, 21.5, None, (("room", "k"),)),
        Reading("weather", "wind", 1_556_813_561_000, 3.0, None, (("room", "k"),)),
    ]
    assert (got.skipped, got.skipped_names) == (1, ["note"])


def test_a_host_tag_still_names_the_sensor_without_a_template() -> None:
    reading = one("cpu,host=pi usage=3.5", ctx(fields={}))
    assert (reading.sensor_id, reading.metric) == ("pi", "cpu.usage")


@pytest.mark.parametrize(
    ("stamp", "precision", "hint"),
    [
        ("1556813561", "ns", 'looks like epoch seconds: set influx_precision = "s" or "auto"'),
        ("1556813561098", "ns", "looks like epoch milliseconds"),
        ("1556813561098000", "ns", "looks like epoch microseconds"),
        ("1556813561098000000", "s", "looks like epoch nanoseconds"),
    ],
)
def test_a_timestamp_in_another_precision_gets_a_hint(
    stamp: str, precision: str, hint: str
) -> None:
    with pytest.raises(DecodeError, match=hint):
        run(f"m f=1 {stamp}", ctx(influx_precision=precision))


def test_no_hint_when_no_precision_fits() -> None:
    with pytest.raises(DecodeError) as info:
        run("m f=1 5")
    assert "looks like" not in info.value.reason


def test_unit_tag_becomes_the_unit() -> None:
    reading = one("m,unit=°C,room=k f=1")
    assert (reading.unit, reading.tags) == ("°C", (("room", "k"),))


def test_topic_tags_are_merged() -> None:
    reading = one("m,room=k f=1", ctx(tags=(("room", "t"), ("site", "s"))))
    assert reading.tags == (("room", "k"), ("site", "s"))


def test_several_lines_several_sensors() -> None:
    text = "\n".join(f"weather,host=st{i} temp={i}.5,hum={i}i {TS_NS}" for i in range(5))
    got = run(text)
    assert len(got.readings) == 10
    assert {r.sensor_id for r in got.readings} == {f"st{i}" for i in range(5)}


# --- rejections ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("m", "space"),
        ("m,t=1", "space"),
        ("m f", "no '='"),
        ("m,t f=1", "no '='"),
        ("m,t= f=1", "empty value"),
        ("m,=v f=1", "empty tag key"),
        ("m,t=a,t=b f=1", "twice"),
        (",t=a f=1", "measurement"),
        ("m =1", "empty field key"),
        ('m f="open', "unterminated"),
        ("m f=1 1 2", "bad timestamp"),
        ("m,t=a=b f=1", "'='"),
        ("m f=1\nbroken", "line 2"),
        ("", "no lines"),
        ("# only a comment", "no lines"),
        ("m,t=a\x00 f=1", "control"),
    ],
)
def test_rejections(text: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        run(text)


def test_not_utf8() -> None:
    with pytest.raises(DecodeError, match="UTF-8"):
        decode(b"m f=1 \xff", ctx())


def test_reading_limit() -> None:
    text = "\n".join(f"m f={i}" for i in range(5))
    with pytest.raises(DecodeError, match="limit 3"):
        run(text, ctx(limits=Limits(max_readings_per_message=3)))


def test_too_many_tags() -> None:
    with pytest.raises(DecodeError, match="tags"):
        run("m," + ",".join(f"t{i}=v" for i in range(40)) + " f=1")


# --- robustness ------------------------------------------------------------------------

_alphabet = st.sampled_from([*'m,= \\"\n#tfi1.-e9u', "host", "1556813561098000000"])


@settings(max_examples=200, deadline=None)
@given(st.lists(_alphabet, max_size=40).map("".join))
def test_line_like_text_only_raises_decode_error(text: str) -> None:
    try:
        run(text)
    except DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_only_raise_decode_error(payload: bytes) -> None:
    try:
        decode(payload, ctx())
    except DecodeError:
        pass
