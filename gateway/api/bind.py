"""Where the API listens and who may call it by which name: the Host header allow-list
and socket binding (loopback detection is :func:`gateway.parsing.is_loopback_host`)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from gateway.errors import ConfigError
from gateway.parsing import is_loopback_host as is_loopback_host  # re-exported for the API


def host_name(header: str) -> str:
    """The host part of a ``Host`` header, lower case, without port, brackets or a
    trailing dot: ``"[::1]:8080"`` → ``"::1"``, ``"Gateway.Local.:80"`` → ``"gateway.local"``."""
    text = header.strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    name, colon, port = text.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        text = name
    return text.rstrip(".")


def is_allowed_host(header: str, allowed: Sequence[str]) -> bool:
    """True when a request addressed to ``header`` may be served without a token.

    Always allowed: ``localhost`` and ``*.localhost``, and any IP address (a DNS rebinding
    attack needs a *name* the attacker controls: the browser sends that name, never an
    address). Besides those, the names in ``allowed``: exact (``gateway.local``), a
    suffix wildcard (``*.example.org`` matches ``a.example.org``, not ``example.org``), or
    ``*`` for any (no check).
    """
    name = host_name(header)
    if not name or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    for pattern in allowed:
        rule = pattern.strip().lower().rstrip(".")
        if rule == "*" or rule == name:
            return True
        if rule.startswith("*.") and name.endswith(rule[1:]):
            return True
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
