"""Where the API listens: loopback detection and socket binding (stdlib only)."""

from __future__ import annotations

import ipaddress
import socket

from gateway.errors import ConfigError


def is_loopback_host(host: str) -> bool:
    """True when ``host`` only reaches this machine: ``localhost`` or a loopback address
    (``127.0.0.0/8``, ``::1``). Any other name counts as exposed, since it may resolve
    to a public address."""
    text = host.strip().strip("[]").lower()
    if text == "localhost" or text.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks a free one).

    Bound eagerly, before the gateway starts, so a busy port is a clear startup error
    (:class:`ConfigError` naming ``api.port``) instead of a failure inside the server.
    """
    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError("api.host", f"cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            "api.port", f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    return sock
