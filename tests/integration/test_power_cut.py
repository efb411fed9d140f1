"""Power cuts under a running gateway: nothing acknowledged is lost by default.

The gateway's database lives on the power-cut filesystem (tests/support/powercut.py).
While ``tidegate-sim`` publishes through a real Mosquitto, the power is cut three times:
everything not fsynced is gone, the disk refuses I/O, the gateway is killed, the
filesystem is mounted again and the gateway restarted. ``tidegate-sim verify`` must then
be exact: 0 missing, 0 stored twice. The same run with the weak mode
(``NORMAL_LOSES_ACKS_ON_POWER_CUT``) must lose acknowledged readings — proof that this
test can see a loss at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.verify import Verdict, render, verify
from tests.support import HOST, Broker, GatewayProcess, db_rows, write_config
from tests.support.powercut import PowerCutFs, fuse_missing_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.isolated,
    pytest.mark.slow,
    pytest.mark.skipif(fuse_missing_reason() is not None, reason=fuse_missing_reason() or ""),
]

CUTS = 3
SENSORS = 50


def _simulator(port: int, report: Path, seconds: float) -> list[str]:
    return [
        sys.executable, "-m", "simulators", "run",
        "--host", HOST, "--port", str(port),
        "--sensors", str(SENSORS), "--rate", "4", "--connections", "2", "--seed", "11",
        "--duration", str(seconds), "--report", str(report), "--no-progress", "-q",
    ]  # fmt: skip


def _stored(db: Path) -> int:
    rows = db_rows(db, "SELECT count(*) FROM readings")
    return int(rows[0][0]) if rows else 0


def _run_with_cuts(
    broker: Broker, tmp_path: Path, synchronous: str | None
) -> tuple[Verdict, list[int], PowerCutFs]:
    """Publish for ~12 s, cut the power :data:`CUTS` times, restart after each; returns
    the verdict, the rows stored just before each cut, and the filesystem."""
    fs = PowerCutFs(tmp_path / "disk")
    fs.__enter__()
    db = fs.mount / "gw.db"
    config = write_config(tmp_path / "gw.toml", broker.port, db, client_id="tidegate-powercut")
    if synchronous:  # the one difference between the two tests
        text = config.read_text()
        line = f'path = "{db}"\n'
        config.write_text(text.replace(line, f'{line}synchronous = "{synchronous}"\n', 1))
    report = tmp_path / "report.json"
    gateway = GatewayProcess(config, tmp_path / "gw-0.log").start()
    sim = subprocess.Popen(_simulator(broker.port, report, 4.0 * (CUTS + 1)))
    before_cut: list[int] = []
    try:
        for cut in range(1, CUTS + 1):
            time.sleep(3.0)
            before_cut.append(_stored(db))
            fs.cut()  # power off: unsynced writes gone, the disk refuses I/O ...
            gateway.kill9()  # ... and the machine (the gateway) is down with it
            fs.remount()  # the next boot
            gateway = GatewayProcess(config, tmp_path / f"gw-{cut}.log").start()
        assert sim.wait(60) == 0, "simulator failed"
        acked = json.loads(report.read_text())["totals"]["readings_acked"]
        deadline = time.monotonic() + 30
        while _stored(db) < acked and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait(10)
        code = gateway.terminate() if gateway.proc and gateway.proc.poll() is None else 0
    assert code == 0, gateway.log_text()[-2000:]
    return verify(report, db), before_cut, fs


@pytest.mark.timeout(240)
def test_three_power_cuts_lose_nothing_acknowledged(fresh_broker: Broker, tmp_path: Path) -> None:
    verdict, before_cut, fs = _run_with_cuts(fresh_broker, tmp_path, None)
    print(render(verdict), "\nrows before each cut:", before_cut, "\ncuts:", fs.cuts)
    try:
        assert verdict.ok, render(verdict)
        assert verdict.missing == 0 and verdict.duplicates_stored == 0
        assert verdict.published > 2000
        # Each cut hit a gateway that was ingesting, more each time.
        assert all(b > 0 for b in before_cut) and before_cut == sorted(before_cut)
        assert len(fs.cuts) == CUTS
    finally:
        fs.stop()


@pytest.mark.timeout(240)
def test_the_weak_mode_really_loses_acknowledged_readings(
    fresh_broker: Broker, tmp_path: Path
) -> None:
    verdict, before_cut, fs = _run_with_cuts(
        fresh_broker, tmp_path, "NORMAL_LOSES_ACKS_ON_POWER_CUT"
    )
    print(render(verdict), "\nrows before each cut:", before_cut, "\ncuts:", fs.cuts)
    try:
        assert not verdict.ok
        assert verdict.missing > 100, render(verdict)
        assert verdict.duplicates_stored == 0
    finally:
        fs.stop()
