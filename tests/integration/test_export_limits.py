"""CSV exports against a real gateway under load: a client that stops reading holds no
read snapshot (the WAL stays bounded), the export slots cannot be overrun, and an
export stops at its deadline."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import paho.mqtt.client as paho
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

pytestmark = [pytest.mark.integration, pytest.mark.isolated]

BATCH = 100  # readings per message
SENSORS = 50


def batch(i: int, base_ms: int) -> bytes:
    return json.dumps(
        [
            {
                "sensor_id": f"s{(i * BATCH + j) % SENSORS}",
                "metric": "t",
                "value": j,
                "ts": base_ms + i * BATCH + j,
            }
            for j in range(BATCH)
        ]
    ).encode()


class Load:
    """Publishes ``rate`` batched messages a second (QoS 0) on a thread until stopped."""

    def __init__(self, port: int, rate: float, base_ms: int, first: int) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="export-load")
        self.client.connect(HOST, port)
        self.client.loop_start()
        self.rate = rate
        self.base_ms = base_ms
        self.next = first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        sent = 0
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * self.rate)
            while sent < due:
                self.client.publish("sensors/load", batch(self.next, self.base_ms), qos=0)
                self.next += 1
                sent += 1
            time.sleep(0.01)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.loop_stop()
        self.client.disconnect()


def wal_bytes(db: Path) -> int:
    try:
        return os.path.getsize(f"{db}-wal")
    except OSError:
        return 0


def watch_wal(db: Path, seconds: float) -> list[int]:
    sizes = []
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        sizes.append(wal_bytes(db))
        time.sleep(0.5)
    return sizes


class Loaded(NamedTuple):
    url: str
    db: Path
    base_ms: int
    first: int
    """The next message number to publish."""
    gateway: GatewayProcess


@pytest.fixture(scope="module")
def loaded(
    broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, int, int]]:
    """A gateway holding 300,000 readings (exports: at most 2 at once, 10 s each)."""
    tmp = tmp_path_factory.mktemp("export")
    port = free_port()
    db = tmp / "export.db"
    cfg = write_config(
        tmp / "export.toml",
        broker.port,
        db,
        client_id="tidegate-export",
        extra=f"[api]\nport = {port}\nmax_exports = 2\nexport_timeout_s = 10\n",
    )
    gateway = GatewayProcess(cfg, tmp / "export.log").start()
    base_ms = int(time.time() * 1000) - 3_000_000
    messages = 3000
    publish_many(
        broker.port,
        [("sensors/load", batch(i, base_ms)) for i in range(messages)],
        client_id="export-fill",
    )
    wait_for(lambda: count(db) >= messages * BATCH, 120, what="300,000 readings stored")
    try:
        yield Loaded(f"http://{HOST}:{port}", db, base_ms, messages, gateway)
    finally:
        assert gateway.terminate() == 0, gateway.log_text()


def stalled_export(url: str) -> socket.socket:
    """Start a CSV export of every reading and stop reading after the first bytes."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET /api/v1/readings?from=2h&format=csv HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    )
    head = sock.recv(1024)
    assert head.startswith(b"HTTP/1.1 200 "), head[:200]
    return sock


def test_a_stalled_export_under_load_leaves_the_wal_bounded(loaded: Loaded, broker: Broker) -> None:
    """5,000 readings/s arrive; first 20 s with nobody reading (after 10 s to settle),
    then 60 s with an export client that stopped reading. The WAL must stay within what normal checkpoints
    leave, not grow with everything written meanwhile."""
    url, db, base_ms, first, _gateway = loaded
    with Load(broker.port, rate=50, base_ms=base_ms, first=first) as load:
        time.sleep(10)  # let maintenance settle after the fill
        baseline = watch_wal(db, 20)
        sock = stalled_export(url)
        try:
            stalled = watch_wal(db, 60)
        finally:
            sock.close()
        written = (load.next - first) * BATCH
    print(
        f"WAL under load: baseline max {max(baseline) / 1e6:.1f} MB, with a stalled export"
        f" max {max(stalled) / 1e6:.1f} MB (60 s), {written} readings published meanwhile"
    )
    print([round(s / 1e6, 1) for s in baseline])
    print([round(s / 1e6, 1) for s in stalled])
    assert max(stalled) <= max(2.5 * max(baseline), 24_000_000), (baseline, stalled)


def test_export_slots_cannot_be_overrun(loaded: Loaded) -> None:
    """The finding: 8 simultaneous exports all got 200 with max_exports = 2."""
    url = loaded.url
    socks = []
    try:
        for _ in range(8):
            host, port = url.removeprefix("http://").split(":")
            sock = socket.create_connection((host, int(port)), timeout=30)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            socks.append(sock)
        for sock in socks:  # all eight requests in flight before any answer
            sock.sendall(
                f"GET /api/v1/readings?from=2h&format=csv HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
            )
        statuses = [int(sock.recv(64).split(b" ")[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert sorted(statuses) == [200, 200] + [429] * 6, statuses
    # Slots come back once those exports are gone.
    wait_for(lambda: _export_status(url) == 200, 30, what="a free export slot")


def _export_status(url: str) -> int:
    with httpx.stream(
        "GET",
        f"{url}/api/v1/readings",
        params={"from": "2h", "format": "csv", "limit": 10},
        timeout=30,
    ) as r:
        r.read()
        return r.status_code


def test_an_export_stops_at_its_deadline(loaded: Loaded) -> None:
    """A client that keeps reading, slowly (about 640 KB/s), never trips the send
    timeout; the export deadline (export_timeout_s = 10 here) cuts it off, and the
    client sees an incomplete transfer rather than a complete-looking file."""
    url = loaded.url
    started = time.monotonic()
    params = {"from": "2h", "format": "csv"}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("GET", f"{url}/api/v1/readings", params=params, timeout=60) as response,
    ):
        assert response.status_code == 200
        for _chunk in response.iter_raw(65_536):
            time.sleep(0.1)
            assert time.monotonic() - started < 90, "not cut off"
    # Cut at 10 s on the server; what the kernel had buffered still drains to the client.
    assert 9 <= time.monotonic() - started <= 60
    log = loaded.gateway.log_text()
    assert "export stopped after 10s (api.export_timeout_s)" in log
    assert "Traceback" not in log
    assert "without completing response" not in log  # cut on purpose: not an error


def test_an_aggregate_export_is_the_json_answer_series_by_series(loaded: Loaded) -> None:
    """Aggregate exports query one series at a time (no snapshot across the export):
    the rows are exactly the JSON answer's, in the same order."""
    params = {"from": "2h", "bucket": "10m", "agg": "count,max"}
    with httpx.Client(base_url=loaded.url, timeout=60) as client:
        as_json = client.get("/api/v1/readings/aggregate", params=params).json()
        as_csv = client.get("/api/v1/readings/aggregate", params=params | {"format": "csv"}).text
    expected = [
        [
            b["start"],
            str(b["start_ms"]),
            s["sensor_id"],
            s["metric"],
            str(b["count"]),
            str(float(b["max"])),
            b["tier"],
            s["gateway"],
        ]
        for s in as_json["series"]
        for b in s["buckets"]
    ]
    header, *rows = list(csv.reader(io.StringIO(as_csv)))
    assert header == [
        "start", "start_ms", "sensor_id", "metric", "count", "max", "tier", "gateway"
    ]  # fmt: skip
    assert len({r[2] for r in rows}) == SENSORS
    assert rows == expected
