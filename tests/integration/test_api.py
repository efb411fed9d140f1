"""The HTTP API against a real gateway process, a real Mosquitto and a real database:
endpoints, pagination, CSV streaming, limits, auth, and a bounded schemathesis run
against the served OpenAPI document."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support import (
    HOST,
    Broker,
    GatewayProcess,
    count,
    publish_many,
    start_gateway,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

SENSORS = ("alpha", "beta", "gamma")
METRICS = {"temperature": "°C", "humidity": "%RH"}
PER_SERIES = 120
STEP_MS = 10_000
TOKEN = "s3cret-token-for-tests"
BEARER = {"authorization": f"Bearer {TOKEN}"}


def value_of(sensor: str, metric: str, i: int) -> float:
    offset = SENSORS.index(sensor) * 100 + (0 if metric == "temperature" else 1000)
    return offset + (i % 10) * 0.5


class Api:
    """A running gateway with its API, plus what was published to it."""

    def __init__(
        self,
        gateway: GatewayProcess,
        port: int,
        base_ms: int,
        db: Path,
        auth: dict[str, str] | None = None,
    ) -> None:
        self.gateway = gateway
        self.url = f"http://{HOST}:{port}"
        self.base_ms = base_ms
        self.db = db
        self.client = httpx.Client(base_url=self.url, timeout=30, headers=auth or {})

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return self.client.get(path, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def api(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A gateway with 3 sensors × 2 metrics × 120 readings, no rate limit (schemathesis),
    its token from the environment."""
    tmp = tmp_path_factory.mktemp("api")
    gateway = start_gateway(
        tmp, broker, "api", api="rate_limit_per_s = 0", env={"TIDEGATE_API__TOKEN": TOKEN}
    )
    port, db = gateway.api_port, gateway.db
    assert port is not None and db is not None
    base_ms = (int(time.time() * 1000) // 60_000 - 30) * 60_000
    messages = [
        (
            f"sensors/{sensor}/{metric}",
            json.dumps(
                {"value": value_of(sensor, metric, i), "ts": base_ms + i * STEP_MS, "unit": unit}
            ).encode(),
        )
        for i in range(PER_SERIES)
        for sensor in SENSORS
        for metric, unit in METRICS.items()
    ]
    try:
        publish_many(broker.port, messages, client_id="api-test-pub")
        total = len(SENSORS) * len(METRICS) * PER_SERIES
        wait_for(lambda: count(db) >= total, 30, what="readings stored")
        running = Api(gateway, port, base_ms, db, auth=BEARER)
        yield running
        running.client.close()
    finally:
        assert gateway.terminate() == 0, gateway.log_text()


# --- health and metrics -------------------------------------------------------------


def test_health_and_readiness(api: Api) -> None:
    assert api.get("/healthz").json()["status"] == "ok"
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "reasons": []}


def test_metrics_exposition(api: Api) -> None:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    total = len(SENSORS) * len(METRICS) * PER_SERIES
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    assert samples['tidegate_messages_received_total{subscription="sensors/+/+"}'] == total
    assert samples['tidegate_messages_stored_total{subscription="sensors/+/+"}'] == total
    assert samples["tidegate_readings_stored_total"] == total
    assert samples["tidegate_duplicates_ignored_total"] == 0
    assert samples["tidegate_queue_capacity"] > 0
    assert "tidegate_queue_depth" in samples
    assert (
        samples['tidegate_batch_readings_bucket{le="+Inf"}']
        == samples["tidegate_batch_readings_count"]
    )
    assert "tidegate_commit_latency_seconds_sum" in samples
    assert samples["tidegate_storage_compacted_rows_total"] >= 0
    assert samples["tidegate_storage_paused"] == 0
    assert (
        samples['tidegate_storage_maintenance_step_seconds_bucket{le="+Inf"}']
        == samples["tidegate_storage_maintenance_step_seconds_count"]
    )
    assert samples['tidegate_database_size_bytes{file="main"}'] > 0
    assert samples["tidegate_series"] == len(SENSORS) * len(METRICS)
    oldest_age = samples["tidegate_oldest_reading_age_seconds"]
    assert oldest_age == pytest.approx((time.time() * 1000 - api.base_ms) / 1000, abs=120)
    assert samples["tidegate_newest_reading_age_seconds"] < oldest_age
    assert samples["tidegate_broker_connections"] == 1
    assert samples["tidegate_storage_ok"] == 1
    assert samples["process_resident_memory_bytes"] > 0
    # Every family is announced once, with a type.
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))


def test_live_and_stats(api: Api) -> None:
    live = api.get("/api/v1/live").json()
    assert live["broker_connected"] is True
    assert live["storage_ok"] is True
    assert live["readings_stored"] == len(SENSORS) * len(METRICS) * PER_SERIES
    assert live["queue_capacity"] > 0
    assert set(live["ingest_rate"]) == {"readings_per_s", "messages_per_s", "window_s"}
    stats = api.get("/api/v1/stats").json()
    database = stats["database"]
    assert database["readings"] == len(SENSORS) * len(METRICS) * PER_SERIES
    assert database["series"] == 6
    assert database["sensors"] == 3
    assert database["oldest_ms"] == api.base_ms
    assert database["newest_ms"] == api.base_ms + (PER_SERIES - 1) * STEP_MS
    assert stats["runtime"]["broker_connected"] is True


# --- sensors and readings -----------------------------------------------------------


def test_sensors_last_value_and_last_seen(api: Api) -> None:
    body = api.get("/api/v1/sensors").json()
    assert body["count"] == 3
    assert [s["sensor_id"] for s in body["sensors"]] == list(SENSORS)
    last_ms = api.base_ms + (PER_SERIES - 1) * STEP_MS
    for sensor in body["sensors"]:
        assert sensor["last_seen_ms"] == last_ms
        assert sensor["stale"] is (time.time() * 1000 - last_ms > body["stale_after_s"] * 1000)
        by_metric = {m["metric"]: m for m in sensor["metrics"]}
        assert set(by_metric) == set(METRICS)
        for metric, unit in METRICS.items():
            entry = by_metric[metric]
            assert entry["unit"] == unit
            assert entry["last_ts_ms"] == last_ms
            assert entry["last_value"] == value_of(sensor["sensor_id"], metric, PER_SERIES - 1)
    one = api.get("/api/v1/sensors", params={"sensor": "beta", "metric": "humidity"}).json()
    assert one["count"] == 1
    assert [m["metric"] for m in one["sensors"][0]["metrics"]] == ["humidity"]
    assert api.get("/api/v1/sensors", params={"sensor": "nobody"}).json()["count"] == 0


def test_readings_cursor_pagination_visits_every_row_once(api: Api) -> None:
    seen: list[tuple[int, float]] = []
    params: dict[str, str] = {"sensor": "alpha", "metric": "temperature", "limit": "37"}
    for _page in range(10):
        body = api.get("/api/v1/readings", params=params).json()
        seen.extend((r["ts_ms"], r["value"]) for r in body["readings"])
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    else:
        pytest.fail("pagination did not end")
    expected = [
        (api.base_ms + i * STEP_MS, value_of("alpha", "temperature", i)) for i in range(PER_SERIES)
    ]
    assert seen == expected


def test_readings_across_series_descending_with_range(api: Api) -> None:
    start = api.base_ms + 10 * STEP_MS
    end = api.base_ms + 20 * STEP_MS
    body = api.get(
        "/api/v1/readings",
        params={"from": str(start), "to": str(end), "order": "desc", "limit": "1000"},
    ).json()
    assert body["count"] == 10 * 6
    keys = [(r["ts_ms"], r["sensor_id"], r["metric"]) for r in body["readings"]]
    assert keys == sorted(keys, key=lambda k: k[0], reverse=True)
    assert all(start <= k[0] < end for k in keys)
    first = body["readings"][0]
    assert first["ts"].endswith("Z")
    assert first["tags"] == {}


def test_aggregate_matches_the_data(api: Api) -> None:
    start = api.base_ms
    end = api.base_ms + PER_SERIES * STEP_MS
    body = api.get(
        "/api/v1/readings/aggregate",
        params={
            "sensor": "gamma",
            "metric": "humidity",
            "from": str(start),
            "to": str(end),
            "bucket": "1m",
            "agg": "min,max,avg,sum,count,last",
            # Back-filled readings reach the rollup tiers within a maintenance interval;
            # raw answers at once.
            "tier": "raw",
        },
    ).json()
    assert body["bucket_ms"] == 60_000
    assert body["aggregates"] == ["min", "max", "avg", "sum", "count", "last"]
    [series] = body["series"]
    assert (series["sensor_id"], series["metric"]) == ("gamma", "humidity")
    expected: dict[int, list[float]] = {}
    for i in range(PER_SERIES):
        ts = api.base_ms + i * STEP_MS
        expected.setdefault(ts - ts % 60_000, []).append(value_of("gamma", "humidity", i))
    assert [b["start_ms"] for b in series["buckets"]] == sorted(expected)
    for bucket in series["buckets"]:
        values = expected[bucket["start_ms"]]
        assert bucket["count"] == len(values)
        assert bucket["min"] == min(values)
        assert bucket["max"] == max(values)
        assert bucket["sum"] == pytest.approx(sum(values))
        assert bucket["avg"] == pytest.approx(sum(values) / len(values))
        assert bucket["last"] == values[-1]
        # Every bucket says which tier answered it (tier=raw: raw readings); the
        # `source` extra the handler used to look for never existed.
        assert bucket["tier"] == "raw" and "source" not in bucket
    auto = api.get(
        "/api/v1/readings/aggregate",
        params={"sensor": "gamma", "metric": "humidity", "from": str(start), "to": str(end)},
    ).json()
    assert {b["tier"] for s in auto["series"] for b in s["buckets"]} <= {"raw", "1m", "1h"}
    assert all("tier" in b for s in auto["series"] for b in s["buckets"])
    # agg may also be repeated; the default is avg.
    repeated = api.get(
        "/api/v1/readings/aggregate",
        params=[
            ("sensor", "gamma"),
            ("agg", "min"),
            ("agg", "max"),
            ("from", str(start)),
            ("tier", "raw"),
        ],
    ).json()
    assert repeated["aggregates"] == ["min", "max"]
    plain = api.get("/api/v1/readings/aggregate", params={"sensor": "gamma", "tier": "raw"}).json()
    assert plain["aggregates"] == ["avg"]
    assert len(plain["series"]) == 2


def test_csv_export_streams_every_row(api: Api) -> None:
    rows: list[list[str]] = []
    with api.client.stream(
        "GET", "/api/v1/readings", params={"metric": "temperature", "format": "csv"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        assert "content-length" not in response.headers  # streamed, not buffered
        text = "".join(response.iter_text())
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["ts", "ts_ms", "sensor_id", "metric", "value", "unit", "tags", "gateway"]
    assert len(rows) - 1 == len(SENSORS) * PER_SERIES
    assert {r[3] for r in rows[1:]} == {"temperature"}
    assert {r[5] for r in rows[1:]} == {"°C"}
    # Accept: text/csv works too, and so does the aggregate export.
    by_accept = api.get(
        "/api/v1/readings",
        params={"sensor": "alpha", "metric": "humidity", "limit": "5"},
        headers={"accept": "text/csv"},
    )
    assert len(by_accept.text.strip().splitlines()) == 6
    agg = api.get(
        "/api/v1/readings/aggregate",
        params={"sensor": "alpha", "agg": "min,max", "format": "csv", "bucket": "1h"},
    )
    header, *lines = list(csv.reader(io.StringIO(agg.text)))
    assert header == [
        "start", "start_ms", "sensor_id", "metric", "min", "max", "tier", "gateway"
    ]  # fmt: skip
    assert lines and {line[2] for line in lines} == {"alpha"}


# --- errors and limits --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "fragment"),
    [
        ("/api/v1/readings", {"from": "yesterday-ish"}, "from"),
        ("/api/v1/readings", {"from": "1e400"}, "out of range"),
        ("/api/v1/readings", {"limit": "0"}, "limit"),
        ("/api/v1/readings", {"limit": "100001"}, "limit"),
        ("/api/v1/readings", {"limit": "many"}, "limit"),
        ("/api/v1/readings", {"cursor": "not-a-cursor"}, "cursor"),
        ("/api/v1/readings", {"from": "90d"}, "max_range"),
        ("/api/v1/readings", {"from": "now", "to": "1h"}, "before"),
        ("/api/v1/readings", {"order": "sideways"}, "order"),
        ("/api/v1/readings", {"format": "xml"}, "format"),
        ("/api/v1/readings/aggregate", {"agg": "median"}, "median"),
        ("/api/v1/readings/aggregate", {"bucket": "fortnight"}, "bucket"),
        ("/api/v1/readings/aggregate", {"bucket": "1s", "from": "30d"}, "buckets"),
        ("/api/v1/sensors", {"sensor": "x" * 2000}, "longer"),
    ],
)
def test_bad_requests_get_400_with_a_reason(
    api: Api, path: str, params: dict[str, str], fragment: str
) -> None:
    response = api.get(path, params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert fragment in body["error"]


def test_unknown_path_and_method(api: Api) -> None:
    missing = api.get("/api/v1/nothing")
    assert missing.status_code == 404
    assert "error" in missing.json()
    assert api.client.post("/api/v1/sensors").status_code == 405


def test_request_body_size_is_bounded(api: Api) -> None:
    response = api.client.request("GET", "/api/v1/sensors", content=b"x" * 100_000)
    assert response.status_code == 413
    assert "error" in response.json()


def test_security_headers_and_static_assets(api: Api) -> None:
    page = api.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "<title>tidegate</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for asset in ("/static/dashboard.js", "/static/dashboard.css", "/favicon.svg"):
        response = api.get(asset)
        assert response.status_code == 200, asset
        assert (
            api.get(asset, headers={"if-none-match": response.headers["etag"]}).status_code == 304
        )
    docs = api.get("/docs")
    assert docs.status_code == 200 and "docs.js" in docs.text
    document = api.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/readings/aggregate" in document["paths"]


# --- schemathesis -------------------------------------------------------------------


OPERATIONS = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/live",
    "/api/v1/stats",
    "/api/v1/gateways",
    "/api/v1/sensors",
    "/api/v1/readings",
    "/api/v1/readings/aggregate",
]


class BearerAuth:
    """Tells schemathesis how we authenticate, so its auth checks can also try without."""

    def get(self, case: Any, context: Any) -> str:
        return TOKEN

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@pytest.fixture(scope="module")
def api_schema(api: Api) -> Any:
    loaded = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    loaded.auth()(BearerAuth)
    return loaded


def test_schema_lists_every_operation(api_schema: Any) -> None:
    assert sorted(api_schema) == sorted(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("path", OPERATIONS)
def test_openapi_conformance_and_no_server_errors(
    api_schema: Any, path: str, mode: GenerationMode
) -> None:
    """Generated requests (valid and invalid) for every operation: never a 5xx, and
    every response matches the served schema. Driven through Hypothesis directly (the
    schemathesis pytest plugin's lazy fixtures do not work with pytest 9), bounded to a
    few dozen examples per operation and mode."""
    if path == "/healthz" and mode is GenerationMode.NEGATIVE:
        pytest.skip("no parameters and no auth: nothing to make invalid")
    operation = api_schema[path]["GET"]

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=20,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        # Cross-parameter rules (from before to, api.max_range, bucket counts, a cursor
        # from a previous page) are beyond JSON Schema: a schema-valid request may
        # rightly get a 400, so "positive data acceptance" is not checked.
        case.call_and_validate(excluded_checks=[positive_data_acceptance], timeout=30)

    run()


# --- auth ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A gateway whose token comes from a file."""
    tmp = tmp_path_factory.mktemp("secured")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    gateway = start_gateway(tmp, broker, "secured", api=f'token_file = "{token_file}"')
    port, db = gateway.api_port, gateway.db
    assert port is not None and db is not None
    try:
        running = Api(gateway, port, 0, db)
        yield running
        running.client.close()
    finally:
        assert gateway.terminate() == 0, gateway.log_text()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": f"Bearer {TOKEN}x"},
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": TOKEN},
    ],
    ids=["missing", "wrong", "longer", "basic", "no-scheme"],
)
@pytest.mark.parametrize(
    "path", ["/api/v1/sensors", "/api/v1/readings?format=csv", "/metrics", "/readyz"]
)
def test_missing_or_wrong_token_is_401_and_leaks_nothing(
    secured: Api, path: str, headers: dict[str, str]
) -> None:
    response = secured.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}
    assert response.headers["www-authenticate"] == "Bearer"


def test_right_token_is_accepted_and_open_paths_stay_open(secured: Api) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert secured.get("/api/v1/sensors", headers=auth).status_code == 200
    assert secured.get("/metrics", headers=auth).status_code == 200
    assert secured.get("/api/v1/sensors", headers={"authorization": f"bearer {TOKEN}"}).is_success
    for path in ("/healthz", "/", "/static/dashboard.js", "/openapi.json", "/docs"):
        assert secured.get(path).status_code == 200, path


def test_exposed_bind_without_token_refuses_to_start(tmp_path: Path, broker: Broker) -> None:
    """Nothing is bound: the config check fails before any socket opens."""
    cfg = write_config(
        tmp_path / "exposed.toml",
        broker.port,
        tmp_path / "exposed.db",
        extra='[api]\nhost = "0.0.0.0"\nport = 0\n',
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "api.token" in result.stderr
    assert "allow_insecure_bind" in result.stderr
    assert not (tmp_path / "exposed.db").exists()


def test_loopback_without_token_is_open_and_rate_limited(
    broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("limited")
    gateway = start_gateway(
        tmp, broker, "limited", api="rate_limit_per_s = 0.2\nrate_limit_burst = 5"
    )
    port = gateway.api_port
    try:
        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=10) as client:
            # Loopback without a token configured: open.
            codes = [client.get("/api/v1/live").status_code for _ in range(12)]
            assert codes[:5] == [200] * 5
            assert 429 in codes
            limited = client.get("/api/v1/live")
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
            assert client.get("/healthz").status_code == 200  # never rate limited
    finally:
        assert gateway.terminate() == 0, gateway.log_text()


def test_readiness_reports_a_lost_broker(fresh_broker: Broker, tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, fresh_broker, "ready", api="")
    port = gateway.api_port
    try:
        url = f"http://{HOST}:{port}/readyz"
        assert httpx.get(url, timeout=5).status_code == 200
        fresh_broker.stop()
        wait_for(lambda: httpx.get(url, timeout=5).status_code == 503, 20, what="readyz 503")
        body = httpx.get(url, timeout=5).json()
        assert body["status"] == "not ready"
        assert "broker not connected" in body["reasons"]
        assert httpx.get(f"http://{HOST}:{port}/healthz", timeout=5).status_code == 200
        fresh_broker.start()
        wait_for(lambda: httpx.get(url, timeout=5).status_code == 200, 30, what="readyz 200")
    finally:
        assert gateway.terminate() == 0, gateway.log_text()
