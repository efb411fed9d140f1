"""The one place that touches asyncpg's private API.

Why: asyncpg has no option for client-side TCP keepalives, and without them an idle
connection whose server vanished (a host powered off, a firewall that drops state) is
noticed only when the next statement times out. The socket is reachable through the
connection's asyncio transport, which asyncpg 0.2x–0.3x keep as ``Connection._transport``;
if a future release drops it, keepalives are skipped (the statement timeouts still
bound every call) and only this module changes.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

log = logging.getLogger(__name__)


def set_keepalive(conn: Any, idle_s: int, probes: int = 4) -> bool:
    """Turn on TCP keepalives on ``conn``'s socket: first probe after ``idle_s`` idle
    seconds, then every ``idle_s``, dead after ``probes`` unanswered. False when the
    socket cannot be reached (a Unix socket needs none)."""
    transport = getattr(conn, "_transport", None)  # see module docstring
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        log.debug("asyncpg connection exposes no socket: TCP keepalives not set")
        return False
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", idle_s),
            ("TCP_KEEPINTVL", idle_s),
            ("TCP_KEEPCNT", probes),
        ):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError as exc:
        log.debug("could not set TCP keepalives: %s", exc)
        return False
    return True
