"""Edge → centre forwarding: throughput against a bare COPY, and catching up a backlog.

``python -m bench.central [--url postgresql://…] [--rows N] [--batch B] [--catchup N]``
(without ``--url`` it starts a private PostgreSQL like the tests do).

1. **Forwarding rate.** An edge database is filled with ``--rows`` readings of
   ``--series`` series at 1 Hz (forwarding on, so all of them wait in the outbox); then
   the real forwarder (:class:`gateway.upstream.forwarder.Forwarder`, ``batch_size =
   --batch``) sends them into a fresh central database, timed from start until the
   outbox is empty. Beside it, in the same run: a bare asyncpg ``copy_records_to_table``
   of the same rows (central ids) in the same batches, one transaction each, into a
   table of the same columns without a key — what the driver and server can take at
   all. Reported as readings/s and the ratio (targets: ≥ 200,000/s, ≥ 60 %).
2. **Catch-up** (``--catchup N``, 0 to skip; the issue's figure is 3,600,000 = one hour
   of 1,000 sensors at 1 Hz): a backlog of N readings in the outbox, then the forwarder
   starts while the edge keeps ingesting 1,000 readings/s (one batch a second through the
   same writer connection, as the pipeline commits them); reported: the time to empty
   the backlog and the batch commit latency (p50/p99/max) during the catch-up against
   the same ingestion with no forwarder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from gateway.config import StorageConfig, UpstreamConfig
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.storage.postgresql.ingest import (
    CentralSeries,
    PartitionCache,
    SeriesKey,
    copy_readings,
)
from gateway.storage.sqlite.outbox import SqliteOutbox
from gateway.storage.sqlite.store import SqliteStore
from gateway.storage.sqlite.writer import SqliteSink
from gateway.upstream.forwarder import Forwarder

HOUR_MS = 3_600_000
T0 = (int(time.time() * 1000) // HOUR_MS - 3) * HOUR_MS
"""Three hours ago: the backlog is recent data, as after an outage (the store's
maintenance rolls it up and keeps it, as a gateway's would)."""
FILL_BATCH = 50_000


def readings(start: int, n: int, series: int, t0: int = T0) -> list[Reading]:
    """Readings ``start`` … ``start + n`` of ``series`` sensors at 1 Hz, interleaved."""
    return [
        Reading(f"s{i % series}", "temperature", t0 + (i // series) * 1000, float(i % 977) / 10)
        for i in range(start, start + n)
    ]


async def fill(sink: SqliteSink, n: int, series: int, t0: int = T0) -> float:
    started = time.perf_counter()
    for start in range(0, n, FILL_BATCH):
        await sink.write_batch(readings(start, min(FILL_BATCH, n - start), series, t0), [])
    return time.perf_counter() - started


async def open_edge(path: Path) -> tuple[SqliteStore, SqliteOutbox, asyncio.Task[None]]:
    """The edge's store as a gateway opens it with forwarding on, its maintenance
    (compaction, checkpoints from their own connection, …) running beside it."""
    store = SqliteStore(StorageConfig(path=path, min_free_disk="0"), Metrics(), forward="stop")
    await store.open()
    assert store.outbox is not None
    return store, store.outbox, asyncio.create_task(store.maintain())


async def close_edge(store: SqliteStore, maintenance: asyncio.Task[None]) -> None:
    maintenance.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await maintenance
    await store.close()


def upstream(url: str, batch: int, gateway_id: str) -> UpstreamConfig:
    return UpstreamConfig(
        url=url,
        sslmode="disable",
        gateway_id=gateway_id,
        batch_size=batch,
        interval_s=0.05,
        maintenance=False,
    )


async def forward_all(
    config: UpstreamConfig, outbox: SqliteOutbox, metrics: Metrics
) -> tuple[float, int]:
    """Run the forwarder until the outbox is empty. Returns the seconds and the readings
    from the end of its first batch on (connecting, creating the schema and the series
    are start-up, not throughput)."""
    forwarder = Forwarder(config, outbox, metrics, config.gateway_id or "bench")
    task = asyncio.create_task(forwarder.run())
    up = metrics.upstream
    first_at: float | None = None
    first_sent = 0
    try:
        while True:
            await asyncio.sleep(0.005 if first_at is None else 0.05)
            if first_at is None and up.batches:
                first_at, first_sent = time.perf_counter(), up.sent
            if up.sent and (await outbox.pending()).count == 0:
                assert first_at is not None
                return time.perf_counter() - first_at, up.sent - first_sent
            if task.done():
                task.result()
                raise RuntimeError("the forwarder stopped")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def bare_copies(url: str, gateway_id: str, batch: int) -> dict[str, float]:
    """The same rows as central ids, COPYed bare in the same batches, one transaction
    each: into a keyless table of the same columns, and into one with the same primary
    key (no conflict handling, not partitioned). Readings/s of each."""
    conn = await asyncpg.connect(url)
    try:
        rows = [
            (r["series_id"], r["ts"], r["value"])
            for r in await conn.fetch(
                "SELECT r.series_id, r.ts, r.value FROM tidegate.readings_data r"
                " JOIN tidegate.series s ON s.id = r.series_id WHERE s.gateway_id = $1"
                " ORDER BY r.ts, r.series_id",
                gateway_id,
            )
        ]
        out: dict[str, float] = {}
        # The shared ingest function alone (no outbox, no position), same rows and
        # batches, under series of another gateway id: what the forwarder builds on.
        series = CentralSeries()
        sids = sorted({r[0] for r in rows})
        keys = [SeriesKey(f"s{sid}", "bare") for sid in sids]
        ids = await series.ids(conn, "bench-ingest-only", keys)
        remap = {sid: ids[key] for sid, key in zip(sids, keys, strict=True)}
        moved = [(remap[sid], int(ts.timestamp() * 1000), value) for sid, ts, value in rows]
        cache = PartitionCache()
        started = time.perf_counter()
        for start in range(0, len(moved), batch):
            async with conn.transaction():
                await copy_readings(conn, moved[start : start + batch], partitions=cache)
        out["copy_readings"] = len(rows) / (time.perf_counter() - started)
        for table, key in (("bare", ""), ("bare_keyed", ", PRIMARY KEY (series_id, ts)")):
            await conn.execute(
                f"CREATE TABLE {table} (series_id bigint NOT NULL, ts timestamptz NOT NULL,"
                f" value double precision NOT NULL{key})"
            )
            started = time.perf_counter()
            for start in range(0, len(rows), batch):
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        table,
                        records=rows[start : start + batch],
                        columns=("series_id", "ts", "value"),
                    )
            out[table] = len(rows) / (time.perf_counter() - started)
        return out
    finally:
        await conn.close()


async def throughput(url: str, workdir: Path, rows: int, series: int, batch: int) -> None:
    store, outbox, upkeep = await open_edge(workdir / "edge.db")
    try:
        fill_s = await fill(store.sink, rows, series)
        metrics = Metrics()
        took, counted = await forward_all(upstream(url, batch, "bench-edge"), outbox, metrics)
    finally:
        await close_edge(store, upkeep)
    assert metrics.upstream.forwarded == rows, metrics.upstream.forwarded
    bare = await bare_copies(url, "bench-edge", batch)
    rate = counted / took
    print(f"## Forwarding: {rows:,} readings of {series:,} series, batches of {batch:,}\n")
    print(
        f"(edge filled at {rows / fill_s:,.0f} readings/s with forwarding on; the rate is"
        f" timed from the end of the first batch: {counted:,} readings)\n"
    )
    print("| method | readings/s | × bare COPY | × bare COPY, keyed |")
    print("|---|---:|---:|---:|")
    for name, table in (
        ("bare asyncpg COPY, same rows and batches, no key", "bare"),
        ("bare asyncpg COPY into a table with the same primary key", "bare_keyed"),
        ("the shared ingest function alone (copy_readings, no outbox)", "copy_readings"),
    ):
        print(
            f"| {name} | {bare[table]:,.0f} | {bare[table] / bare['bare']:.2f}"
            f" | {bare[table] / bare['bare_keyed']:.2f} |"
        )
    print(
        f"| tidegate forwarder (outbox → COPY + INSERT ON CONFLICT + marks + position)"
        f" | {rate:,.0f} | {rate / bare['bare']:.2f} | {rate / bare['bare_keyed']:.2f} |"
    )
    print()


async def ingest_latencies(
    sink: SqliteSink, seconds: float, series: int, t0: int, until: asyncio.Event | None = None
) -> list[float]:
    """1,000 readings a second as one batch a second; each batch's commit time."""
    out: list[float] = []
    tick = 0
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        if until is not None and until.is_set():
            break
        if until is None and elapsed >= seconds:
            break
        batch = readings(tick * series, series, series, t0)
        began = time.perf_counter()
        await sink.write_batch(batch, [])
        out.append(time.perf_counter() - began)
        tick += 1
        await asyncio.sleep(max(0.0, started + tick - time.monotonic()))
    return out


def _quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms,"
        f" max {ordered[-1] * 1000:.1f} ms ({len(ordered)} batches)"
    )


async def catchup(url: str, workdir: Path, backlog: int, series: int, batch: int) -> None:
    store, outbox, upkeep = await open_edge(workdir / "catchup.db")
    sink = store.sink
    live_t0 = T0 + 2 * HOUR_MS  # the live readings: after the backlog
    try:
        await fill(sink, backlog, series)
        # Let the store's compaction move the fresh backlog out of the hot table first
        # (a real backlog builds up over the outage while compaction keeps pace), so
        # both measurements below see the same steady store.
        deadline = time.monotonic() + 300
        while store.metrics.storage.compacted_rows < backlog and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        quiet = await ingest_latencies(sink, 10.0, series, live_t0)
        metrics = Metrics()
        done = asyncio.Event()
        live = asyncio.create_task(ingest_latencies(sink, 0, series, live_t0 + 100_000, until=done))
        took, _ = await forward_all(upstream(url, batch, "bench-catchup"), outbox, metrics)
        done.set()
        during = await live
    finally:
        await close_edge(store, upkeep)
    print(f"## Catch-up: a backlog of {backlog:,} readings ({series:,} series) while ingesting\n")
    print(
        f"Emptied in {took:.1f} s ({metrics.upstream.sent / took:,.0f} readings/s, including"
        f" the {len(during) * series:,} ingested meanwhile); batches of {batch:,}.\n"
    )
    print(f"- ingest commit latency, no forwarder (10 s): {_quantiles(quiet)}")
    print(f"- ingest commit latency during the catch-up: {_quantiles(during)}")
    print()


async def main_async(url: str, rows: int, series: int, batch: int, backlog: int) -> None:
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-central-") as tmp:
        await throughput(url, Path(tmp), rows, series, batch)
        if backlog:
            await catchup(url, Path(tmp), backlog, series, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--url", default=None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--catchup", type=int, default=0)
    args = parser.parse_args()
    if args.url:
        asyncio.run(main_async(args.url, args.rows, args.series, args.batch, args.catchup))
        return
    from tests.support.postgres import PostgresServer

    with PostgresServer(shared_buffers="128MB") as server:
        url = server.create_database("bench")
        asyncio.run(main_async(url, args.rows, args.series, args.batch, args.catchup))


if __name__ == "__main__":
    main()
