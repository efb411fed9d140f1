"""Simulator → Mosquitto → gateway (a real subprocess) → SQLite → verify.

200 sensors with every kind of fault: nothing acknowledged may be missing, faulty
messages must be dead letters, duplicates stored once — and the same after the
gateway is killed with SIGKILL in the middle of the run and restarted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.probe import wait_until_ingesting
from simulators.verify import render, verify
from tests.support import HOST, Broker, GatewayProcess, db_rows, start_gateway

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAULTS = [
    "--malformed", "0.01",
    "--out-of-range", "0.01",
    "--duplicates", "0.02",
    "--late", "0.02",
    "--bursts", "0.005",
    "--silent", "0.005",
]  # fmt: skip


def simulator(port: int, report: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "simulators", "run",
        "--host", HOST, "--port", str(port),
        "--sensors", "200", "--rate", "2", "--seed", "3",
        "--report", str(report), "--no-progress", "-q",
        *FAULTS, *args,
    ]  # fmt: skip


def catch_up(db: Path, report: Path, timeout: float = 30.0) -> None:
    """Wait (bounded) until the gateway stored as much as the broker acknowledged."""
    data = json.loads(report.read_text())
    readings = data["totals"]["readings_acked"]
    marker = f"tgfault:{data['run_id']}-".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = db_rows(db, "SELECT count(*) FROM readings")
        dead = db_rows(
            db,
            "SELECT count(DISTINCT payload) FROM dead_letters WHERE instr(payload, ?) > 0",
            (marker,),
        )
        if (
            stored
            and dead
            and stored[0][0] >= readings
            and dead[0][0] >= data["faults"]["expected_dead_letters"]
        ):
            return
        time.sleep(0.2)


def check(report: Path, db: Path) -> None:
    verdict = verify(report, db)
    assert verdict.ok, render(verdict)
    assert verdict.published > 4000
    assert verdict.faults_expected > 20 and verdict.faults_dead_lettered == verdict.faults_expected
    assert verdict.duplicates_sent > 20 and verdict.duplicates_stored == 0
    totals = json.loads(report.read_text())["totals"]
    assert totals["late_sent"] > 0 and totals["burst_samples"] > 0 and totals["silent_periods"] > 0


def test_200_sensors_with_faults_verify_clean(fresh_broker: Broker, tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, fresh_broker, client_id="tidegate-sim-e2e")
    db = gateway.db
    assert db is not None
    report = tmp_path / "report.json"
    try:
        assert wait_until_ingesting(HOST, fresh_broker.port, "sensors/probe/x", db, timeout=20)
        done = subprocess.run(
            simulator(fresh_broker.port, report, "--duration", "5"), timeout=60, check=False
        )
        assert done.returncode == 0
        catch_up(db, report)
    finally:
        code = gateway.terminate()
    assert code == 0, gateway.log_text()[-2000:]
    check(report, db)


def test_gateway_killed_mid_run_still_verifies_clean(fresh_broker: Broker, tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, fresh_broker, client_id="tidegate-sim-e2e")
    db = gateway.db
    assert db is not None
    report = tmp_path / "report.json"
    restarted: GatewayProcess | None = None
    sim: subprocess.Popen[bytes] | None = None
    try:
        assert wait_until_ingesting(HOST, fresh_broker.port, "sensors/probe/x", db, timeout=20)
        sim = subprocess.Popen(simulator(fresh_broker.port, report, "--duration", "8"))
        time.sleep(3)
        stored_before = db_rows(db, "SELECT count(*) FROM readings")[0][0]
        assert stored_before > 0
        gateway.kill9()  # mid-batch, mid-ack: whatever it had not committed is not acked
        time.sleep(0.5)
        config = tmp_path / "gw.toml"
        restarted = GatewayProcess(config, tmp_path / "gw-restarted.log").start()
        assert sim.wait(60) == 0
        catch_up(db, report)
    finally:
        if sim is not None and sim.poll() is None:
            sim.kill()
            sim.wait(10)
        gateway.ensure_stopped()
        if restarted is not None:
            assert restarted.terminate() == 0, restarted.log_text()[-2000:]
    check(report, db)


def test_sigterm_stops_publishing_and_awaits_every_ack(broker: Broker, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "simulators", "run",
        "--host", HOST, "--port", str(broker.port),
        "--sensors", "2000", "--connections", "2", "--rate", "2",
        "--topic", f"simterm-{tmp_path.name}/{{sensor_id}}/{{metric}}",
        "--report", str(report), "--no-progress",
    ]  # fmt: skip
    sim = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert sim.stderr is not None
        for _ in range(10):  # "connecting …", then "… connected in …" (or EOF if it died)
            line = sim.stderr.readline()
            if not line or b"connected in" in line:
                break
        time.sleep(1.5)  # publishing for a while, with acks in flight
        sim.send_signal(signal.SIGTERM)
        out, err = sim.communicate(timeout=60)
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait(10)
    assert sim.returncode == 0, err.decode()
    assert b"stopping" in err and b"run " in out  # the signal arrived while publishing
    totals = json.loads(report.read_text())["totals"]
    assert totals["messages_sent"] > 0
    assert totals["messages_acked"] == totals["messages_sent"]
    assert totals["unconfirmed_messages"] == 0
