"""Builds the ASGI application: routes, JSON error handlers, the packaged dashboard files,
wrapped in the :class:`~gateway.api.guard.Guard`."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.api import handlers, openapi
from gateway.api.guard import ASGIApp, Guard, RateLimiter
from gateway.api.state import ApiState
from gateway.errors import QueryError, StorageError

log = logging.getLogger(__name__)

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """The dashboard's files from ``gateway/api/static`` (a few kB, kept in memory)."""
    assets: dict[str, Asset] = {}
    folder = resources.files("gateway.api") / "static"
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            assets[entry.name] = Asset(body, STATIC_TYPES[suffix], etag)
    return assets


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = JSONResponse({"error": message}, status_code=status, headers=headers)
    response.headers["cache-control"] = "no-store"
    return response


async def _query_error(request: Request, exc: Exception) -> Response:
    return _error(400, str(exc))


async def _storage_error(request: Request, exc: Exception) -> Response:
    log.warning("API read failed: %s", exc)
    return _error(503, f"database unavailable: {exc}")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("API request %s failed", request.url.path)
    return _error(500, "internal error")


def build_app(
    state: ApiState, token: str | None, own_routes: dict[str, Any] | None = None
) -> ASGIApp:
    """The whole application for ``state``; ``token`` None disables authentication.
    ``own_routes`` answers some paths with other handlers (the hub's,
    :data:`gateway.api.hub.ROUTES`)."""
    assets = load_assets()
    document = openapi.document()

    def asset_response(request: Request, name: str) -> Response:
        asset = assets.get(name)
        if asset is None:
            return _error(404, "not found")
        headers = {"etag": asset.etag, "cache-control": "no-cache"}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    async def index(request: Request) -> Response:
        return asset_response(request, "index.html")

    async def docs(request: Request) -> Response:
        return asset_response(request, "docs.html")

    async def favicon(request: Request) -> Response:
        return asset_response(request, "favicon.svg")

    async def static(request: Request) -> Response:
        return asset_response(request, str(request.path_params["name"]))

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    own = own_routes or {}

    def route(path: str, endpoint: Any) -> Route:
        return Route(path, own.get(path, endpoint))

    routes = [
        Route("/", index),
        Route("/docs", docs),
        Route("/favicon.svg", favicon),
        Route("/static/{name:str}", static),
        Route("/openapi.json", openapi_json),
        Route("/healthz", handlers.healthz),
        route("/readyz", handlers.readyz),
        route("/metrics", handlers.metrics),
        route("/api/v1/live", handlers.live),
        route("/api/v1/stats", handlers.stats),
        Route("/api/v1/gateways", handlers.gateways),
        Route("/api/v1/sensors", handlers.sensors),
        Route("/api/v1/readings", handlers.readings),
        Route("/api/v1/readings/aggregate", handlers.aggregate),
    ]
    exception_handlers: dict[Any, Any] = {
        QueryError: _query_error,
        StorageError: _storage_error,
        HTTPException: _http_error,
        Exception: _unexpected,
    }
    app = Starlette(routes=routes, exception_handlers=exception_handlers)
    app.state.api = state
    inner: ASGIApp = app
    config = state.config
    if config.cors_origins:
        inner = CORSMiddleware(
            app,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET"],
            allow_headers=["Authorization"],
        )
    limiter = RateLimiter(config.rate_limit_per_s, config.rate_limit_burst)
    return Guard(
        inner,
        token=token,
        limiter=limiter,
        max_request_bytes=config.max_request_bytes,
        allowed_hosts=None if token else list(config.allowed_hosts),
    )
