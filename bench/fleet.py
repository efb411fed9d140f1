"""``python -m bench.fleet [--quick]``: the fleet view's read targets on a central store.

A private PostgreSQL (``tests/support/postgres.py``: initdb into a temp dir, a free
loopback port) with the central schema (``migrate()``) holding ``gateways`` ×
``series`` series (sensor ``s0000``…, metric ``temperature``) with ``per_series``
readings each, spanning a bit over a day up to the last whole minute — 10 gateways ×
1,000 series × 1,000 readings = 10 M in the full plan. They are loaded through the
ingest path every writer uses (``CentralSeries.ids`` and ``copy_readings``: COPY into a
staging table, ``INSERT … ON CONFLICT DO NOTHING``, pending marks), and rolled up
except the newest :data:`PENDING_MINUTES` minutes, as maintenance leaves a live fleet.

Timed as the read-only role (``deploy/postgresql/reader-role.sql``) on a warm cache, in
interleaved rounds (every form of every read once per round, :func:`reads`) so that the
load of this shared machine hits all of them alike; medians of the rounds after the
first, the first reported too:

* **edge**: the same reads on an edge's SQLite file of as many readings and series
  (``bench/querydb.py``'s database), the baseline: the targets are "as on the edge";
* **bare**: the newest reading of every series in one lateral query, and the series rows
  alone, with plain asyncpg — the floor under the reader;
* **reader**: the central :class:`~gateway.storage.base.ReadStore` (what the CLI's
  ``--store`` and ``tidegate serve`` call): hourly averages of one sensor over the last
  day (≤ 50 ms), the latest value of 10,000 sensors (≤ 100 ms), one sensor's raw last
  15 minutes (≤ 20 ms);
* **http**: the same through ``tidegate serve --store`` (a subprocess), and the
  dashboard's first load in hub mode (≤ 1 s): the calls the page makes before its
  first charts are drawn, in its order and concurrency;
* **grafana**: each SQL panel of ``deploy/grafana`` over the last 24 h (no target).

A table on stdout, JSON in ``bench/results/fleet-<plan>.json`` (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import machine

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_JSON = ROOT / "deploy" / "grafana" / "dashboards" / "tidegate-fleet.json"
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
PENDING_MINUTES = 2
METRIC = "temperature"
CHART_PAGE = 12  # gateway/api/static/dashboard.js: charts drawn on the first load
FLEET_PAGE = 500  # and the sensors page of the first gateway's group


@dataclass(frozen=True)
class Plan:
    name: str
    gateways: int
    series: int  # per gateway
    per_series: int
    repeat: int

    @property
    def readings(self) -> int:
        return self.gateways * self.series * self.per_series

    @property
    def step_ms(self) -> int:
        """Readings of a series span a day and an hour."""
        return (DAY_MS + HOUR_MS) // self.per_series


PLANS = {
    "full": Plan("full", gateways=10, series=1000, per_series=1000, repeat=11),
    "quick": Plan("quick", gateways=10, series=1000, per_series=100, repeat=5),
    "tiny": Plan("tiny", gateways=3, series=20, per_series=50, repeat=2),
}


@dataclass
class Timing:
    part: str
    name: str
    rows: int
    first_ms: float
    median_ms: float
    target_ms: float = 0.0
    note: str = ""
    all_ms: list[float] = field(default_factory=list)
    kind: str = ""
    """What it measures, to set it beside the edge's figure: hourly, hourly-raw, latest,
    recent."""

    @property
    def met(self) -> bool | None:
        return None if not self.target_ms else self.median_ms <= self.target_ms


def _log(text: str) -> None:
    sys.stderr.write(f"[bench.fleet {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def gateway_name(g: int) -> str:
    return f"site-{g:02d}"


def sensor_name(s: int) -> str:
    return f"s{s:04d}"


async def timed(
    part: str,
    name: str,
    fn: Callable[[], Awaitable[int]],
    repeat: int,
    target_ms: float = 0.0,
    note: str = "",
    kind: str = "",
) -> Timing:
    timings: list[float] = []
    rows = 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = await fn()
        timings.append((time.perf_counter() - started) * 1000)
    median = statistics.median(timings[1:] or timings)
    result = Timing(part, name, rows, timings[0], median, target_ms, note, timings, kind)
    verdict = "" if result.met is None else (" ok" if result.met else " MISSED")
    _log(
        f"{part:8} {name}: {rows} rows, first {timings[0]:.1f} ms, median {median:.1f} ms{verdict}"
    )
    return result


# --- the central store ---------------------------------------------------------------------


async def load(admin_url: str, owner_url: str, plan: Plan, end_ms: int) -> dict[str, Any]:
    """Schema, series and readings through the ingest path, then the rollups; returns
    load figures."""
    import asyncpg

    from gateway.storage.postgresql.ingest import CentralSeries, SeriesKey, copy_readings
    from gateway.storage.postgresql.schema import migrate

    conn = await asyncpg.connect(owner_url)
    try:
        await migrate(conn)
        series = CentralSeries()
        start_ms = end_ms - plan.per_series * plan.step_ms
        started = time.perf_counter()
        copied = 0
        for g in range(plan.gateways):
            keys = [SeriesKey(sensor_name(s), METRIC, "Cel") for s in range(plan.series)]
            ids = await series.ids(conn, gateway_name(g), keys)
            rows = [
                (
                    ids[key],
                    start_ms + k * plan.step_ms + s * 7 % plan.step_ms,  # not in lockstep
                    ((s + k + g) * 7919 % 10_000) / 100,
                )
                for s, key in enumerate(keys)
                for k in range(plan.per_series)
            ]
            rows.sort(key=lambda r: (r[1], r[0]))  # arrival order: by time, as forwarded
            for i in range(0, len(rows), 100_000):
                copied += await copy_readings(conn, rows[i : i + 100_000])
            _log(f"loaded {gateway_name(g)}: {copied:,} readings so far")
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        await roll_up(conn, end_ms - PENDING_MINUTES * MINUTE_MS)
        rollup_s = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE")
        # The bulk roll-up deleted a mark per reading at once: the table keeps its peak
        # size (hundreds of MB) and a seq scan of it costs 0.2 s. A live fleet's marks are
        # a minute or two of series; that steady state is what the reads should meet.
        await conn.execute("VACUUM (FULL, ANALYZE) tidegate.rollup_pending")
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        raw = await conn.fetchval(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
            " WHERE inhparent = 'tidegate.readings_data'::regclass"
        )
    finally:
        await conn.close()
    return {
        "readings": copied,
        "load_s": round(load_s, 1),
        "load_readings_per_s": round(copied / load_s),
        "rollup_s": round(rollup_s, 1),
        "database_bytes": size,
        "raw_bytes_per_reading": round(raw / copied, 1),
    }


async def roll_up(conn: Any, before_ms: int) -> None:
    """Maintenance's work up to ``before_ms``: the 1-minute and 1-hour rollups of every
    pending minute before it from raw, and its marks deleted (SCHEMA.md)."""
    before = "timestamptz 'epoch' + $1::bigint * interval '1 millisecond'"
    async with conn.transaction():
        await conn.execute(
            f"""
            INSERT INTO tidegate.rollup_1m (series_id, bucket, vmin, vmax, vsum, n, vlast, last_ts)
            SELECT r.series_id, date_bin('1 minute', r.ts, timestamptz 'epoch'), min(r.value),
                   max(r.value), sum(r.value), count(*),
                   (array_agg(r.value ORDER BY r.ts DESC))[1], max(r.ts)
            FROM tidegate.readings_data r
            WHERE r.ts < {before}
            GROUP BY 1, 2
            ON CONFLICT (series_id, bucket) DO UPDATE SET vmin = excluded.vmin,
                vmax = excluded.vmax, vsum = excluded.vsum, n = excluded.n,
                vlast = excluded.vlast, last_ts = excluded.last_ts""",
            before_ms,
        )
        await conn.execute(
            """
            INSERT INTO tidegate.rollup_1h (series_id, bucket, vmin, vmax, vsum, n, vlast, last_ts)
            SELECT series_id, date_bin('1 hour', bucket, timestamptz 'epoch'), min(vmin),
                   max(vmax), sum(vsum), sum(n), (array_agg(vlast ORDER BY last_ts DESC))[1],
                   max(last_ts)
            FROM tidegate.rollup_1m GROUP BY 1, 2
            ON CONFLICT (series_id, bucket) DO UPDATE SET vmin = excluded.vmin,
                vmax = excluded.vmax, vsum = excluded.vsum, n = excluded.n,
                vlast = excluded.vlast, last_ts = excluded.last_ts"""
        )
        await conn.execute(
            f"DELETE FROM tidegate.rollup_pending WHERE bucket < {before}", before_ms
        )


# --- reads ---------------------------------------------------------------------------------


class Hub:
    """``tidegate serve --store URL`` on a free loopback port."""

    def __init__(self, url: str, workdir: Path) -> None:
        from simulators.broker import free_port

        self.port = free_port("127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (workdir / "hub.log").open("wb")
        env = {**os.environ, "TIDEGATE_STORE": url, "TIDEGATE_LOG__LEVEL": "WARNING"}
        env.pop("TIDEGATE_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(self.port)],
            cwd=workdir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base, timeout=5) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"tidegate serve exited with {self.proc.returncode}")
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError("tidegate serve not ready in time")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


Case = tuple[str, str, str, float, Callable[[], Awaitable[int]]]
"""(part, name, kind, target ms, the call returning its row count)."""


async def reads(url: str, plan: Plan, end_ms: int, parts: set[str], workdir: Path) -> list[Timing]:
    """The target reads, each in every form asked for — the edge's SQLite file of as many
    readings (``bench/querydb.py``'s database, cached under bench/results/ and shared
    with ``make bench``'s query part), a bare asyncpg query, the central reader, the hub
    over HTTP — timed in interleaved rounds, so the machine's load (it is shared) hits
    every form alike and the ratios to the edge hold even when the absolute figures
    move."""
    import asyncpg

    from gateway.request import AggregateQuery, ReadingsQuery
    from gateway.storage.backends import central_read_store

    series_total = plan.gateways * plan.series
    gateway, sensor = gateway_name(plan.gateways // 2), sensor_name(plan.series // 2)
    cases: list[Case] = []
    closers: list[Callable[[], Awaitable[None]]] = []
    hub: Hub | None = None
    try:
        if "edge" in parts:
            cases += await edge_cases(plan, closers)
        if "reader" in parts:
            conn = await asyncpg.connect(url)
            closers.append(conn.close)

            async def bare_latest() -> int:
                return len(await conn.fetch(LATEST_SQL, series_total))

            async def bare_series() -> int:
                return len(await conn.fetch(SERIES_SQL, series_total))

            store, _shown = central_read_store(url)
            closers.append(store.close)

            def hourly_query(tier: str) -> AggregateQuery:
                return AggregateQuery(
                    sensor=sensor,
                    metric=METRIC,
                    since_ms=end_ms - DAY_MS,
                    until_ms=end_ms,
                    bucket_ms=HOUR_MS,
                    aggregates=("avg",),
                    gateway=gateway,
                    tier=tier,
                )

            async def hourly() -> int:
                return len(await store.aggregate(hourly_query("auto")))

            async def hourly_raw() -> int:
                return len(await store.aggregate(hourly_query("raw")))

            async def latest() -> int:
                return len(await store.latest(limit=series_total))

            async def recent() -> int:
                query = ReadingsQuery(
                    sensor=sensor,
                    metric=METRIC,
                    since_ms=end_ms - 15 * MINUTE_MS,
                    limit=0,
                    gateway=gateway,
                )
                return len(await store.readings(query))

            cases += [
                ("bare", f"latest of {series_total:,} series, one lateral query", "latest", 0, bare_latest),
                ("bare", f"the {series_total:,} series rows alone", "series", 0, bare_series),
                ("reader", "hourly averages, 1 sensor, last 24 h", "hourly", 50, hourly),
                ("reader", "same, tier=raw (no rollups)", "hourly-raw", 0, hourly_raw),
                ("reader", f"latest value of {series_total:,} sensors", "latest", 100, latest),
                ("reader", "raw readings, 1 sensor, last 15 min", "recent", 20, recent),
            ]  # fmt: skip
        if "http" in parts:
            hub = Hub(url, workdir)
            await hub.ready()
            cases += await http_cases(hub, plan, end_ms, closers)
        rounds: dict[int, list[float]] = {i: [] for i in range(len(cases))}
        rows: dict[int, int] = {}
        for round_ in range(plan.repeat):
            for i, (_part, _name, _kind, _target, call) in enumerate(cases):
                started = time.perf_counter()
                rows[i] = await call()
                rounds[i].append((time.perf_counter() - started) * 1000)
            _log(f"round {round_ + 1}/{plan.repeat} done")
        out = []
        for i, (part, name, kind, target, _call) in enumerate(cases):
            times = rounds[i]
            median = statistics.median(times[1:] or times)
            timing = Timing(part, name, rows[i], times[0], median, target, "", times, kind)
            verdict = "" if timing.met is None else (" ok" if timing.met else " MISSED")
            _log(f"{part:8} {name}: {rows[i]} rows, median {median:.1f} ms{verdict}")
            out.append(timing)
        return out
    finally:
        for close in reversed(closers):
            await close()
        if hub is not None:
            hub.close()


LATEST_SQL = """
SELECT s.id, s.gateway_id, s.sensor_id, s.metric, s.unit, s.tags, l.ts, l.value
FROM tidegate.series s
LEFT JOIN LATERAL (SELECT ts, value FROM tidegate.readings_data WHERE series_id = s.id
                   ORDER BY ts DESC LIMIT 1) AS l ON true
ORDER BY s.sensor_id COLLATE "C", s.metric COLLATE "C", s.id LIMIT $1
"""
SERIES_SQL = """
SELECT s.id, s.gateway_id, s.sensor_id, s.metric, s.unit, s.tags FROM tidegate.series s
ORDER BY s.sensor_id COLLATE "C", s.metric COLLATE "C", s.id LIMIT $1
"""


async def edge_cases(plan: Plan, closers: list[Callable[[], Awaitable[None]]]) -> list[Case]:
    """The edge's reads, as ``bench/querydb.py`` times them (its sensor, its end)."""
    import sqlite3

    from bench import querydb
    from gateway.request import AggregateQuery, ReadingsQuery
    from gateway.storage.sqlite.reader import SqliteReader

    path, generated = await asyncio.to_thread(querydb.ensure_database, RESULTS_DIR, plan.readings)
    if generated:
        _log(f"generated the edge database {path.name} in {generated:.0f} s")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        end_ms = int(conn.execute("SELECT end_ms FROM bench_meta").fetchone()[0])
    finally:
        conn.close()
    sensor = f"s{querydb.SERIES // 2:05d}"
    store = SqliteReader(path, threads=1, timeout_s=None)
    closers.append(store.close)

    async def hourly_raw() -> int:
        query = AggregateQuery(
            sensor=sensor,
            metric="temperature",
            since_ms=end_ms - DAY_MS,
            until_ms=end_ms,
            bucket_ms=HOUR_MS,
            aggregates=("avg",),
            tier="raw",
        )
        return len(await store.aggregate(query))

    async def latest() -> int:
        return len(await store.latest())

    async def recent() -> int:
        query = ReadingsQuery(
            sensor=sensor, metric="temperature", since_ms=end_ms - 15 * MINUTE_MS, limit=0
        )
        return len(await store.readings(query))

    n = querydb.SERIES
    return [
        ("edge", "hourly averages, tier=raw (SQLite)", "hourly-raw", 0, hourly_raw),
        ("edge", f"latest value of {n:,} sensors (SQLite)", "latest", 0, latest),
        ("edge", "raw readings, 1 sensor, last 15 min (SQLite)", "recent", 0, recent),
    ]


async def http_cases(
    hub: Hub, plan: Plan, end_ms: int, closers: list[Callable[[], Awaitable[None]]]
) -> list[Case]:
    import httpx

    gateway, sensor = gateway_name(plan.gateways // 2), sensor_name(plan.series // 2)
    series_total = plan.gateways * plan.series
    client = httpx.AsyncClient(
        base_url=hub.base, timeout=60, limits=httpx.Limits(max_connections=8)
    )
    closers.append(client.aclose)

    async def get(path: str, **params: str) -> Any:
        response = await client.get(path, params=params)
        response.raise_for_status()
        return response.json() if "json" in response.headers["content-type"] else None

    async def hourly() -> int:
        data = await get(
            "/api/v1/readings/aggregate",
            gateway=gateway,
            sensor=sensor,
            metric=METRIC,
            bucket="1h",
            agg="avg",
            **{"from": _iso(end_ms - DAY_MS), "to": _iso(end_ms)},
        )
        return sum(len(s["buckets"]) for s in data["series"])

    async def latest() -> int:
        rows, cursor = 0, None
        while True:
            params = {"limit": "10000"} | ({"cursor": cursor} if cursor else {})
            data = await get("/api/v1/sensors", **params)
            rows += sum(len(s["metrics"]) for s in data["sensors"])
            cursor = data.get("next_cursor")
            if not cursor:
                return rows

    async def recent() -> int:
        data = await get(
            "/api/v1/readings",
            gateway=gateway,
            sensor=sensor,
            metric=METRIC,
            **{"from": _iso(end_ms - 15 * MINUTE_MS)},
        )
        return len(data["readings"])

    async def first_load() -> int:
        """dashboard.js start() up to its first drawn fleet table and charts: the page and
        its files, /live, /gateways, the first gateway's sensors page, then a chart per
        series of it (at most CHART_PAGE, all at once) over the default hour. /stats,
        which the page asks beside /gateways without waiting for it (it fills one card),
        is timed on its own."""
        calls = 0
        for path in ("/", "/static/dashboard.js", "/static/dashboard.css"):
            await get(path)
            calls += 1
        await get("/api/v1/live")
        gateways = (await get("/api/v1/gateways"))["gateways"]
        first = gateways[0]["gateway"]
        sensors = await get("/api/v1/sensors", gateway=first, limit=str(FLEET_PAGE))
        charts = [(s["sensor_id"], m["metric"]) for s in sensors["sensors"] for m in s["metrics"]]
        hour_ago = _iso(int(time.time() * 1000) - HOUR_MS)
        await asyncio.gather(
            *(
                get(
                    "/api/v1/readings/aggregate",
                    gateway=first,
                    sensor=s,
                    metric=m,
                    bucket="1m",
                    agg="min,max,avg,count",
                    **{"from": hour_ago, "to": "now"},
                )
                for s, m in charts[:CHART_PAGE]
            )
        )
        return calls + 3 + len(charts[:CHART_PAGE])

    async def stats() -> int:
        # The hub caches totals for 10 s; a new client each time would not help: the
        # cache is the server's. Counted as the page sees it: cached or not.
        data = await get("/api/v1/stats")
        return int(data["database"]["readings"] > 0)

    return [
        ("http", "hourly averages, 1 sensor, last 24 h", "hourly", 50, hourly),
        ("http", f"latest value of {series_total:,} sensors (/sensors)", "latest", 100, latest),
        ("http", "raw readings, 1 sensor, last 15 min", "recent", 20, recent),
        ("http", f"dashboard first load, {series_total:,} series (API calls)", "load", 1000,
         first_load),
        ("http", "/api/v1/stats beside it (totals count every row; cached 10 s)", "stats", 0,
         stats),
    ]  # fmt: skip


async def grafana_panels(url: str, plan: Plan, end_ms: int) -> list[Timing]:
    """Each SQL panel of the Grafana dashboard over the last 24 h, as Grafana sends it
    (all gateways, one sensor, every metric), as the read-only role."""
    from datetime import UTC, datetime

    import asyncpg

    from tests.support import grafana

    board = json.loads(DASHBOARD_JSON.read_text())
    window = grafana.TimeRange(
        datetime.fromtimestamp((end_ms - DAY_MS) / 1000, UTC),
        datetime.fromtimestamp(end_ms / 1000, UTC),
    )
    variables: dict[str, grafana.Value] = {
        "gateway": [gateway_name(g) for g in range(plan.gateways)],
        "sensor": sensor_name(plan.series // 2),
        "metric": [METRIC],
    }
    conn = await asyncpg.connect(url)
    out = []
    try:
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if "rawSql" not in target:
                    continue
                sql = grafana.render(
                    target["rawSql"], variables, window, minimum_interval=panel.get("interval")
                )

                async def run(sql: str = sql) -> int:
                    return len(await conn.fetch(sql))

                out.append(await timed("grafana", panel["title"], run, max(3, plan.repeat // 2)))
    finally:
        await conn.close()
    return out


# --- the run ------------------------------------------------------------------------------


def render(data: dict[str, Any]) -> str:
    load = data["load"]
    lines = [
        f"fleet reads — plan {data['plan']}: {data['series']:,} series, {data['gateways']} gateways"
    ]
    if "readings" in load:
        lines.append(
            f"{load['readings']:,} readings loaded through ingest at"
            f" {load['load_readings_per_s']:,}/s ({load['load_s']} s), rollups {load['rollup_s']} s;"
            f" raw readings {load['raw_bytes_per_reading']} B/reading"
        )
    edge = {t["kind"]: t["median_ms"] for t in data["timings"] if t["part"] == "edge"}
    edge["hourly"] = edge.get("hourly-raw", 0.0)
    lines += [
        "",
        f"{'part':8} {'query':56} {'rows':>6} {'first ms':>9} {'median ms':>10}"
        f" {'× edge':>7} {'target':>7}",
    ]
    for t in data["timings"]:
        target = f"≤ {t['target_ms']:.0f}" if t["target_ms"] else ""
        flag = "" if not t["target_ms"] or t["median_ms"] <= t["target_ms"] else "  MISSED"
        base = edge.get(t["kind"]) if t["part"] != "edge" else None
        ratio = f"{t['median_ms'] / base:.1f}" if base else ""
        lines.append(
            f"{t['part']:8} {t['name'][:56]:56} {t['rows']:>6} {t['first_ms']:>9.1f}"
            f" {t['median_ms']:>10.1f} {ratio:>7} {target:>7}{flag}"
        )
    return "\n".join(lines) + "\n"


async def measure(
    reader_url: str, plan: Plan, parts: set[str], end_ms: int, workdir: Path
) -> list[Timing]:
    timings = await reads(reader_url, plan, end_ms, parts, workdir)
    if "grafana" in parts:
        timings += await grafana_panels(reader_url, plan, end_ms)
    return timings


async def run(
    plan: Plan, parts: set[str], workdir: Path, hold: bool = False, store: str | None = None
) -> dict[str, Any]:
    from tests.support.fleet import create_owner, create_reader
    from tests.support.postgres import PostgresServer

    data: dict[str, Any] = {
        "plan": plan.name,
        "command": "python -m bench.fleet " + " ".join(sys.argv[1:]),
        "machine": machine.describe(),
        "gateways": plan.gateways,
        "series": plan.gateways * plan.series,
        "timings": [],
    }
    if store:  # a store loaded before (--hold): measure only
        end_ms = await newest_minute(store)
        data["load"] = {"store": store}
        data["timings"] = [asdict(t) for t in await measure(store, plan, parts, end_ms, workdir)]
        return data
    end_ms = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    with PostgresServer(shared_buffers="256MB") as server:
        admin_url = server.create_database("fleet")
        owner_url = await create_owner(admin_url)
        _log(f"loading {plan.readings:,} readings through ingest")
        data["load"] = await load(admin_url, owner_url, plan, end_ms)
        _log(f"load: {data['load']}")
        reader_url = create_reader(admin_url)
        data["server"] = {"shared_buffers": server.shared_buffers}
        if hold:
            # For EXPLAIN sessions and --store runs: until interrupted.
            _log(f"holding the store: psql {reader_url} (owner: {owner_url}); Ctrl-C ends")
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            await stop.wait()
            return data
        timings = await measure(reader_url, plan, parts, end_ms, workdir)
        data["timings"] = [asdict(t) for t in timings]
    return data


async def newest_minute(url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        newest = await conn.fetchval(
            "SELECT (extract(epoch FROM max(ts)) * 1000)::bigint FROM tidegate.readings_data"
        )
    finally:
        await conn.close()
    return (int(newest) // MINUTE_MS + 1) * MINUTE_MS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 M readings, fewer repeats")
    parser.add_argument("--size", choices=sorted(PLANS), help="full, quick or tiny (tests)")
    parser.add_argument("--only", help="comma-separated parts: edge,reader,http,grafana")
    parser.add_argument(
        "--store", metavar="URL", help="measure a store loaded before (by --hold) instead"
    )
    parser.add_argument("--json", type=Path, help="default bench/results/fleet-<plan>.json")
    parser.add_argument(
        "--hold", action="store_true", help="load, then keep the store up for psql (no timings)"
    )
    args = parser.parse_args(argv)
    plan = PLANS[args.size or ("quick" if args.quick else "full")]
    parts = set(args.only.split(",")) if args.only else {"edge", "reader", "http", "grafana"}
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tidegate-bench-fleet-") as tmp:
        started = time.monotonic()
        data = asyncio.run(run(plan, parts, Path(tmp), args.hold, args.store))
        data["elapsed_s"] = round(time.monotonic() - started, 1)
    out = args.json or RESULTS_DIR / f"fleet-{plan.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, default=str))
    sys.stdout.write(render(data))
    _log(f"done in {data['elapsed_s']} s; JSON in {out}")
    # A missed target is a finding for the report (MISSED), not a failure of the run.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
