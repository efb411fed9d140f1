"""The API as a gateway :data:`~gateway.app.Service`: uvicorn serving the Starlette app
on the gateway's own event loop.

:func:`api_service` does everything that can fail before the gateway starts — resolve
the token, check the exposure, bind the socket — so a bad setup is a one-line startup
error, not a half-running gateway. The returned coroutine function serves until
cancelled (at gateway shutdown), then closes connections within a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from gateway import __version__
from gateway.api._uvicorn_adapter import protocol_class
from gateway.api.app import build_app
from gateway.api.bind import bind_socket, is_loopback_host
from gateway.api.connections import ConnectionTable
from gateway.api.hub import ROUTES as hub_routes
from gateway.api.hub import HubView, probe
from gateway.api.state import ApiState, GatewayView
from gateway.config import ApiConfig, Settings, check_token_length, local_gateway_id
from gateway.errors import ConfigError
from gateway.storage.backends import read_store
from gateway.storage.base import ReadStore

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 3
SAMPLE_INTERVAL_S = 1.0


def resolve_token(config: ApiConfig) -> str | None:
    """The bearer token from ``api.token`` (or ``TIDEGATE_API__TOKEN``) or
    ``api.token_file`` (first line, surrounding whitespace removed); None when unset."""
    if config.token is not None:
        return config.token.get_secret_value().strip()
    if config.token_file is None:
        return None
    try:
        text = Path(config.token_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("api.token_file", f"cannot read {config.token_file}: {exc}") from None
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError("api.token_file", f"{config.token_file} is empty")
    return token


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway owns SIGINT/SIGTERM and
    stops the API by cancelling the service."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def uvicorn_config(
    app: Any, config: ApiConfig, table: ConnectionTable[Any] | None = None
) -> uvicorn.Config:
    """Lean uvicorn settings: h11 (our subclass: connection caps, header and send
    timeouts), no websockets, no lifespan, our logging, bounded header sizes. uvicorn's
    own ``limit_concurrency`` stays off: it counts idle connections and would refuse
    health checks (``docs/decisions/0150``)."""
    if table is None:
        table = ConnectionTable(config.max_connections, config.max_connections_per_client)
    return uvicorn.Config(
        app,
        loop="none",
        http=protocol_class(table, config.header_timeout_s, config.send_timeout_s),
        ws="none",
        lifespan="off",
        interface="asgi3",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        limit_concurrency=None,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        h11_max_incomplete_event_size=16 * 1024,
    )


class ApiService:
    """The service: ``await service(gateway)`` serves until cancelled. ``port`` is the
    bound port (useful with ``api.port = 0``)."""

    def __init__(self, settings: Settings, token: str | None, sock: socket.socket) -> None:
        self.settings = settings
        self.token = token
        self.socket = sock
        self.port = int(sock.getsockname()[1])

    async def __call__(self, gateway: GatewayView) -> None:
        await run_api(gateway, self.settings, self.token, self.socket)


def api_service(settings: Settings) -> ApiService:
    """Check ``[api]``, bind its socket and return the service.

    Raises :class:`ConfigError` (naming the key) for a missing token on an exposed
    address, an unreadable token file or a port that cannot be bound.
    """
    config = settings.api
    token = resolve_token(config)
    exposed = not is_loopback_host(config.host)
    if exposed and token is not None:
        key = "api.token" if config.token is not None else "api.token_file"
        check_token_length(token, key, config.host)
    if exposed and token is None and not config.allow_insecure_bind:
        # Also enforced when the settings load; repeated here for settings built in code.
        raise ConfigError("api.token", f"required when api.host ({config.host}) is not loopback")
    sock = bind_socket(config.host, config.port)
    if exposed and token is None:
        log.warning(
            "HTTP API on %s:%d WITHOUT authentication (api.allow_insecure_bind = true)",
            config.host,
            sock.getsockname()[1],
        )
    return ApiService(settings, token, sock)


async def _sample(state: ApiState) -> None:
    while True:
        state.meter.sample(state.gateway.metrics)
        await asyncio.sleep(SAMPLE_INTERVAL_S)


async def run_api(
    gateway: GatewayView,
    settings: Settings,
    token: str | None,
    sock: socket.socket,
    store: ReadStore | None = None,
    background: Callable[[ApiState], Coroutine[Any, Any, None]] = _sample,
    hub: bool = False,
) -> None:
    """Serve on ``sock`` until cancelled, reading ``store`` (default: the gateway's own
    database); ``background`` runs beside the server (default: the ingest-rate
    sampler). ``hub``: the API of ``tidegate serve`` (:mod:`gateway.api.hub`)."""
    config = settings.api
    if store is None:
        store = read_store(
            settings.storage,
            threads=config.query_threads,
            timeout_s=config.query_timeout_s,
            gateway_id=local_gateway_id(settings),
        )
    table: ConnectionTable[Any] = ConnectionTable(
        config.max_connections, config.max_connections_per_client
    )
    state = ApiState(gateway, config, store, __version__, hub=hub)
    state.connections = table
    app = build_app(state, token, hub_routes if hub else None)
    server = _EmbeddedServer(uvicorn_config(app, config, table))
    host, port = sock.getsockname()[:2]
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="api-server")
    sampler = asyncio.create_task(background(state), name="api-background")
    log.info(
        "HTTP API and %sdashboard on http://%s:%d/ (%s)",
        "fleet " if hub else "",
        host if ":" not in str(host) else f"[{host}]",
        port,
        "bearer token required" if token else "no token",
    )
    try:
        await asyncio.shield(serving)
    finally:
        sampler.cancel()
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(serving), SHUTDOWN_GRACE_S + 2)
        except (TimeoutError, asyncio.CancelledError):
            server.force_exit = True
            serving.cancel()
        except Exception:
            log.exception("HTTP API stopped with an error")
        with contextlib.suppress(BaseException):
            await asyncio.gather(sampler, return_exceptions=True)
        await store.close()
        sock.close()
        log.info("HTTP API stopped")


async def serve_hub(settings: Settings, store: ReadStore, shown: str) -> int:
    """Serve the API and dashboard over ``store`` (the central store at ``shown``) until
    SIGINT or SIGTERM; returns the exit status. ``[api]`` is checked and bound first,
    with the gateway's rules (a token is required on an exposed address)."""
    service = api_service(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    log.info("tidegate serve: the fleet view over %s", shown)
    server = asyncio.create_task(
        run_api(
            HubView(),
            settings,
            service.token,
            service.socket,
            store=store,
            background=probe,
            hub=True,
        ),
        name="hub-api",
    )
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({server, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
    return 0
