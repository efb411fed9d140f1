"""Several direct-mode gateways (``[storage] backend = "postgresql"``) on one MQTT shared
subscription, sharing its broker sessions as client-id slots (docs/decisions/0124):
real Mosquitto, real PostgreSQL, real gateway processes, the simulator as the fleet.

* two members split the slots, each message is stored once, and a member stopped
  cleanly mid-stream hands its slots over;
* three members, one killed with SIGKILL mid-stream and NOT restarted: the survivors
  take its slots over (its queued and unacknowledged messages included), and every
  acknowledged reading is in ``tidegate.readings`` exactly once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from simulators.verify import render, verify
from tests.support import HOST, Broker, GatewayProcess, start_gateway, wait_for
from tests.support.mqtt import http_json

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP = "direct"
SLOTS = 6


def member(tmp: Path, broker: Broker, pg_url: str, name: str) -> GatewayProcess:
    """A group member: every member has the same client id base and group."""
    env = {
        "TIDEGATE_STORAGE__BACKEND": "postgresql",
        "TIDEGATE_STORAGE__POSTGRESQL__URL": pg_url,
        "TIDEGATE_MQTT__SHARED_GROUP": GROUP,
        "TIDEGATE_MQTT__SLOTS": str(SLOTS),
        "TIDEGATE_MQTT__SLOT_CLAIM_INTERVAL_S": "0.5",
    }
    return start_gateway(tmp, broker, name, api="", env=env, client_id="tg-direct")


def held(gateway: GatewayProcess) -> list[int]:
    status, body = http_json(gateway.api_port or 0, "/readyz")
    assert status in (200, 503), body
    return list(body.get("slots", {}).get("held", []))


def wait_settled(gateways: list[GatewayProcess], shares: list[int], timeout: float = 30) -> None:
    """Until the members hold ``shares`` slots (sorted) covering every slot once."""

    def settled() -> bool:
        holdings = [held(g) for g in gateways]
        every = sorted(s for h in holdings for s in h)
        return every == list(range(SLOTS)) and sorted(len(h) for h in holdings) == shares

    wait_for(settled, timeout, interval=0.2, what=f"slots settled as {shares}")


def simulator(port: int, report: Path, sensors: int, rate: float, duration: float) -> list[str]:
    return [
        sys.executable, "-m", "simulators", "run",
        "--host", HOST, "--port", str(port),
        "--sensors", str(sensors), "--rate", str(rate), "--duration", str(duration),
        "--connections", "4", "--seed", "11", "--duplicates", "0.02",
        "--report", str(report), "--no-progress", "-q",
    ]  # fmt: skip


def pg(url: str, sql: str) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


def stored(url: str) -> int:
    try:
        return int(pg(url, "SELECT count(*) FROM tidegate.readings")[0][0])
    except asyncpg.UndefinedTableError:
        return 0


def exactly_once(url: str, report: Path, timeout: float = 60) -> int:
    """Wait (bounded) until every acknowledged reading is stored, then check the exact
    count: each acknowledged reading once (the simulator's duplicate publishes too),
    nothing else, all under the group's gateway id. Returns the count."""
    # Readings acknowledged, each counted once however many copies were sent.
    acked = json.loads(report.read_text())["totals"]["readings_acked"]
    deadline = time.monotonic() + timeout
    while stored(url) < acked and time.monotonic() < deadline:
        time.sleep(0.3)
    time.sleep(1.0)  # anything more (an unexpected row) would have committed by now
    rows = pg(
        url,
        "SELECT count(*) AS n,"
        " count(DISTINCT (gateway_id, sensor_id, metric, ts)) AS distinct_n,"
        " min(gateway_id) AS gateway, count(DISTINCT gateway_id) AS gateways"
        " FROM tidegate.readings",
    )[0]
    assert rows["n"] == acked, f"stored {rows['n']}, acknowledged {acked}"
    assert rows["distinct_n"] == acked
    assert (rows["gateways"], rows["gateway"]) == (1, GROUP)
    # And reading by reading, as a user would check it: every acknowledged reading
    # (sensor, metric, time, value) once, nothing missing, nothing invented.
    verdict = verify(report, store_url=url, gateway=GROUP)
    assert verdict.ok, render(verdict)
    assert (verdict.stored, verdict.missing, verdict.duplicates_stored) == (acked, 0, 0)
    return int(rows["n"])


def run_simulator(broker: Broker, report: Path, **kw: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        simulator(broker.port, report, int(kw["sensors"]), kw["rate"], kw["duration"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(sim: subprocess.Popen[bytes], timeout: float = 90) -> None:
    _out, err = sim.communicate(timeout=timeout)
    assert sim.returncode == 0, err.decode(errors="replace")


def committed(gateway: GatewayProcess) -> int:
    status, body = http_json(gateway.api_port or 0, "/api/v1/live")
    assert status == 200
    return int(body["messages_committed"])


def test_two_members_store_each_message_once_and_a_clean_stop_hands_over(
    fresh_broker: Broker, pg_url: str, tmp_path: Path
) -> None:
    a = member(tmp_path, fresh_broker, pg_url, "a")
    b = member(tmp_path, fresh_broker, pg_url, "b")
    try:
        wait_settled([a, b], [3, 3])
        report = tmp_path / "report.json"
        sim = run_simulator(fresh_broker, report, sensors=40, rate=10, duration=10)
        wait_for(lambda: committed(a) > 200 and committed(b) > 200, 30, what="both commit")
        # SIGTERM mid-stream: b drains, commits, acks, disconnects, then releases.
        assert b.terminate() == 0
        wait_settled([a], [SLOTS], timeout=20)
        finish(sim)
        n = exactly_once(pg_url, report)
        assert n > 5000
        log = a.log_text()
        assert "mqtt slot" in log and "taken over" in log
        assert "Traceback" not in a.log_text() + b.log_text()
    finally:
        for g in (a, b):
            g.ensure_stopped()


def test_three_members_one_killed_mid_stream_and_not_restarted(
    fresh_broker: Broker, pg_url: str, tmp_path: Path
) -> None:
    gateways = [member(tmp_path, fresh_broker, pg_url, name) for name in ("a", "b", "c")]
    a, b, c = gateways
    try:
        wait_settled(gateways, [2, 2, 2])
        report = tmp_path / "report.json"
        sim = run_simulator(fresh_broker, report, sensors=60, rate=10, duration=12)
        wait_for(lambda: committed(b) > 300, 30, what="the victim commits")
        orphaned = held(b)
        b.kill9()  # mid-stream, not restarted
        wait_settled([a, c], [3, 3], timeout=30)
        finish(sim)
        n = exactly_once(pg_url, report)
        assert n > 15000
        text = a.log_text() + c.log_text()
        for slot in orphaned:
            assert f"mqtt slot {slot} taken over" in text, text[-3000:]
        assert "Traceback" not in text
    finally:
        for g in gateways:
            g.ensure_stopped()
