"""Publish → commit latency at a steady rate (half the measured maximum).

tidegate runs in latency mode (``bench.tidegate_sub latency``); the simulator
(``tidegate-sim run``, one reading per message, ``ts`` = the sample's time in ms)
publishes at the chosen rate; when every reading is in SQLite the gateway is stopped
and reports the distribution of (commit time − ``ts``) over all readings. Without
the simulator package a paced publisher of our own stands in (same payload shape).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.broker import HOST, BenchBroker
from bench.drain import TidegateOptions, tidegate_settings
from bench.mqttwire import publish_paced
from bench.workload import Scenario

SENSORS = 1000
LATENCY_SCENARIO = Scenario("latency", "1 reading / JSON message", 1, SENSORS)


@dataclass
class LatencyResult:
    name: str
    sensors: int
    rate_requested: float
    rate_achieved: float
    seconds: float
    sent: int
    stored: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_kb: int
    publisher: str
    ok: bool
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def simulator_available() -> bool:
    try:
        import simulators.cli  # noqa: F401
    except ImportError:
        return False
    return True


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _publish_simulator(
    port: int, prefix: str, rate: float, duration: float, sensors: int
) -> tuple[int, float]:
    cmd = [sys.executable, "-m", "simulators", "run", "--host", HOST, "--port", str(port)]
    cmd += ["--sensors", str(sensors), "--rate", f"{rate / sensors:.6f}"]
    cmd += ["--duration", str(duration), "--connections", "1", "--format", "json-reading"]
    cmd += ["--metrics", "temperature", "--topic", f"{prefix}/{{sensor_id}}/{{metric}}"]
    cmd += ["--jitter", "0", "--quiet", "--json", "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"simulator failed: {out.stderr[-500:]}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    return int(summary["totals"]["messages_acked"]), float(summary["rate"]["messages_per_s"])


def _publish_own(
    port: int, prefix: str, rate: float, duration: float, sensors: int
) -> tuple[int, float]:
    def make(i: int) -> tuple[str, bytes]:
        now_ms = int(time.time() * 1000)
        return f"{prefix}/s{i % sensors}/temperature", b'{"value":%d.5,"ts":%d}' % (i % 50, now_ms)

    started = time.monotonic()
    sent = publish_paced(port, make, rate, duration, client_id=f"pace-{os.getpid()}")
    return sent, sent / max(1e-9, time.monotonic() - started)


def measure_latency(
    broker: BenchBroker,
    workdir: Path,
    rate: float,
    duration: float,
    *,
    name: str = "",
    publisher: str = "own",
    sensors: int = SENSORS,
    timeout: float = 120,
    options: TidegateOptions | None = None,
) -> LatencyResult:
    """Run tidegate at ``rate`` messages/s for ``duration`` seconds from ``sensors``
    sensors; ``publisher`` is ``own`` or ``sim`` (see the module docstring); ``options``
    change tidegate's config (None: its defaults)."""
    rundir = workdir / f"latency-{os.getpid()}-{int(time.monotonic() * 1000)}"
    rundir.mkdir(parents=True)
    db = rundir / "data.db"
    run_id = f"{os.getpid()}x{int(time.monotonic() * 1000)}"
    prefix = f"bench/lat{run_id}"
    settings = tidegate_settings(
        broker, LATENCY_SCENARIO, prefix, f"lat-{run_id}", db, options or TidegateOptions()
    )
    cmd = [sys.executable, "-m", "bench.tidegate_sub", "--settings", json.dumps(settings)]
    cmd.append("latency")
    use_sim = publisher == "sim" and simulator_available()
    err_file = open(rundir / "gateway.err", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_file, text=True)
    result = LatencyResult(name, sensors, rate, 0.0, duration, 0, 0, 0, 0, 0, 0, "", False)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "READY":
            result.detail = f"gateway did not start: {line!r}"
            return result
        if use_sim:
            result.publisher = "tidegate-sim run"
            sent, achieved = _publish_simulator(broker.port, prefix, rate, duration, sensors)
        else:
            result.publisher = "bench paced publisher"
            sent, achieved = _publish_own(broker.port, prefix, rate, duration, sensors)
        result.sent = sent
        result.rate_achieved = achieved
        deadline = time.monotonic() + timeout
        while _count(db) < sent and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        data = json.loads(out.strip().splitlines()[-1])
        result.stored = _count(db)
        result.p50_ms = float(data["p50_ms"])
        result.p99_ms = float(data["p99_ms"])
        result.max_ms = float(data["max_ms"])
        result.rss_kb = int(data["vmhwm_kb"])
        result.extra = {k: v for k, v in data.items() if not k.endswith("_ms")}
        result.ok = result.stored == sent and data["samples"] >= sent
        if not result.ok:
            result.detail = f"stored {result.stored} of {sent}"
        return result
    except (subprocess.TimeoutExpired, ValueError, RuntimeError, KeyError) as exc:
        result.detail = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        err_file.close()
