"""The OpenAPI 3.1 description of the API, written by hand (no framework generates it;
``docs/decisions/0050-http-stack.md`` says why). ``tests/integration/test_api.py`` runs
schemathesis against it, so it must stay true to the handlers."""

from __future__ import annotations

from typing import Any

from gateway import __version__

JSON = "application/json"
CSV = "text/csv"

_nullable_str: dict[str, Any] = {"type": ["string", "null"]}
_nullable_int: dict[str, Any] = {"type": ["integer", "null"]}
_nullable_num: dict[str, Any] = {"type": ["number", "null"]}
_tags: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _param(name: str, description: str, example: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", "maxLength": 1024},
    }
    if example is not None:
        out["example"] = example
    return out


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


_ERROR = _json(_ref("Error"), "Error")
_COMMON_ERRORS: dict[str, Any] = {
    "401": _json(_ref("Error"), "Missing or wrong bearer token (when a token is set)"),
    "429": _json(_ref("Error"), "Rate limit exceeded (see Retry-After)"),
}
_QUERY_ERRORS: dict[str, Any] = {
    "400": _json(_ref("Error"), "Invalid parameters, or a limit exceeded"),
    **_COMMON_ERRORS,
    "503": _json(_ref("Error"), "The database cannot be read"),
}

_SENSOR = _param("sensor", "Sensor id (exact match). Also accepted as `sensor_id`.", "s1")
_METRIC = _param("metric", "Metric name (exact match).", "temperature")
_GATEWAY = _param(
    "gateway",
    "Only this gateway's data (exact match). A gateway's own API holds one gateway (its"
    " `upstream.gateway_id`, default the host name); `tidegate serve` every gateway of the"
    " central store. An id no gateway has matches nothing.",
    "site-north",
)
_FROM = _param(
    "from",
    "Start (inclusive): ISO 8601, epoch s or ms, `now`, or a duration ago (`2h`)."
    " Default: 24 h before `to`. Also accepted as `since`.",
    "2h",
)
_TO_OPEN = _param(
    "to", "End (exclusive), same forms as `from`. Default: open-ended. Also `until`.", "now"
)
_TO_NOW = _param("to", "End (exclusive), same forms as `from`. Default: now. Also `until`.", "now")
_FORMAT = {
    "name": "format",
    "in": "query",
    "required": False,
    "description": "`csv` streams CSV (also chosen by `Accept: text/csv`); text cells"
    " a spreadsheet would run as formulas (starting with `=`, `+`, `-`, `@`, tab or CR)"
    " get a leading `'`. `csv-raw` streams them exactly as stored.",
    "schema": {"type": "string", "enum": ["json", "csv", "csv-raw"]},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}, "uptime_s": {"type": "number"}},
    },
    "Ready": {
        "type": "object",
        "required": ["status", "reasons"],
        "properties": {
            "status": {"type": "string", "enum": ["ready", "degraded", "not ready"]},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "error": {"type": "string"},
            "upstream": {"$ref": "#/components/schemas/Upstream"},
        },
    },
    "Upstream": {
        "type": ["object", "null"],
        "description": "Forwarding to the central store (docs/upstream.md); null or absent"
        " when [upstream] is not configured.",
        "properties": {
            "gateway_id": {"type": "string"},
            "connected": {"type": "boolean"},
            "unreachable_since": _nullable_num,
            "last_error": {"type": "string"},
            "position": {"type": "integer"},
            "pending": {"type": "integer"},
            "oldest_pending_age_s": {"type": "number"},
            "forwarded": {"type": "integer"},
            "sent": {"type": "integer"},
            "forward_rate": {"type": "number"},
            "ingest_rate": {"type": "number"},
            "buffer_hours_left": _nullable_num,
            "errors": {"type": "integer"},
            "conflicts": {"type": "integer"},
            "dropped": {"type": "integer"},
        },
    },
    "MetricLast": {
        "type": "object",
        "required": ["metric", "unit", "tags", "last_value", "last_ts", "last_ts_ms"],
        "properties": {
            "metric": {"type": "string"},
            "unit": _nullable_str,
            "tags": _tags,
            "last_value": _nullable_num,
            "last_ts": _nullable_str,
            "last_ts_ms": _nullable_int,
        },
    },
    "Sensor": {
        "type": "object",
        "required": [
            "gateway",
            "sensor_id",
            "last_seen",
            "last_seen_ms",
            "age_s",
            "stale",
            "metrics",
        ],
        "properties": {
            "gateway": {"type": "string"},
            "sensor_id": {"type": "string"},
            "last_seen": _nullable_str,
            "last_seen_ms": _nullable_int,
            "age_s": _nullable_num,
            "stale": {"type": "boolean"},
            "metrics": {"type": "array", "items": _ref("MetricLast")},
        },
    },
    "Sensors": {
        "type": "object",
        "required": ["now", "stale_after_s", "count", "series", "next_cursor", "sensors"],
        "properties": {
            "now": {"type": "string"},
            "stale_after_s": {"type": "integer"},
            "count": {"type": "integer", "description": "Sensors on this page."},
            "series": {"type": "integer", "description": "Series (metrics) on this page."},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on the last.",
            },
            "sensors": {"type": "array", "items": _ref("Sensor")},
        },
    },
    "Reading": {
        "type": "object",
        "required": ["sensor_id", "metric", "ts", "ts_ms", "value", "unit", "tags", "gateway"],
        "properties": {
            "gateway": {"type": "string"},
            "sensor_id": {"type": "string"},
            "metric": {"type": "string"},
            "ts": {"type": "string", "description": "ISO 8601 UTC, millisecond precision"},
            "ts_ms": {"type": "integer", "description": "epoch milliseconds UTC"},
            "value": {"type": "number"},
            "unit": _nullable_str,
            "tags": _tags,
        },
    },
    "ReadingsPage": {
        "type": "object",
        "required": ["from", "to", "order", "count", "next_cursor", "readings"],
        "properties": {
            "from": {"type": "string"},
            "to": _nullable_str,
            "order": {"type": "string", "enum": ["asc", "desc"]},
            "count": {"type": "integer"},
            "next_cursor": {
                **_nullable_str,
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
            "readings": {"type": "array", "items": _ref("Reading")},
        },
    },
    "Bucket": {
        "type": "object",
        "required": ["start", "start_ms", "tier"],
        "description": "One time bucket; holds the requested aggregates (null when a sum"
        " overflowed) and `tier`: which data answered it (`raw` readings, or the `1m` or"
        " `1h` rollups).",
        "properties": {
            "start": {"type": "string"},
            "start_ms": {"type": "integer"},
            "min": _nullable_num,
            "max": _nullable_num,
            "avg": _nullable_num,
            "sum": _nullable_num,
            "count": _nullable_int,
            "last": _nullable_num,
            "tier": {"type": "string", "enum": ["raw", "1m", "1h"]},
        },
    },
    "Aggregate": {
        "type": "object",
        "required": ["from", "to", "bucket", "bucket_ms", "aggregates", "series"],
        "properties": {
            "from": {"type": "string"},
            "to": {"type": "string"},
            "bucket": {"type": "string"},
            "bucket_ms": {"type": "integer"},
            "aggregates": {"type": "array", "items": {"type": "string"}},
            "series": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["gateway", "sensor_id", "metric", "buckets"],
                    "properties": {
                        "gateway": {"type": "string"},
                        "sensor_id": {"type": "string"},
                        "metric": {"type": "string"},
                        "buckets": {"type": "array", "items": _ref("Bucket")},
                    },
                },
            },
        },
    },
    "Live": {
        "type": "object",
        "required": ["mode", "uptime_s", "storage_ok"],
        "description": "`mode` `gateway`: a gateway's own figures (every property below);"
        " `hub` (`tidegate serve`): only `uptime_s` and whether the central store answers"
        " (`storage_ok`, `storage_error`).",
        "properties": {
            "mode": {"type": "string", "enum": ["gateway", "hub"]},
            "uptime_s": {"type": "number"},
            "broker_connected": {"type": "boolean"},
            "connections": {"type": "integer"},
            "storage_ok": {"type": "boolean"},
            "storage_error": _nullable_str,
            "queue_depth": {"type": "integer"},
            "queue_capacity": {"type": "integer"},
            "messages_received": {"type": "integer"},
            "messages_committed": {"type": "integer"},
            "messages_dead_lettered": {"type": "integer"},
            "readings_stored": {"type": "integer"},
            "duplicates_ignored": {"type": "integer"},
            "reconnects": {"type": "integer"},
            "batches": {"type": "integer"},
            "commit_latency_p50_s": _nullable_num,
            "commit_latency_p99_s": _nullable_num,
            "ingest_rate": {
                "type": "object",
                "properties": {
                    "readings_per_s": {"type": "number"},
                    "messages_per_s": {"type": "number"},
                    "window_s": {"type": "number"},
                },
            },
            "upstream": {"$ref": "#/components/schemas/Upstream"},
        },
    },
    "Stats": {
        "type": "object",
        "required": ["database", "runtime"],
        "properties": {
            "database": {
                "type": "object",
                "properties": {
                    "gateway": {
                        **_nullable_str,
                        "description": "The `gateway` asked for (null: the whole store).",
                    },
                    "readings": {"type": "integer"},
                    "series": {"type": "integer"},
                    "sensors": {"type": "integer"},
                    "dead_letters": {"type": "integer"},
                    "database_bytes": {"type": "integer"},
                    "wal_bytes": {"type": "integer"},
                    "bytes_per_reading": _nullable_num,
                    "oldest": _nullable_str,
                    "oldest_ms": _nullable_int,
                    "newest": _nullable_str,
                    "newest_ms": _nullable_int,
                },
            },
            "runtime": _ref("Live"),
        },
    },
    "Forwarding": {
        "type": "object",
        "description": "What the edge reported with its last forwarded batch (the central"
        " store's forward position of it).",
        "required": [
            "forwarded",
            "backlog_readings",
            "oldest_pending",
            "behind_s",
            "last_forward",
            "last_forward_ms",
            "age_s",
            "stale",
        ],
        "properties": {
            "forwarded": {"type": "integer", "description": "Readings forwarded in total."},
            "backlog_readings": {
                "type": "integer",
                "description": "Readings it still held unforwarded then.",
            },
            "oldest_pending": _nullable_str,
            "behind_s": {
                **_nullable_num,
                "description": "How far behind it is: age of its oldest unforwarded reading"
                " (null: nothing pending).",
            },
            "last_forward": {"type": "string"},
            "last_forward_ms": {"type": "integer"},
            "age_s": {"type": "number", "description": "Seconds since it last forwarded."},
            "stale": {
                "type": "boolean",
                "description": "No batch for longer than api.stale_after_s.",
            },
        },
    },
    "Gateway": {
        "type": "object",
        "required": ["gateway", "series", "sensors", "forwarding"],
        "properties": {
            "gateway": {"type": "string"},
            "series": {"type": "integer"},
            "sensors": {"type": "integer"},
            "forwarding": {
                "oneOf": [_ref("Forwarding"), {"type": "null"}],
                "description": "null when the gateway does not forward into this store"
                " (a gateway's own store, a direct-mode group).",
            },
        },
    },
    "Gateways": {
        "type": "object",
        "required": ["now", "stale_after_s", "count", "gateways"],
        "properties": {
            "now": {"type": "string"},
            "stale_after_s": {"type": "integer"},
            "count": {"type": "integer"},
            "gateways": {"type": "array", "items": _ref("Gateway")},
        },
    },
}


def _get(
    summary: str,
    responses: dict[str, Any],
    parameters: list[dict[str, Any]] | None = None,
    description: str = "",
    tag: str = "data",
    secured: bool = True,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": summary.lower().replace(" ", "_").replace(",", ""),
        "tags": [tag],
        "parameters": parameters or [],
        "responses": responses,
    }
    if description:
        op["description"] = description
    if not secured:
        op["security"] = []
    return {"get": op}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document served at ``/openapi.json``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tidegate",
            "version": __version__,
            "description": "Stored sensor readings, health and metrics of a tidegate gateway."
            " When a token is configured (always, when bound beyond loopback) every"
            " endpoint except /healthz needs `Authorization: Bearer <token>`."
            " Errors are JSON objects with an `error` string. Under /api/v1, a parameter an"
            " endpoint does not take, or one given twice, is a 400 naming it;"
            " `sensor_id`, `since` and `until` are accepted for `sensor`, `from` and `to`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "health", "description": "Liveness, readiness and metrics"},
            {"name": "data", "description": "Stored readings"},
        ],
        "paths": {
            "/healthz": _get(
                "Liveness",
                {"200": _json(_ref("Health"), "The process is alive")},
                tag="health",
                secured=False,
                description="Always open (no token): says only that the process answers.",
            ),
            "/readyz": _get(
                "Readiness",
                {
                    "200": _json(
                        _ref("Ready"),
                        "Ready, or degraded (falling behind; the reason says how far)",
                    ),
                    "503": _json(
                        _ref("Ready"),
                        "Not ready, with reasons (a task failed, broker not connected,"
                        " subscription refused, database not writable)",
                    ),
                    **_COMMON_ERRORS,
                },
                tag="health",
            ),
            "/metrics": _get(
                "Prometheus metrics",
                {
                    "200": {
                        "description": "Prometheus text exposition format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_COMMON_ERRORS,
                    "503": _ERROR,
                },
                tag="health",
            ),
            "/api/v1/live": _get(
                "Live figures",
                {"200": _json(_ref("Live"), "Runtime figures"), **_COMMON_ERRORS},
                description="In-memory runtime figures (no database access): ingest rate,"
                " queue depth, connection and storage state. Cheap to poll.",
                tag="health",
            ),
            "/api/v1/stats": _get(
                "Stats",
                {"200": _json(_ref("Stats"), "Totals"), **_QUERY_ERRORS},
                [_GATEWAY],
                description="Database totals (cached for 10 s; with `gateway`, of that"
                " gateway's series and dead letters) and runtime figures.",
            ),
            "/api/v1/sensors": _get(
                "Sensors",
                {"200": _json(_ref("Sensors"), "Sensors with last values"), **_QUERY_ERRORS},
                [
                    _SENSOR,
                    _METRIC,
                    _GATEWAY,
                    _param(
                        "match",
                        "Case-insensitive substring of the sensor id or the metric.",
                        "kitchen",
                    ),
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "Series (sensor × metric) per page: default 1000, max"
                        " api.max_rows.",
                        "schema": {"type": "integer", "minimum": 1},
                        "example": 100,
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": "`next_cursor` from the previous page.",
                        "schema": {
                            "type": "string",
                            "pattern": "^s1\\.[A-Za-z0-9_-]*$",
                            "maxLength": 2048,
                        },
                    },
                ],
                description="Sensors (of every gateway) with their metrics' last value and when"
                " they were last seen (`stale` when older than api.stale_after_s), a page of `limit` series"
                " at a time in sensor and metric order; a sensor with more metrics than"
                " fit on a page continues on the next.",
            ),
            "/api/v1/readings": _get(
                "Readings",
                {
                    "200": {
                        "description": "A page of readings (JSON) or a CSV stream",
                        "content": {
                            JSON: {"schema": _ref("ReadingsPage")},
                            CSV: {"schema": {"type": "string"}},
                        },
                    },
                    **_QUERY_ERRORS,
                },
                [
                    _SENSOR,
                    _METRIC,
                    _GATEWAY,
                    _FROM,
                    _TO_OPEN,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "Rows per page (JSON: default 1000, max api.max_rows;"
                        " CSV: default and max api.max_export_rows).",
                        "schema": {"type": "integer", "minimum": 1},
                        "example": 100,
                    },
                    _param("cursor", "`next_cursor` from the previous page."),
                    {
                        "name": "order",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["asc", "desc"]},
                        "description": "Time order (default asc).",
                    },
                    _FORMAT,
                ],
                description="Raw readings ordered by time, keyset-paginated. CSV streams up"
                " to `limit` rows (default and max api.max_export_rows).",
            ),
            "/api/v1/readings/aggregate": _get(
                "Aggregate",
                {
                    "200": {
                        "description": "Buckets per series (JSON) or a CSV stream",
                        "content": {
                            JSON: {"schema": _ref("Aggregate")},
                            CSV: {"schema": {"type": "string"}},
                        },
                    },
                    **_QUERY_ERRORS,
                },
                [
                    _SENSOR,
                    _METRIC,
                    _GATEWAY,
                    _FROM,
                    _TO_NOW,
                    {
                        "name": "bucket",
                        "in": "query",
                        "required": False,
                        "description": "Bucket width: 1m, 15m, 1h, 1d, … (default 1h; at"
                        " least 1s, at most api.max_range).",
                        "schema": {
                            "type": "string",
                            "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*(ms|s|m|h|d|w)\\s*$",
                        },
                        "example": "1h",
                    },
                    _param(
                        "agg",
                        "Aggregates, comma-separated or repeated: min, max, avg, sum, count,"
                        " last (default avg).",
                        "min,max,avg",
                    ),
                    {
                        "name": "tier",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["auto", "raw", "1m", "1h"]},
                        "description": "Which data answers: `auto` (default: the coarsest"
                        " rollup tier that answers each bucket exactly, else raw readings),"
                        " `raw`, or a rollup tier. Each bucket says which in `tier`.",
                    },
                    _FORMAT,
                ],
                description="Buckets aligned to the epoch (hourly buckets start on the hour, UTC).",
            ),
            "/api/v1/gateways": _get(
                "Gateways",
                {"200": _json(_ref("Gateways"), "Gateways"), **_QUERY_ERRORS},
                description="Every gateway the store holds data of, with when it last"
                " forwarded and how far behind it was then (central store); `stale` when it"
                " has not forwarded for api.stale_after_s.",
            ),
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
