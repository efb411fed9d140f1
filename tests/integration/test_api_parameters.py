"""Query parameters against a real gateway: the names people try first work as
aliases, and anything else unknown is a 400 naming it (the finding: ``?sensor_id=kitchen``
answered with every sensor, ``since=1h`` was ignored)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Broker, count, publish_many, start_gateway, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp: Path = tmp_path_factory.mktemp("params")
    gateway = start_gateway(tmp, broker, "params", api="rate_limit_per_s = 0")
    now = int(time.time() * 1000)
    messages = [
        (f"sensors/{sensor}/temperature", json.dumps({"value": i, "ts": now - age_ms}).encode())
        for i, (sensor, age_ms) in enumerate(
            [("kitchen", 600_000), ("kitchen", 7_200_000), ("attic", 600_000), ("cellar", 600_000)]
        )
    ]
    publish_many(broker.port, messages, client_id="params-pub")
    wait_for(lambda: count(tmp / "params.db") >= 4, 30, what="readings stored")
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client
    assert gateway.terminate() == 0, gateway.log_text()


def sensors_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    if "sensors" in body:
        return sorted(s["sensor_id"] for s in body["sensors"])
    return sorted({r["sensor_id"] for r in body["readings"]})


def test_sensor_id_since_and_until_are_aliases(api: httpx.Client) -> None:
    assert sensors_of(api.get("/api/v1/sensors", params={"sensor_id": "kitchen"})) == ["kitchen"]
    by_alias = api.get("/api/v1/readings", params={"sensor_id": "kitchen", "since": "1h"}).json()
    assert [r["value"] for r in by_alias["readings"]] == [0]  # the 2 h old one is outside
    canonical = api.get("/api/v1/readings", params={"sensor": "kitchen", "from": "1h"}).json()
    assert by_alias["readings"] == canonical["readings"]  # "from" differs by the ms between
    until = api.get(
        "/api/v1/readings", params={"sensor_id": "kitchen", "since": "3h", "until": "1h"}
    )
    assert [r["value"] for r in until.json()["readings"]] == [1]
    agg = api.get(
        "/api/v1/readings/aggregate", params={"sensor_id": "attic", "since": "1h", "bucket": "1h"}
    )
    assert [s["sensor_id"] for s in agg.json()["series"]] == ["attic"]


@pytest.mark.parametrize(
    ("path", "query", "named"),
    [
        ("/api/v1/sensors", "sensr=kitchen", "'sensr'"),
        ("/api/v1/readings", "sensor=kitchen&start=1h", "'start'"),
        ("/api/v1/readings/aggregate", "bucket=1h&aggregate=max", "'aggregate'"),
        ("/api/v1/stats", "verbose=1", "'verbose'"),
        ("/api/v1/sensors", "since=1h", "'since'"),  # an alias only where its name is taken
    ],
)
def test_unknown_parameters_are_a_400_naming_them(
    api: httpx.Client, path: str, query: str, named: str
) -> None:
    response = api.get(f"{path}?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert f"unknown parameter {named}" in error and "this endpoint takes" in error


def test_a_parameter_given_twice_is_a_400(api: httpx.Client) -> None:
    response = api.get("/api/v1/readings?sensor=kitchen&sensor_id=attic")
    assert response.status_code == 400
    assert (
        response.json()["error"]
        == "sensor given more than once (sensor and sensor_id); give it once"
    )
    assert api.get("/api/v1/readings/aggregate?agg=min&agg=max&bucket=1h").status_code == 200
