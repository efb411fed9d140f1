"""The QoS 1 backlog drain: one subscriber, one scenario, one run.

1. create the subscriber's persistent session (a clean_session=0 connect that
   subscribes, then disconnects);
2. publish N messages at QoS 1 — the broker queues them for the offline session;
3. start the subscriber and time it until all N are done (for tidegate: N messages'
   readings committed and acknowledged; then the row count is checked in SQLite);
4. delete the session, so later runs don't queue messages for it.

Every run uses its own topic prefix and client id. Peak RSS is the subscriber's
``VmHWM`` (read by the Python subscribers themselves at the end; polled from
``/proc/<pid>/status`` for ``mosquitto_sub``).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.baselines import proc_status_kb
from bench.broker import HOST, BenchBroker
from bench.mqttwire import create_session, delete_session, publish_backlog
from bench.workload import Scenario
from gateway.storage.sqlite.compaction import compact_all
from gateway.storage.sqlite.schema import has_hot_table

SUBSCRIBERS = ("mosquitto_sub", "aiomqtt", "naive", "tidegate")
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"


@dataclass
class TidegateOptions:
    """What the bench changes in tidegate's config (None: tidegate's default)."""

    connections: int = 1
    receive_maximum: int | None = None
    batch_size: int | None = None
    queue_size: int | None = None
    extra_pipeline: dict[str, Any] = field(default_factory=dict)
    extra_storage: dict[str, Any] = field(default_factory=dict)


WEAK = "NORMAL (old default)"
"""Label suffix of the runs with ``storage.synchronous`` at the previous default (SQLite's
``NORMAL``: no fsync per commit), measured beside the durable default in the same run."""
WEAK_OPTIONS = TidegateOptions(extra_storage={"synchronous": "NORMAL_LOSES_ACKS_ON_POWER_CUT"})


@dataclass
class RunResult:
    subscriber: str
    scenario: str
    broker: str
    messages: int
    readings: int
    seconds: float
    rss_kb: int
    ok: bool
    cpu_s: float = 0.0
    """CPU time (user + system, all threads) of the subscriber during the drain."""
    detail: str = ""
    bytes_per_reading: float = 0.0
    table_bytes_per_reading: float = 0.0
    bytes_per_series: float = 0.0
    compacted_bytes_per_reading: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["msgs_per_s"] = self.msgs_per_s
        out["readings_per_s"] = self.readings_per_s
        return out


_counter = 0


def _run_id(subscriber: str) -> str:
    global _counter
    _counter += 1
    return f"{subscriber.replace('_', '')}{os.getpid()}x{_counter}"


def tidegate_settings(
    broker: BenchBroker,
    scenario: Scenario,
    prefix: str,
    client_id: str,
    db: Path,
    options: TidegateOptions,
) -> dict[str, Any]:
    """Settings (as plain data) for a tidegate subscribed to ``prefix/#``."""
    mqtt: dict[str, Any] = {
        "host": HOST,
        "port": broker.port,
        "client_id": client_id,
        "connections": options.connections,
    }
    if options.receive_maximum is not None:
        mqtt["receive_maximum"] = options.receive_maximum
    if options.connections > 1:
        mqtt["shared_group"] = "bench"
    pipeline: dict[str, Any] = {"shutdown_timeout_s": 60, **options.extra_pipeline}
    if options.batch_size is not None:
        pipeline["batch_size"] = options.batch_size
    if options.queue_size is not None:
        pipeline["queue_size"] = options.queue_size
    return {
        "mqtt": mqtt,
        "subscriptions": [
            {
                "topic": f"{prefix}/#",
                "topic_template": scenario.topic_template(prefix),
                "format": scenario.fmt,
            }
        ],
        "pipeline": pipeline,
        "storage": {"path": str(db), **options.extra_storage},
        "api": {"enabled": False},
        "log": {"level": "WARNING"},
    }


def tidegate_client_ids(client_id: str, options: TidegateOptions) -> list[str]:
    if options.connections == 1:
        return [client_id]
    return [f"{client_id}-{i}" for i in range(options.connections)]


def _run_child(
    cmd: list[str], timeout: float, stdout_file: Path
) -> tuple[int, int, Any, float, float, str]:
    """Run ``cmd``; returns (exit code, peak RSS KiB, rusage, started, ended, stdout)."""
    with open(stdout_file, "wb") as out, open(stdout_file.with_suffix(".err"), "wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        # ru_maxrss would include the forked bench process before exec: poll VmHWM.
        peak = [0]
        poller = threading.Thread(target=_poll_hwm, args=(proc.pid, peak), daemon=True)
        poller.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        ended = time.monotonic()
        poller.join(1)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, peak[0], usage, started, ended, stdout_file.read_text()


def _poll_hwm(pid: int, peak: list[int]) -> None:
    """Keep the child's VmHWM (KiB) in ``peak[0]`` until it exits."""
    while True:
        hwm = proc_status_kb("VmHWM", pid)
        if not hwm:
            return
        peak[0] = max(peak[0], hwm)
        time.sleep(0.02)


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    raise ValueError("no result line")


def db_bytes_per_reading(db: Path) -> tuple[float, float, float, float]:
    """After a WAL checkpoint: (file size / stored readings, bytes of the readings
    tables / stored readings, bytes of the series dictionary / series, bytes of the
    readings tables / stored readings once every hot reading is compacted).

    The file figure includes the series dictionary, which a scenario with few readings
    per series amortises badly (10,000 series × 10 readings), rollups and free pages.
    The last figure is the steady state of a long-running gateway, where all but the
    last minute or two of readings are in the per-series table: the drain ends at an
    arbitrary point, often in the middle of a compaction round, with hot pages that the
    round has half emptied."""
    if not db.exists():
        return 0.0, 0.0, 0.0, 0.0
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
        series = int(conn.execute("SELECT count(*) FROM series").fetchone()[0])
        tables = _table_bytes(conn)
        file_size = db.stat().st_size
        if has_hot_table(conn):
            compact_all(conn, int(time.time() * 1000))
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        compacted = _table_bytes(conn)
    except sqlite3.Error:
        return 0.0, 0.0, 0.0, 0.0
    finally:
        conn.close()
    if not rows:
        return 0.0, 0.0, 0.0, 0.0
    readings_tables = ("readings", "readings_hot", "readings_cold")
    series_bytes = sum(tables.get(name, 0) for name in ("series", "sqlite_autoindex_series_1"))
    return (
        file_size / rows,
        sum(tables.get(name, 0) for name in readings_tables) / rows,
        series_bytes / series if series else 0.0,
        sum(compacted.get(name, 0) for name in readings_tables) / rows,
    )


def _table_bytes(conn: sqlite3.Connection) -> dict[str, int]:
    """Bytes of pages per table or index (``dbstat``)."""
    return {
        str(name): int(size)
        for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")
    }


def drain_once(
    broker: BenchBroker,
    scenario: Scenario,
    subscriber: str,
    n: int,
    workdir: Path,
    options: TidegateOptions | None = None,
    timeout: float = 300,
    profile: str | None = None,
    label: str = "",
) -> RunResult:
    """One backlog drain of ``n`` messages by ``subscriber`` (see the module docstring).
    ``label`` names the result (default: the subscriber)."""
    options = options or TidegateOptions()
    run_id = _run_id(subscriber)
    prefix = f"bench/{run_id}"
    client_id = f"sub-{run_id}"
    rundir = workdir / run_id
    rundir.mkdir(parents=True)
    db = rundir / "data.db"
    readings = n * scenario.readings_per_message
    if subscriber == "tidegate":
        ids = tidegate_client_ids(client_id, options)
        topic_filter = f"$share/bench/{prefix}/#" if options.connections > 1 else f"{prefix}/#"
    else:
        ids = [client_id]
        topic_filter = f"{prefix}/#"
    for cid in ids:
        create_session(broker.port, cid, topic_filter)
    try:
        publish_backlog(broker.port, scenario.messages(prefix, n), client_id=f"pub-{run_id}")
        result = _drain(
            broker, scenario, subscriber, n, readings, rundir, db, client_id, prefix, options,
            timeout, profile,
        )  # fmt: skip
        result.subscriber = label or subscriber
        return result
    finally:
        for cid in ids:
            delete_session(broker.port, cid)


def _drain(
    broker: BenchBroker,
    scenario: Scenario,
    subscriber: str,
    n: int,
    readings: int,
    rundir: Path,
    db: Path,
    client_id: str,
    prefix: str,
    options: TidegateOptions,
    timeout: float,
    profile: str | None,
) -> RunResult:
    result = RunResult(subscriber, scenario.name, broker.config, n, 0, 0.0, 0, False)
    port = str(broker.port)
    py = [sys.executable, "-m"]
    if subscriber == "mosquitto_sub":
        cmd = [MOSQUITTO_SUB, "-h", HOST, "-p", port, "-i", client_id, "-c", "-q", "1"]
        cmd += ["-t", f"{prefix}/#", "-C", str(n)]
        code, peak, usage, started, ended, out = _run_child(cmd, timeout, rundir / "out.txt")
        result.ok = code == 0
        result.seconds = ended - started
        result.rss_kb = peak
        result.cpu_s = usage.ru_utime + usage.ru_stime
        result.readings = 0
        result.detail = "" if result.ok else f"exit {code}"
        return result
    if subscriber in ("aiomqtt", "naive"):
        cmd = [*py, "bench.baselines", subscriber, "--port", port, "--client-id", client_id]
        cmd += ["--n", str(n), "--db", str(db)]
    elif subscriber == "tidegate":
        settings = tidegate_settings(broker, scenario, prefix, client_id, db, options)
        cmd = [*py, "bench.tidegate_sub", "--settings", json.dumps(settings), "drain"]
        cmd += ["--messages", str(n), "--readings", str(readings)]
        if profile:
            cmd = [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "-r",
                "200",
                "-o",
                profile,
                "-f",
                "raw",
                "--",
                *cmd,
            ]
    else:
        raise ValueError(f"unknown subscriber {subscriber!r}")
    code, peak, usage, _started, _ended, out = _run_child(cmd, timeout, rundir / "out.txt")
    try:
        data = _last_json(out)
    except ValueError:
        err = (rundir / "out.err").read_text(errors="replace")[-2000:]
        result.detail = f"exit {code}, no result: {err}"
        return result
    result.seconds = float(data["t_done"]) - float(data["t_start"])
    result.rss_kb = int(data.get("vmhwm_kb") or peak)
    result.cpu_s = float(data.get("cpu_s", 0.0))
    skip = ("t_start", "t_done", "vmhwm_kb", "cpu_s")
    result.extra = {k: v for k, v in data.items() if k not in skip}
    if subscriber == "aiomqtt":
        result.ok = code == 0 and data["messages"] == n
    elif subscriber == "naive":
        result.readings = int(data["readings"])
        result.ok = code == 0 and data["messages"] == n
    else:
        result.readings = int(data["readings"])
        result.ok = (
            code == 0
            and data["t_done"] > 0
            and result.readings == readings
            and data["acks_sent"] >= n
            and bool(data["clean"])
        )
        if not result.ok:
            result.detail = (
                f"exit {code}; rows {result.readings}/{readings}; acks {data['acks_sent']}/{n}"
            )
        (
            result.bytes_per_reading,
            result.table_bytes_per_reading,
            result.bytes_per_series,
            result.compacted_bytes_per_reading,
        ) = db_bytes_per_reading(db)
    if not result.ok and not result.detail:
        result.detail = f"exit {code}; {data}"
    return result
