"""The value_template evaluator: the forms devices publish (sources named at each case),
Home Assistant's filter semantics, and hostile templates — refused when parsed, never
executed, bounded when evaluated."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.discovery.template import (
    MAX_TEMPLATE_CHARS,
    UNDEFINED,
    compile_template,
    render,
)
from gateway.errors import DiscoveryError, TemplateError


def ev(template: str, payload: str | Any) -> Any:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    try:
        data = json.loads(text)
    except ValueError:
        data = UNDEFINED
    return compile_template(template).evaluate(text, data)


# --- what devices publish ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "payload", "expected"),
    [
        # Zigbee2MQTT lib/extension/homeassistant.ts (test/extensions/homeassistant.test.ts)
        ('{{ value_json["temperature"] }}', {"temperature": 21.2}, 21.2),
        ("{{ value_json.state }}", {"state": "online"}, "online"),
        # Tasmota xdrv_12_home_assistant.ino HASS_DISCOVER_SENSOR (+ nested key, + [index])
        ("{{value_json['AM2301']['Temperature']}}", {"AM2301": {"Temperature": 21.3}}, 21.3),
        ("{{value_json['ENERGY']['Power'][1]}}", {"ENERGY": {"Power": [12, 13, 14]}}, 13),
        ("{{value_json['RSSI']}}", {"RSSI": 88}, 88),
        ("{{value_json.POWER2}}", {"POWER2": "ON"}, "ON"),
        # bieniu/ha-shellies-discovery (Gen1) TPL_* constants
        ("{{value|float|round(1)}}", "21.56", 21.6),
        ("{{value|float|round}}", "87.6", 88),
        ("{{(value|float/1000)|round(2)}}", "12345", 12.35),
        ("{{(value|float/60/1000)|round(2)}}", "600000", 10.0),
        ("{{value|float*100|round}}", "0.87", 87.0),  # filters bind tighter: rounds the 100
        # bieniu/ha-shellies-discovery-gen2 TPL_* constants
        ("{{value_json.apower|round(1)}}", {"apower": 8.94}, 8.9),
        ("{{value_json.aenergy.total|round(2)}}", {"aenergy": {"total": 6.5321}}, 6.53),
        ("{{value_json.temperature.tC|round(1)}}", {"temperature": {"tC": 23.46}}, 23.5),
        ("{{value_json.pf*100|round}}", {"pf": 0.5}, 50.0),
        (
            '{{value_json["switch:0"].temperature.tC}}',
            {"switch:0": {"temperature": {"tC": 40.1}}},
            40.1,
        ),
        # HA docs (integrations/mqtt, sensor.mqtt): plain value, defaults, int
        ("{{ value }}", "17.25", "17.25"),
        ("{{ value | int }}", "17.75", 17),
        ("{{ value_json.x | int(0) }}", {"x": "oops"}, 0),
        ("{{ value | float(0) }}", "unavailable", 0),
        ("{{ value_json.missing | default(3) }}", {}, 3),
        ("{{ value_json.missing | d('n/a') }}", {}, "n/a"),
        ("{{ value_json.x | default(7, true) }}", {"x": 0}, 7),
        ("{{ value_json.x | multiply(0.001) }}", {"x": 2500}, 2.5),
        ("{{ -value_json.x | abs }}", {"x": 3}, 3),
        ("{{ value_json.x | round(1, 'floor') }}", {"x": 2.99}, 2.9),
        ("{{ value_json.x | round(precision=0, method='ceil') }}", {"x": 2.01}, 3),
        ("{{ value_json.x // 3 + value_json.x % 3 }}", {"x": 10}, 4),
        ("  {{- value_json.a.b -}}\n", {"a": {"b": 1}}, 1),
        ("{{ value_json.list[-1] }}", {"list": [1, 2, 3]}, 3),
        ("{{ value_json.0 }}", [5, 6], 5),
        ("{{ true }}", {}, True),
    ],
)
def test_device_templates(template: str, payload: Any, expected: Any) -> None:
    got = ev(template, payload)
    assert got == expected
    assert type(got) is type(expected)


def test_missing_paths_are_undefined_all_the_way_down() -> None:
    assert ev("{{ value_json.a.b.c }}", {}) is UNDEFINED
    assert ev("{{ value_json.a[3] }}", {"a": [1]}) is UNDEFINED
    assert ev("{{ value_json.x }}", "not json") is UNDEFINED
    assert render(UNDEFINED) == ""


@pytest.mark.parametrize(
    ("template", "payload", "reason"),
    [
        ("{{ value | float }}", "unknown", "not a number"),
        ("{{ value_json.x | float }}", {}, "not in the payload"),
        ("{{ value_json.x | int }}", {"x": None}, "not a number"),
        ("{{ value_json.x / 0 }}", {"x": 1}, "division by zero"),
        ("{{ value_json.x * 2 }}", {"x": "2"}, "needs numbers"),
        ("{{ value_json.x + 1 }}", {}, "needs numbers"),
        ("{{ value_json.x | round(value_json.p) }}", {"x": 1, "p": 99}, "precision"),
    ],
)
def test_failures_on_one_payload(template: str, payload: Any, reason: str) -> None:
    with pytest.raises(TemplateError, match=reason):
        ev(template, payload)


def test_render_like_jinja() -> None:
    assert [render(v) for v in (True, False, None, 21.5, 3, "ON")] == [
        "True", "False", "None", "21.5", "3", "ON",
    ]  # fmt: skip


def test_uses_json() -> None:
    assert compile_template("{{ value_json.a | default(value) }}").uses_json
    assert not compile_template("{{ value | float }}").uses_json


# --- refused: never executed ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        # Jinja sandbox escapes that work on an unsandboxed environment
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "only supported on value"),
        ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "'cycler' is not supported"),
        ("{{ lipsum.__globals__['os'].popen('id') }}", "'lipsum' is not supported"),
        ("{{ self._TemplateReference__context }}", "'self' is not supported"),
        ("{{ value_json.__class__ }}", ""),  # a dict lookup, never getattr: see below
        ("{{ value.upper() }}", "calling .upper() is not supported"),
        ("{{ value_json['x']() }}", "unsupported template syntax at '('"),
        ("{{ value_json | attr('__class__') }}", "filter 'attr' is not supported"),
        ("{{ value | tojson }}", "filter 'tojson' is not supported"),
        # statements, resource bombs, non-numeric tricks
        ("{% for i in range(10**9) %}x{% endfor %}", "statements"),
        ("{% set x = 1 %}{{ x }}", "statements"),
        ("{{ 9**9**9 }}", "'**' is not supported"),
        ("{{ range(99999999) | list }}", "'range' is not supported"),
        ("{{ now() }}", "'now' is not supported"),
        ("{{ states('sensor.x') }}", "'states' is not supported"),
        ("{{ value }} and {{ value }}", "single"),
        ("temperature: {{ value }}", "single"),
        ("plain text", "no {{"),
        ("{{ }}", "empty"),
        ("{{ value ~ 'x' }}", "unsupported template syntax"),
        ("{{ value_json[value] }}", "unsupported subscript"),
        ("{{ value | round(1, 2, 3, 4) }}", "at most 3"),
        ("{{ value | float(nope=1) }}", "no parameter 'nope'"),
        ("{{ value | multiply }}", "needs an amount"),
        ("{{ " + "(" * 40 + "value" + ")" * 40 + " }}", "deeper than"),
        ("{{ value" + " + 1" * 300 + " }}", "longer than"),
        ("{{ 1" + "0" * 40 + " }}", "too long"),
    ],
)
def test_hostile_and_unsupported_templates_are_refused(template: str, reason: str) -> None:
    if not reason:
        # Looked up as a key of the payload object, not as a Python attribute.
        assert ev(template, {"__class__": 1}) == 1
        assert ev(template, {}) is UNDEFINED
        return
    with pytest.raises(DiscoveryError, match=re.escape(reason)):
        compile_template(template)


def test_template_length_is_bounded() -> None:
    assert len("{{ value" + " + 1" * 300 + " }}") > MAX_TEMPLATE_CHARS


def test_string_repetition_is_not_arithmetic() -> None:
    # Jinja would build a gigabyte string; here arithmetic needs numbers.
    template = compile_template("{{ 'a' * 1000000000 }}")
    with pytest.raises(TemplateError, match="needs numbers"):
        template.evaluate("")


def test_big_integer_arithmetic_is_bounded() -> None:
    template = compile_template("{{ " + " * ".join(["999999999999999999999999999"] * 25) + " }}")
    started = time.monotonic()
    with pytest.raises(TemplateError, match="too large"):
        template.evaluate("")
    assert time.monotonic() - started < 1.0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_text_compiles_or_is_refused_cleanly(text: str) -> None:
    try:
        template = compile_template("{{ " + text + " }}")
    except DiscoveryError:
        return
    try:
        template.evaluate("21.5", {"a": {"b": [1, 2]}, "c": "x"})
    except TemplateError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_any_payload_only_raises_template_error(payload: Any) -> None:
    for source in (
        "{{ value_json.a.b | float(0) | round(2) }}",
        "{{ value_json['x'][0] * 2 }}",
        "{{ value | int }}",
        "{{ value_json | default(1) }}",
    ):
        try:
            compile_template(source).evaluate(str(payload), payload)
        except TemplateError:
            pass
