"""The central store's read side beyond the shared contract (test_contract.py): tiers
and pending marks, raw readings gone to retention, several gateways in one store, the
edge forward positions, statement deadlines, snapshot isolation, and URLs that never
show a password. Against the session's test PostgreSQL."""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config import PostgresConfig, StorageConfig
from gateway.errors import ConfigError, QueryError, StorageError
from gateway.models import DeadLetter, Reading
from gateway.request import AGGREGATES, AggregateQuery, ReadingsQuery
from gateway.storage.backends import central_read_store, read_store
from gateway.storage.base import Selection
from gateway.storage.memory import MemoryStore
from gateway.storage.postgresql.reader import PostgresReader
from gateway.storage.postgresql.tiers import Planner, Segment
from gateway.storage.postgresql.urls import shown_url
from tests.support.central import CentralTestWriter, settle
from tests.support.postgres import PostgresServer

HOUR = 3_600_000
MINUTE = 60_000
T0 = 1_732_000_000_000 - 1_732_000_000_000 % (24 * HOUR)
"""Midnight UTC (2024-11-19)."""


@dataclass
class Central:
    url: str
    server: PostgresServer
    reader: PostgresReader
    writers: dict[str, CentralTestWriter]


@pytest.fixture
async def central(postgres: PostgresServer, pg_url: str) -> AsyncIterator[Central]:
    writers = {
        "site-a": CentralTestWriter(pg_url, "site-a", mode="edge"),
        "site-b": CentralTestWriter(pg_url, "site-b", mode="edge"),
        "hall": CentralTestWriter(pg_url, "hall", mode="direct"),
    }
    for writer in writers.values():
        await writer.open()
    reader = PostgresReader(pg_url, threads=2, timeout_s=10)
    try:
        yield Central(pg_url, postgres, reader, writers)
    finally:
        await reader.close()
        for writer in writers.values():
            await writer.close()


def minutely(sensor: str, hours: int, start: int = T0, base: float = 0.0) -> list[Reading]:
    return [
        Reading(sensor, "temp", start + i * MINUTE + 1_000, base + i) for i in range(hours * 60)
    ]


# --- tiers --------------------------------------------------------------------------


def test_the_plan_moves_only_buckets_with_pending_marks_to_raw() -> None:
    planner = Planner(T0, T0 + 4 * HOUR, HOUR)
    assert planner.common == [Segment("1h", T0, T0 + 4 * HOUR)]
    marks = [T0 + HOUR + 5 * MINUTE, T0 + HOUR + 7 * MINUTE, T0 + 3 * HOUR]
    assert planner.segments(marks) == [
        Segment("1h", T0, T0 + HOUR),
        Segment("raw", T0 + HOUR, T0 + 2 * HOUR),
        Segment("1h", T0 + 2 * HOUR, T0 + 3 * HOUR),
        Segment("raw", T0 + 3 * HOUR, T0 + 4 * HOUR),
    ]
    ragged = Planner(T0 + 90_000, T0 + 2 * HOUR + 30_000, HOUR)
    assert ragged.common == [
        Segment("raw", T0 + 90_000, T0 + HOUR),
        Segment("1h", T0 + HOUR, T0 + 2 * HOUR),
        Segment("raw", T0 + 2 * HOUR, T0 + 2 * HOUR + 30_000),
    ]
    quarter = Planner(T0, T0 + HOUR, 15 * MINUTE)
    assert quarter.common == [Segment("1m", T0, T0 + HOUR)]
    assert quarter.segments([T0 + 20 * MINUTE]) == [
        Segment("1m", T0, T0 + 15 * MINUTE),
        Segment("raw", T0 + 15 * MINUTE, T0 + 30 * MINUTE),
        Segment("1m", T0 + 30 * MINUTE, T0 + HOUR),
    ]
    assert Planner(T0, T0 + HOUR, HOUR, "raw").common == [Segment("raw", T0, T0 + HOUR)]
    assert Planner(T0, T0 + HOUR, HOUR, "1m").common == [Segment("1m", T0, T0 + HOUR)]


async def test_buckets_come_from_the_coarsest_exact_tier(central: Central) -> None:
    readings = minutely("a", 3)
    await central.writers["site-a"].write_batch(readings, [])
    hourly = AggregateQuery(
        since_ms=T0, until_ms=T0 + 3 * HOUR, bucket_ms=HOUR, aggregates=AGGREGATES
    )
    before = await central.reader.aggregate(hourly)
    assert [b.tier for b in before] == ["raw"] * 3  # every minute pending
    assert await settle(central.url) == 180
    after = await central.reader.aggregate(hourly)
    assert [b.tier for b in after] == ["1h"] * 3
    assert [b.values for b in after] == [b.values for b in before]
    assert after[1].values == {
        "min": 60.0,
        "max": 119.0,
        "avg": 89.5,
        "sum": 5370.0,
        "count": 60,
        "last": 119.0,
    }
    # A late reading marks its minute: its hour alone is answered from raw, exactly.
    late = Reading("a", "temp", T0 + HOUR + 30 * MINUTE + 2_000, 1000.0)
    await central.writers["site-a"].write_batch([late], [])
    mixed = await central.reader.aggregate(hourly)
    assert [b.tier for b in mixed] == ["1h", "raw", "1h"]
    assert (mixed[1].values["count"], mixed[1].values["max"]) == (61, 1000.0)
    quarter = AggregateQuery(
        since_ms=T0 + HOUR, until_ms=T0 + 2 * HOUR, bucket_ms=15 * MINUTE, aggregates=("count",)
    )
    assert [(b.tier, b.values["count"]) for b in await central.reader.aggregate(quarter)] == [
        ("1m", 15),
        ("1m", 15),
        ("raw", 16),
        ("1m", 15),
    ]
    await settle(central.url)
    assert [b.tier for b in await central.reader.aggregate(hourly)] == ["1h"] * 3
    forced = await central.reader.aggregate(
        AggregateQuery(since_ms=T0, until_ms=T0 + HOUR, bucket_ms=HOUR, tier="raw")
    )
    assert [b.tier for b in forced] == ["raw"]


async def test_raw_readings_gone_to_retention_are_answered_by_the_tiers(
    central: Central,
) -> None:
    day1 = minutely("a", 2)
    day2 = minutely("a", 2, start=T0 + 24 * HOUR, base=500.0)
    await central.writers["site-a"].write_batch([*day1, *day2], [])
    await settle(central.url)
    # Retention drops whole partitions.
    await central.server.execute(
        "DROP TABLE tidegate.readings_data_p20241119", database=central.url.rsplit("/", 1)[1]
    )
    query = AggregateQuery(
        since_ms=T0, until_ms=T0 + 26 * HOUR, bucket_ms=HOUR, aggregates=("count", "last")
    )
    buckets = await central.reader.aggregate(query)
    assert [(b.start_ms - T0, b.tier, b.values["count"]) for b in buckets] == [
        (0, "1h", 60),
        (HOUR, "1h", 60),
        (24 * HOUR, "1h", 60),
        (25 * HOUR, "1h", 60),
    ]
    assert buckets[1].values["last"] == 119.0
    assert len(await central.reader.readings(ReadingsQuery(limit=0))) == 120
    stats = await central.reader.stats()
    assert (stats.readings, stats.oldest_ts_ms) == (120, T0 + 24 * HOUR + 1_000)


# --- the gateway dimension ------------------------------------------------------------


async def test_several_gateways_in_one_store(central: Central) -> None:
    w = central.writers
    await w["site-a"].write_batch(minutely("a", 1), [DeadLetter(T0, "x", b"1", "bad")])
    await w["site-b"].write_batch([*minutely("a", 1, base=100.0), *minutely("b", 1)], [])
    await w["hall"].write_batch(minutely("z", 1), [DeadLetter(T0 + 5, "y", b"2", "bad")])
    await central.server.execute(
        "UPDATE tidegate.gateways SET forwarded = 60, backlog = 7, position = 60,"
        " oldest_pending = timestamptz 'epoch' + $1 * interval '1 millisecond',"
        " last_forward = timestamptz 'epoch' + $2 * interval '1 millisecond'"
        " WHERE gateway_id = 'site-a'",
        T0 + 5_000,
        T0 + 7_123,
        database=central.url.rsplit("/", 1)[1],
    )
    read = central.reader
    gateways = await read.gateways()
    assert [(g.gateway_id, g.series, g.sensors) for g in gateways] == [
        ("hall", 1, 1),
        ("site-a", 1, 1),
        ("site-b", 2, 2),
    ]
    assert gateways[0].forwarding is None
    fwd = gateways[1].forwarding
    assert fwd is not None
    assert (fwd.forwarded, fwd.backlog, fwd.oldest_pending_ms, fwd.last_forward_ms) == (
        60,
        7,
        T0 + 5_000,
        T0 + 7_123,
    )
    assert gateways[2].forwarding is not None and gateways[2].forwarding.forwarded == 0

    # Pages across gateways: each row exactly once, in (ts, series) order.
    everything = await read.readings(ReadingsQuery(limit=0))
    assert len(everything) == 240
    seen, after = [], None
    while page := await read.readings(ReadingsQuery(limit=17, after=after)):
        seen.extend(page)
        after = (page[-1].ts_ms, page[-1].series_id)
    assert seen == everything
    assert {(r.gateway_id, r.sensor_id) for r in everything} == {
        ("site-a", "a"),
        ("site-b", "a"),
        ("site-b", "b"),
        ("hall", "z"),
    }
    only_b = await read.readings(ReadingsQuery(limit=0, gateway="site-b", sensor="a"))
    assert len(only_b) == 60 and {r.value for r in only_b} == {100.0 + i for i in range(60)}
    series = await read.series("a")
    assert [(s.gateway_id, s.count) for s in series] == [("site-a", 60), ("site-b", 60)]
    latest = await read.latest(gateway="site-b")
    assert [(x.sensor_id, x.last_value) for x in latest] == [("a", 159.0), ("b", 59.0)]
    buckets = await read.aggregate(
        AggregateQuery(since_ms=T0, until_ms=T0 + HOUR, bucket_ms=HOUR, sensor="a")
    )
    assert [(b.gateway_id, b.values["avg"]) for b in buckets] == [
        ("site-a", 29.5),
        ("site-b", 129.5),
    ]
    totals = await read.stats()
    assert (totals.readings, totals.series, totals.sensors, totals.dead_letters) == (240, 4, 4, 2)
    hall = await read.stats("hall")
    assert (hall.readings, hall.series, hall.sensors, hall.dead_letters) == (60, 1, 1, 1)
    groups = await read.dead_letter_groups(Selection(gateway="hall"))
    assert [(g.reason, g.count) for g in groups] == [("bad", 1)]
    letters = [d async for c in read.stream_dead_letters(Selection(everything=True)) for d in c]
    assert [d.gateway_id for d in letters] == ["hall", "site-a"]
    details = await read.details("site-a")
    assert [g["gateway_id"] for g in details.data["gateways"]] == ["site-a"]
    assert details.data["gateways"][0]["position"] == 60
    assert details.data["partitions"][0]["name"] == "readings_data_p20241119"
    sizes = details.data["table_bytes"]
    assert sizes["readings_data"] > 0 and sizes["series"] > 0 and sizes["dead_letters"] > 0
    assert details.data["total_bytes"] == sum(sizes.values())
    assert any(label == "gateway site-a" for label, _ in details.lines)


async def test_a_stream_holds_no_transaction_between_chunks(central: Central) -> None:
    await central.writers["site-a"].write_batch(minutely("a", 2), [])
    stream = central.reader.stream_readings(ReadingsQuery(limit=0), chunk=50)
    first = await anext(stream)
    assert len(first) == 50
    database = central.url.rsplit("/", 1)[1]
    in_tx = await central.server.fetch(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
        " AND application_name = 'tidegate-read' AND state <> 'idle'",
        database,
        database=database,
    )
    assert in_tx == [(0,)]
    rest = [r async for c in stream for r in c]
    assert len(first) + len(rest) == 120


async def test_a_snapshot_is_one_repeatable_read_transaction(central: Central) -> None:
    await central.writers["site-a"].write_batch(minutely("a", 1), [])
    async with central.reader.snapshot() as snap:
        await central.writers["site-b"].write_batch(minutely("b", 1), [])
        await settle(central.url)
        assert (await snap.stats()).readings == 60
        assert [g.gateway_id for g in await snap.gateways()] == ["hall", "site-a", "site-b"]
        assert [s.sensor_id for s in await snap.series()] == ["a"]
        both = await asyncio.gather(snap.readings(ReadingsQuery(limit=0)), snap.latest())
        assert len(both[0]) == 60 and len(both[1]) == 1
    assert (await central.reader.stats()).readings == 120


# --- deadlines and errors ---------------------------------------------------------------


async def test_a_slow_statement_is_a_query_error_and_the_reader_goes_on(
    central: Central,
) -> None:
    reader = PostgresReader(central.url, threads=1, timeout_s=0.5)
    try:

        async def sleepy(conn: object) -> object:
            return await conn.fetch("SELECT pg_sleep(3)")  # type: ignore[attr-defined]

        with pytest.raises(QueryError, match=r"longer than 0\.5s"):
            await reader._pool.run(sleepy)
        assert (await reader.stats()).readings == 0  # the one connection still works
    finally:
        await reader.close()


async def test_a_server_that_stops_answering_is_cut_off_by_the_client_deadline(
    central: Central,
) -> None:
    """A silent partition (or a frozen server) never answers, so no statement_timeout
    fires: the client deadline does, the connection is dropped, the next call gets a
    new one."""
    await central.writers["site-a"].write_batch(minutely("a", 1), [])
    reader = PostgresReader(central.url, threads=1, timeout_s=0.5)
    database = central.url.rsplit("/", 1)[1]
    try:
        assert (await reader.stats()).readings == 60
        pids = await central.server.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1"
            " AND application_name = 'tidegate-read'",
            database,
        )
        assert len(pids) == 1
        backend = int(pids[0][0])
        os.kill(backend, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(QueryError, match=r"longer than 0\.5s"):
                await reader.stats()
            assert time.monotonic() - started < 10
        finally:
            os.kill(backend, signal.SIGCONT)
        assert (await reader.stats()).readings == 60
    finally:
        await reader.close()


async def test_an_unreachable_or_empty_store_is_a_storage_error(
    postgres: PostgresServer, pg_url: str
) -> None:
    empty = PostgresReader(pg_url, threads=1, timeout_s=5)
    try:
        with pytest.raises(StorageError, match="no tidegate schema"):
            await empty.stats()
    finally:
        await empty.close()
    port = postgres.port
    nobody = PostgresReader(f"postgresql://postgres@127.0.0.1:{port + 1}/x", timeout_s=5)
    # (port + 1 may be taken by another test server: any failure to read is a StorageError)
    try:
        with pytest.raises(StorageError):
            await nobody.series()
    finally:
        await nobody.close()


def test_urls_never_show_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    assert shown_url("postgresql://reader:s3cret@db.example:5432/tidegate?sslmode=require") == (
        "postgresql://reader@db.example:5432/tidegate?sslmode=require"
    )
    assert shown_url("postgresql://:pw@host/db") == "postgresql://host/db"
    assert shown_url("postgres://u@h/db?password=x&application_name=a") == (
        "postgres://u@h/db?application_name=a"
    )
    _store, shown = central_read_store("postgresql://reader:s3cret@db.example/tidegate")
    assert "s3cret" not in shown and shown == "postgresql://reader@db.example/tidegate"
    with pytest.raises(ConfigError, match="--store: expected a postgresql://"):
        central_read_store("/var/lib/tidegate/tidegate.db")


async def test_the_password_comes_from_pgpassword_or_pgpass(
    postgres: PostgresServer, pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    database = pg_url.rsplit("/", 1)[1]
    role = f"reader_{database}"[:60]
    await postgres.require_password(role, "pw-from-env")
    url = f"postgresql://{role}@127.0.0.1:{postgres.port}/{database}"
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")  # never the runner's ~/.pgpass
    store, shown = central_read_store(url, threads=1, timeout_s=5)
    try:
        with pytest.raises(StorageError) as refused:
            await store.stats()
        assert "password" in str(refused.value)
    finally:
        await store.close()
    monkeypatch.setenv("PGPASSWORD", "pw-from-env")
    store, shown = central_read_store(url, threads=1, timeout_s=5)
    try:
        assert shown == url
        with pytest.raises(StorageError, match="no tidegate schema"):  # logged in
            await store.stats()
    finally:
        await store.close()
    monkeypatch.delenv("PGPASSWORD")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres.port}:{database}:{role}:pw-from-env\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))  # ~/.pgpass, elsewhere
    store, shown = central_read_store(url, threads=1, timeout_s=5)
    try:
        with pytest.raises(StorageError, match="no tidegate schema"):  # logged in
            await store.stats()
    finally:
        await store.close()
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    inline = url.replace(f"{role}@", f"{role}:pw-from-env@")
    store, shown = central_read_store(inline, threads=1, timeout_s=5)
    try:
        assert shown == url and "pw-from-env" not in shown
        with pytest.raises(StorageError, match="no tidegate schema") as err:
            await store.stats()
        assert "pw-from-env" not in str(err.value)
    finally:
        await store.close()


async def test_a_direct_mode_gateway_reads_the_central_store_it_writes(
    postgres: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    """``read_store`` of ``[storage] backend = "postgresql"`` (the gateway's own API):
    the central store, with the password from ``storage.postgresql.password_file``."""
    database = pg_url.rsplit("/", 1)[1]
    role = f"gw_{database}"[:60]
    await postgres.require_password(role, "from-a-file")
    await postgres.execute(f'GRANT ALL ON DATABASE "{database}" TO "{role}"')
    writer = CentralTestWriter(pg_url, "hall")
    await writer.open()
    await writer.write_batch(minutely("a", 1), [])
    await writer.close()
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    config = StorageConfig(
        backend="postgresql",
        postgresql=PostgresConfig(
            url=f"postgresql://{role}@127.0.0.1:{postgres.port}/{database}",
            password_file=secret,
        ),
    )
    store = read_store(config, threads=1, timeout_s=5)
    try:
        with pytest.raises(StorageError, match="permission denied"):
            await store.stats()  # logged in as the role (which may read nothing yet)
    finally:
        await store.close()
    await postgres.execute(
        f'GRANT USAGE ON SCHEMA tidegate TO "{role}";'
        f' GRANT SELECT ON ALL TABLES IN SCHEMA tidegate TO "{role}"',
        database=database,
    )
    store = read_store(config, threads=1, timeout_s=5)
    try:
        assert (await store.stats()).readings == 60
        assert [g.gateway_id for g in await store.gateways()] == ["hall"]
    finally:
        await store.close()


def test_the_sqlite_path_never_imports_asyncpg() -> None:
    """asyncpg has no armv7 wheels: a gateway, its CLI and its API on SQLite run
    without it (the central reader imports it on first use only)."""
    code = (
        "import sys\n"
        "import gateway.app, gateway.cli.main, gateway.api.app\n"
        "from gateway.storage.backends import central_read_store, read_store\n"
        "central_read_store('postgresql://u@127.0.0.1:1/x')\n"
        "assert 'asyncpg' not in sys.modules, 'asyncpg imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


async def test_random_aggregates_equal_the_raw_readings_whatever_is_pending(
    central: Central,
) -> None:
    """Seeded random ranges, buckets and tiers over a store where some minutes were
    rolled up, then written again (pending), and some never: every bucket equals what
    the raw readings give (the memory store), whichever tier answered it."""
    rng = random.Random(20261130)
    memory = MemoryStore(gateway_id="site-a")
    writer = central.writers["site-a"]
    first = [
        Reading(s, "temp", T0 + i * 20_000 + rng.randrange(20_000), rng.uniform(-50, 50))
        for s in ("a", "b")
        for i in range(3 * 180)
    ]
    for batch in (first[:400], first[400:]):
        await writer.write_batch(batch, [])
        await memory.write_batch(batch, [])
    await settle(central.url)
    late = [
        Reading(rng.choice("ab"), "temp", T0 + rng.randrange(2 * HOUR), rng.uniform(-50, 50))
        for _ in range(12)
    ]  # the third hour stays clean: answered by 1h where aligned
    await writer.write_batch(late, [])
    await memory.write_batch(late, [])
    tiers_seen: set[str] = set()
    for _ in range(30):
        size = rng.choice([MINUTE, 5 * MINUTE, 15 * MINUTE, HOUR, 2 * HOUR, 90_000])
        since = T0 + rng.choice([0, rng.randrange(HOUR), HOUR, 30 * MINUTE])
        until = min(T0 + 3 * HOUR, since + rng.randrange(size, 3 * HOUR + 1))
        if until <= since:
            continue
        query = AggregateQuery(
            since_ms=since,
            until_ms=until,
            bucket_ms=size,
            aggregates=AGGREGATES,
            tier=rng.choice(["auto", "auto", "1m", "1h", "raw"]),
        )
        got = await central.reader.aggregate(query)
        want = await memory.aggregate(query)
        assert [(b.sensor_id, b.start_ms) for b in got] == [
            (b.sensor_id, b.start_ms) for b in want
        ], query
        for g, w in zip(got, want, strict=True):
            tiers_seen.add(g.tier)
            for key in AGGREGATES:
                a, b = g.values[key], w.values[key]
                assert isinstance(a, int | float) and isinstance(b, int | float)
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (query, g, w, key)
    assert tiers_seen == {"raw", "1m", "1h"}
