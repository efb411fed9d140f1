"""Topic templates: parsing, matching, tags, and that no topic level can inject SQL or
escape its field, end to end through the router and the SQLite sink."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import SubscriptionConfig
from gateway.errors import DecodeError
from gateway.router import Router
from gateway.storage.sqlite.connection import open_readonly
from gateway.storage.sqlite.writer import SqliteSink
from gateway.topics import MAX_TOPIC_BYTES, TopicTemplate, check_share_group, check_topic_filter
from gateway.validation import Limits
from tests.support import storage

NOW = 1_700_000_000_000


# --- parsing -------------------------------------------------------------------------


def test_parse_levels() -> None:
    template = TopicTemplate.parse("sensors/{site}/+/{sensor_id}/{metric}/#")
    assert template.levels == ("=sensors", "site", None, "sensor_id", "metric")
    assert template.trailing_hash
    assert template.captures == ("site", "sensor_id", "metric")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("a/#/b", "last level"),
        ("a/{x}/{x}", "twice"),
        ("a/{x", "bad placeholder"),
        ("a/x}", "bad placeholder"),
        ("a/{1x}", "bad placeholder"),
        ("a/{x y}", "bad placeholder"),
        ("a/{x'}", "bad placeholder"),
        ("a/b+", "wildcard inside"),
        ("a/#b", "wildcard inside"),
        ("a/{" + "x" * 70 + "}", "bad placeholder"),
    ],
)
def test_bad_templates(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        TopicTemplate.parse(text)


def test_bad_template_is_a_config_error_naming_the_key() -> None:
    from gateway.config import load_settings
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match=r"subscriptions\[0\]"):
        load_settings(
            None,
            environ={},
            overrides={"subscriptions": [{"topic": "a/#", "topic_template": "a/{x"}]},
        )


# --- matching ----------------------------------------------------------------------------


def test_match_fields_and_tags() -> None:
    template = TopicTemplate.parse("sensors/{site}/{sensor_id}/{metric}")
    fields, tags = template.match("sensors/berlin/t1/temperature")
    assert fields == {"sensor_id": "t1", "metric": "temperature"}
    assert tags == (("site", "berlin"),)


def test_tags_are_sorted_and_plus_is_ignored() -> None:
    template = TopicTemplate.parse("{zone}/+/{area}/{sensor_id}")
    assert template.match("z/skip/a/s") == ({"sensor_id": "s"}, (("area", "a"), ("zone", "z")))


def test_trailing_hash_accepts_any_rest() -> None:
    template = TopicTemplate.parse("sensors/{sensor_id}/#")
    assert template.match("sensors/a")[0] == {"sensor_id": "a"}
    assert template.match("sensors/a/b/c/d")[0] == {"sensor_id": "a"}


@pytest.mark.parametrize(
    ("template", "topic"),
    [
        ("sensors/{sensor_id}", "sensors/a/b"),
        ("sensors/{sensor_id}/{metric}", "sensors/a"),
        ("sensors/{sensor_id}", "other/a"),
        ("sensors/{sensor_id}", "sensors/"),
        ("sensors/{site}/{sensor_id}", "sensors//a"),
    ],
)
def test_non_matching_topics(template: str, topic: str) -> None:
    with pytest.raises(DecodeError):
        TopicTemplate.parse(template).match(topic)


@pytest.mark.parametrize(
    ("level", "problem"),
    [("a\nb", "control"), ("x" * 200, "longer than"), ("\x7f", "control")],
)
def test_tag_values_are_checked_like_names(level: str, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        TopicTemplate.parse("s/{site}/{sensor_id}").match(f"s/{level}/a")


def test_tag_value_length_follows_the_limits() -> None:
    template = TopicTemplate.parse("s/{site}")
    with pytest.raises(DecodeError, match="longer than 4"):
        template.match("s/abcde", Limits(max_name_length=4))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=6), min_size=1, max_size=6).map("/".join))
def test_match_only_raises_decode_error(topic: str) -> None:
    template = TopicTemplate.parse("a/{site}/{sensor_id}/#")
    try:
        fields, tags = template.match(topic)
    except DecodeError:
        return
    assert "/" not in fields["sensor_id"]
    assert all("/" not in v for _k, v in tags)


# --- several subscriptions -------------------------------------------------------------


def test_first_matching_subscription_wins_with_its_own_format_and_template() -> None:
    router = Router(
        [
            SubscriptionConfig(
                topic="home/+/raw", format="raw", topic_template="home/{sensor_id}/raw"
            ),
            SubscriptionConfig(
                topic="home/#", format="influx", topic_template="home/{room}/#", name="lp"
            ),
        ],
        Limits(),
        1024,
    )
    raw = router.route("home/k1/raw", b"21.5", NOW)
    assert [(r.sensor_id, r.metric, r.value) for r in raw.readings] == [("k1", "value", 21.5)]
    lp = router.route("home/kitchen/x", b"env,host=h2 t=1", NOW)
    assert lp.subscription == "lp"
    assert [(r.sensor_id, r.metric, r.tags) for r in lp.readings] == [
        ("h2", "env.t", (("room", "kitchen"),))
    ]


# --- injection, end to end through SQLite -----------------------------------------------

HOSTILE = [
    "'; DROP TABLE readings; --",
    'x"); DELETE FROM series; --',
    "Robert'); DROP TABLE series;--",
    '","injected":"1',
    "\\",
    "\\u0000",
    "%_*",
    "ünïcødé-温度-🌡",
    "a b c",
    "' OR '1'='1",
]


async def test_hostile_topic_levels_are_stored_verbatim(tmp_path: Path) -> None:
    router = Router(
        [
            SubscriptionConfig(
                topic="site/+/+/+",
                format="raw",
                topic_template="site/{site}/{sensor_id}/{metric}",
            )
        ],
        Limits(),
        1024,
    )
    sink = SqliteSink(tmp_path / "t.db")
    await sink.open()
    try:
        envelopes = [
            router.route(f"site/{level}/{level}/{level}", f"{i}".encode(), NOW + i)
            for i, level in enumerate(HOSTILE)
        ]
        assert all(e.dead_letter is None for e in envelopes), [e.dead_letter for e in envelopes]
        readings = [r for e in envelopes for r in e.readings]
        result = await sink.write_batch(readings, [])
        assert result.stored == len(HOSTILE)
    finally:
        await sink.close()

    conn = open_readonly(tmp_path / "t.db")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"series", "readings_hot", "readings_cold", "dead_letters"} <= tables
        for i, level in enumerate(HOSTILE):
            rows = storage.readings(conn, sensor=level, metric=level)
            assert len(rows) == 1, level
            row = rows[0]
            assert (row.sensor_id, row.metric, row.value) == (level, level, float(i))
            assert row.tags == {"site": level}  # one key, value intact: JSON escaped
    finally:
        conn.close()


async def test_hostile_template_names_cannot_be_written() -> None:
    for text in ["a/{x'); DROP TABLE t;--}", 'a/{"x"}', "a/{x,y}", "a/{}"]:
        with pytest.raises(ValueError, match="bad placeholder"):
            TopicTemplate.parse(text)


async def test_hostile_levels_in_dead_letters(tmp_path: Path) -> None:
    router = Router([SubscriptionConfig(topic="#", format="raw")], Limits(), 1024)
    sink = SqliteSink(tmp_path / "d.db")
    await sink.open()
    try:
        dead = [router.route(level, b"x", NOW).dead_letter for level in HOSTILE]
        await sink.write_batch([], [d for d in dead if d is not None])
    finally:
        await sink.close()
    conn = sqlite3.connect(tmp_path / "d.db")
    try:
        topics = [r[0] for r in conn.execute("SELECT topic FROM dead_letters ORDER BY id")]
    finally:
        conn.close()
    assert topics == HOSTILE


# --- topic filters (MQTT 3.1.1 §4.7, MQTT 5 §4.7, §4.8.2) ---------------------------


@pytest.mark.parametrize(
    "text",
    [
        "#",
        "+",
        "a",
        "/",
        "a/b/c",
        "a/+/c",
        "a/+/#",
        "+/+",
        "/#",
        "a//b",
        "$SYS/broker/#",
        "sport/tennis/player1/#",
        "x" * MAX_TOPIC_BYTES,
        "ü" * (MAX_TOPIC_BYTES // 2),
        "$share/group/a/#",
        "$share/g/+",
        "$share",  # only "$share/" starts a shared subscription
        "$sharex/a",
    ],
)
def test_valid_filters(text: str) -> None:
    assert check_topic_filter(text) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("a/#/b", "last level"),
        ("#/a", "last level"),
        ("a/b#", "alone in its level"),
        ("a/#b", "alone in its level"),
        ("a/sensor+", "'\\+' must be alone"),
        ("+a/b", "'\\+' must be alone"),
        ("a/++", "'\\+' must be alone"),
        ("a\0b", "NUL"),
        ("x" * (MAX_TOPIC_BYTES + 1), "more than MQTT's 65,535"),
        ("ü" * (MAX_TOPIC_BYTES // 2 + 1), "more than MQTT's 65,535"),
        ("a\ud800", "lone surrogate"),
        ("$share/", "needs \\$share/<group>/<filter>"),
        ("$share/g", "needs \\$share/<group>/<filter>"),
        ("$share//a", "group name is empty"),
        ("$share/g/", "empty filter"),
        ("$share/g+/a", "contains '\\+'"),
        ("$share/g#/a", "contains '#'"),
        ("$share/g/a/#/b", "last level"),
    ],
)
def test_invalid_filters(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_topic_filter(text)


def test_long_filter_error_is_shortened() -> None:
    with pytest.raises(ValueError) as info:
        check_topic_filter("a/#/" + "x" * 10_000)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(("name", "ok"), [("g", True), ("", False), ("a/b", False), ("a+", False)])
def test_share_group_names(name: str, ok: bool) -> None:
    if ok:
        assert check_share_group(name) == name
    else:
        with pytest.raises(ValueError):
            check_share_group(name)


@given(st.lists(st.sampled_from(["a", "b", "+", "#", "", "x+", "#y", "é"]), min_size=1, max_size=6))
def test_filter_rules_property(levels: list[str]) -> None:
    """Valid exactly when every '#' is a whole last level and every '+' a whole level."""
    text = "/".join(levels)
    expected = bool(text) and all(
        ("#" not in level or (level == "#" and i == len(levels) - 1))
        and ("+" not in level or level == "+")
        for i, level in enumerate(levels)
    )
    try:
        check_topic_filter(text)
        valid = True
    except ValueError:
        valid = False
    assert valid == expected, text


@pytest.mark.parametrize(
    ("env", "key", "fragment"),
    [
        (
            {"TIDEGATE_SUBSCRIPTIONS": '[{"topic": "a/#/b"}]'},
            "subscriptions[0].topic",
            "last level",
        ),
        (
            {"TIDEGATE_SUBSCRIPTIONS": '[{"topic": "a/#"}, {"topic": "a/sensor+"}]'},
            "subscriptions[1].topic",
            "alone in its level",
        ),
        ({"TIDEGATE_MQTT__SHARED_GROUP": "a/b"}, "mqtt.shared_group", "contains '/'"),
        (
            {
                "TIDEGATE_MQTT__SHARED_GROUP": "g",
                "TIDEGATE_SUBSCRIPTIONS": '[{"topic": "$share/h/a"}]',
            },
            "subscriptions[0].topic",
            "already a shared subscription",
        ),
    ],
)
def test_bad_filters_are_config_errors_naming_the_key(
    env: dict[str, str], key: str, fragment: str
) -> None:
    from gateway.config import load_settings
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_settings(None, environ=env)
    assert info.value.key == key
    assert fragment in info.value.problem


@pytest.mark.parametrize("topic", ["a/#/b", "a/sensor+"])
def test_check_config_rejects_a_bad_filter_with_exit_2(tmp_path: Path, topic: str) -> None:
    import subprocess
    import sys

    config = tmp_path / "bad.toml"
    config.write_text(f'[[subscriptions]]\ntopic = "{topic}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "subscriptions[0].topic" in lines[0]


def test_topic_caches_are_bounded_in_bytes() -> None:
    """Distinct long topics (a flood of 1 KB topics) cannot grow the router's or a
    template's cache past its byte budget."""
    from gateway import router as router_module
    from gateway import topics as topics_module

    subs = [SubscriptionConfig(topic="t/#", topic_template="t/{sensor_id}/#")]
    router = Router(subs, Limits(), 1000)
    template = router.routes[0].template
    assert template is not None
    for i in range(20_000):
        router.route(f"t/s{i}/" + "x" * 1000, b"1")
        assert router._cache_bytes <= router_module._TOPIC_CACHE_BYTES
        assert template._cache_bytes[0] <= topics_module._CACHE_BYTES
    assert len(router._by_topic) < 20_000
