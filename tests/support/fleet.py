"""A small fleet in a central store, for the tests of the fleet view (Grafana's SQL, the
read-only role, the hub): three gateways (two edges, one direct group) × two sensors (one
with a quote in its id) × two metrics, a reading every 10 s over three hours across a day
boundary (two daily partitions).

"Maintenance" (this module's own SQL) has rolled everything up before
:data:`ROLLED_UP_BEFORE`; later minutes are pending. Then a late reading lands in an
already rolled-up minute: its minute and hour rollups are stale and marked pending, so a
reader must answer them from the raw readings (the central read rule, SCHEMA.md).

The schema belongs to :data:`OWNER` (the role gateways write as); :func:`create_reader`
runs ``deploy/postgresql/reader-role.sql`` as the documentation says.
"""

from __future__ import annotations

import math
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
READER_ROLE_SQL = ROOT / "deploy" / "postgresql" / "reader-role.sql"
OWNER = "tidegate"
READER = "tidegate_reader"

START = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)
END = START + timedelta(hours=3)
STEP_MS = 10_000
GATEWAYS = {"site-a": "edge", "site-b": "edge", "site-c": "direct"}
SENSORS = ("probe-1", "o'brien")
METRICS = {"temperature": "°C", "humidity": "%"}
ROLLED_UP_BEFORE = START + timedelta(hours=2, minutes=40)
LATE_AT = START + timedelta(minutes=30, seconds=5)
LATE_VALUE = 1000.0

ROLLUP_1M = """
INSERT INTO tidegate.rollup_1m (series_id, bucket, vmin, vmax, vsum, n, vlast, last_ts)
SELECT series_id, date_bin('1 minute', ts, timestamptz 'epoch'), min(value), max(value),
       sum(value), count(*), (array_agg(value ORDER BY ts DESC))[1], max(ts)
FROM tidegate.readings_data WHERE ts < $1 GROUP BY 1, 2
"""
ROLLUP_1H = """
INSERT INTO tidegate.rollup_1h (series_id, bucket, vmin, vmax, vsum, n, vlast, last_ts)
SELECT series_id, date_bin('1 hour', bucket, timestamptz 'epoch'), min(vmin), max(vmax),
       sum(vsum), sum(n), (array_agg(vlast ORDER BY last_ts DESC))[1], max(last_ts)
FROM tidegate.rollup_1m GROUP BY 1, 2
"""

Key = tuple[str, str, str]  # gateway, sensor, metric
Rows = dict[Key, list[tuple[int, float]]]  # (ts_ms, value), ascending


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def signal(g: int, s: int, m: int, ts_ms: int) -> float:
    return round(10 * g + 3 * s + m + math.sin(ts_ms / 600_000 + g + s) * 5, 4)


def fleet_rows() -> Rows:
    rows: Rows = {}
    for g, gateway in enumerate(GATEWAYS):
        for s, sensor in enumerate(SENSORS):
            for m, metric in enumerate(METRICS):
                rows[(gateway, sensor, metric)] = [
                    (t, signal(g, s, m, t)) for t in range(ms(START), ms(END), STEP_MS)
                ]
    return rows


async def load(conn: asyncpg.Connection, rows: Rows) -> dict[Key, int]:
    """The schema (``migrate``), the readings through the ingest path every writer uses
    (``CentralSeries.ids``, ``copy_readings``: partitions, COPY, pending marks), the
    rollups up to ROLLED_UP_BEFORE and then the late reading; gateway positions and dead
    letters."""
    from gateway.storage.postgresql.ingest import CentralSeries, SeriesKey, copy_readings
    from gateway.storage.postgresql.schema import migrate

    await migrate(conn)
    central = CentralSeries()
    ids: dict[Key, int] = {}
    for gateway in GATEWAYS:
        keys = {k: SeriesKey(k[1], k[2], METRICS[k[2]]) for k in rows if k[0] == gateway}
        found = await central.ids(conn, gateway, keys.values())
        ids.update({k: found[key] for k, key in keys.items()})
    await copy_readings(conn, [(ids[k], t, v) for k, series in rows.items() for t, v in series])
    await conn.execute(ROLLUP_1M, ROLLED_UP_BEFORE)
    await conn.execute(ROLLUP_1H)
    await conn.execute("DELETE FROM tidegate.rollup_pending WHERE bucket < $1", ROLLED_UP_BEFORE)
    late = ("site-b", SENSORS[1], "temperature")
    rows[late].append((ms(LATE_AT), LATE_VALUE))
    rows[late].sort()
    await copy_readings(conn, [(ids[late], ms(LATE_AT), LATE_VALUE)])

    now = datetime.now(UTC)
    await conn.executemany(
        "INSERT INTO tidegate.gateways (gateway_id, mode, position, forwarded, backlog,"
        " oldest_pending, last_forward) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            (
                "site-a",
                "edge",
                77,
                4321,
                12,
                now - timedelta(seconds=30),
                now - timedelta(seconds=2),
            ),
            ("site-b", "edge", 5, 999, 4000, now - timedelta(hours=2), now - timedelta(hours=1)),
            ("site-c", "direct", 0, 0, 0, None, None),
        ],
    )
    await conn.executemany(
        "INSERT INTO tidegate.dead_letters (gateway_id, received_at, subscription, topic,"
        " payload, payload_size, reason) VALUES ($1, $2, 'sensors', $3, $4, $5, $6)",
        [
            ("site-a", START + timedelta(minutes=5), "sensors/x/t", b"{", 1, "not JSON"),
            ("site-a", START + timedelta(minutes=50), "sensors/y/t", b"[]", 2, "no readings"),
            ("site-b", START - timedelta(days=1), "sensors/z/t", b"?", 1, "not JSON"),
            ("site-b", START + timedelta(hours=2), "sensors/z/t", b"???", 3, "not JSON"),
        ],
    )
    return ids


def as_role(url: str, role: str) -> str:
    """``url`` with ``role`` as its user (the test server trusts loopback)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


async def create_owner(admin_url: str) -> str:
    """The role gateways write as, allowed to create the schema; its URL."""
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", OWNER)
        if not exists:
            await conn.execute(f"CREATE ROLE {OWNER} LOGIN")
        database = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'GRANT CREATE ON DATABASE "{database}" TO {OWNER}')
    finally:
        await conn.close()
    return as_role(admin_url, OWNER)


def create_reader(admin_url: str) -> str:
    """Run deploy/postgresql/reader-role.sql with psql, as docs/fleet.md says; the
    reader's URL."""
    done = subprocess.run(
        ["psql", admin_url, "-X", "-q", "-v", f"reader={READER}", "-v", f"owner={OWNER}",
         "-f", str(READER_ROLE_SQL)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return as_role(admin_url, READER)


class Hub:
    """``tidegate serve --store URL`` as a subprocess on a free loopback port, with a
    config of its own (``api`` lines for its ``[api]`` section); ``url`` once it answers."""

    def __init__(self, tmp: Path, store_url: str, api: str = "", name: str = "hub") -> None:
        from tests.support import HOST, free_port

        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.config = tmp / f"{name}.toml"
        self.config.write_text(f'[log]\nlevel = "INFO"\n\n[api]\nport = {self.port}\n{api}\n')
        self.log_path = tmp / f"{name}.log"
        self.store_url = store_url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Hub:
        import os
        import sys

        from tests.support import api_answers, wait_for

        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
        env["TIDEGATE_STORE"] = self.store_url
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"tidegate serve exited {self.proc.returncode}:\n{self.log()}")
            return api_answers(self.port)

        wait_for(up, timeout, what="tidegate serve to answer /healthz")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def __enter__(self) -> Hub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


async def copy_file_to_central(conn: asyncpg.Connection, db: Path, gateway_id: str) -> None:
    """Everything of an edge's SQLite file — series, readings, dead letters — into the
    central store as ``gateway_id``, through the ingest path every writer uses
    (``migrate``, ``CentralSeries.ids``, ``copy_readings``)."""
    import sqlite3

    from gateway.storage.postgresql.ingest import CentralSeries, SeriesKey, copy_readings
    from gateway.storage.postgresql.schema import migrate

    await migrate(conn)
    edge = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        series = {
            sid: SeriesKey(sensor, metric, unit, tags)
            for sid, sensor, metric, unit, tags in edge.execute(
                "SELECT id, sensor_id, metric, unit, tags FROM series"
            )
        }
        readings = edge.execute("SELECT series_id, ts, value FROM readings").fetchall()
        letters = edge.execute(
            "SELECT received_at, subscription, topic, payload, payload_size, reason"
            " FROM dead_letters ORDER BY id"
        ).fetchall()
    finally:
        edge.close()
    async with conn.transaction():
        ids = await CentralSeries().ids(conn, gateway_id, series.values())
        await copy_readings(conn, [(ids[series[sid]], ts, value) for sid, ts, value in readings])
        await conn.executemany(
            "INSERT INTO tidegate.dead_letters (gateway_id, received_at, subscription, topic,"
            " payload, payload_size, reason) VALUES ($1, timestamptz 'epoch' + $2::bigint"
            " * interval '1 millisecond', $3, $4, $5, $6, $7)",
            [(gateway_id, *letter) for letter in letters],
        )


SITES = {"harbour": "edge", "orchard": "edge", "plant-direct": "direct"}
STOPPED_SITE = "orchard"
"""Stopped forwarding 25 minutes ago (its sensors go stale, its header is highlighted)."""


async def live_sites(conn: asyncpg.Connection, now_ms: int, sensors: int = 4) -> int:
    """Three simulated sites up to ``now_ms`` through the ingest path: the last two hours
    of readings every 30 s of ``sensors`` sensors × (temperature, humidity) each (signal
    models of the simulator), the forward positions of the two edges (one stopped 25
    minutes ago with a backlog) and a direct-mode group. Returns readings written."""
    import random

    from gateway.storage.postgresql.ingest import CentralSeries, SeriesKey, copy_readings
    from gateway.storage.postgresql.schema import migrate
    from simulators import signals

    await migrate(conn)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    written = 0
    central = CentralSeries()
    for g, (site, mode) in enumerate(SITES.items()):
        stop = now_ms - 25 * 60_000 if site == STOPPED_SITE else now_ms
        names = [f"{site}-{kind}" for kind in ("greenhouse", "cellar", "office", "roof")][:sensors]
        rng = random.Random(g)
        noise = random.Random(100 + g)
        fleet = [(name, signals.build(("temperature", "humidity"), rng)) for name in names]
        keys = {
            (name, metric): SeriesKey(name, metric, signals.UNITS[metric])
            for name, _models in fleet
            for metric in ("temperature", "humidity")
        }
        async with conn.transaction():
            ids = await central.ids(conn, site, keys.values())
            rows = []
            for step in range(240, -1, -1):
                ts = now_ms - step * 30_000
                if ts > stop:
                    continue
                for name, models in fleet:
                    for metric, model in zip(("temperature", "humidity"), models, strict=True):
                        value = round(model.next(ts / 1000, noise), 2)
                        rows.append((ids[keys[(name, metric)]], ts, value))
            written += await copy_readings(conn, rows)
            last = epoch + timedelta(milliseconds=stop)
            await conn.execute(
                "INSERT INTO tidegate.gateways (gateway_id, mode, position, forwarded, backlog,"
                " oldest_pending, last_forward) VALUES ($1, $2, $3, $3, $4, $5, $6)",
                site,
                mode,
                len(rows) if mode == "edge" else 0,
                3_000 if site == STOPPED_SITE else 0,
                last if site == STOPPED_SITE else None,
                last if mode == "edge" else None,
            )
    return written
