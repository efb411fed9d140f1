"""``tidegate run``: run the gateway until SIGINT/SIGTERM.

Exit status: 0 after a clean shutdown; 1 when the shutdown timeout left messages
unacknowledged (redelivered next start); 2 bad configuration; 70 a long-lived task
failed (logged with its traceback) — restart it (systemd ``Restart=always``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from gateway.app import Service, serve, storage_maintenance, tune_interpreter
from gateway.cli.common import add_config_argument, settings_from, setup_logging
from gateway.config import Settings

log = logging.getLogger("gateway")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="run the gateway (MQTT → SQLite) until stopped")
    add_config_argument(parser)
    parser.set_defaults(handler=handle)


def default_services(settings: Settings) -> list[Service]:
    """Extra services started with the gateway (HTTP API, storage maintenance)."""
    services: list[Service] = [storage_maintenance]
    if settings.api.enabled:
        # Imported only when enabled: the web stack costs memory (docs/decisions/0050).
        from gateway.api.service import api_service

        services.append(api_service(settings))
    return services


def _event_loop_factory() -> Any:
    try:
        import uvloop  # optional extra: pip install tidegate[fast]
    except ImportError:
        return None
    return uvloop.new_event_loop


def handle(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings.log.level)
    tune_interpreter()
    factory = _event_loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(settings, default_services(settings)))
