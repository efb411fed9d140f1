"""The storage contract: every backend behaves the same behind
:mod:`gateway.storage.base` (the write side the pipeline uses, the read side the CLI,
the HTTP API and ``tidegate-sim verify`` use).

Every test here runs once per backend in :data:`BACKENDS`.

**Adding a backend** (e.g. PostgreSQL): write an async context manager like
:func:`sqlite_backend` that creates a fresh, empty store, opens its write side, builds
its read side, yields a :class:`Backend`, and closes both afterwards — then add one
line to :data:`BACKENDS`. ``settle`` lets the backend's background upkeep catch up
(SQLite: compaction and rollups), so the tests read both before and after it; a
backend without upkeep passes a no-op. A backend that needs a server (a test
PostgreSQL) starts it in a session fixture and skips with a clear reason only where the
server binaries are missing.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config import PostgresConfig, StorageConfig
from gateway.errors import QueryError
from gateway.metrics import Metrics
from gateway.models import DeadLetter, Reading
from gateway.request import AGGREGATES, AggregateQuery, ReadingsQuery
from gateway.storage.base import ReadStore, Selection, WriteStore
from gateway.storage.memory import MemoryStore
from gateway.storage.postgresql.reader import PostgresReader
from gateway.storage.postgresql.store import PostgresStore
from gateway.storage.sqlite._aiosqlite_adapter import run_on_connection
from gateway.storage.sqlite.reader import SqliteReader
from gateway.storage.sqlite.rollups import rollup_all
from gateway.storage.sqlite.store import SqliteStore
from tests.support.central import settle as settle_central
from tests.support.postgres import PostgresServer, PostgresUnavailable, find_bindir

HOUR = 3_600_000
MINUTE = 60_000
T0 = 1_732_000_000_000 - 1_732_000_000_000 % HOUR
"""An hour-aligned time in the past (2024-11-19T07:00Z)."""
NOW = T0 + 10 * HOUR
GATEWAY = "site-a"
"""The gateway every backend under test stores for (its rows carry this id)."""


@dataclass
class Backend:
    """One backend under test: its two sides over the same fresh store."""

    name: str
    write: WriteStore
    read: ReadStore
    settle: Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


@asynccontextmanager
async def memory_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    store = MemoryStore(gateway_id=GATEWAY)
    await store.open()
    try:
        yield Backend("memory", store, store, _nothing)
    finally:
        await store.close()


@asynccontextmanager
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    config = StorageConfig(path=tmp_path / "contract.db", min_free_disk="0")
    store = SqliteStore(config, Metrics())
    await store.open()
    reader = SqliteReader(config.path, threads=2, timeout_s=10, gateway_id=GATEWAY)

    async def settle() -> None:
        await run_on_connection(
            store.sink.connection, lambda conn: rollup_all(conn, NOW, store.tracker)
        )

    try:
        yield Backend("sqlite", store, reader, settle)
    finally:
        await reader.close()
        await store.close()


@asynccontextmanager
async def postgresql_backend(tmp_path: Path, server: PostgresServer) -> AsyncIterator[Backend]:
    """A fresh database on the session's test PostgreSQL. Its time zone is not UTC on
    purpose: nothing may depend on the server's TimeZone."""
    name = server.new_database_name("contract")
    url = await server.create_database_async(name)
    await server.execute(f"ALTER DATABASE {name} SET timezone TO 'Asia/Kolkata'")
    config = StorageConfig(
        backend="postgresql",
        postgresql=PostgresConfig(url=url, statement_timeout_s=10, connect_timeout_s=5),
    )
    store = PostgresStore(config, Metrics(), GATEWAY)  # the direct-mode write side
    await store.open()
    reader = PostgresReader(url, threads=2, timeout_s=10)

    async def settle() -> None:
        await settle_central(url, NOW)

    try:
        yield Backend("postgresql", store, reader, settle)
    finally:
        await reader.close()
        await store.close()
        await server.drop_database_async(name)


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[Backend]]] = {
    "memory": memory_backend,
    "sqlite": sqlite_backend,
}
SERVER_BACKENDS: dict[
    str, Callable[[Path, PostgresServer], AbstractAsyncContextManager[Backend]]
] = {"postgresql": postgresql_backend}


@pytest.fixture(params=sorted([*BACKENDS, *SERVER_BACKENDS]))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param in SERVER_BACKENDS:
        try:
            find_bindir()
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))
        server = request.getfixturevalue("postgres")  # started only when a test needs it
        async with SERVER_BACKENDS[request.param](tmp_path, server) as opened:
            yield opened
        return
    async with BACKENDS[request.param](tmp_path) as opened:
        yield opened


def fleet(minutes: int = 120, sensors: tuple[str, ...] = ("a", "b")) -> list[Reading]:
    """One reading a minute per sensor for ``minutes``, two metrics; b's temperature has
    a unit and a tag."""
    out = []
    for i in range(minutes):
        ts = T0 + i * MINUTE + 7_000
        for n, sensor in enumerate(sensors):
            unit = "Cel" if sensor == "b" else None
            tags = (("site", "roof"),) if sensor == "b" else ()
            out.append(Reading(sensor, "temp", ts, float(i * 2 + n), unit, tags))
            out.append(Reading(sensor, "hum", ts + 1, float(50 + i % 7)))
    return out


def close(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


# --- write side ---------------------------------------------------------------------


async def test_a_batch_is_stored_once_whatever_is_redelivered(backend: Backend) -> None:
    batch = fleet(10)
    dead = [DeadLetter(T0, "sensors/x", b"garbage", "not JSON", "json")]
    first = await backend.write.write_batch(batch, dead)
    assert (first.stored, first.duplicates, first.dead_letters) == (40, 0, 1)
    again = await backend.write.write_batch(batch[:15], [])
    assert (again.stored, again.duplicates, again.dead_letters) == (0, 15, 0)
    mixed = await backend.write.write_batch([*batch[:2], Reading("a", "temp", T0, 9.0)], [])
    assert (mixed.stored, mixed.duplicates) == (1, 2)
    assert (await backend.read.stats()).readings == 41


async def test_same_timestamp_in_another_series_is_another_reading(backend: Backend) -> None:
    readings = [
        Reading("a", "temp", T0, 1.0),
        Reading("a", "temp", T0, 2.0, "Cel"),  # another unit: another series
        Reading("a", "temp", T0, 3.0, None, (("k", "v"),)),  # tags too
    ]
    result = await backend.write.write_batch(readings, [])
    assert result.stored == 3
    series = await backend.read.series("a", "temp")
    assert len(series) == 3 and len({s.series_id for s in series}) == 3


# --- series and latest ---------------------------------------------------------------


async def test_series_list_with_their_summaries(backend: Backend) -> None:
    await backend.write.write_batch(fleet(), [])
    for _ in range(2):
        series = await backend.read.series()
        assert [(s.sensor_id, s.metric) for s in series] == [
            ("a", "hum"),
            ("a", "temp"),
            ("b", "hum"),
            ("b", "temp"),
        ]
        b_temp = series[3]
        assert (b_temp.unit, b_temp.tags, b_temp.count) == ("Cel", {"site": "roof"}, 120)
        assert (b_temp.first_ts_ms, b_temp.last_ts_ms) == (T0 + 7_000, T0 + 119 * MINUTE + 7_000)
        assert b_temp.last_value == 239.0
        assert series[0].unit is None and series[0].tags == {}
        uncounted = await backend.read.series("b", counts=False)
        assert [s.count for s in uncounted] == [-1, -1]
        assert [s.metric for s in await backend.read.series(metric="temp")] == ["temp", "temp"]
        assert await backend.read.series("nobody") == []
        await backend.settle()  # the same answers once the upkeep ran


async def test_series_and_latest_page_by_keyset_and_any_number_match(backend: Backend) -> None:
    """No listing refuses because many series match (10,000 used to be the cap): pages
    of ``limit`` after the last series' ``(sensor_id, metric, series_id)`` visit every
    series once, in order."""
    many = [Reading(f"dev-{i:05d}", m, T0 + i, float(i)) for i in range(5_100) for m in ("t", "h")]
    await backend.write.write_batch(many, [])
    everything = await backend.read.series(counts=False)
    assert len(everything) == 10_200
    assert [(s.sensor_id, s.metric) for s in everything[:3]] == [
        ("dev-00000", "h"),
        ("dev-00000", "t"),
        ("dev-00001", "h"),
    ]
    paged: list[tuple[str, str, int]] = []
    after = None
    while True:
        page = await backend.read.series(counts=False, after=after, limit=3_000)
        paged.extend((s.sensor_id, s.metric, s.series_id) for s in page)
        if len(page) < 3_000:
            break
        after = paged[-1]
    assert paged == [(s.sensor_id, s.metric, s.series_id) for s in everything]
    latest = await backend.read.latest(after=("dev-05098", "t", paged[-3][2]), limit=5)
    assert [(x.sensor_id, x.metric, x.last_value) for x in latest] == [
        ("dev-05099", "h", 5099.0),
        ("dev-05099", "t", 5099.0),
    ]
    assert await backend.read.latest(match="DEV-0510", limit=100) == []
    found = await backend.read.latest(match="V-0509")  # case-insensitive substring
    assert {x.sensor_id for x in found} == {f"dev-0509{d}" for d in range(10)}
    rows = await backend.read.readings(ReadingsQuery(limit=0))
    assert len(rows) == 10_200
    assert len(await backend.read.readings(ReadingsQuery(metric="t", limit=10))) == 10


async def test_latest_is_the_newest_reading_not_the_last_written(backend: Backend) -> None:
    await backend.write.write_batch(fleet(30), [])
    await backend.settle()
    await backend.write.write_batch([Reading("a", "temp", T0 + 5 * MINUTE, -1.0)], [])  # late
    latest = {(x.sensor_id, x.metric): x for x in await backend.read.latest()}
    assert (latest[("a", "temp")].last_ts_ms, latest[("a", "temp")].last_value) == (
        T0 + 29 * MINUTE + 7_000,
        58.0,
    )
    assert len(latest) == 4
    only = await backend.read.latest("b", "temp")
    assert [(x.unit, x.tags, x.last_value) for x in only] == [("Cel", {"site": "roof"}, 59.0)]
    await backend.write.write_batch([Reading("a", "temp", T0 + 99 * MINUTE, 7.0)], [])
    newest = await backend.read.latest("a", "temp")
    assert [(x.last_ts_ms, x.last_value) for x in newest] == [(T0 + 99 * MINUTE, 7.0)]


# --- readings ---------------------------------------------------------------------------


async def test_pages_follow_the_keyset_cursor_both_ways(backend: Backend) -> None:
    await backend.write.write_batch(fleet(20), [])
    for settled in (False, True):
        everything = await backend.read.readings(ReadingsQuery(limit=0))
        keys = [(r.ts_ms, r.series_id) for r in everything]
        assert keys == sorted(keys) and len(keys) == 80, settled
        for descending in (False, True):
            seen = []
            after = None
            while True:
                page = await backend.read.readings(
                    ReadingsQuery(limit=7, after=after, descending=descending)
                )
                seen.extend((r.ts_ms, r.series_id) for r in page)
                if len(page) < 7:
                    break
                after = (page[-1].ts_ms, page[-1].series_id)
            assert seen == (keys[::-1] if descending else keys)
        await backend.settle()


async def test_readings_in_a_half_open_range_of_one_series(backend: Backend) -> None:
    await backend.write.write_batch(fleet(20), [])
    await backend.settle()
    await backend.write.write_batch(
        [Reading("b", "temp", T0 + 30 * MINUTE, 1.5, "Cel", (("site", "roof"),))], []
    )
    query = ReadingsQuery(
        sensor="b",
        metric="temp",
        since_ms=T0 + 5 * MINUTE + 7_000,
        until_ms=T0 + 10 * MINUTE + 7_000,
    )
    rows = await backend.read.readings(query)
    assert [r.ts_ms for r in rows] == [T0 + i * MINUTE + 7_000 for i in range(5, 10)]
    row = rows[0]
    assert (row.sensor_id, row.metric, row.value, row.unit, row.tags) == (
        "b",
        "temp",
        11.0,
        "Cel",
        {"site": "roof"},
    )
    tail = await backend.read.readings(
        ReadingsQuery(sensor="b", metric="temp", since_ms=T0 + 19 * MINUTE, limit=0)
    )
    assert [(r.ts_ms, r.value) for r in tail] == [
        (T0 + 19 * MINUTE + 7_000, 39.0),
        (T0 + 30 * MINUTE, 1.5),
    ]


async def test_a_stream_is_the_pages_in_chunks(backend: Backend) -> None:
    await backend.write.write_batch(fleet(50), [])
    query = ReadingsQuery(metric="hum", limit=0)
    chunks = [chunk async for chunk in backend.read.stream_readings(query, chunk=30)]
    assert [len(c) for c in chunks] == [30, 30, 30, 10]
    streamed = [r for c in chunks for r in c]
    assert streamed == await backend.read.readings(query)
    limited = [r async for c in backend.read.stream_readings(ReadingsQuery(limit=5)) for r in c]
    assert len(limited) == 5


# --- aggregates ---------------------------------------------------------------------------


def expected_buckets(
    readings: list[Reading], sensor: str, metric: str, since: int, until: int, size: int
) -> dict[int, dict[str, float | int]]:
    groups: dict[int, list[Reading]] = {}
    for r in sorted(readings, key=lambda r: r.ts_ms):
        if r.sensor_id == sensor and r.metric == metric and since <= r.ts_ms < until:
            groups.setdefault(r.ts_ms - r.ts_ms % size, []).append(r)
    return {
        start: {
            "min": min(r.value for r in rs),
            "max": max(r.value for r in rs),
            "sum": sum(r.value for r in rs),
            "avg": sum(r.value for r in rs) / len(rs),
            "count": len(rs),
            "last": rs[-1].value,
        }
        for start, rs in groups.items()
    }


@pytest.mark.parametrize(
    ("since", "until", "size"),
    [
        (T0, T0 + 2 * HOUR, HOUR),
        (T0 + 90_000, T0 + 100 * MINUTE, 15 * MINUTE),
        (T0, T0 + HOUR, 60_000),
    ],
)
async def test_aggregates_equal_the_raw_readings_before_and_after_upkeep(
    backend: Backend, since: int, until: int, size: int
) -> None:
    readings = fleet()
    await backend.write.write_batch(readings, [])
    query = AggregateQuery(
        sensor=None,
        metric="temp",
        since_ms=since,
        until_ms=until,
        bucket_ms=size,
        aggregates=AGGREGATES,
    )
    for settled in (False, True):
        buckets = await backend.read.aggregate(query)
        assert [b.sensor_id for b in buckets] == sorted(b.sensor_id for b in buckets)
        for sensor in ("a", "b"):
            mine = [b for b in buckets if b.sensor_id == sensor]
            want = expected_buckets(readings, sensor, "temp", since, until, size)
            assert [b.start_ms for b in mine] == sorted(want), settled
            for b in mine:
                assert b.tier in ("raw", "1m", "1h")
                assert all(close(b.values[k], want[b.start_ms][k]) for k in AGGREGATES), (
                    b,
                    settled,
                )
        await backend.settle()


async def test_aggregates_choose_values_and_stop_at_the_limit(backend: Backend) -> None:
    await backend.write.write_batch(fleet(), [])
    query = AggregateQuery(
        sensor="a", metric="hum", since_ms=T0, until_ms=T0 + 2 * HOUR, bucket_ms=10 * MINUTE,
        aggregates=("count", "max"), limit=5, tier="raw",
    )  # fmt: skip
    buckets = await backend.read.aggregate(query)
    assert len(buckets) == 5 and all(set(b.values) == {"count", "max"} for b in buckets)
    assert all(b.values["count"] == 10 and b.tier == "raw" for b in buckets)
    streamed = [b async for c in backend.read.stream_aggregate(query, chunk=2) for b in c]
    assert streamed == buckets


# --- totals -------------------------------------------------------------------------------


async def test_stats_and_overview_count_what_was_stored(backend: Backend) -> None:
    empty = await backend.read.stats()
    assert (empty.readings, empty.series, empty.oldest_ts_ms, empty.newest_ts_ms) == (
        0,
        0,
        None,
        None,
    )
    dead = [DeadLetter(T0, "t", b"x", "bad")] * 3
    await backend.write.write_batch(fleet(10), dead)
    for _ in range(2):
        stats = await backend.read.stats()
        assert (stats.readings, stats.series, stats.sensors, stats.dead_letters) == (40, 4, 2, 3)
        assert (stats.oldest_ts_ms, stats.newest_ts_ms) == (T0 + 7_000, T0 + 9 * MINUTE + 7_001)
        overview = await backend.read.overview()
        assert (overview.series, overview.oldest_ts_ms, overview.newest_ts_ms) == (
            4,
            T0 + 7_000,
            T0 + 9 * MINUTE + 7_001,
        )
        details = await backend.read.details()
        assert details.lines and isinstance(details.data, dict)
        await backend.settle()


# --- dead letters --------------------------------------------------------------------------


async def test_dead_letters_are_listed_grouped_and_found(backend: Backend) -> None:
    letters = [
        DeadLetter(T0 + i, f"sensors/{i}", f"payload {i} tgfault:r-{i}".encode(), reason, "sub")
        for i, reason in enumerate(["bad JSON", "Bad JSON", "bad JSON", "no sensor_id"])
    ]
    await backend.write.write_batch([], letters)
    groups = await backend.read.dead_letter_groups()
    assert [(g.reason, g.count, g.first_ms, g.last_ms) for g in groups] == [
        ("bad JSON", 2, T0, T0 + 2),
        ("Bad JSON", 1, T0 + 1, T0 + 1),
        ("no sensor_id", 1, T0 + 3, T0 + 3),
    ]
    newest = [d async for c in backend.read.stream_dead_letters(limit=0) for d in c]
    assert [d.topic for d in newest] == ["sensors/3", "sensors/2", "sensors/1", "sensors/0"]
    assert newest[0].subscription == "sub" and not newest[0].truncated
    by_reason = Selection(reason="bad json", since_ms=T0 + 1)
    chosen = [d async for c in backend.read.stream_dead_letters(by_reason, limit=0) for d in c]
    assert [d.topic for d in chosen] == ["sensors/2", "sensors/1"]
    marked = Selection(payload_contains=b"tgfault:r-3")
    assert [d.topic async for c in backend.read.stream_dead_letters(marked) for d in c] == [
        "sensors/3"
    ]
    assert len([d async for c in backend.read.stream_dead_letters(limit=2) for d in c]) == 2
    one = await backend.read.dead_letter(newest[1].id)
    assert (one.topic, one.payload, one.payload_size) == (
        "sensors/2",
        letters[2].payload,
        len(letters[2].payload),
    )
    ids = Selection(ids=(newest[1].id,))
    assert [d.id async for c in backend.read.stream_dead_letters(ids) for d in c] == [one.id]
    with pytest.raises(QueryError, match="no dead letter"):
        await backend.read.dead_letter(10**9)


# --- the gateway dimension ---------------------------------------------------------------


async def test_every_row_names_its_gateway_and_every_read_filters_by_it(
    backend: Backend,
) -> None:
    """A store holding one gateway (a gateway's own file, or the central store with one
    gateway in it): rows carry its id, a filter naming it changes nothing, a filter
    naming another gateway matches nothing — in every read."""
    dead = [DeadLetter(T0, "sensors/x", b"garbage", "not JSON", "json")]
    await backend.write.write_batch(fleet(90), dead)
    await backend.settle()
    read, other = backend.read, "elsewhere"
    everything = ReadingsQuery(limit=0)
    rows = await read.readings(everything)
    assert len(rows) == 360 and {r.gateway_id for r in rows} == {GATEWAY}
    assert await read.readings(ReadingsQuery(limit=0, gateway=GATEWAY)) == rows
    assert await read.readings(ReadingsQuery(limit=0, gateway=other)) == []
    streamed = [r async for c in read.stream_readings(ReadingsQuery(gateway=other)) for r in c]
    assert streamed == []

    series = await read.series()
    assert {s.gateway_id for s in series} == {GATEWAY} and len(series) == 4
    assert await read.series(gateway=GATEWAY) == series
    assert await read.series(gateway=other) == []
    latest = await read.latest()
    assert {x.gateway_id for x in latest} == {GATEWAY}
    assert await read.latest(gateway=GATEWAY) == latest
    assert await read.latest("a", gateway=other) == []

    hourly = AggregateQuery(since_ms=T0, until_ms=T0 + 2 * HOUR, bucket_ms=HOUR)
    buckets = await read.aggregate(hourly)
    assert len(buckets) == 8 and {b.gateway_id for b in buckets} == {GATEWAY}
    for gateway, expected in ((GATEWAY, buckets), (other, [])):
        query = AggregateQuery(since_ms=T0, until_ms=T0 + 2 * HOUR, bucket_ms=HOUR, gateway=gateway)
        assert await read.aggregate(query) == expected
        assert [b async for c in read.stream_aggregate(query) for b in c] == expected

    mine, theirs = await read.stats(GATEWAY), await read.stats(other)
    assert (mine.readings, mine.series, mine.sensors, mine.dead_letters) == (360, 4, 2, 1)
    assert (theirs.readings, theirs.series, theirs.sensors, theirs.dead_letters) == (0, 0, 0, 0)
    assert (theirs.oldest_ts_ms, theirs.newest_ts_ms) == (None, None)

    letters = [d async for c in read.stream_dead_letters(Selection(everything=True)) for d in c]
    assert [d.gateway_id for d in letters] == [GATEWAY]
    assert (await read.dead_letter(letters[0].id)).gateway_id == GATEWAY
    assert [g.count for g in await read.dead_letter_groups(Selection(gateway=GATEWAY))] == [1]
    assert await read.dead_letter_groups(Selection(gateway=other)) == []
    gone = Selection(everything=True, gateway=other)
    assert [d async for c in read.stream_dead_letters(gone) for d in c] == []

    gateways = await read.gateways()
    assert [(g.gateway_id, g.series, g.sensors) for g in gateways] == [(GATEWAY, 4, 2)]


def test_a_gateway_filter_is_checked_like_any_input() -> None:
    with pytest.raises(QueryError, match="gateway: longer than 128"):
        ReadingsQuery(gateway="g" * 129)
    with pytest.raises(QueryError, match="gateway: contains control"):
        AggregateQuery(since_ms=T0, until_ms=NOW, bucket_ms=HOUR, gateway="a\nb")


# --- snapshots -----------------------------------------------------------------------------


async def test_a_snapshot_keeps_its_state_while_the_writer_goes_on(backend: Backend) -> None:
    await backend.write.write_batch(fleet(30), [])
    async with backend.read.snapshot() as snap:
        before = await snap.readings(ReadingsQuery(limit=0))
        await backend.write.write_batch(
            [Reading("a", "temp", T0 + 200 * MINUTE, 1.0), Reading("new", "temp", T0, 2.0)], []
        )
        await backend.settle()  # upkeep moves rows around meanwhile
        assert await snap.readings(ReadingsQuery(limit=0)) == before
        assert [s.sensor_id for s in await snap.series(metric="temp")] == ["a", "b"]
        streamed = [r async for c in snap.stream_readings(ReadingsQuery(limit=0)) for r in c]
        assert streamed == before
        assert (await snap.stats()).readings == 120
    assert (await backend.read.stats()).readings == 122
    assert [s.sensor_id for s in await backend.read.series(metric="temp")] == ["a", "b", "new"]
