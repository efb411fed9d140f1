"""``tidegate-sim verify``: compare a run's report with the gateway's database.

Read-only SQL on the gateway's schema (``series``, ``readings``, ``dead_letters``).
For each (sensor, metric) of the report, every series row with that sensor and metric
is read (whatever its unit and tags) over the run's time window:

* **missing**: acknowledged by the broker but not stored — the gateway lost data;
* **unexpected**: stored in the window but never sent — invented or misattributed;
* **duplicates stored**: one timestamp stored in more than one series of the pair
  (one series cannot hold it twice: its primary key is (series, ts));
* **unconfirmed**: sent but never acknowledged (drain timeout, QoS 0): neither
  expected nor unexpected; how many were stored anyway is shown;
* **faults**: each acknowledged faulty message must appear in ``dead_letters``
  (found by the ``tgfault:<run>-<n>`` marker in its payload); a fault dead-lettered
  more than once (redelivered after a gateway crash) is fine and counted.

The verdict is OK only when nothing acknowledged is missing (readings and faults) and
nothing is stored twice or invented.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import StorageError
from gateway.storage.sqlite.connection import open_readonly
from gateway.storage.sqlite.schema import has_hot_table
from gateway.validation import format_ms
from simulators.report import LoadedReport, load_report

EXAMPLES = 5
WINDOW_SLACK_MS = 60_000
"""Dead letters are searched from this long before the run started."""


@dataclass
class Verdict:
    """The comparison's numbers; ``ok`` is the verdict."""

    run_id: str
    database: str
    series: int = 0
    published: int = 0
    stored: int = 0
    missing: int = 0
    unexpected: int = 0
    duplicates_stored: int = 0
    unconfirmed: int = 0
    unconfirmed_stored: int = 0
    duplicates_sent: int = 0
    unit_mismatches: int = 0
    faults_expected: int = 0
    faults_dead_lettered: int = 0
    faults_missing: int = 0
    dead_letter_rows: int = 0
    unconfirmed_faults_dead_lettered: int = 0
    qos: int = 1
    missing_examples: list[str] = field(default_factory=list)
    unexpected_examples: list[str] = field(default_factory=list)
    fault_examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.missing == 0
            and self.unexpected == 0
            and self.duplicates_stored == 0
            and self.faults_missing == 0
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def _series_rows(conn: sqlite3.Connection, sensor_id: str, metric: str) -> list[tuple[int, str]]:
    return [
        (int(row[0]), str(row[1]))
        for row in conn.execute(
            "SELECT id, unit FROM series WHERE sensor_id = ? AND metric = ?", (sensor_id, metric)
        )
    ]


class _StoredReadings:
    """Stored timestamps per series. With the hot/cold layout (schema 3) the hot table is
    read once up front (it is keyed by time, so a per-series lookup would scan it)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        split = has_hot_table(conn)
        self.table = "readings_cold" if split else "readings"
        self.hot: dict[int, list[int]] = {}
        if split:
            for series_id, ts in conn.execute("SELECT series_id, ts FROM readings_hot"):
                self.hot.setdefault(int(series_id), []).append(int(ts))

    def between(self, series_id: int, low: int, high: int) -> list[int]:
        found = [
            int(row[0])
            for row in self.conn.execute(
                f"SELECT ts FROM {self.table} WHERE series_id = ? AND ts BETWEEN ? AND ?",
                (series_id, low, high),
            )
        ]
        found.extend(ts for ts in self.hot.get(series_id, ()) if low <= ts <= high)
        return found


def _example(sensor: str, metric: str, ts: int) -> str:
    return f"{sensor}/{metric} @ {format_ms(ts)} ({ts})"


def compare(report: LoadedReport, conn: sqlite3.Connection, database: str = "") -> Verdict:
    """Compare ``report`` with the database behind ``conn`` (read-only)."""
    verdict = Verdict(run_id=report.run_id, database=database, qos=report.qos)
    verdict.series = len(report.series)
    stored_readings = _StoredReadings(conn)
    for item in report.series:
        acked = set(item.acked)
        unconfirmed = set(item.unconfirmed) - acked
        verdict.published += len(acked)
        verdict.unconfirmed += len(unconfirmed)
        verdict.duplicates_sent += item.duplicates_sent
        everything = acked | unconfirmed
        low = min([report.started_at_ms, *([min(everything)] if everything else [])])
        high = max([report.ended_at_ms, *([max(everything)] if everything else [])])
        stored: set[int] = set()
        for series_id, unit in _series_rows(conn, item.sensor_id, item.metric):
            if unit != item.unit:
                verdict.unit_mismatches += 1
            values = stored_readings.between(series_id, low, high)
            for ts in values:
                if ts in stored:
                    verdict.duplicates_stored += 1
                stored.add(ts)
            verdict.duplicates_stored += len(values) - len(set(values))
        verdict.stored += len(stored & acked)
        missing = acked - stored
        verdict.missing += len(missing)
        for ts in sorted(missing)[: max(0, EXAMPLES - len(verdict.missing_examples))]:
            verdict.missing_examples.append(_example(item.sensor_id, item.metric, ts))
        unexpected = stored - everything
        verdict.unexpected += len(unexpected)
        for ts in sorted(unexpected)[: max(0, EXAMPLES - len(verdict.unexpected_examples))]:
            verdict.unexpected_examples.append(_example(item.sensor_id, item.metric, ts))
        verdict.unconfirmed_stored += len(stored & unconfirmed)
    _check_faults(report, conn, verdict)
    if verdict.unit_mismatches:
        verdict.notes.append(
            f"{verdict.unit_mismatches} series stored with another unit than the simulator sent"
        )
    if report.qos == 0:
        verdict.notes.append(
            "QoS 0: the broker acknowledges nothing, so nothing can be called missing; "
            "compare 'unconfirmed' with 'stored anyway'"
        )
    return verdict


def _check_faults(report: LoadedReport, conn: sqlite3.Connection, verdict: Verdict) -> None:
    prefix = f"{report.fault_marker}{report.run_id}-"
    pattern = re.compile(re.escape(prefix.encode()) + rb"([0-9]+)")
    found: dict[int, int] = {}
    try:
        rows = conn.execute(
            "SELECT payload FROM dead_letters WHERE received_at >= ? AND instr(payload, ?) > 0",
            (report.started_at_ms - WINDOW_SLACK_MS, prefix.encode()),
        )
        for (payload,) in rows:
            data = bytes(payload) if not isinstance(payload, str) else payload.encode()
            match = pattern.search(data)
            if match is not None:
                n = int(match.group(1))
                found[n] = found.get(n, 0) + 1
    except sqlite3.OperationalError as exc:
        raise StorageError(f"cannot read dead_letters: {exc}") from None
    verdict.faults_expected = len(report.acked_faults)
    verdict.dead_letter_rows = sum(found.values())
    verdict.faults_dead_lettered = len(report.acked_faults & found.keys())
    verdict.unconfirmed_faults_dead_lettered = len(report.unconfirmed_faults & found.keys())
    missing = sorted(report.acked_faults - found.keys())
    verdict.faults_missing = len(missing)
    verdict.fault_examples = [f"{prefix}{n}" for n in missing[:EXAMPLES]]
    repeated = sum(1 for count in found.values() if count > 1)
    if repeated:
        verdict.notes.append(
            f"{repeated} faulty message(s) dead-lettered more than once "
            "(redelivered after a gateway restart: expected, harmless)"
        )


def verify(report_path: Path, db_path: Path) -> Verdict:
    """Load the report, open the database read-only, compare."""
    report = load_report(report_path)
    conn = open_readonly(db_path)
    try:
        return compare(report, conn, str(db_path))
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read {db_path}: {exc}") from None
    finally:
        conn.close()


def render(verdict: Verdict) -> str:
    """The human-readable verdict."""
    v = verdict
    lines = [
        f"verify: run {v.run_id} against {v.database}",
        f"  series in report          {v.series:>12,}",
        f"  published (acknowledged)  {v.published:>12,} readings",
        f"  stored                    {v.stored:>12,}",
        f"  missing                   {v.missing:>12,}   acknowledged by the broker, not in the database",
        f"  unexpected                {v.unexpected:>12,}   in the database, never published",
        f"  duplicates stored         {v.duplicates_stored:>12,}",
        f"  duplicates sent           {v.duplicates_sent:>12,}   (each must be stored once)",
        f"  unconfirmed (no ack)      {v.unconfirmed:>12,}   ({v.unconfirmed_stored:,} stored anyway)",
        f"  faulty messages acked     {v.faults_expected:>12,}   must be dead letters",
        f"  dead-lettered             {v.faults_dead_lettered:>12,}   ({v.dead_letter_rows:,} rows)",
        f"  faults missing            {v.faults_missing:>12,}",
    ]
    if v.missing_examples:
        lines.append("  first missing: " + "; ".join(v.missing_examples))
    if v.unexpected_examples:
        lines.append("  first unexpected: " + "; ".join(v.unexpected_examples))
    if v.fault_examples:
        lines.append("  faults not dead-lettered: " + ", ".join(v.fault_examples))
    lines.extend(f"  note: {note}" for note in v.notes)
    if v.ok:
        lines.append(
            "OK: nothing acknowledged is missing, nothing is stored twice or invented, "
            "every faulty message was dead-lettered."
        )
    else:
        lines.append("FAILED: see the counts above.")
    return "\n".join(lines)
