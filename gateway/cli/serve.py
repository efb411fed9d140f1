"""``tidegate serve --store postgresql://…``: the fleet view — the HTTP API, OpenAPI
document, ``/docs``, ``/metrics``, health and the dashboard over the central store,
without MQTT (``docs/fleet.md``).

Settings come from ``[api]`` of the config (host, port, token, Host allow-list,
limits), exactly as for a gateway: an address beyond loopback needs a token. The
store's password comes from ``PGPASSWORD`` or ``~/.pgpass``, never the command line;
a read-only role is all it needs.

Exit status: 0 after SIGINT/SIGTERM, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from gateway.cli.common import STORE_ENV, add_config_argument, setup_logging
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.storage.backends import central_read_store


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the API and dashboard over the central store (no MQTT)",
        description="The fleet view: /api/v1, /docs, /metrics, /healthz, /readyz and the"
        " dashboard over the central PostgreSQL that gateways forward into. [api] settings"
        " apply as for a gateway (a token is required beyond loopback).",
    )
    add_config_argument(parser)
    parser.add_argument(
        "--store",
        metavar="URL",
        default=os.environ.get(STORE_ENV),
        help="the central store: postgresql://user@host:port/db (default: $TIDEGATE_STORE;"
        " password from PGPASSWORD or ~/.pgpass)",
    )
    parser.add_argument("--host", default=None, help="bind address (overrides api.host)")
    parser.add_argument("--port", type=int, default=None, help="port (overrides api.port)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if not args.store:
        raise ConfigError("--store", f"required (or set {STORE_ENV}): postgresql://user@host/db")
    api = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_settings(args.config, overrides={"api": api} if api else None)
    setup_logging(settings.log.level)
    store, shown = central_read_store(
        args.store,
        threads=settings.api.query_threads,
        timeout_s=settings.api.query_timeout_s,
    )
    from gateway.api.service import serve_hub  # the web stack, only when serving

    return asyncio.run(serve_hub(settings, store, shown))
