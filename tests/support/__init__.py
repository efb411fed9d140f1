"""Test helpers: a private Mosquitto on a free loopback port, a gateway subprocess,
and small MQTT/SQLite utilities. Only loopback addresses; every wait is bounded."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho

from simulators.broker import LOOPBACK as HOST
from simulators.broker import PrivateBroker, find_mosquitto
from simulators.broker import free_port as free_port  # re-exported for tests
from simulators.errors import SimError

MOSQUITTO = find_mosquitto() or "/usr/sbin/mosquitto"


def wait_for(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "condition"
) -> None:
    """Poll ``predicate`` until true; raise AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Broker(PrivateBroker):
    """A private Mosquitto with persistence in ``workdir`` (the simulator's
    :class:`PrivateBroker`, saving every second); can be stopped and restarted on the
    same port — sessions and queued messages survive a clean restart."""

    def config_text(self) -> str:
        return super().config_text().replace("autosave_interval 5\n", "autosave_interval 1\n")

    def start(self, timeout: float = 10.0) -> None:
        try:
            super().start(timeout)
        except SimError as exc:
            raise AssertionError(str(exc)) from None

    def __enter__(self) -> Broker:
        self.start()
        return self


def write_config(
    path: Path,
    broker_port: int,
    db: Path,
    client_id: str = "tidegate-test",
    extra: str = "",
    pipeline: str = "",
) -> Path:
    """A gateway config for tests (two subscriptions under ``sensors/``); ``pipeline``
    adds lines to ``[pipeline]``, ``extra`` appends whole sections. Unless ``extra`` has
    an ``[api]`` section, the HTTP API listens on a free port (``port = 0``), so
    gateways running side by side never fight over 8080."""
    if "[api]" not in extra:
        extra += "\n[api]\nport = 0\n"
    path.write_text(
        f"""
[mqtt]
host = "{HOST}"
port = {broker_port}
client_id = "{client_id}"
keepalive = 10
reconnect_min_s = 0.1
reconnect_max_s = 1.0

[[subscriptions]]
topic = "sensors/+"
topic_template = "sensors/{{sensor_id}}"

[[subscriptions]]
topic = "sensors/+/+"
topic_template = "sensors/{{sensor_id}}/{{metric}}"

[pipeline]
shutdown_timeout_s = 20
{pipeline}

[storage]
path = "{db}"

{extra}
"""
    )
    return path


class GatewayProcess:
    """``python -m gateway run`` in a subprocess, output captured to a log file. A config
    without an ``[api]`` section gets its HTTP API on a free port (never 8080)."""

    def __init__(
        self,
        config: Path,
        log: Path,
        env: dict[str, str] | None = None,
        db: Path | None = None,
        api_port: int | None = None,
    ) -> None:
        self.config = config
        self.log_path = log
        self.db = db
        """The database file (when known: :func:`start_gateway` sets it)."""
        self.api_port = api_port
        """The HTTP API's port (when :func:`start_gateway` chose it)."""
        self.env = {**os.environ, **(env or {})}
        with contextlib.suppress(OSError):
            if "[api]" not in Path(config).read_text():
                self.env.setdefault("TIDEGATE_API__PORT", "0")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_connected: bool = True) -> GatewayProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        offset = self.log_path.stat().st_size  # only this run's lines count as "ready"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        if wait_connected:
            wait_for(
                lambda: "] ready: " in self.log_text()[offset:] or self.proc.poll() is not None,
                20,
                what="gateway connected",
            )
            assert self.proc.poll() is None, f"gateway exited: {self.log_text()}"
        return self

    @property
    def url(self) -> str:
        """The HTTP API's base URL (needs :attr:`api_port`)."""
        assert self.api_port is not None, "start the gateway with api=... to know its port"
        return f"http://{HOST}:{self.api_port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            self._log.close()


def start_gateway(
    tmp: Path,
    broker: Broker,
    name: str = "gw",
    *,
    api: str | None = None,
    extra: str = "",
    env: dict[str, str] | None = None,
    client_id: str | None = None,
) -> GatewayProcess:
    """The one way tests start a gateway subprocess: ``<name>.toml`` (:func:`write_config`
    with ``extra``), ``<name>.db``, ``<name>.log`` in ``tmp``, client id
    ``tidegate-<name>`` unless given; returns once it is connected to ``broker``.

    With ``api`` (lines for its ``[api]`` section, ``""`` for the defaults) the HTTP API
    listens on a free port (``.api_port``, ``.url``) and the call also waits until it
    answers ``/healthz``; without, the API still runs on a port of its own choosing."""
    db = tmp / f"{name}.db"
    port = None
    if api is not None:
        port = free_port()
        extra = f"{extra}\n[api]\nport = {port}\n{api}\n"
    config = write_config(
        tmp / f"{name}.toml",
        broker.port,
        db,
        client_id=client_id or f"tidegate-{name}",
        extra=extra,
    )
    gateway = GatewayProcess(config, tmp / f"{name}.log", env=env, db=db, api_port=port)
    gateway.start()
    if port is not None:
        wait_for(lambda: api_answers(port), 20, what="the HTTP API")
    return gateway


def api_answers(port: int) -> bool:
    """Whether an HTTP API on ``port`` answers ``/healthz`` with 200."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def publish_many(
    port: int,
    messages: list[tuple[str, bytes]],
    qos: int = 1,
    client_id: str = "test-pub",
    timeout: float = 60,
) -> None:
    """Publish ``messages`` with paho and wait until the broker acknowledged all."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.connect(HOST, port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), "publish not acknowledged in time"
    finally:
        client.disconnect()
        client.loop_stop()


def db_rows(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def count(db: Path, table: str = "readings") -> int:
    rows = db_rows(db, f"SELECT count(*) FROM {table}")
    return int(rows[0][0]) if rows else 0


def iter_json_messages(
    n: int, sensors: int = 10, start_ms: int | None = None, prefix: str = "sensors"
) -> Iterator[tuple[str, bytes]]:
    """``n`` single-reading JSON messages with unique (sensor, ts) keys."""
    import json

    base = start_ms or (int(time.time() * 1000) - 3_600_000)
    for i in range(n):
        sensor = f"s{i % sensors}"
        yield (
            f"{prefix}/{sensor}/temperature",
            json.dumps({"value": i * 0.5, "ts": base + i}).encode(),
        )
