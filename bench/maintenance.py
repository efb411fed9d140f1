"""Measurements behind ``docs/storage.md`` and decision notes 0070–0079.

``python -m bench.maintenance [rollups|stall|wear|all] [--dir DIR]``

* ``rollups``: ingest throughput of the batch writer with no rollups, with the
  background design's hot-path hook (late-data tracking), and with rollups maintained
  inside each batch's transaction (the rejected design); plus what the background job
  costs per 100k readings.
* ``stall``: batch commit times while the maintenance service purges a large expired
  backlog and rolls up, versus without maintenance — the ingestion stall.
* ``wear``: bytes written to storage per reading (``/proc/self/io``) against readings
  per commit, i.e. the commit-interval trade-off.

Numbers depend on the machine and disk: run it where tidegate will run. The files go
to ``--dir`` (default: a temporary directory on the current file system's /tmp).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gateway.config import RetentionConfig, StorageConfig
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.storage.sqlite import compaction, wear
from gateway.storage.sqlite.connection import apply_pragmas
from gateway.storage.sqlite.guard import Guard
from gateway.storage.sqlite.maintenance import Maintenance
from gateway.storage.sqlite.rollups import HOUR_MS, LateDataTracker, RollupJob
from gateway.storage.sqlite.schema import prepare_database
from gateway.storage.sqlite.writer import BatchWriter, SqliteSink

T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS

_INLINE_SQL = """
INSERT INTO {table} (series_id, bucket, vmin, vmax, vsum, n, vlast, last_ts)
SELECT g.series_id, g.b, g.vmin, g.vmax, g.vsum, g.n, r.value, g.last_ts FROM (
    SELECT series_id, (ts / {size}) * {size} AS b, min(value) AS vmin, max(value) AS vmax,
           sum(value) AS vsum, count(*) AS n, max(ts) AS last_ts
    FROM temp.new_rows GROUP BY series_id, b) AS g
JOIN temp.new_rows AS r ON r.series_id = g.series_id AND r.ts = g.last_ts
WHERE true
ON CONFLICT (series_id, bucket) DO UPDATE SET
    vmin = min(vmin, excluded.vmin), vmax = max(vmax, excluded.vmax),
    vsum = vsum + excluded.vsum, n = n + excluded.n,
    vlast = CASE WHEN excluded.last_ts > last_ts THEN excluded.vlast ELSE vlast END,
    last_ts = max(last_ts, excluded.last_ts)
"""


def _fresh(path: Path) -> sqlite3.Connection:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    apply_pragmas(conn, "NORMAL", 5000)
    prepare_database(conn)
    return conn


def _readings(n: int, sensors: int, start: int = 0, step_ms: int = 1000) -> list[Reading]:
    """Readings as a fleet produces them: every sensor once per ``step_ms``."""
    rnd = random.Random(start)
    return [
        Reading(f"s{j % sensors}", "t", T0 + (j // sensors) * step_ms, rnd.random())
        for j in range(start, start + n)
    ]


def _inline_hook(conn: sqlite3.Connection) -> Callable[[sqlite3.Connection, object], None]:
    """Rollups maintained inside the batch: a temp trigger captures inserted rows (so
    duplicates are excluded), then one set-based upsert per tier."""
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("CREATE TEMP TABLE new_rows (series_id INTEGER, ts INTEGER, value REAL)")
    conn.execute(
        "CREATE TEMP TRIGGER capture AFTER INSERT ON main.readings_hot"
        " BEGIN INSERT INTO new_rows VALUES (NEW.series_id, NEW.ts, NEW.value); END"
    )

    def hook(c: sqlite3.Connection, _rows: object) -> None:
        c.execute(_INLINE_SQL.format(table="rollup_1m", size=60_000))
        c.execute(_INLINE_SQL.format(table="rollup_1h", size=3_600_000))
        c.execute("DELETE FROM temp.new_rows")

    return hook


def measure_rollups(workdir: Path, total: int = 300_000, sensors: int = 1000) -> None:
    print("## Rollup cost on ingest (BatchWriter, 1000 series, sorted batches)\n")
    print("| readings per batch | no rollups | background (late-data hook) | inline in the batch |")
    print("|---:|---:|---:|---:|")
    for batch in (1000, 5000, 50_000):
        rates = {}
        for mode in ("none", "background", "inline"):
            conn = _fresh(workdir / f"rollup-{mode}.db")
            writer = BatchWriter(1024, 1000, 100_000)
            if mode == "background":
                writer.after_insert = LateDataTracker()
                writer.after_insert.threshold_ms = T0  # the usual case: nothing late
            elif mode == "inline":
                writer.after_insert = _inline_hook(conn)
            data = _readings(total, sensors)
            started = time.perf_counter()
            for lo in range(0, total, batch):
                writer.write(conn, data[lo : lo + batch], [])
            rates[mode] = total / (time.perf_counter() - started)
            if mode == "none":
                job_conn = conn
            else:
                conn.close()
        base = rates["none"]
        print(
            f"| {batch:,} | {base:,.0f}/s | {rates['background']:,.0f}/s"
            f" ({rates['background'] / base:.0%}) | {rates['inline']:,.0f}/s"
            f" ({rates['inline'] / base:.0%}) |"
        )
        tracker = LateDataTracker()
        job = RollupJob(tracker)
        now = T0 + (total // sensors) * 1000 + 2 * HOUR_MS
        started = time.perf_counter()
        compaction.compact_all(job_conn, now)
        while not job.step(job_conn, now, 0.005).caught_up:
            pass
        spent = time.perf_counter() - started
        job_conn.close()
    print(
        f"\nBackground job: {spent * 1000:.0f} ms of writer time to roll up {total:,} readings"
        f" ({spent / total * 100_000 * 1000:.0f} ms per 100k), in ≤5 ms steps.\n"
    )


async def _measure_stall(workdir: Path, backlog: int, with_maintenance: bool) -> list[float]:
    path = workdir / f"stall-{int(with_maintenance)}.db"
    conn = _fresh(path)
    writer = BatchWriter(1024, 1000, 100_000)
    sensors = 500
    # An expired backlog: `backlog` readings 20–30 days old (every sensor each 1 s).
    old_start = T0 - 30 * 86_400_000
    for lo in range(0, backlog, 50_000):
        rows = [
            Reading(f"s{j % sensors}", "t", old_start + (j // sensors) * 1000, 1.0)
            for j in range(lo, min(backlog, lo + 50_000))
        ]
        writer.write(conn, rows, [])
    conn.close()
    config = StorageConfig(
        path=path,
        retention=RetentionConfig(raw="14d"),
        min_free_disk="0",
        maintenance_interval_s=0.2,
    )
    sink = SqliteSink(path)
    tracker = LateDataTracker()
    sink.writer.after_insert = tracker
    await sink.open()
    metrics = Metrics()
    maintenance = Maintenance(
        sink, config, metrics, Guard(path, 0, 0, "purge_oldest"), tracker, clock=lambda: T0
    )
    task = asyncio.create_task(maintenance.run()) if with_maintenance else None
    times: list[float] = []
    try:
        # Ingest 500 readings every 10 ms (50k/s) for a few seconds.
        for k in range(400):
            rows = [Reading(f"s{i}", "t", T0 + k * 10 + i % 10, 1.0) for i in range(sensors)]
            started = time.perf_counter()
            await sink.write_batch(rows, [])
            times.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await sink.close()
    if with_maintenance:
        step = metrics.storage.maintenance_step
        print(
            f"maintenance: {step.count} steps (p50 ≤ {step.quantile(0.5) * 1000:g} ms,"
            f" p99 ≤ {step.quantile(0.99) * 1000:g} ms, longest"
            f" {metrics.storage.maintenance_step_max_s * 1000:.1f} ms), purged"
            f" {sum(metrics.storage.purged_rows.values()):,} rows,"
            f" {metrics.storage.checkpoints} checkpoints"
        )
    return times


def measure_stall(workdir: Path, backlog: int = 1_000_000) -> None:
    print("## Ingestion stall while maintenance purges and rolls up\n")
    print(f"Expired backlog {backlog:,} readings; ingest 500 readings / 10 ms; 400 batches.\n")
    rows = []
    for with_maintenance in (False, True):
        times = asyncio.run(_measure_stall(workdir, backlog, with_maintenance))
        times.sort()
        rows.append(
            (
                "with maintenance" if with_maintenance else "without",
                statistics.median(times) * 1000,
                times[int(len(times) * 0.99)] * 1000,
                times[-1] * 1000,
            )
        )
    print("\n| | batch p50 | p99 | max |\n|---|---:|---:|---:|")
    for label, p50, p99, worst in rows:
        print(f"| {label} | {p50:.2f} ms | {p99:.2f} ms | {worst:.2f} ms |")
    print()


def measure_wear(workdir: Path, sensors: int = 1000, seconds: int = 300) -> None:
    print("## Bytes written per reading vs readings per commit\n")
    print(
        f"{sensors} sensors at 1 Hz, {seconds} s of data, synchronous=NORMAL, PASSIVE"
        " checkpoint every 30 s of data time, compaction every second of data time and"
        " at the end; /proc/self/io write_bytes.\n"
    )
    print(
        "| commit every | readings per commit | bytes written per reading | WAL bytes per commit |"
    )
    print("|---|---:|---:|---:|")
    for label, per_commit in (
        ("message (commit_on_idle, light load)", 1),
        ("10 ms", sensors // 100),
        ("100 ms", sensors // 10),
        ("1 s", sensors),
        ("5 s", sensors * 5),
        ("30 s", sensors * 30),
    ):
        total = sensors * seconds if per_commit >= 10 else sensors * 20  # bounded runtime
        path = workdir / "wear.db"
        conn = _fresh(path)
        wear.tune_writer(conn)
        checkpointer = wear.open_checkpointer(path)
        writer = BatchWriter(1024, 1000, 100_000)
        data = _readings(total, sensors)
        before = wear.read_write_bytes()
        commits = 0
        next_checkpoint = 30 * sensors
        next_compaction = sensors
        for lo in range(0, total, per_commit):
            writer.write(conn, data[lo : lo + per_commit], [])
            commits += 1
            if lo + per_commit >= next_compaction:
                # The storage service's one-second compaction timer, in data time.
                compaction.compact_step(conn, T0 + (lo + per_commit) // sensors * 1000)
                next_compaction += sensors
            if lo + per_commit >= next_checkpoint:
                wear.checkpoint(checkpointer)
                next_checkpoint += 30 * sensors
        compaction.compact_all(conn, T0 + total // sensors * 1000)  # the moves still due
        wear.checkpoint(checkpointer)
        after = wear.read_write_bytes()
        checkpointer.close()
        conn.close()
        if before is None or after is None:
            print("| (no /proc/self/io on this system) | | | |")
            return
        written = after - before
        print(f"| {label} | {per_commit:,} | {written / total:,.0f} | {written / commits:,.0f} |")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.maintenance")
    parser.add_argument(
        "what", nargs="?", default="all", choices=("rollups", "stall", "wear", "all")
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the test databases go")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        workdir = Path(tmp)
        if args.what in ("rollups", "all"):
            measure_rollups(workdir)
        if args.what in ("stall", "all"):
            measure_stall(workdir)
        if args.what in ("wear", "all"):
            measure_wear(workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
