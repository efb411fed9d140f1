"""The ledger of a run — what was sent and what the broker acknowledged — and its
JSON report (``tidegate-sim run --report FILE``), read back by ``verify``.

Every published message carries a *token* naming what it holds: a :class:`Group`
(the readings of one message: series indexes and one timestamp) or a :class:`Fault`.
A deliberate duplicate publishes the same group again, so however many copies the
broker acknowledges, the readings count once. When the broker acknowledges a QoS ≥ 1
message, its readings are appended to their series' ``acked`` timestamps. Whatever
is still unacknowledged when the run ends (drain timeout, lost connection) is
recorded as ``unconfirmed``: the broker may or may not have it, so ``verify`` neither
expects it nor calls it unexpected. At QoS 0 there are no acknowledgements: every
message written to the socket is ``unconfirmed``.

Report format (``"format": "tidegate-sim-report"``, ``"version": 1``)::

    {
      "format": "tidegate-sim-report", "version": 1,
      "run_id": "3f9a1c", "started_at_ms": …, "ended_at_ms": …,
      "settings": {"sensors": 200, "rate_hz": 1.0, "qos": 1, "format": "json-reading", …},
      "totals": {"messages_sent": …, "messages_acked": …, "readings_acked": …,
                 "duplicates_sent": …, "faults_sent": …, "faults_acked": …, …},
      "rate": {"requested_samples_per_s": …, "achieved_samples_per_s": …, "kept_up": true, …},
      "series": [
        {"sensor_id": "sim-00000", "metric": "temperature", "unit": "°C",
         "acked": 20, "acked_ts": [1718000000123, 1001, 999, …],
         "unconfirmed": 0, "unconfirmed_ts": [],
         "duplicates_sent": 1, "late_sent": 0}
      ],
      "faults": {"marker": "tgfault:", "run_id": "3f9a1c",
                 "acked_ids": [0, 1, 5], "unconfirmed_ids": [],
                 "by_sensor": {"sim-00003": {"malformed": 1, "out_of_range": 0}},
                 "expected_dead_letters": 3}
    }

Timestamp lists are sorted and **delta-encoded**: the first element is an epoch-ms
timestamp, each next one the difference to the previous (:func:`encode_ts` /
:func:`decode_ts`). A fault's id in a payload is ``tgfault:<run_id>-<n>``.
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.errors import ReportError
from simulators.formats import FAULT_MARKER

REPORT_FORMAT = "tidegate-sim-report"
REPORT_VERSION = 1

PENDING, ACKED, UNCONFIRMED = 0, 1, 2


def encode_ts(values: Iterable[int]) -> list[int]:
    """Sorted timestamps → ``[first, delta, delta, …]``."""
    out: list[int] = []
    previous = 0
    for index, ts in enumerate(sorted(values)):
        out.append(ts if index == 0 else ts - previous)
        previous = ts
    return out


def decode_ts(encoded: Sequence[int]) -> list[int]:
    """Inverse of :func:`encode_ts`."""
    out: list[int] = []
    total = 0
    for index, value in enumerate(encoded):
        total = value if index == 0 else total + value
        out.append(total)
    return out


class SeriesLog:
    """What one (sensor, metric) sent."""

    __slots__ = (
        "acked",
        "duplicates_sent",
        "late_sent",
        "metric",
        "sensor_id",
        "unconfirmed",
        "unit",
    )

    def __init__(self, sensor_id: str, metric: str, unit: str) -> None:
        self.sensor_id = sensor_id
        self.metric = metric
        self.unit = unit
        self.acked: array[int] = array("q")
        self.unconfirmed: array[int] = array("q")
        self.duplicates_sent = 0
        self.late_sent = 0


class Group:
    """The readings one message carries; shared by a message and its duplicates."""

    __slots__ = ("series", "state", "ts")

    def __init__(self, series: tuple[int, ...], ts: int) -> None:
        self.series = series
        self.ts = ts
        self.state = PENDING


class Fault:
    """One faulty message: the gateway must dead-letter it."""

    __slots__ = ("kind", "n", "sensor", "state")

    def __init__(self, n: int, sensor: str, kind: str) -> None:
        self.n = n
        self.sensor = sensor
        self.kind = kind
        self.state = PENDING


Token = Group | Fault


@dataclass
class Totals:
    """Counters of a run (all in messages unless named readings)."""

    messages_sent: int = 0
    messages_acked: int = 0
    readings_sent: int = 0
    readings_acked: int = 0
    duplicates_sent: int = 0
    late_sent: int = 0
    burst_samples: int = 0
    silent_periods: int = 0
    faults_sent: int = 0
    faults_acked: int = 0
    publish_errors: int = 0
    unconfirmed_messages: int = 0
    reconnects: int = 0


class Ledger:
    """Sent and acknowledged readings and faults of one run."""

    def __init__(self, run_id: str, qos: int) -> None:
        self.run_id = run_id
        self.qos = qos
        self.series: list[SeriesLog] = []
        self._series_index: dict[tuple[str, str], int] = {}
        self.faults: list[Fault] = []
        self.totals = Totals()

    def series_id(self, sensor_id: str, metric: str, unit: str) -> int:
        """Index of the (sensor, metric) series, created on first use."""
        key = (sensor_id, metric)
        index = self._series_index.get(key)
        if index is None:
            index = len(self.series)
            self.series.append(SeriesLog(sensor_id, metric, unit))
            self._series_index[key] = index
        return index

    def new_fault(self, sensor: str, kind: str) -> Fault:
        fault = Fault(len(self.faults), sensor, kind)
        self.faults.append(fault)
        return fault

    def fault_id(self, fault: Fault) -> str:
        """The id written into the faulty payload."""
        return f"{self.run_id}-{fault.n}"

    def sent(self, token: Token, duplicate: bool = False, late: bool = False) -> None:
        """Count a message handed to the client (not yet acknowledged)."""
        totals = self.totals
        totals.messages_sent += 1
        if isinstance(token, Fault):
            totals.faults_sent += 1
            return
        if duplicate:
            totals.duplicates_sent += 1
            for index in token.series:
                self.series[index].duplicates_sent += 1
            return
        totals.readings_sent += len(token.series)
        if late:
            totals.late_sent += 1
            for index in token.series:
                self.series[index].late_sent += 1

    def acked(self, token: Token) -> None:
        """The broker acknowledged a message holding ``token`` (QoS ≥ 1), or — at
        QoS 0 — the client wrote it to the socket."""
        totals = self.totals
        totals.messages_acked += 1
        if self.qos == 0:
            self.unconfirmed(token)
            return
        if token.state == ACKED:
            return  # a duplicate's second acknowledgement
        token.state = ACKED
        if isinstance(token, Fault):
            totals.faults_acked += 1
            return
        totals.readings_acked += len(token.series)
        for index in token.series:
            self.series[index].acked.append(token.ts)

    def unconfirmed(self, token: Token) -> None:
        """``token`` was sent but never acknowledged: the broker may or may not have it."""
        if token.state != PENDING:
            return
        token.state = UNCONFIRMED
        self.totals.unconfirmed_messages += 1
        if isinstance(token, Group):
            for index in token.series:
                self.series[index].unconfirmed.append(token.ts)

    def report(
        self, settings: dict[str, Any], rate: dict[str, Any], started_ms: int, ended_ms: int
    ) -> dict[str, Any]:
        """The report as a JSON-ready dict (see the module docstring)."""
        by_sensor: dict[str, dict[str, int]] = {}
        for fault in self.faults:
            if fault.state == ACKED:
                counts = by_sensor.setdefault(fault.sensor, {"malformed": 0, "out_of_range": 0})
                counts[fault.kind] += 1
        acked_faults = [f.n for f in self.faults if f.state == ACKED]
        return {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "run_id": self.run_id,
            "started_at_ms": started_ms,
            "ended_at_ms": ended_ms,
            "settings": settings,
            "totals": self.totals.__dict__.copy(),
            "rate": rate,
            "series": [
                {
                    "sensor_id": s.sensor_id,
                    "metric": s.metric,
                    "unit": s.unit,
                    "acked": len(s.acked),
                    "acked_ts": encode_ts(s.acked),
                    "unconfirmed": len(s.unconfirmed),
                    "unconfirmed_ts": encode_ts(s.unconfirmed),
                    "duplicates_sent": s.duplicates_sent,
                    "late_sent": s.late_sent,
                }
                for s in self.series
            ],
            "faults": {
                "marker": FAULT_MARKER,
                "run_id": self.run_id,
                "acked_ids": acked_faults,
                "unconfirmed_ids": [f.n for f in self.faults if f.state == UNCONFIRMED],
                "by_sensor": by_sensor,
                "expected_dead_letters": len(acked_faults),
            },
        }


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write atomically (temp file + rename): a reader never sees half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(report, out, ensure_ascii=False, separators=(",", ":"))
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class SeriesExpectation:
    """One series of a loaded report."""

    sensor_id: str
    metric: str
    unit: str
    acked: list[int]
    unconfirmed: list[int]
    duplicates_sent: int = 0


@dataclass
class LoadedReport:
    """A report read back for ``verify``."""

    run_id: str
    started_at_ms: int
    ended_at_ms: int
    qos: int
    series: list[SeriesExpectation]
    fault_marker: str
    acked_faults: set[int]
    unconfirmed_faults: set[int]
    totals: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def load_report(path: Path) -> LoadedReport:
    """Read and check a report; raises :class:`ReportError` saying what is wrong."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"report not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read report {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise ReportError(f"{path} is not a tidegate-sim report")
    if data.get("version") != REPORT_VERSION:
        raise ReportError(
            f"{path}: report version {data.get('version')!r}, this verify reads {REPORT_VERSION}"
        )
    try:
        series = [
            SeriesExpectation(
                sensor_id=str(item["sensor_id"]),
                metric=str(item["metric"]),
                unit=str(item.get("unit", "")),
                acked=decode_ts(item["acked_ts"]),
                unconfirmed=decode_ts(item.get("unconfirmed_ts", [])),
                duplicates_sent=int(item.get("duplicates_sent", 0)),
            )
            for item in data["series"]
        ]
        faults = data["faults"]
        return LoadedReport(
            run_id=str(data["run_id"]),
            started_at_ms=int(data["started_at_ms"]),
            ended_at_ms=int(data["ended_at_ms"]),
            qos=int(data["settings"]["qos"]),
            series=series,
            fault_marker=str(faults.get("marker", FAULT_MARKER)),
            acked_faults={int(n) for n in faults["acked_ids"]},
            unconfirmed_faults={int(n) for n in faults.get("unconfirmed_ids", [])},
            totals=dict(data.get("totals", {})),
            settings=dict(data["settings"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(f"{path}: malformed report ({type(exc).__name__}: {exc})") from None
