"""``tidegate serve --store postgresql://…`` end to end: a real PostgreSQL holding three
sites (tests/support/fleet.py), the hub as a subprocess reading it as the read-only
role, and plain HTTP: every /api/v1 endpoint with a gateway filter, pages that return
each row once across gateways, aggregates that match the data and say their tier,
/metrics, /readyz (also while PostgreSQL is down), /docs, the OpenAPI document, and the
token rules of an exposed address."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support import wait_for
from tests.support.fleet import (
    END,
    GATEWAYS,
    LATE_AT,
    METRICS,
    ROLLED_UP_BEFORE,
    SENSORS,
    START,
    Hub,
    Rows,
    create_owner,
    create_reader,
    fleet_rows,
    load,
    ms,
)
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration

HOUR = 3_600_000
TOKEN = "fleet-token-0123456789abcdef"


class Fleet:
    def __init__(self, rows: Rows, reader_url: str, hub: Hub, client: httpx.Client) -> None:
        self.rows, self.reader_url, self.hub, self.client = rows, reader_url, hub, client

    def get(self, path: str, **params: Any) -> Any:
        reply = self.client.get(path, params=params)
        assert reply.status_code == 200, (path, params, reply.status_code, reply.text)
        return reply.json()


@pytest.fixture(scope="module")
def fleet(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    name = postgres.new_database_name("hub")
    admin_url = postgres.create_database(name)
    rows = fleet_rows()

    async def prepare() -> None:
        conn = await asyncpg.connect(await create_owner(admin_url))
        try:
            await load(conn, rows)
        finally:
            await conn.close()

    asyncio.run(prepare())
    reader_url = create_reader(admin_url)
    with (
        Hub(tmp_path_factory.mktemp("hub"), reader_url) as hub,
        httpx.Client(base_url=hub.url, timeout=30) as client,
    ):
        yield Fleet(rows, reader_url, hub, client)
    postgres.drop_database(name)


def in_range(t: int) -> bool:
    return ms(START) <= t < ms(END)


def test_every_endpoint_takes_a_gateway_filter(fleet: Fleet) -> None:
    gateways = fleet.get("/api/v1/gateways")["gateways"]
    assert [g["gateway"] for g in gateways] == sorted(GATEWAYS)
    by = {g["gateway"]: g for g in gateways}
    assert by["site-a"]["forwarding"]["backlog_readings"] == 12
    assert by["site-b"]["forwarding"]["stale"] is True
    assert by["site-c"]["forwarding"] is None  # a direct-mode group forwards nothing
    for gateway in GATEWAYS:
        sensors = fleet.get("/api/v1/sensors", gateway=gateway)["sensors"]
        assert {s["gateway"] for s in sensors} == {gateway}
        assert sorted(s["sensor_id"] for s in sensors) == sorted(SENSORS)
        readings = fleet.get(
            "/api/v1/readings", gateway=gateway, sensor=SENSORS[0], limit=5, order="desc"
        )["readings"]
        assert len(readings) == 5 and {r["gateway"] for r in readings} == {gateway}
        series = fleet.get(
            "/api/v1/readings/aggregate", gateway=gateway, bucket="1h", **{"from": "2026-11-29"}
        )["series"]
        assert len(series) == len(SENSORS) * len(METRICS)
        assert {s["gateway"] for s in series} == {gateway}
        stats = fleet.get("/api/v1/stats", gateway=gateway)["database"]
        expected = sum(len(v) for k, v in fleet.rows.items() if k[0] == gateway)
        assert stats["readings"] == expected
        assert stats["series"] == len(SENSORS) * len(METRICS)
    # A gateway nobody knows: empty answers, not errors.
    assert fleet.get("/api/v1/sensors", gateway="nowhere")["sensors"] == []
    assert fleet.get("/api/v1/readings", gateway="nowhere")["readings"] == []
    # CSV exports end with the gateway column.
    csv = fleet.client.get("/api/v1/readings", params={"gateway": "site-c", "format": "csv"})
    header, first = csv.text.splitlines()[:2]
    assert header.endswith(",gateway") and first.endswith(",site-c")


def test_pages_return_each_row_once_across_gateways(fleet: Fleet) -> None:
    seen: list[tuple[str, str, str, int]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"from": "2026-11-29", "limit": 997}
        if cursor:
            params["cursor"] = cursor
        page = fleet.get("/api/v1/readings", **params)
        seen += [(r["gateway"], r["sensor_id"], r["metric"], r["ts_ms"]) for r in page["readings"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
        assert pages < 100
    expected = [(k[0], k[1], k[2], t) for k, v in fleet.rows.items() for t, _v in v]
    assert len(seen) == len(set(seen)) == len(expected)
    assert set(seen) == set(expected)
    assert [s[3] for s in seen] == sorted(s[3] for s in seen)  # time order across gateways

    series: list[tuple[str, str, str]] = []
    cursor = None
    while True:
        params = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        page = fleet.get("/api/v1/sensors", **params)
        series += [
            (s["gateway"], s["sensor_id"], m["metric"])
            for s in page["sensors"]
            for m in s["metrics"]
        ]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(series) == len(set(series)) == len(fleet.rows)


def test_aggregates_match_the_data_and_say_their_tier(fleet: Fleet) -> None:
    answer = fleet.get(
        "/api/v1/readings/aggregate",
        bucket="1h",
        agg="min,max,avg,count",
        **{"from": START.isoformat(), "to": END.isoformat()},
    )
    got = {
        (s["gateway"], s["sensor_id"], s["metric"], b["start_ms"]): b
        for s in answer["series"]
        for b in s["buckets"]
    }
    expected: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
    for (gateway, sensor, metric), values in fleet.rows.items():
        for t, v in values:
            if in_range(t):
                expected[(gateway, sensor, metric, t - t % HOUR)].append(v)
    assert set(got) == set(expected)
    late_hour = ms(LATE_AT) - ms(LATE_AT) % HOUR
    for key, values in expected.items():
        bucket = got[key]
        assert bucket["count"] == len(values), key
        assert bucket["min"] == min(values) and bucket["max"] == max(values), key
        assert bucket["avg"] == pytest.approx(sum(values) / len(values)), key
        pending = key[3] + HOUR > ms(ROLLED_UP_BEFORE) or (
            key[:3] == ("site-b", SENSORS[1], "temperature") and key[3] == late_hour
        )
        if pending:
            assert bucket["tier"] != "1h", key  # a pending minute inside: not from 1h
        else:
            assert bucket["tier"] == "1h", key


def test_metrics_readiness_docs_and_openapi(fleet: Fleet) -> None:
    metrics = fleet.client.get("/metrics").text
    assert "tidegate_central_up 1" in metrics
    assert 'tidegate_gateway_backlog_readings{gateway="site-a"} 12' in metrics
    assert 'tidegate_gateway_series{gateway="site-c"} 4' in metrics
    assert fleet.get("/readyz")["status"] == "ready"
    assert fleet.get("/api/v1/live")["mode"] == "hub"
    assert "<html" in fleet.client.get("/docs").text.lower()
    document = fleet.get("/openapi.json")
    assert "/api/v1/gateways" in document["paths"]
    assert "tidegate" in fleet.client.get("/").text


def test_readyz_follows_the_central_store(fleet: Fleet, postgres: PostgresServer) -> None:
    postgres.stop()
    try:

        def not_ready() -> bool:
            return fleet.client.get("/readyz").status_code == 503

        wait_for(not_ready, 20, what="/readyz to say the central store does not answer")
        assert "central store not answering" in fleet.client.get("/readyz").json()["error"]
    finally:
        postgres.start()
    wait_for(lambda: fleet.client.get("/readyz").status_code == 200, 20, what="/readyz ready again")
    assert fleet.get("/api/v1/sensors", gateway="site-a")["sensors"]


def test_an_exposed_hub_needs_a_token(fleet: Fleet, tmp_path: Path) -> None:
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--store",
            fleet.reader_url,
            "--host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        cwd=tmp_path,
    )
    assert refused.returncode == 2, refused.stderr
    assert "api.token: required when api.host (0.0.0.0) is not a loopback address" in refused.stderr
    with Hub(tmp_path, fleet.reader_url, api=f'token = "{TOKEN}"', name="tokened") as hub:
        with httpx.Client(base_url=hub.url, timeout=30) as client:
            assert client.get("/api/v1/sensors").status_code == 401
            assert client.get("/metrics").status_code == 401
            assert client.get("/healthz").status_code == 200
            ok = client.get("/api/v1/gateways", headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200 and len(ok.json()["gateways"]) == 3
        assert TOKEN not in hub.log()
