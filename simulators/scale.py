"""``python -m simulators.scale``: how far one simulator process goes on this machine.

Runs ``tidegate-sim run`` against a private Mosquitto (nobody subscribed, so the
broker only acknowledges) in a few scenarios and prints one line each: the requested
and achieved aggregate rate, whether every message was acknowledged, and the peak
memory of the simulator process. Too big for the test suite on purpose; the numbers
go into docs/simulator.md.

Scenarios: 10,000 sensors multiplexed over 8 connections and 5,000 (or 10,000)
separate client connections, each at a rate it should hold, then at a rate beyond the
machine's limit to measure that limit. The broker's file-descriptor limit is raised
to the hard limit first (it needs one per client).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from simulators.broker import PrivateBroker

SCENARIOS: list[tuple[str, list[str]]] = [
    ("10,000 sensors over 8 connections, 1 Hz", ["--sensors", "10000", "--connections", "8", "--rate", "1"]),
    ("10,000 sensors over 8 connections, flat out", ["--sensors", "10000", "--connections", "8", "--rate", "10"]),
    ("5,000 separate clients, 1 Hz", ["--sensors", "5000", "--rate", "1"]),
    ("5,000 separate clients, flat out", ["--sensors", "5000", "--rate", "10"]),
    ("10,000 separate clients, 1 Hz", ["--sensors", "10000", "--rate", "1"]),
]  # fmt: skip


def run_one(port: int, args: list[str], duration: float) -> tuple[dict[str, object], float]:
    """One simulator subprocess; returns its JSON summary and peak RSS in MiB."""
    command = [
        sys.executable, "-m", "simulators", "run", "--host", "127.0.0.1", "--port", str(port),
        "--duration", str(duration), "--metrics", "temperature", "--json", "--no-progress",
        *args,
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    if proc.stdout:
        proc.stdout.close()
    if proc.stderr:
        proc.stderr.close()
    if not out.strip():
        raise RuntimeError(f"simulator failed ({proc.returncode}): {err.decode()[-800:]}")
    summary = json.loads(out.splitlines()[-1])
    summary["exit"] = proc.returncode
    return summary, usage.ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.scale", description=__doc__)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per scenario")
    parser.add_argument("--quick", action="store_true", help="5 s per scenario")
    args = parser.parse_args(argv)
    duration = 5.0 if args.quick else args.duration
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the broker
    print(
        f"file-descriptor limit: {hard} (hard); cpus: {os.cpu_count()}; {duration:g} s per scenario"
    )
    header = f"{'scenario':48} {'requested/s':>12} {'achieved/s':>11} {'kept up':>8} {'all acked':>9} {'RSS MiB':>8}"
    print(header)
    print("-" * len(header))
    with (
        tempfile.TemporaryDirectory(prefix="sim-scale-") as tmp,
        PrivateBroker(Path(tmp) / "broker", extra_conf="max_connections -1") as broker,
    ):
        for title, extra in SCENARIOS:
            summary, rss = run_one(broker.port, extra, duration)
            rate = summary["rate"]
            totals = summary["totals"]
            assert isinstance(rate, dict) and isinstance(totals, dict)
            acked = totals["messages_acked"] == totals["messages_sent"]
            print(
                f"{title:48} {rate['requested_samples_per_s']:>12,.0f} "
                f"{rate['messages_per_s']:>11,.0f} {'yes' if rate['kept_up'] else 'NO':>8} "
                f"{'yes' if acked else 'NO':>9} {rss:>8.0f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
