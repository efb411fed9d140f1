"""Payload formats: small encoder functions from one sensor sample to MQTT messages.

A sample is one sensor's values for all its metrics at one timestamp. A format turns
it into messages, each with the indexes of the metrics it carries, so the ledger
knows exactly which (sensor, metric, ts) a broker acknowledgement covers. A format
also builds the *faulty* messages the gateway must dead-letter (never store):

* ``malformed``: not valid for the codec at all (truncated JSON, plain text, wrong
  shape);
* ``out_of_range``: well-formed but rejected by validation (NaN or Infinity, a timestamp before
  2000 or years in the future).

Every faulty payload carries the marker ``tgfault:<run>-<n>`` so ``verify`` can find
each one in the gateway's ``dead_letters`` table.

Formats register in :data:`FORMATS`; adding one (SenML, Influx line protocol) means
writing one :class:`Format` with its two encoder functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from simulators.signals import DECIMALS, UNITS

FAULT_MARKER = "tgfault:"
ABSURD_PAST_MS = 1_000  # 1970-01-01: before any sane min_ts
ABSURD_FUTURE_MS = 32_503_680_000_000  # year 3000


class Encoded(NamedTuple):
    """One message to publish."""

    topic: str
    payload: bytes
    covers: tuple[int, ...]
    """Indexes (into the sensor's metrics) of the readings this message carries."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a format needs to know about one sensor (built once per sensor)."""

    sensor_id: str
    metrics: tuple[str, ...]
    topics: tuple[str, ...]
    """One topic per metric for per-metric formats; one topic for multi-metric ones."""
    sid_in_payload: bool
    """The topic template has no ``{sensor_id}``: the payload must name the sensor."""
    metric_in_payload: bool
    """Per-metric format whose template has no ``{metric}``: the payload names it."""


def _number(metric: str, value: float) -> str:
    return f"{value:.{DECIMALS.get(metric, 3)}f}"


def _unit_json(metric: str) -> str:
    unit = UNITS.get(metric)
    return "" if unit is None else f',"unit":{json.dumps(unit, ensure_ascii=False)}'


# ---------------------------------------------------------------------------- json-reading


def _reading_encode(target: Target, ts_ms: int, values: list[float]) -> list[Encoded]:
    out: list[Encoded] = []
    sid = f',"sensor_id":{json.dumps(target.sensor_id)}' if target.sid_in_payload else ""
    for index, metric in enumerate(target.metrics):
        name = f',"metric":{json.dumps(metric)}' if target.metric_in_payload else ""
        text = f'{{"value":{_number(metric, values[index])},"ts":{ts_ms}{_unit_json(metric)}{sid}{name}}}'
        out.append(Encoded(target.topics[index], text.encode(), (index,)))
    return out


def _reading_fault(
    target: Target, ts_ms: int, values: list[float], kind: str, fault_id: str, variant: int
) -> Encoded:
    metric = target.metrics[variant % len(target.metrics)]
    topic = target.topics[variant % len(target.topics)]
    mark = f'"note":"{FAULT_MARKER}{fault_id}"'
    sid = f',"sensor_id":{json.dumps(target.sensor_id)}' if target.sid_in_payload else ""
    name = f',"metric":{json.dumps(metric)}' if target.metric_in_payload else ""
    if kind == "malformed":
        choice = variant % 3
        if choice == 0:  # truncated in the middle of a number
            text = f'{{{mark}{sid}{name},"value":{_number(metric, values[0])},"ts":{str(ts_ms)[:6]}'
        elif choice == 1:  # not JSON at all
            text = f"{FAULT_MARKER}{fault_id} {metric}={_number(metric, values[0])}"
        else:  # JSON, but the value is not a number
            text = f'{{{mark}{sid}{name},"value":"warm","ts":{ts_ms}}}'
    else:
        choice = variant % 3
        if choice == 0:
            text = f'{{{mark}{sid}{name},"value":NaN,"ts":{ts_ms}}}'
        elif choice == 1:
            text = (
                f'{{{mark}{sid}{name},"value":{_number(metric, values[0])},"ts":{ABSURD_PAST_MS}}}'
            )
        else:
            text = f'{{{mark}{sid}{name},"value":{_number(metric, values[0])},"ts":{ABSURD_FUTURE_MS}}}'
    return Encoded(topic, text.encode(), ())


# ------------------------------------------------------------------------------ json-multi


def _multi_body(target: Target, values: list[float]) -> str:
    return ",".join(
        f'"{metric}":{_number(metric, values[i])}' for i, metric in enumerate(target.metrics)
    )


def _multi_encode(target: Target, ts_ms: int, values: list[float]) -> list[Encoded]:
    sid = f',"sensor_id":{json.dumps(target.sensor_id)}' if target.sid_in_payload else ""
    text = f'{{{_multi_body(target, values)},"ts":{ts_ms}{sid}}}'
    return [Encoded(target.topics[0], text.encode(), tuple(range(len(target.metrics))))]


def _multi_fault(
    target: Target, ts_ms: int, values: list[float], kind: str, fault_id: str, variant: int
) -> Encoded:
    mark = f'"note":"{FAULT_MARKER}{fault_id}"'
    sid = f',"sensor_id":{json.dumps(target.sensor_id)}' if target.sid_in_payload else ""
    body = _multi_body(target, values)
    choice = variant % 3
    if kind == "malformed":
        if choice == 0:  # truncated
            text = f'{{{mark}{sid},{body},"ts":{str(ts_ms)[:6]}'
        elif choice == 1:  # not JSON
            text = f"{FAULT_MARKER}{fault_id} {body}"
        else:  # an array of non-objects (the codec wants reading objects)
            text = f'["{FAULT_MARKER}{fault_id}", 1, 2]'
    elif choice == 0:  # a NaN leaf is skipped like null (ESPHome); Infinity is refused
        text = f'{{{mark}{sid},"{target.metrics[0]}":Infinity,"ts":{ts_ms}}}'
    elif choice == 1:
        text = f'{{{mark}{sid},{body},"ts":{ABSURD_PAST_MS}}}'
    else:
        text = f'{{{mark}{sid},{body},"ts":{ABSURD_FUTURE_MS}}}'
    return Encoded(target.topics[0], text.encode(), ())


# ----------------------------------------------------------------------------------- senml

SENML_UNITS: dict[str, str | None] = {
    "temperature": "Cel",
    "humidity": "%RH",
    "pressure": "hPa",
    "co2": "ppm",
    "battery": "%EL",
    "counter": None,
}
"""RFC 8428 / RFC 8798 unit symbols."""
SENML_PAST_S = 300_000_000  # 1979: absolute (above 2**28) and before 2000
SENML_FUTURE_S = 32_503_680_000  # year 3000


def _seconds(ts_ms: int) -> str:
    return f"{ts_ms // 1000}.{ts_ms % 1000:03d}"


def _senml_records(target: Target, values: list[float], time_text: str) -> list[str]:
    records = []
    for index, metric in enumerate(target.metrics):
        unit = SENML_UNITS.get(metric)
        head = ""
        if index == 0:
            base = f'"bn":{json.dumps(target.sensor_id + "/")},' if target.sid_in_payload else ""
            head = f'{base}"bt":{time_text},'
        unit_text = f'"u":{json.dumps(unit)},' if unit else ""
        records.append(f'{{{head}"n":"{metric}",{unit_text}"v":{_number(metric, values[index])}}}')
    return records


def _senml_encode(target: Target, ts_ms: int, values: list[float]) -> list[Encoded]:
    text = "[" + ",".join(_senml_records(target, values, _seconds(ts_ms))) + "]"
    return [Encoded(target.topics[0], text.encode(), tuple(range(len(target.metrics))))]


def _senml_fault(
    target: Target, ts_ms: int, values: list[float], kind: str, fault_id: str, variant: int
) -> Encoded:
    note = f'{{"n":"note","vs":"{FAULT_MARKER}{fault_id}"}}'
    choice = variant % 3
    if kind == "malformed":
        if choice == 0:  # truncated
            text = "[" + note + "," + ",".join(_senml_records(target, values, _seconds(ts_ms)))[:20]
        elif choice == 1:  # not JSON
            text = f"{FAULT_MARKER}{fault_id} " + ",".join(target.metrics)
        else:  # a record without any value
            text = f'[{note},{{"n":"{target.metrics[0]}"}}]'
    else:
        when = str(SENML_PAST_S) if choice == 0 else str(SENML_FUTURE_S)
        text = "[" + ",".join([*_senml_records(target, values, when), note]) + "]"
    return Encoded(target.topics[0], text.encode(), ())


# ---------------------------------------------------------------------------------- influx

INFLUX_MEASUREMENT = "sim"
NS_PER_MS = 1_000_000


def _influx_lines(target: Target, values: list[float], ts_text: str) -> list[str]:
    sid = f",sensor_id={target.sensor_id}" if target.sid_in_payload else ""
    lines = []
    for index, metric in enumerate(target.metrics):
        unit = UNITS.get(metric)
        unit_tag = f",unit={unit}" if unit else ""
        value = _number(metric, values[index])
        lines.append(f"{INFLUX_MEASUREMENT}{sid}{unit_tag} {metric}={value} {ts_text}")
    return lines


def _influx_encode(target: Target, ts_ms: int, values: list[float]) -> list[Encoded]:
    text = "\n".join(_influx_lines(target, values, str(ts_ms * NS_PER_MS)))
    return [Encoded(target.topics[0], text.encode(), tuple(range(len(target.metrics))))]


def _influx_fault(
    target: Target, ts_ms: int, values: list[float], kind: str, fault_id: str, variant: int
) -> Encoded:
    mark = f"# {FAULT_MARKER}{fault_id}\n"  # a comment: ignored, but kept in the dead letter
    choice = variant % 3
    if kind == "malformed":
        if choice == 0:  # a field without a value
            text = f"{mark}{INFLUX_MEASUREMENT} {target.metrics[0]}= {ts_ms * NS_PER_MS}"
        elif choice == 1:  # a tag without a value
            text = f"{mark}{INFLUX_MEASUREMENT},sensor_id {target.metrics[0]}=1"
        else:  # no fields at all
            text = f"{FAULT_MARKER}{fault_id}"
    elif choice == 0:
        text = mark + "\n".join(_influx_lines(target, values, "1000"))  # 1970
    elif choice == 1:
        text = mark + "\n".join(_influx_lines(target, values, str(ABSURD_FUTURE_MS * NS_PER_MS)))
    else:  # not a number
        text = f"{mark}{INFLUX_MEASUREMENT} {target.metrics[0]}=NaN {ts_ms * NS_PER_MS}"
    return Encoded(target.topics[0], text.encode(), ())


# -------------------------------------------------------------------------------- registry

EncodeFn = Callable[[Target, int, list[float]], list[Encoded]]
FaultFn = Callable[[Target, int, list[float], str, str, int], Encoded]


@dataclass(frozen=True, slots=True)
class Format:
    """A payload format the simulator can send."""

    name: str
    default_topic: str
    per_metric: bool
    """True: one message per metric; False: one message carries all metrics."""
    encode: EncodeFn
    fault: FaultFn
    """``fault(target, ts, values, kind, fault_id, variant)`` with kind ``malformed`` or
    ``out_of_range``; ``variant`` picks among the ways to be wrong."""
    description: str
    subscription_format: str
    """The gateway's ``format`` for a subscription receiving these payloads."""
    unit_of: Callable[[str], str | None] = lambda _metric: None
    """The unit the payload carries for a metric (None: none)."""
    metric_prefix: str = ""
    """What the gateway puts before the metric name (Influx: ``<measurement>.``)."""

    def stored_unit(self, metric: str) -> str:
        """The unit the gateway's series row will carry for ``metric``."""
        return self.unit_of(metric) or ""

    def stored_metric(self, metric: str) -> str:
        """The metric name the gateway's series row will carry."""
        return self.metric_prefix + metric


FORMATS: dict[str, Format] = {
    "json-reading": Format(
        name="json-reading",
        default_topic="sensors/{sensor_id}/{metric}",
        per_metric=True,
        encode=_reading_encode,
        fault=_reading_fault,
        description='one message per metric: {"value": 21.5, "ts": <ms>, "unit": "°C"}',
        subscription_format="json",
        unit_of=UNITS.get,
    ),
    "json-multi": Format(
        name="json-multi",
        default_topic="sensors/{sensor_id}",
        per_metric=False,
        encode=_multi_encode,
        fault=_multi_fault,
        description='one message per sample: {"temperature": 21.5, "humidity": 40.2, "ts": <ms>}',
        subscription_format="json",
    ),
    "senml": Format(
        name="senml",
        default_topic="sensors/{sensor_id}",
        per_metric=False,
        encode=_senml_encode,
        fault=_senml_fault,
        description='one SenML pack per sample: [{"bt": <s>, "n": "temperature", "u": "Cel", "v": 21.5}, …]',
        subscription_format="senml",
        unit_of=SENML_UNITS.get,
    ),
    "influx": Format(
        name="influx",
        default_topic="sensors/{sensor_id}",
        per_metric=False,
        encode=_influx_encode,
        fault=_influx_fault,
        description="one line per metric: sim,unit=°C temperature=21.5 <ns> (metric sim.temperature)",
        subscription_format="influx",
        unit_of=UNITS.get,
        metric_prefix=f"{INFLUX_MEASUREMENT}.",
    ),
}


def make_target(fmt: Format, template: str, sensor_id: str, metrics: tuple[str, ...]) -> Target:
    """Render ``template`` for one sensor. Raises ``ValueError`` on a template that
    cannot work with ``fmt`` (``{metric}`` in a multi-metric format)."""
    has_sid = "{sensor_id}" in template
    has_metric = "{metric}" in template
    if has_metric and not fmt.per_metric:
        raise ValueError(f"--topic {template!r}: {{metric}} makes no sense for --format {fmt.name}")
    if "+" in template or "#" in template:
        raise ValueError(f"--topic {template!r}: wildcards cannot be published to")
    base = template.replace("{sensor_id}", sensor_id)
    if fmt.per_metric:
        topics = tuple(base.replace("{metric}", metric) for metric in metrics)
    else:
        topics = (base,)
    if "{" in topics[0] or "}" in topics[0]:
        raise ValueError(
            f"--topic {template!r}: only {{sensor_id}} and {{metric}} placeholders are known"
        )
    return Target(
        sensor_id=sensor_id,
        metrics=metrics,
        topics=topics,
        sid_in_payload=not has_sid,
        metric_in_payload=fmt.per_metric and not has_metric,
    )
