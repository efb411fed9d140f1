"""The hub's own answers (``tidegate serve``), without a server or a database: the app
of :mod:`gateway.api.app` with the hub's routes over a fake store that holds several
gateways. The same behaviour against a real central store and real edges is in
``tests/integration/test_hub.py``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.api import hub
from gateway.api.app import build_app
from gateway.api.state import ApiState
from gateway.config import ApiConfig
from gateway.models import Reading
from gateway.storage.base import Forwarding, GatewayInfo
from gateway.storage.memory import MemoryStore


class FleetStore(MemoryStore):
    """A memory store that reports three gateways: one forwarding and up to date, one
    that stopped forwarding 20 minutes ago with a backlog, one direct-mode group."""

    async def gateways(self) -> list[GatewayInfo]:
        now = int(time.time() * 1000)
        return [
            GatewayInfo("plant", 3, 2, None),
            GatewayInfo("site-a", 2, 1, Forwarding(1000, 0, None, now - 2_000)),
            GatewayInfo(
                "site-b", 4, 2, Forwarding(500, 1234, now - 30 * 60_000, now - 20 * 60_000)
            ),
        ]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    store = FleetStore(gateway_id="site-a")
    state = ApiState(hub.HubView(), ApiConfig(), store, "9.9", hub=True)
    app = build_app(state, None, hub.ROUTES)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        c.state = state  # type: ignore[attr-defined]
        c.store = store  # type: ignore[attr-defined]
        yield c


async def test_live_says_hub_and_whether_the_store_answers(client: Any) -> None:
    assert_json = (await client.get("/api/v1/live")).json()
    assert assert_json["mode"] == "hub" and assert_json["storage_ok"] is True
    assert "broker_connected" not in assert_json
    client.state.store_ok, client.state.store_error = False, "connection refused"
    body = (await client.get("/api/v1/live")).json()
    assert (body["storage_ok"], body["storage_error"]) == (False, "connection refused")


async def test_ready_while_the_central_store_answers(client: Any) -> None:
    assert (await client.get("/readyz")).json() == {"status": "ready", "reasons": []}
    client.state.store_ok, client.state.store_error = False, "timed out"
    answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["reasons"] == ["central store not answering: timed out"]


async def test_gateways_say_when_they_last_forwarded_and_how_far_behind(client: Any) -> None:
    body = (await client.get("/api/v1/gateways")).json()
    assert [g["gateway"] for g in body["gateways"]] == ["plant", "site-a", "site-b"]
    plant, fresh, stopped = body["gateways"]
    assert plant["forwarding"] is None
    assert fresh["forwarding"]["stale"] is False and fresh["forwarding"]["behind_s"] is None
    assert fresh["forwarding"]["backlog_readings"] == 0
    f = stopped["forwarding"]
    assert f["stale"] is True and f["backlog_readings"] == 1234
    assert 1190 < f["age_s"] < 1300 and 1790 < f["behind_s"] < 1900


async def test_metrics_name_every_gateway(client: Any) -> None:
    text = (await client.get("/metrics")).text
    assert "tidegate_central_up 1" in text
    assert "tidegate_gateways 3" in text
    assert 'tidegate_gateway_backlog_readings{gateway="site-b"} 1234' in text
    assert 'tidegate_gateway_forwarded_total{gateway="site-a"} 1000' in text
    assert 'tidegate_gateway_series{gateway="plant"} 3' in text
    assert "tidegate_messages_received_total" not in text  # no pipeline here
    client.state.store_ok = False
    assert "tidegate_central_up 0" in (await client.get("/metrics")).text


async def test_stats_of_one_gateway_and_live_figures(client: Any) -> None:
    now = int(time.time() * 1000)
    readings = [Reading("s1", "temp", now - i * 1000, float(i)) for i in range(5)]
    await client.store.write_batch(readings, [])
    body = (await client.get("/api/v1/stats")).json()
    assert body["database"]["readings"] == 5 and body["runtime"]["mode"] == "hub"
    mine = (await client.get("/api/v1/stats", params={"gateway": "site-a"})).json()
    assert mine["database"]["readings"] == 5
    other = (await client.get("/api/v1/stats", params={"gateway": "site-b"})).json()["database"]
    assert (other["gateway"], other["readings"]) == ("site-b", 0)
    sensors = (await client.get("/api/v1/sensors")).json()["sensors"]
    assert [(s["gateway"], s["sensor_id"]) for s in sensors] == [("site-a", "s1")]
    assert (await client.get("/api/v1/sensors", params={"gateway": "site-b"})).json()["count"] == 0
    bad = await client.get("/api/v1/readings", params={"gateway": "x" * 200})
    assert bad.status_code == 400 and "gateway: longer than 128" in bad.json()["error"]
