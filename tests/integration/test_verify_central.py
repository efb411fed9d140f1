"""``tidegate-sim verify --store postgresql://…``: the same comparison, counts and
verdict against the central store as against a gateway's own database, one gateway
of a fleet picked with ``--gateway``; against the session's test PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.models import DeadLetter, Reading
from simulators.report import Group, Ledger, write_report
from simulators.verify import Verdict, render, verify
from tests.support import HOST, Broker, start_gateway, wait_for
from tests.support.central import CentralTestWriter
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration

T = 1_750_000_000_000


def report_file(tmp_path: Path) -> Path:
    """A run of 11 acknowledged readings (one duplicate sent), one unconfirmed, one
    acknowledged faulty message (``tgfault:r1-0``)."""
    ledger = Ledger("r1", qos=1)
    temp = ledger.series_id("s-1", "temperature", "°C")
    hum = ledger.series_id("s-1", "humidity", "%RH")
    for i in range(5):
        group = Group((temp, hum), T + i)
        ledger.sent(group)
        ledger.acked(group)
    dup = Group((temp,), T + 10)
    ledger.sent(dup)
    ledger.sent(dup, duplicate=True)
    ledger.acked(dup)
    ledger.acked(dup)
    lost = Group((temp,), T + 20)
    ledger.sent(lost, late=True)
    ledger.unconfirmed(lost)
    bad = ledger.new_fault("s-1", "malformed")
    ledger.sent(bad)
    ledger.acked(bad)
    path = tmp_path / "report.json"
    write_report(path, ledger.report({"qos": 1}, {}, T - 1000, T + 60_000))
    return path


def run_readings(value: float = 1.0) -> list[Reading]:
    temp = [Reading("s-1", "temperature", T + i, value, "°C") for i in (0, 1, 2, 3, 4, 10)]
    hum = [Reading("s-1", "humidity", T + i, value, "%RH") for i in range(5)]
    return [*temp, *hum]


async def fill(url: str) -> None:
    """site-a stored the run exactly; site-b, another gateway, runs sensors with the same
    ids (its readings would be unexpected and duplicates if not told apart)."""
    site_a = CentralTestWriter(url, "site-a", mode="edge")
    site_b = CentralTestWriter(url, "site-b", mode="edge")
    await site_a.open()
    await site_b.open()
    try:
        fault = DeadLetter(T + 50, "sensors/s-1", b'{"note":"tgfault:r1-0","value":', "bad")
        await site_a.write_batch(run_readings(), [fault])
        theirs = [*run_readings(2.0), Reading("s-1", "temperature", T + 500, 3.0, "°C")]
        await site_b.write_batch(theirs, [])
    finally:
        await site_a.close()
        await site_b.close()


async def test_verify_against_the_central_store_one_gateway_at_a_time(
    tmp_path: Path, pg_url: str
) -> None:
    report = report_file(tmp_path)
    await fill(pg_url)
    verdict = verify(report, store_url=pg_url, gateway="site-a")
    assert verdict.ok, render(verdict)
    assert (verdict.published, verdict.stored, verdict.missing, verdict.unexpected) == (
        11,
        11,
        0,
        0,
    )
    assert (verdict.duplicates_stored, verdict.unconfirmed, verdict.unit_mismatches) == (0, 1, 0)
    assert (verdict.faults_expected, verdict.faults_dead_lettered, verdict.dead_letter_rows) == (
        1,
        1,
        1,
    )
    assert verdict.database == f"{pg_url} (gateway site-a)"

    other = verify(report, store_url=pg_url, gateway="site-b")
    assert not other.ok
    assert (other.stored, other.unexpected, other.faults_missing) == (11, 1, 1)

    fleet = verify(report, store_url=pg_url)  # both sites' s-1: not one gateway's run
    assert not fleet.ok
    assert (fleet.stored, fleet.unexpected, fleet.duplicates_stored) == (11, 1, 11)


async def test_the_cli_verifies_a_store_and_never_shows_its_password(
    tmp_path: Path, postgres: PostgresServer, pg_url: str
) -> None:
    report = report_file(tmp_path)
    await fill(pg_url)
    with_password = pg_url.replace("postgres@", "postgres:not-shown@")
    cli = [sys.executable, "-m", "simulators", "verify", "--report", str(report)]
    done = subprocess.run(
        [*cli, "--store", with_password, "--gateway", "site-a", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PGPASSFILE": "/nonexistent"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] and result["stored"] == 11 and result["missing"] == 0
    assert "not-shown" not in done.stdout + done.stderr
    assert result["database"] == f"{pg_url} (gateway site-a)"
    failed = subprocess.run(
        [*cli, "--store", pg_url, "--gateway", "site-b"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1 and "FAILED" in failed.stdout
    misuse = subprocess.run(
        [*cli, "--db", str(tmp_path / "x.db"), "--gateway", "site-a"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert misuse.returncode == 2 and "--gateway needs --store" in misuse.stderr


def test_a_live_direct_mode_run_verifies_exactly_against_the_central_store(
    fresh_broker: Broker, pg_url: str, tmp_path: Path
) -> None:
    """A simulated fleet (with malformed messages and duplicates) into a direct-mode
    gateway writing to PostgreSQL, then ``tidegate-sim verify --store``: every
    acknowledged reading stored once, every acknowledged fault a dead letter."""
    extra = f'[storage.postgresql]\nurl = "{pg_url}"\nstatement_timeout_s = 5\n'
    env = {
        "TIDEGATE_STORAGE__BACKEND": "postgresql",
        "TIDEGATE_STORAGE__GATEWAY_ID": "plant-1",
        "TIDEGATE_STORAGE__MAINTENANCE_INTERVAL_S": "1",
    }
    gateway = start_gateway(tmp_path, fresh_broker, "direct", extra=extra, env=env)
    report = tmp_path / "run.json"
    try:
        sim = subprocess.run(
            [
                sys.executable, "-m", "simulators", "run",
                "--host", HOST, "--port", str(fresh_broker.port),
                "--sensors", "20", "--connections", "2", "--rate", "5", "--count", "20",
                "--malformed", "0.03", "--duplicates", "0.03", "--seed", "7",
                "--report", str(report), "--no-progress", "-q",
            ],
            timeout=120,
        )  # fmt: skip
        assert sim.returncode == 0
        last: list[Verdict] = []

        def verified() -> bool:
            last[:] = [verify(report, store_url=pg_url, gateway="plant-1")]
            return last[0].ok

        wait_for(verified, 60, 0.5, what="the gateway to store what was acknowledged")
        verdict = last[0]
        assert verdict.published > 0 and verdict.stored == verdict.published
        assert verdict.duplicates_stored == verdict.unexpected == 0
        assert verdict.faults_expected > 0
        assert verdict.faults_dead_lettered == verdict.faults_expected
        assert gateway.terminate() == 0, gateway.log_text()[-3000:]
    finally:
        gateway.ensure_stopped()
    done = subprocess.run(
        [
            sys.executable, "-m", "simulators", "verify", "--report", str(report),
            "--store", pg_url, "--gateway", "plant-1", "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    final = json.loads(done.stdout)
    assert (final["published"], final["stored"], final["missing"]) == (
        verdict.published,
        verdict.published,
        0,
    )
