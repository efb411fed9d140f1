"""``tidegate-sim verify`` against a gateway that keeps ingesting and compacting.

verify used to read the hot table once and then the per-series table series by series,
in separate statements: compaction moving rows in between made them count twice (a
150 s soak reported 86,510 false "duplicates stored"). It now reads one snapshot. Here a
finished run is verified over and over while a second fleet keeps the gateway busy and
compaction moves the first run's readings (``storage.hot_max_age_s = 1``: every second,
everything older than the 30 s compaction lag): every verify must be exact, and some
must have had compaction move rows while they read.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.probe import wait_until_ingesting
from simulators.verify import render, verify
from tests.support import HOST, Broker, db_rows, start_gateway

pytestmark = [pytest.mark.integration, pytest.mark.isolated, pytest.mark.slow]

RUN_S = 36
"""Long enough that the run's first readings pass the 30 s compaction lag before it ends."""
VERIFY_WINDOW_S = 15
"""Verify again and again for this long (a verify takes ~0.1-0.3 s here; with the old
two-statement read about one in thirty of them reported false duplicates)."""
MAX_VERIFIES = 150
WANTED_OVERLAPS = 3


def simulator(port: int, report: Path, prefix: str, seconds: int) -> list[str]:
    return [
        sys.executable, "-m", "simulators", "run",
        "--host", HOST, "--port", str(port),
        "--sensors", "150", "--rate", "2", "--connections", "2", "--seed", "11",
        "--prefix", prefix, "--duration", str(seconds),
        "--duplicates", "0.02", "--late", "0.02",
        "--report", str(report), "--no-progress", "-q",
    ]  # fmt: skip


def cold_rows(db: Path) -> int:
    rows = db_rows(db, "SELECT count(*) FROM readings_cold")
    return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]


def test_verify_is_exact_while_the_gateway_ingests_and_compacts(
    fresh_broker: Broker, tmp_path: Path
) -> None:
    gateway = start_gateway(tmp_path, fresh_broker, env={"TIDEGATE_STORAGE__HOT_MAX_AGE_S": "1"})
    db = gateway.db
    assert db is not None
    report = tmp_path / "run.json"
    background: subprocess.Popen[bytes] | None = None
    verdicts = []
    overlaps = 0
    try:
        assert wait_until_ingesting(HOST, fresh_broker.port, "sensors/probe/x", db, timeout=20)
        run = subprocess.run(
            simulator(fresh_broker.port, report, "run", RUN_S), timeout=RUN_S + 60, check=False
        )
        assert run.returncode == 0
        # Another fleet keeps the writer busy while the finished run is verified.
        background = subprocess.Popen(
            simulator(fresh_broker.port, tmp_path / "live.json", "live", VERIFY_WINDOW_S + 20),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + VERIFY_WINDOW_S
        while time.monotonic() < deadline and len(verdicts) < MAX_VERIFIES:
            before = cold_rows(db)
            verdict = verify(report, db)
            moved = cold_rows(db) - before
            verdicts.append(verdict)
            if moved > 0:
                overlaps += 1
            # Everything acknowledged is stored by now (the writer keeps up at this rate);
            # what matters is that no verify sees a reading twice or not at all.
            assert verdict.duplicates_stored == 0, render(verdict)
            assert verdict.unexpected == 0, render(verdict)
            if verdict.missing:
                time.sleep(0.5)  # the last acknowledged readings may still be queued
                continue
            assert verdict.ok, render(verdict)
    finally:
        if background is not None and background.poll() is None:
            background.terminate()
            background.wait(30)
        code = gateway.terminate()
    assert code == 0, gateway.log_text()[-2000:]
    assert overlaps >= WANTED_OVERLAPS, (
        f"{overlaps} of {len(verdicts)} verifies overlapped a compaction"
    )
    exact = [v for v in verdicts if v.ok]
    assert exact and exact[-1].published == exact[-1].stored > 10_000
    assert all(v.duplicates_stored == 0 and v.unexpected == 0 for v in verdicts)
    # And once everything is still: the same answer.
    final = verify(report, db)
    assert final.ok, render(final)
    assert final.stored == exact[-1].stored
