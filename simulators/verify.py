"""``tidegate-sim verify``: compare a run's report with the gateway's database, or with
the central PostgreSQL store it forwards into (``--store postgresql://…``, optionally
``--gateway ID``: that gateway's readings and dead letters only).

Reads the store through the gateway's read interface
(:class:`gateway.storage.base.ReadStore`), all of it from **one snapshot** (SQLite: one
read transaction; PostgreSQL: one ``REPEATABLE READ`` transaction): a gateway
that keeps ingesting and compacting meanwhile (moving readings between its tables)
cannot make a reading look missing or stored twice. For each (sensor, metric) of the
report, every series with that sensor and metric is read (whatever its unit and tags)
over the run's time window:

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import StorageConfig
from gateway.request import ReadingsQuery
from gateway.storage.backends import central_read_store, read_store
from gateway.storage.base import Reads, ReadStore, Selection
from gateway.validation import format_ms
from simulators.aio import run_sync
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


def _example(sensor: str, metric: str, ts: int) -> str:
    return f"{sensor}/{metric} @ {format_ms(ts)} ({ts})"


async def compare(
    report: LoadedReport, reads: Reads, database: str = "", gateway: str | None = None
) -> Verdict:
    """Compare ``report`` with what ``reads`` (one snapshot of a store) holds; with
    ``gateway``, only that gateway's series and dead letters (a central store)."""
    verdict = Verdict(run_id=report.run_id, database=database, qos=report.qos)
    verdict.series = len(report.series)
    for item in report.series:
        acked = set(item.acked)
        unconfirmed = set(item.unconfirmed) - acked
        verdict.published += len(acked)
        verdict.unconfirmed += len(unconfirmed)
        verdict.duplicates_sent += item.duplicates_sent
        everything = acked | unconfirmed
        low = min([report.started_at_ms, *([min(everything)] if everything else [])])
        high = max([report.ended_at_ms, *([max(everything)] if everything else [])])
        series = await reads.series(item.sensor_id, item.metric, counts=False, gateway=gateway)
        # The gateway stores an empty unit as no unit (None); the report keeps "".
        sent_unit = item.unit or None
        verdict.unit_mismatches += sum(1 for s in series if (s.unit or None) != sent_unit)
        stored: set[int] = set()
        if series:
            query = ReadingsQuery(
                sensor=item.sensor_id,
                metric=item.metric,
                gateway=gateway,
                since_ms=low,
                until_ms=high + 1,
                limit=0,
            )
            by_series: dict[int, list[int]] = {}
            async for chunk in reads.stream_readings(query, chunk=10_000):
                for row in chunk:
                    by_series.setdefault(row.series_id, []).append(row.ts_ms)
            for values in by_series.values():
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
    await _check_faults(report, reads, verdict, gateway)
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


async def _check_faults(
    report: LoadedReport, reads: Reads, verdict: Verdict, gateway: str | None = None
) -> None:
    prefix = f"{report.fault_marker}{report.run_id}-"
    pattern = re.compile(re.escape(prefix.encode()) + rb"([0-9]+)")
    found: dict[int, int] = {}
    selection = Selection(
        since_ms=report.started_at_ms - WINDOW_SLACK_MS,
        payload_contains=prefix.encode(),
        gateway=gateway,
    )
    async for chunk in reads.stream_dead_letters(selection, limit=0):
        for dead in chunk:
            match = pattern.search(dead.payload)
            if match is not None:
                n = int(match.group(1))
                found[n] = found.get(n, 0) + 1
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


async def verify_async(
    report: LoadedReport,
    db_path: Path | None = None,
    *,
    store_url: str | None = None,
    gateway: str | None = None,
) -> Verdict:
    """Compare ``report`` with one snapshot of the database at ``db_path``, or of the
    central store at ``store_url`` (of one ``gateway`` when given)."""
    store: ReadStore
    if store_url is not None:
        store, shown = central_read_store(store_url, threads=1, timeout_s=None)
        where = shown if gateway is None else f"{shown} (gateway {gateway})"
    elif db_path is not None:
        store = read_store(StorageConfig(), path=Path(db_path), threads=1, timeout_s=None)
        where = str(db_path)
    else:
        raise ValueError("verify needs a database path or a store URL")
    try:
        async with store.snapshot() as snapshot:
            return await compare(report, snapshot, where, gateway)
    finally:
        await store.close()


def verify(
    report_path: Path,
    db_path: Path | None = None,
    *,
    store_url: str | None = None,
    gateway: str | None = None,
) -> Verdict:
    """Load the report, read the store from one snapshot, compare."""
    report = load_report(report_path)
    return run_sync(verify_async(report, db_path, store_url=store_url, gateway=gateway))


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
