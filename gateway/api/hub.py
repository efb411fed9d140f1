"""``tidegate serve``: the same API and dashboard over the central store, with no MQTT.

The hub is the gateway's API (:mod:`gateway.api.app`: the same routes, guard, token
rules, Host allow-list, connection limits and CSV escaping) reading a
:class:`~gateway.storage.base.ReadStore` over the central PostgreSQL instead of a
gateway's own file. Only what describes a running *gateway* differs, and lives here:

* ``/readyz``: ready while the central store answers (it is probed every
  :data:`PROBE_INTERVAL_S`); 503 with the reason otherwise;
* ``/api/v1/live``: ``mode: hub``, uptime and whether the store answers (the dashboard
  switches to its fleet view on it);
* ``/metrics``: the process, the store, and per gateway what it last reported with a
  forwarded batch (:func:`gateway.api.prometheus.render_hub`);
* ``/api/v1/stats``: the same totals, with the hub's live figures as ``runtime``.

The central store's figures come from the edges' forward positions (``docs/fleet.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api import handlers, params, prometheus
from gateway.api.state import ApiState
from gateway.errors import StorageError
from gateway.metrics import Metrics
from gateway.storage.base import GatewayInfo

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 5.0
GATEWAYS_TTL_S = 5.0


class _NoSource:
    connected = False


class HubView:
    """The :class:`~gateway.api.state.GatewayView` of a process that runs no gateway:
    counters that stay at zero, no broker."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.source = _NoSource()


async def probe(state: ApiState) -> None:
    """Ask the store for its cheap figures every :data:`PROBE_INTERVAL_S`: whether it
    answers is the hub's readiness, and what it said serves ``/metrics``."""
    was_ok = True
    while True:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                seen = await state.store.overview()
        except (StorageError, TimeoutError) as exc:
            state.store_ok = False
            state.store_error = str(exc) or "no answer within the probe timeout"
            if was_ok:
                log.warning("central store not answering: %s", state.store_error)
        else:
            state.store_ok, state.store_error = True, ""
            state.cache["gauges"] = (
                asyncio.get_running_loop().time(),
                prometheus.DatabaseGauges(
                    seen.database_bytes,
                    seen.wal_bytes,
                    seen.series,
                    seen.oldest_ts_ms,
                    seen.newest_ts_ms,
                ),
            )
            if not was_ok:
                log.info("central store answers again")
        was_ok = state.store_ok
        await asyncio.sleep(PROBE_INTERVAL_S)


def live_figures(state: ApiState) -> dict[str, Any]:
    """What the hub knows without asking the store."""
    return {
        "mode": "hub",
        "uptime_s": round(time.time() - state.started_at, 3),
        "storage_ok": state.store_ok,
        "storage_error": state.store_error or None,
    }


async def readyz(request: Request) -> Response:
    """Ready while the central store answers; 503 with the reason when it does not."""
    state = handlers.state_of(request)
    if state.store_ok:
        return handlers.reply({"status": "ready", "reasons": []})
    reason = f"central store not answering: {state.store_error}"
    return handlers.reply({"status": "not ready", "reasons": [reason], "error": reason}, status=503)


async def live(request: Request) -> Response:
    return handlers.reply(live_figures(handlers.state_of(request)))


async def stats(request: Request) -> Response:
    state = handlers.state_of(request)
    database = await handlers.database_totals(state, params.gateway(request.query_params))
    return handlers.reply({"database": database, "runtime": live_figures(state)})


async def metrics(request: Request) -> Response:
    state = handlers.state_of(request)

    async def load() -> list[GatewayInfo]:
        return await state.store.gateways()

    gateways: list[GatewayInfo] = []
    if state.store_ok:
        with contextlib.suppress(StorageError):
            gateways = await handlers.cached(state, "gateways", GATEWAYS_TTL_S, load)
    hit = state.cache.get("gauges")
    db = hit[1] if hit is not None and state.store_ok else None
    text = prometheus.render_hub(
        state.store_ok,
        db,  # type: ignore[arg-type]
        gateways,
        started_at=state.started_at,
        version=state.version,
        connections=None if state.connections is None else state.connections.stats,
    )
    return handlers.no_store(Response(text, media_type=prometheus.CONTENT_TYPE))


ROUTES = {"/readyz": readyz, "/api/v1/live": live, "/api/v1/stats": stats, "/metrics": metrics}
"""The hub's own handlers for these paths (every other route is the gateway's)."""
