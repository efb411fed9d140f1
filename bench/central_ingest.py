"""How readings should enter the central PostgreSQL: COPY + INSERT vs plain INSERTs.

``python -m bench.central_ingest [--url postgresql://…] [--rows N] [--batch B]``
(without ``--url`` it starts a private server like the tests do). Each method writes
the same rows — ``--series`` series at 1 Hz, interleaved as they arrive — in batches of
``--batch`` rows, one transaction per batch, into a fresh ``tidegate`` schema; then
writes them all again (a replay: every row a duplicate). Reported as readings/s and as
a ratio to a bare COPY of the same rows into a table of the same shape without a key
(the ceiling), and beside a bare COPY straight into ``readings_data`` (same key, no
conflict handling: what an idempotent write can hope for). Decision ``docs/decisions/0111-central-ingest-by-copy.md`` records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from gateway.storage.postgresql.ingest import (
    MINUTE_MS,
    PartitionCache,
    copy_readings,
    ensure_partitions,
)
from gateway.storage.postgresql.schema import migrate

Rows = Sequence[tuple[int, int, float]]
T0 = 1_764_460_800_000

_UNNEST = """
WITH r AS (
    INSERT INTO tidegate.readings_data (series_id, ts, value)
    SELECT s, timestamptz 'epoch' + t * interval '1 millisecond', v
    FROM unnest($1::bigint[], $2::bigint[], $3::float8[]) AS u(s, t, v) ORDER BY s, t
    ON CONFLICT DO NOTHING RETURNING 1
)
SELECT count(*) FROM r
"""
_UNNEST_PENDING = f"""
INSERT INTO tidegate.rollup_pending (series_id, bucket)
SELECT DISTINCT s, timestamptz 'epoch' + (t - t % {MINUTE_MS}) * interval '1 millisecond'
FROM unnest($1::bigint[], $2::bigint[]) AS u(s, t) ORDER BY 1, 2
ON CONFLICT DO NOTHING
"""
_MANY = (
    "INSERT INTO tidegate.readings_data (series_id, ts, value)"
    " VALUES ($1, timestamptz 'epoch' + $2 * interval '1 millisecond', $3)"
    " ON CONFLICT DO NOTHING"
)
_MANY_PENDING = (
    "INSERT INTO tidegate.rollup_pending (series_id, bucket)"
    " VALUES ($1, timestamptz 'epoch' + $2 * interval '1 millisecond') ON CONFLICT DO NOTHING"
)


async def by_copy(conn: Any, rows: Rows, cache: PartitionCache) -> None:
    await copy_readings(conn, rows, partitions=cache)


async def by_unnest(conn: Any, rows: Rows, cache: PartitionCache) -> None:
    sids = [r[0] for r in rows]
    stamps = [r[1] for r in rows]
    await conn.fetchval(_UNNEST, sids, stamps, [r[2] for r in rows])
    await conn.execute(_UNNEST_PENDING, sids, stamps)


async def by_executemany(conn: Any, rows: Rows, cache: PartitionCache) -> None:
    await conn.executemany(_MANY, rows)
    minutes = sorted({(r[0], r[1] - r[1] % MINUTE_MS) for r in rows})
    await conn.executemany(_MANY_PENDING, minutes)


async def bare_copy(conn: Any, rows: Rows, cache: PartitionCache) -> None:
    await conn.copy_records_to_table(
        "bare", records=rows, columns=("series_id", "ts_ms", "value"), schema_name="public"
    )


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


async def keyed_copy(conn: Any, rows: Rows, cache: PartitionCache) -> None:
    """COPY straight into ``readings_data`` (its key, no conflict handling: a replay
    fails, so only the fresh round counts) — the same table's ceiling."""
    records = [(s, _EPOCH + dt.timedelta(milliseconds=t), v) for s, t, v in rows]
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "readings_data",
                records=records,
                columns=("series_id", "ts", "value"),
                schema_name="tidegate",
            )
    except asyncpg.UniqueViolationError:
        pass


Method = Callable[[Any, Rows, PartitionCache], Awaitable[None]]


async def run_method(url: str, method: Method, batches: list[Rows]) -> tuple[float, float]:
    """Seconds to write every batch fresh, then again as a replay."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "DROP SCHEMA IF EXISTS tidegate CASCADE; DROP TABLE IF EXISTS public.bare;"
            " CREATE TABLE public.bare (series_id bigint, ts_ms bigint, value float8)"
        )
        await migrate(conn)
        cache = PartitionCache()
        lo = min(r[1] for b in batches for r in b)
        hi = max(r[1] for b in batches for r in b)
        await ensure_partitions(conn, lo, hi, cache)
        await conn.execute("CHECKPOINT")
        times = []
        for _round in range(2):
            start = time.perf_counter()
            for batch in batches:
                async with conn.transaction():
                    await method(conn, batch, cache)
            times.append(time.perf_counter() - start)
        return times[0], times[1]
    finally:
        await conn.close()


def make_batches(total: int, series: int, batch: int) -> list[Rows]:
    rows = [(1 + i % series, T0 + (i // series) * 1000, float(i % 977)) for i in range(total)]
    return [rows[i : i + batch] for i in range(0, total, batch)]


async def main_async(url: str, total: int, series: int, batch: int) -> None:
    batches = make_batches(total, series, batch)
    methods: list[tuple[str, Method]] = [
        ("bare COPY (no key, ceiling)", bare_copy),
        ("bare COPY into readings_data (keyed)", keyed_copy),
        ("COPY staging + INSERT ON CONFLICT", by_copy),
        ("INSERT SELECT unnest ON CONFLICT", by_unnest),
        ("executemany INSERT ON CONFLICT", by_executemany),
    ]
    results = {}
    for name, method in methods:
        results[name] = await run_method(url, method, batches)
    base = total / results[methods[0][0]][0]
    print(f"{total:,} rows, {series:,} series, batches of {batch:,}, one transaction each")
    for name, (fresh, replay) in results.items():
        rate = total / fresh
        print(
            f"  {name:36s} fresh {rate:>10,.0f}/s ({rate / base:5.0%} of bare COPY)"
            f"  replay {total / replay:>10,.0f}/s"
            + ("  (replay n/a: fails)" if name.startswith("bare COPY into") else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--url", default=None)
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    if args.url:
        asyncio.run(main_async(args.url, args.rows, args.series, args.batch))
        return
    from tests.support.postgres import PostgresServer

    with PostgresServer(shared_buffers="128MB") as server:
        url = server.create_database("bench")
        asyncio.run(main_async(url, args.rows, args.series, args.batch))


if __name__ == "__main__":
    main()
