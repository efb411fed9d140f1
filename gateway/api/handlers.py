"""The endpoints. Each one checks its parameters (:mod:`gateway.api.params`), asks the
read side of the store (:class:`gateway.storage.base.ReadStore`), and answers JSON (or
streamed CSV).

Errors: :class:`~gateway.errors.QueryError` → 400 ``{"error": …}``, a database failure
→ 503 (mapped in :mod:`gateway.api.app`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.api import params, prometheus
from gateway.api._uvicorn_adapter import abandon_response
from gateway.api.state import ApiState
from gateway.csv_cells import safe_cell
from gateway.health import readiness
from gateway.request import AggregateQuery, Limit, ReadingsQuery, SeriesCursor
from gateway.status import upstream_status
from gateway.storage.base import Bucket, Latest, ReadingRow, Stats
from gateway.validation import format_ms

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_SPAN_MS = 24 * 3_600_000
DEFAULT_LIMIT = 1000
DB_GAUGES_TTL_S = 5.0
STATS_TTL_S = 10.0
CSV_CHUNK = 5000
"""Rows per chunk of an export (each chunk is one query)."""


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ts_ms: int | None) -> str | None:
    return None if ts_ms is None else format_ms(ts_ms)


def finite(value: float | int | None) -> float | int | None:
    """JSON has no inf/NaN: a sum that overflowed becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def no_store(response: Response) -> Response:
    response.headers["cache-control"] = "no-store"
    return response


def reply(content: Any, status: int = 200) -> Response:
    return no_store(JSONResponse(content, status_code=status))


async def cached(state: ApiState, key: str, ttl: float, load: Callable[[], Awaitable[T]]) -> T:
    """``load()`` at most once per ``ttl`` seconds (database figures for scrapes and
    dashboards that poll)."""
    hit = state.cache.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < ttl:
        value: T = hit[1]  # type: ignore[assignment]
        return value
    fresh = await load()
    state.cache[key] = (now, fresh)
    return fresh


# --- health ------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    """Process alive: the event loop answers."""
    state = state_of(request)
    return reply({"status": "ok", "uptime_s": round(time.time() - state.started_at, 3)})


async def readyz(request: Request) -> Response:
    """Ready (200), degraded (200, falling behind, with the reason) or not ready (503:
    a task failed, broker not connected, a subscription refused, database not
    writable) — :func:`gateway.health.readiness`."""
    state = state_of(request)
    verdict = readiness(state.gateway.metrics, state.gateway.source.connected)
    body: dict[str, Any] = {"status": verdict.status, "reasons": verdict.reasons}
    slots = state.gateway.metrics.slots
    if slots is not None:
        body["slots"] = {
            "held": list(slots.held),
            "total": slots.total,
            "members": slots.members,
            "locks_ok": slots.locks_ok,
        }
    forwarding = upstream_status(state.gateway.metrics)
    if forwarding is not None:
        body["upstream"] = forwarding
    if not verdict.ok:
        return reply({**body, "error": "; ".join(verdict.reasons)}, status=503)
    return reply(body)


# --- metrics and live figures --------------------------------------------------------


async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    state = state_of(request)

    async def load() -> prometheus.DatabaseGauges:
        seen = await state.store.overview()
        return prometheus.DatabaseGauges(
            seen.database_bytes, seen.wal_bytes, seen.series, seen.oldest_ts_ms, seen.newest_ts_ms
        )

    db = await cached(state, "gauges", DB_GAUGES_TTL_S, load)
    text = prometheus.render(
        state.gateway.metrics,
        db,
        started_at=state.started_at,
        version=state.version,
        connections=None if state.connections is None else state.connections.stats,
    )
    return no_store(Response(text, media_type=prometheus.CONTENT_TYPE))


def live_figures(state: ApiState) -> dict[str, Any]:
    """Runtime figures from memory only (no database access): cheap to poll."""
    m = state.gateway.metrics
    readings_rate, messages_rate, window = state.meter.rates()
    return {
        "mode": "gateway",
        "uptime_s": round(time.time() - state.started_at, 3),
        "broker_connected": state.gateway.source.connected,
        "connections": m.connected,
        "storage_ok": m.storage_ok,
        "storage_error": m.storage_error,
        "queue_depth": m.queue_depth(),
        "queue_capacity": m.queue_capacity,
        "messages_received": m.messages_received,
        "messages_committed": m.messages_committed,
        "messages_dead_lettered": m.messages_dead_lettered,
        "readings_stored": m.readings_stored,
        "duplicates_ignored": m.duplicates_ignored,
        "reconnects": m.reconnects,
        "batches": m.batches,
        "commit_latency_p50_s": finite(m.commit_latency.quantile(0.5)),
        "commit_latency_p99_s": finite(m.commit_latency.quantile(0.99)),
        "ingest_rate": {
            "readings_per_s": round(readings_rate, 2),
            "messages_per_s": round(messages_rate, 2),
            "window_s": round(window, 2),
        },
        "upstream": upstream_status(m),
    }


async def live(request: Request) -> Response:
    """Runtime figures for the dashboard's live panel."""
    params.checked(request.query_params, NO_PARAMS)
    return reply(live_figures(state_of(request)))


async def database_totals(state: ApiState, gateway: str | None) -> dict[str, Any]:
    """``/stats``' ``database`` part: totals of the store, or of one gateway's data
    (cached for a few seconds: counting scans)."""

    async def load() -> Stats:
        return await state.store.stats(gateway)

    key = "stats" if gateway is None else "stats\x00" + gateway
    totals = await cached(state, key, STATS_TTL_S, load)
    return {
        "gateway": gateway,
        "readings": totals.readings,
        "series": totals.series,
        "sensors": totals.sensors,
        "dead_letters": totals.dead_letters,
        "database_bytes": totals.database_bytes,
        "wal_bytes": totals.wal_bytes,
        "bytes_per_reading": (
            round(totals.database_bytes / totals.readings, 2) if totals.readings else None
        ),
        "oldest": iso(totals.oldest_ts_ms),
        "oldest_ms": totals.oldest_ts_ms,
        "newest": iso(totals.newest_ts_ms),
        "newest_ms": totals.newest_ts_ms,
    }


async def stats(request: Request) -> Response:
    """Database totals (of one gateway's data with ``gateway``) plus runtime figures."""
    state = state_of(request)
    qp = params.checked(request.query_params, STATS_PARAMS)
    database = await database_totals(state, params.gateway(qp))
    return reply({"database": database, "runtime": live_figures(state)})


# --- gateways -----------------------------------------------------------------------


async def gateways(request: Request) -> Response:
    """Every gateway the store holds data of: a gateway's own store knows only itself;
    the central store (``tidegate serve``) every edge forwarding into it, with when it
    last forwarded and how far behind it was then; one that has not forwarded for
    ``api.stale_after_s`` is ``stale``."""
    params.checked(request.query_params, NO_PARAMS)
    state = state_of(request)
    now = now_ms()
    stale_ms = state.config.stale_after_s * 1000
    out = []
    for g in await state.store.gateways():
        entry: dict[str, Any] = {"gateway": g.gateway_id, "series": g.series, "sensors": g.sensors}
        f = g.forwarding
        if f is None:
            entry["forwarding"] = None
        else:
            behind_ms = None if f.oldest_pending_ms is None else max(0, now - f.oldest_pending_ms)
            entry["forwarding"] = {
                "forwarded": f.forwarded,
                "backlog_readings": f.backlog,
                "oldest_pending": iso(f.oldest_pending_ms),
                "behind_s": None if behind_ms is None else round(behind_ms / 1000, 3),
                "last_forward": iso(f.last_forward_ms),
                "last_forward_ms": f.last_forward_ms,
                "age_s": round((now - f.last_forward_ms) / 1000, 3),
                "stale": now - f.last_forward_ms > stale_ms,
            }
        out.append(entry)
    return reply(
        {
            "now": iso(now),
            "stale_after_s": state.config.stale_after_s,
            "count": len(out),
            "gateways": out,
        }
    )


# --- sensors ------------------------------------------------------------------------


SENSORS_PARAMS = frozenset({"sensor", "metric", "gateway", "match", "limit", "cursor"})
READINGS_PARAMS = frozenset(
    {"sensor", "metric", "gateway", "from", "to", "order", "cursor", "limit", "format"}
)
AGGREGATE_PARAMS = frozenset(
    {"sensor", "metric", "gateway", "from", "to", "bucket", "agg", "tier", "format"}
)
STATS_PARAMS = frozenset({"gateway"})
NO_PARAMS: frozenset[str] = frozenset()
"""What each endpoint under /api/v1 takes (see :func:`gateway.api.params.checked`)."""


async def sensors(request: Request) -> Response:
    """Sensors with their metrics' last values and when they were last seen, a page of
    ``limit`` series at a time in (sensor, metric) order; ``next_cursor`` continues."""
    state = state_of(request)
    qp = params.checked(request.query_params, SENSORS_PARAMS)
    sensor = params.text(qp, "sensor")
    metric = params.text(qp, "metric")
    match = params.text(qp, "match")
    gateway = params.gateway(qp)
    high = state.config.max_rows
    limit = params.integer(qp, "limit", min(DEFAULT_LIMIT, high), 1, high)
    after = params.decode_series_cursor(qp)
    rows = await state.store.latest(
        sensor, metric, match=match, after=after, limit=limit + 1, gateway=gateway
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = params.encode_series_cursor((last.sensor_id, last.metric, last.series_id))
    now = now_ms()
    stale_ms = state.config.stale_after_s * 1000
    # One entry per sensor of a gateway: the same sensor id on two gateways is two
    # sensors (two sites may both have a "kitchen").
    grouped: dict[tuple[str, str], list[Latest]] = {}
    for row in rows:
        grouped.setdefault((row.gateway_id, row.sensor_id), []).append(row)
    out = []
    for (gateway_id, sensor_id), series in grouped.items():
        seen = [s.last_ts_ms for s in series if s.last_ts_ms is not None]
        last_ms = max(seen) if seen else None
        out.append(
            {
                "gateway": gateway_id,
                "sensor_id": sensor_id,
                "last_seen": iso(last_ms),
                "last_seen_ms": last_ms,
                "age_s": None if last_ms is None else round((now - last_ms) / 1000, 3),
                "stale": last_ms is None or now - last_ms > stale_ms,
                "metrics": [
                    {
                        "metric": s.metric,
                        "unit": s.unit,
                        "tags": s.tags,
                        "last_value": s.last_value,
                        "last_ts": iso(s.last_ts_ms),
                        "last_ts_ms": s.last_ts_ms,
                    }
                    for s in series
                ],
            }
        )
    return reply(
        {
            "now": iso(now),
            "stale_after_s": state.config.stale_after_s,
            "count": len(out),
            "series": len(rows),
            "next_cursor": next_cursor,
            "sensors": out,
        }
    )


# --- streaming CSV ------------------------------------------------------------------


def _csv_lines(rows: Iterable[Iterable[object]], raw: bool = False) -> str:
    """CSV text for ``rows``; text cells escaped against formulas unless ``raw``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if raw:
        writer.writerows(rows)
    else:
        writer.writerows([safe_cell(cell) for cell in row] for row in rows)
    return buffer.getvalue()


class _ExportSlot:
    """One of ``api.max_exports``: taken synchronously (before the handler awaits
    anything, so simultaneous requests cannot all pass the check), given back exactly
    once, however the export ends."""

    def __init__(self, state: ApiState) -> None:
        self.state = state
        self.held = state.exports_running < state.config.max_exports
        if self.held:
            state.exports_running += 1

    def release(self) -> None:
        if self.held:
            self.held = False
            self.state.exports_running -= 1


class _Export(StreamingResponse):
    """A CSV stream that gives its slot back when the response ends — also when it
    never started (the client left first) — and stops at the export deadline."""

    def __init__(self, body: AsyncIterator[str], slot: _ExportSlot) -> None:
        super().__init__(body, media_type="text/csv; charset=utf-8")
        self.slot = slot

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except _ExportStopped as exc:
            # The 200 is out: returning without finishing the body makes the server
            # close the connection, so the client sees an incomplete transfer.
            log.warning("%s", exc)
            abandon_response()
        finally:
            self.slot.release()


class _ExportStopped(Exception):
    """An export ran past ``api.export_timeout_s``: the response is cut off (the client
    sees an incomplete transfer, not a complete-looking file)."""


async def _csv_response(
    state: ApiState,
    header: list[str],
    chunks: Callable[[], AsyncIterator[list[T]]],
    to_row: Callable[[T], list[object]],
    filename: str,
    raw: bool = False,
) -> Response:
    """Stream the chunks of ``chunks()`` as CSV, never holding the whole result.

    The export slot is taken before the first await. The first chunk is read before the
    response starts, so a bad request still gets a proper 400 rather than a cut-off
    200. The whole export must end within ``api.export_timeout_s``; a client that stops
    reading is cut off by the server's send timeout (``api.send_timeout_s``).
    """
    slot = _ExportSlot(state)
    if not slot.held:
        return reply({"error": "too many exports running; try again shortly"}, status=429)
    deadline = time.monotonic() + state.config.export_timeout_s
    try:
        iterator = aiter(chunks())
        first = await anext(iterator, None)
    except BaseException:
        slot.release()
        raise

    async def body() -> AsyncIterator[str]:
        try:
            yield _csv_lines([header])
            if first is not None:
                yield _csv_lines((to_row(item) for item in first), raw)
                async for chunk in iterator:
                    if time.monotonic() > deadline:
                        raise _ExportStopped(
                            f"export stopped after {state.config.export_timeout_s:g}s"
                            " (api.export_timeout_s)"
                        )
                    yield _csv_lines((to_row(item) for item in chunk), raw)
        finally:
            slot.release()
            await _aclose(iterator)

    response = _Export(body(), slot)
    response.headers["content-disposition"] = f'attachment; filename="{filename}"'
    return no_store(response)


async def _readings_by_key(
    state: ApiState, query: ReadingsQuery, total: int, chunk: int
) -> AsyncIterator[list[ReadingRow]]:
    """Up to ``total`` rows of ``query`` in chunks, each chunk its own query starting
    after the last row's key ``(ts, series_id)``: no read transaction (and so no WAL
    snapshot) lives between chunks, however long the client takes to read them."""
    after = query.after
    left = total
    while left > 0:
        size = min(chunk, left)
        rows = await state.store.readings(replace(query, after=after, limit=size))
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        left -= len(rows)
        after = (rows[-1].ts_ms, rows[-1].series_id)


async def _aclose(chunks: AsyncIterator[Any]) -> None:
    """Release a stream's resources (an async generator's ``aclose``)."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


SERIES_PAGE = 1000
"""Series listed per query while an aggregate export walks them."""


async def _aggregate_by_series(
    state: ApiState, query: AggregateQuery, total: int
) -> AsyncIterator[list[Bucket]]:
    """Up to ``total`` buckets of ``query`` in series order, one query per (sensor,
    metric) and one per page of series — each its own read transaction, so, as for
    readings, no snapshot lives while the client reads (``docs/decisions/0155``)."""
    after: SeriesCursor | None = None
    left = total
    previous: tuple[str, str] | None = None
    while left > 0:
        page = await state.store.series(
            query.sensor, query.metric, counts=False, after=after, limit=SERIES_PAGE
        )
        for info in page:
            pair = (info.sensor_id, info.metric)
            if pair == previous:
                continue  # the same name with another unit or tags: answered already
            previous = pair
            one = replace(query, sensor=info.sensor_id, metric=info.metric, limit=left)
            buckets = await state.store.aggregate(one)
            if buckets:
                yield buckets
                left -= len(buckets)
                if left <= 0:
                    return
        if len(page) < SERIES_PAGE:
            return
        last = page[-1]
        after = (last.sensor_id, last.metric, last.series_id)


# --- readings -----------------------------------------------------------------------


def _reading_json(row: ReadingRow) -> dict[str, Any]:
    return {
        "sensor_id": row.sensor_id,
        "metric": row.metric,
        "ts": format_ms(row.ts_ms),
        "ts_ms": row.ts_ms,
        "value": row.value,
        "unit": row.unit,
        "tags": row.tags,
        "gateway": row.gateway_id,
    }


def _reading_csv(row: ReadingRow) -> list[object]:
    tags = json.dumps(row.tags, separators=(",", ":"), sort_keys=True) if row.tags else ""
    return [
        format_ms(row.ts_ms),
        row.ts_ms,
        row.sensor_id,
        row.metric,
        row.value,
        row.unit or "",
        tags,
        row.gateway_id,
    ]


READING_CSV_HEADER = ["ts", "ts_ms", "sensor_id", "metric", "value", "unit", "tags", "gateway"]
"""``gateway`` last: the columns before it kept their places when it was added."""


async def readings(request: Request) -> Response:
    """Raw readings in ``[from, to)``, keyset-paginated (JSON) or streamed (CSV)."""
    state = state_of(request)
    qp = params.checked(request.query_params, READINGS_PARAMS)
    now = now_ms()
    csv_wanted = params.wants_csv(qp, request.headers.get("accept", ""))
    sensor = params.text(qp, "sensor")
    metric = params.text(qp, "metric")
    gateway = params.gateway(qp)
    span = params.time_range(qp, now, DEFAULT_SPAN_MS, state.max_range_ms, open_end=True)
    order = params.choice(qp, "order", ("asc", "desc"), "asc")
    descending = order == "desc"
    after = params.decode_cursor(params.text(qp, "cursor"))
    high = state.config.max_export_rows if csv_wanted else state.config.max_rows
    limit = params.integer(qp, "limit", high if csv_wanted else min(DEFAULT_LIMIT, high), 1, high)

    def select(how_many: int) -> ReadingsQuery:
        return ReadingsQuery(
            sensor=sensor,
            metric=metric,
            gateway=gateway,
            since_ms=span.since_ms,
            until_ms=span.until_ms,
            limit=how_many,
            after=after,
            descending=descending,
        )

    if csv_wanted:
        return await _csv_response(
            state,
            READING_CSV_HEADER,
            lambda: _readings_by_key(state, select(limit), limit, CSV_CHUNK),
            _reading_csv,
            "readings.csv",
            params.csv_raw(qp),
        )

    rows = await state.store.readings(select(limit + 1))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = params.encode_cursor(rows[-1].ts_ms, rows[-1].series_id)
    return reply(
        {
            "from": iso(span.since_ms),
            "to": iso(span.until_ms),
            "order": order,
            "count": len(rows),
            "next_cursor": next_cursor,
            "readings": [_reading_json(row) for row in rows],
        }
    )


# --- aggregates ---------------------------------------------------------------------


async def aggregate(request: Request) -> Response:
    """Time buckets (``1m``, ``1h``, ``1d``, …) with min/max/avg/sum/count/last."""
    state = state_of(request)
    qp = params.checked(request.query_params, AGGREGATE_PARAMS)
    now = now_ms()
    csv_wanted = params.wants_csv(qp, request.headers.get("accept", ""))
    sensor = params.text(qp, "sensor")
    metric = params.text(qp, "metric")
    gateway = params.gateway(qp)
    max_range_ms = state.max_range_ms
    span = params.time_range(qp, now, DEFAULT_SPAN_MS, max_range_ms, open_end=False)
    bucket_ms = params.duration_ms(qp, "bucket", "1h", max_range_ms)
    aggs = params.aggregates(qp.getlist("agg"))
    tier = params.tier(qp)
    until_ms = span.until_ms if span.until_ms is not None else now
    # Checked where the query is built: at most this many buckets per series.
    max_buckets = Limit(state.config.max_buckets, "api.max_buckets")
    max_rows = state.config.max_rows

    def select(limit: int) -> AggregateQuery:
        return AggregateQuery(
            sensor=sensor,
            metric=metric,
            gateway=gateway,
            since_ms=span.since_ms,
            until_ms=until_ms,
            bucket_ms=bucket_ms,
            aggregates=tuple(aggs),
            tier=tier,
            max_buckets=max_buckets,
            limit=limit,
        )

    if csv_wanted:
        header = ["start", "start_ms", "sensor_id", "metric", *aggs, "tier", "gateway"]

        def to_row(b: Bucket) -> list[object]:
            values = [finite(b.values.get(a)) for a in aggs]
            return [
                format_ms(b.start_ms), b.start_ms, b.sensor_id, b.metric, *values, b.tier,
                b.gateway_id,
            ]  # fmt: skip

        return await _csv_response(
            state,
            header,
            lambda: _aggregate_by_series(state, select(0), state.config.max_export_rows),
            to_row,
            "aggregate.csv",
            params.csv_raw(qp),
        )

    buckets = await state.store.aggregate(select(max_rows + 1))
    if len(buckets) > max_rows:
        raise Limit(max_rows, "api.max_rows").exceeded(
            "buckets in total", "narrow with sensor or metric, or use a larger bucket"
        )
    series: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    last_start = -1
    for b in buckets:
        if (
            current is None
            or current["sensor_id"] != b.sensor_id
            or current["metric"] != b.metric
            or current["gateway"] != b.gateway_id
            or b.start_ms <= last_start
        ):
            current = {
                "gateway": b.gateway_id,
                "sensor_id": b.sensor_id,
                "metric": b.metric,
                "buckets": [],
            }
            series.append(current)
        last_start = b.start_ms
        entry: dict[str, Any] = {"start": format_ms(b.start_ms), "start_ms": b.start_ms}
        entry.update({a: finite(b.values.get(a)) for a in aggs})
        entry["tier"] = b.tier
        current["buckets"].append(entry)
    return reply(
        {
            "from": iso(span.since_ms),
            "to": iso(until_ms),
            "bucket": params.text(qp, "bucket") or "1h",
            "bucket_ms": bucket_ms,
            "aggregates": aggs,
            "series": series,
        }
    )
