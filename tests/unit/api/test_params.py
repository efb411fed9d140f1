"""Request parameters, the page cursor, the Prometheus text and the read pool."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.api import params, prometheus
from gateway.errors import QueryError, StorageError
from gateway.metrics import Metrics
from gateway.storage.sqlite.readpool import ReadPool
from gateway.storage.sqlite.schema import prepare_database

NOW = 1_700_000_000_000
HOUR = 3_600_000


@given(st.integers(0, params.MAX_TS_MS), st.integers(0, params.INT64_MAX))
def test_cursor_round_trip(ts_ms: int, series_id: int) -> None:
    cursor = params.encode_cursor(ts_ms, series_id)
    assert cursor.startswith("c1.")
    assert params.decode_cursor(cursor) == (ts_ms, series_id)


@given(st.text(max_size=120))
def test_any_text_is_a_valid_cursor_or_a_query_error(text: str) -> None:
    try:
        params.decode_cursor(text)
    except QueryError:
        pass


def test_time_range_defaults_and_limits() -> None:
    span = params.time_range({}, NOW, 24 * HOUR, 31 * 24 * HOUR, open_end=True)
    assert (span.since_ms, span.until_ms) == (NOW - 24 * HOUR, None)
    closed = params.time_range({"from": "2h"}, NOW, 24 * HOUR, 31 * 24 * HOUR, open_end=False)
    assert (closed.since_ms, closed.until_ms) == (NOW - 2 * HOUR, NOW)
    iso = params.time_range(
        {"from": "2023-11-14T00:00:00Z", "to": "2023-11-14T01:00:00+00:00"},
        NOW,
        HOUR,
        HOUR,
        open_end=True,
    )
    assert iso.until_ms - iso.since_ms == HOUR
    with pytest.raises(QueryError, match="max_range"):
        params.time_range({"from": "2h"}, NOW, HOUR, HOUR, open_end=True)
    with pytest.raises(QueryError, match="before"):
        params.time_range({"from": "now", "to": "1h"}, NOW, HOUR, 2 * HOUR, open_end=True)
    for bad in ("1e400", "-5", "99999-01-01", "soon"):
        with pytest.raises(QueryError):
            params.time_range({"from": bad}, NOW, HOUR, 10**15, open_end=True)


def test_integers_durations_choices_and_aggregates() -> None:
    assert params.integer({}, "limit", 7, 1, 10) == 7
    assert params.integer({"limit": "10"}, "limit", 7, 1, 10) == 10
    for bad in ("", "11", "0", "x", "1.5"):
        with pytest.raises(QueryError, match="limit"):
            params.integer({"limit": bad}, "limit", 7, 1, 10)
    assert params.duration_ms({}, "bucket", "1h", 10 * HOUR) == HOUR
    assert params.duration_ms({"bucket": "90s"}, "bucket", "1h", HOUR) == 90_000
    for bad in ("", "500ms", "2h", "1 fortnight", "١h"):
        with pytest.raises(QueryError, match="bucket"):
            params.duration_ms({"bucket": bad}, "bucket", "1h", HOUR)
    assert params.choice({}, "order", ("asc", "desc"), "asc") == "asc"
    with pytest.raises(QueryError):
        params.choice({"order": "ASC"}, "order", ("asc", "desc"), "asc")
    assert params.aggregates([]) == ["avg"]
    assert params.aggregates(["min,max", "avg", "min"]) == ["min", "max", "avg"]
    with pytest.raises(QueryError, match="median"):
        params.aggregates(["median"])
    assert params.wants_csv({"format": "csv"}, "") is True
    assert params.wants_csv({}, "text/csv, */*") is True
    assert params.wants_csv({"format": "json"}, "text/csv") is False


def test_prometheus_text_is_well_formed() -> None:
    metrics = Metrics()
    metrics.subscription('odd"label\\x').received = 3
    metrics.commit_latency.observe(0.003)
    metrics.batch_readings.observe(10)
    db = prometheus.DatabaseGauges(4096, 0, 2, NOW - 60_000, NOW - 1000)
    text = prometheus.render(metrics, db, started_at=1.0, version="9", now=NOW / 1000)
    assert text.endswith("\n")
    assert 'tidegate_messages_received_total{subscription="odd\\"label\\\\x"} 3' in text
    assert 'tidegate_commit_latency_seconds_bucket{le="0.005"} 1' in text
    assert 'tidegate_commit_latency_seconds_bucket{le="+Inf"} 1' in text
    assert "tidegate_oldest_reading_age_seconds 60" in text
    assert "tidegate_newest_reading_age_seconds 1" in text
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge", "histogram")
            names.add(name)
        elif not line.startswith("#"):
            sample = line.split("{")[0].split(" ")[0]
            family = sample.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
            assert family in names or sample in names, line
    empty = prometheus.render(Metrics(), None, started_at=1.0, version="9")
    assert "tidegate_database_size_bytes" not in empty


def _database(path: Path, rows: int) -> Path:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    prepare_database(conn)
    conn.execute("INSERT INTO series (sensor_id, metric, created_at) VALUES ('s', 'm', 0)")
    conn.executemany("INSERT INTO readings VALUES (1, ?, ?)", [(i, float(i)) for i in range(rows)])
    conn.close()
    return path


async def test_read_pool_runs_queries_off_the_loop_and_enforces_a_deadline(
    tmp_path: Path,
) -> None:
    pool = ReadPool(_database(tmp_path / "r.db", 1000), threads=2, timeout_s=0.2)
    try:
        total = await pool.run(
            lambda conn: conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        )
        assert total == 1000
        slow = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
        )
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        with pytest.raises(QueryError, match="longer than"):
            await pool.run(lambda conn: conn.execute(slow).fetchone())
        task.cancel()
        assert ticks > 5  # the loop kept running while the query did
        with pytest.raises(StorageError, match="no such table"):  # 503, not the caller's fault
            await pool.run(lambda conn: conn.execute("SELECT * FROM nowhere").fetchall())
    finally:
        pool.close()


async def test_read_pool_streams_chunks_and_closes_the_stream_connection(tmp_path: Path) -> None:
    pool = ReadPool(_database(tmp_path / "s.db", 2500), threads=1, timeout_s=5)
    try:
        sizes = []
        async for chunk in pool.stream(
            lambda conn: iter(conn.execute("SELECT ts FROM readings ORDER BY ts")), chunk=1000
        ):
            sizes.append(len(chunk))
        assert sizes == [1000, 1000, 500]
        assert len(pool._connections) == 0  # the stream's own connection is closed
        stream = pool.stream(lambda conn: iter(conn.execute("SELECT ts FROM readings")), 10)
        assert len(await anext(stream)) == 10
        await stream.aclose()  # abandoned early
        assert len(pool._connections) == 0
    finally:
        pool.close()


def test_unknown_parameters_are_named_and_aliases_resolve() -> None:
    from starlette.datastructures import QueryParams

    from gateway.api.params import checked

    allowed = frozenset({"sensor", "from", "to", "agg"})
    with pytest.raises(QueryError) as caught:
        checked(QueryParams("sensr=a&bogus=1&from=1h"), allowed)
    message = str(caught.value)
    assert "unknown parameters 'bogus', 'sensr'" in message
    assert "this endpoint takes agg, from, sensor, to" in message
    assert "also sensor_id for sensor, since for from, until for to" in message
    got = checked(QueryParams("sensor_id=k&since=2h&until=now&agg=min&agg=max"), allowed)
    assert (got["sensor"], got["from"], got["to"]) == ("k", "2h", "now")
    assert got.getlist("agg") == ["min", "max"]
    assert got.given == {"sensor": "sensor_id", "from": "since", "to": "until", "agg": "agg"}
    for twice in ("sensor=a&sensor_id=b", "sensor=a&sensor=b", "since=1h&from=2h"):
        with pytest.raises(QueryError, match="given more than once"):
            checked(QueryParams(twice), allowed)
    with pytest.raises(QueryError, match="unknown parameter 'since'"):
        checked(QueryParams("since=1h"), frozenset({"sensor"}))


def test_time_errors_use_the_name_the_client_gave() -> None:
    from starlette.datastructures import QueryParams

    from gateway.api.params import checked, time_range

    qp = checked(QueryParams("since=yesterday-ish"), frozenset({"from", "to"}))
    with pytest.raises(QueryError, match=r"^since: "):
        time_range(qp, 1_700_000_000_000, 3_600_000, 86_400_000, open_end=True)
