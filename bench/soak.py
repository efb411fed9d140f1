"""``make soak`` / ``python -m bench.soak``: a fleet at a steady rate for a long time.

A private Mosquitto (the bench's tuned config), ``tidegate run`` as a real subprocess
with its default config (durable commits, maintenance on), and two ``tidegate-sim run``
fleets: the main one for the whole soak, and a small one for its first half, verified
with ``tidegate-sim verify`` while the main fleet keeps publishing and the gateway keeps
ingesting and compacting. The gateway's RSS is sampled every ``--sample-s`` seconds. At
the end: wait until everything acknowledged is stored (bounded), verify both fleets
(gateway still running), stop the gateway, verify both again on the stopped file, print
the figures and write them as JSON. Exit 0 only if every verify was exact.

Length and size: ``SOAK_MINUTES`` (default 30), ``SOAK_SENSORS`` (10,000), ``SOAK_RATE``
(samples per second per sensor, 1), ``SOAK_METRICS`` (``temperature``: one reading per
message, the guide's "10,000 sensors at 1 Hz"; empty for the simulator's mix of 2.7); or
the matching options. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.baselines import proc_status_kb
from bench.broker import HOST, BenchBroker

RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
SIDE_SENSORS = 100


def _log(text: str) -> None:
    sys.stderr.write(f"[soak {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def _config(path: Path, port: int, db: Path) -> Path:
    path.write_text(
        f"""
[mqtt]
host = "{HOST}"
port = {port}
client_id = "tidegate-soak"

[[subscriptions]]
topic = "soak/+"
topic_template = "soak/{{sensor_id}}"

[storage]
path = "{db}"

[api]
enabled = false

[log]
level = "INFO"
"""
    )
    return path


def _sim(
    port: int, report: Path, sensors: int, rate: float, seconds: float, prefix: str, metrics: str
) -> list[str]:
    return [
        sys.executable, "-m", "simulators", "run",
        "--host", HOST, "--port", str(port),
        "--sensors", str(sensors), "--rate", str(rate), "--duration", str(seconds),
        "--format", "json-multi", "--topic", "soak/{sensor_id}", "--prefix", prefix,
        *(["--metrics", metrics] if metrics else []),
        "--connections", "8" if sensors > 1000 else "2",
        "--report", str(report), "--no-progress", "--quiet", "--json",
    ]  # fmt: skip


def _verify(report: Path, db: Path) -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "simulators", "verify", "--report", str(report), "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    text = done.stdout + done.stderr
    figures = {}
    for line in text.splitlines():
        parts = line.split()
        for name in ("published", "stored", "missing", "unexpected"):
            if parts[:1] == [name] and len(parts) > 1:
                figures[name] = parts[-2] if name == "published" else parts[1]
        if parts[:2] == ["duplicates", "stored"]:
            figures["duplicates_stored"] = parts[2]
    return {
        "ok": done.returncode == 0,
        "exit": done.returncode,
        "seconds": round(time.monotonic() - started, 1),
        "figures": figures,
        "output": text[-3000:],
    }


def _count(db: Path, prefix: str = "") -> int:
    """Readings stored (of the sensors whose id starts with ``prefix``); -1 on error."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            if not prefix:
                return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
            row = conn.execute(
                "SELECT count(*) FROM readings AS r JOIN series AS s ON s.id = r.series_id"
                " WHERE s.sensor_id >= ? AND s.sensor_id < ?",
                (prefix, prefix + "\uffff"),
            ).fetchone()
            return int(row[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return -1


def _acked(summary: str) -> tuple[int, float]:
    data = json.loads(summary.strip().splitlines()[-1])
    return int(data["totals"]["readings_acked"]), float(data["rate"]["messages_per_s"])


class RssSampler(threading.Thread):
    """VmRSS of ``pid`` every ``interval`` seconds: (seconds since start, MB)."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop_event.is_set():
            kb = proc_status_kb("VmRSS", self.pid)
            if kb:
                self.samples.append((round(time.monotonic() - self.t0, 1), round(kb / 1024, 1)))
            self.stop_event.wait(self.interval)


def soak(
    minutes: float, sensors: int, rate: float, metrics: str, sample_s: float, keep: Path | None
) -> int:
    workdir = keep or Path(tempfile.mkdtemp(prefix="tidegate-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    seconds = minutes * 60
    db = workdir / "soak.db"
    result: dict[str, Any] = {
        "minutes": minutes,
        "sensors": sensors,
        "rate_per_sensor": rate,
        "format": "json-multi",
        "metrics": metrics or "the simulator's mix (2.7 per sensor)",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_at_start": os.getloadavg(),
    }
    with BenchBroker(workdir / "broker", "tuned") as broker:
        config = _config(workdir / "soak.toml", broker.port, db)
        log = open(workdir / "gateway.log", "ab")  # noqa: SIM115 - closed below
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        sampler = RssSampler(gateway.pid, sample_s)
        sampler.start()
        main_sim: subprocess.Popen[str] | None = None
        side_sim: subprocess.Popen[str] | None = None
        try:
            deadline = time.monotonic() + 30
            while b"] ready: " not in (workdir / "gateway.log").read_bytes():
                if gateway.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gateway did not become ready (see gateway.log)")
                time.sleep(0.2)
            _log(f"gateway ready; fleet of {sensors:,} sensors at {rate} Hz for {minutes} min")
            main_report = workdir / "main-report.json"
            side_report = workdir / "side-report.json"
            main_sim = subprocess.Popen(
                _sim(broker.port, main_report, sensors, rate, seconds, "soak", metrics),
                stdout=subprocess.PIPE,
                text=True,
            )
            side_sim = subprocess.Popen(
                _sim(broker.port, side_report, SIDE_SENSORS, rate, seconds / 2, "side", metrics),
                stdout=subprocess.PIPE,
                text=True,
            )
            side_out, _ = side_sim.communicate(timeout=seconds / 2 + 600)
            side_acked, _side_rate = _acked(side_out)
            wait_until = time.monotonic() + 60
            # The side fleet's own readings: the whole table already holds more than
            # side_acked (the main fleet's), so counting it would not wait at all and the
            # verify would report the side readings still queued at the broker as missing.
            while time.monotonic() < wait_until and _count(db, "side-") < side_acked:
                time.sleep(1)
            _log("mid-run verify of the side fleet (main fleet still publishing)")
            result["verify_mid_run"] = _verify(side_report, db)
            _log(f"mid-run verify: ok={result['verify_mid_run']['ok']}")
            main_out, _ = main_sim.communicate(timeout=seconds / 2 + 900)
            main_acked, main_rate = _acked(main_out)
            result["messages_per_s"] = main_rate
            result["readings_acked"] = main_acked
            result["simulator_exit"] = main_sim.returncode
            _log(f"fleet done: {main_acked:,} readings acked at {main_rate:,.0f} msg/s")
            total = main_acked + side_acked
            wait_until = time.monotonic() + 600
            while time.monotonic() < wait_until and _count(db) < total:
                time.sleep(2)
            result["catch_up_s"] = round(600 - max(0.0, wait_until - time.monotonic()), 1)
            result["verify_end"] = _verify(main_report, db)
            result["verify_end_side"] = _verify(side_report, db)
            _log(f"final verify: ok={result['verify_end']['ok']}")
        finally:
            for sim in (main_sim, side_sim):
                if sim is not None and sim.poll() is None:
                    sim.kill()
                    sim.wait(10)
            sampler.stop_event.set()
            gateway.send_signal(signal.SIGTERM)
            try:
                result["gateway_exit"] = gateway.wait(120)
            except subprocess.TimeoutExpired:
                gateway.kill()
                result["gateway_exit"] = "killed"
            log.close()
            sampler.join(5)
    if gateway.returncode == 0 and main_sim is not None and main_sim.returncode == 0:
        # Once more on the stopped gateway's file: the figures of record, whatever a
        # verify of the live gateway (compacting while it reads) said.
        result["verify_after_stop"] = _verify(workdir / "main-report.json", db)
        result["verify_after_stop_side"] = _verify(workdir / "side-report.json", db)
    samples = sampler.samples
    result["rss_samples_mb"] = samples
    if samples:
        warm = [mb for t, mb in samples if t >= 60] or [mb for _t, mb in samples]
        result["rss_mb"] = {
            "first_after_60s": warm[0],
            "end": warm[-1],
            "min": min(warm),
            "max": max(warm),
            "median": statistics.median(warm),
        }
    result["db_bytes"] = db.stat().st_size if db.exists() else 0
    # What reached the gateway, from its own last log line: fewer messages than the
    # simulator had acknowledged means the broker dropped some (its queue for the
    # gateway passed max_queued_messages while the gateway was behind).
    for line in (workdir / "gateway.log").read_text(errors="replace").splitlines():
        if "stopped: " in line:
            result["gateway_stopped_line"] = line.split("stopped: ", 1)[1]
    result["workdir"] = str(workdir)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1, default=str))
    sys.stdout.write(render(result))
    verifies = (
        "verify_mid_run", "verify_end", "verify_end_side",
        "verify_after_stop", "verify_after_stop_side",
    )  # fmt: skip
    ok = all(result.get(key, {}).get("ok") for key in verifies) and result["gateway_exit"] == 0
    return 0 if ok else 1


def render(result: dict[str, Any]) -> str:
    rss = result.get("rss_mb", {})
    lines = [
        f"# soak: {result['sensors']:,} sensors × {result['rate_per_sensor']} Hz,"
        f" {result['minutes']} min ({result['format']}, metrics: {result['metrics']}), load at start"
        f" {[round(x, 2) for x in result['loadavg_at_start']]}",
        f"rate (messages acked by the broker): {result.get('messages_per_s', 0):,.0f} msg/s;"
        f" readings acked: {result.get('readings_acked', 0):,}",
        f"gateway RSS MB: after 60 s {rss.get('first_after_60s')}, end {rss.get('end')},"
        f" min {rss.get('min')}, max {rss.get('max')}",
        f"gateway at stop: {result.get('gateway_stopped_line')}",
        f"catch-up after the fleet stopped: {result.get('catch_up_s')} s;"
        f" database {result.get('db_bytes', 0) / 1e6:,.0f} MB; gateway exit {result.get('gateway_exit')}",
    ]
    for key in (
        "verify_mid_run", "verify_end", "verify_end_side",
        "verify_after_stop", "verify_after_stop_side",
    ):  # fmt: skip
        v = result.get(key)
        if v:
            lines.append(
                f"{key}: {'OK' if v['ok'] else 'FAILED'} in {v['seconds']} s {v['figures']}"
            )
    lines.append(f"JSON: {RESULTS}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 30)))
    parser.add_argument("--sensors", type=int, default=int(os.environ.get("SOAK_SENSORS", 10_000)))
    parser.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", 1)))
    parser.add_argument(
        "--metrics",
        default=os.environ.get("SOAK_METRICS", "temperature"),
        help="metrics per sensor (one reading each per message); '' for the simulator's mix",
    )
    parser.add_argument("--sample-s", type=float, default=10.0, help="RSS sampling interval")
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: a temp dir)")
    args = parser.parse_args(argv)
    return soak(args.minutes, args.sensors, args.rate, args.metrics, args.sample_s, args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
