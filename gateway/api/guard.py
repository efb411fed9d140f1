"""The API's front door, as one pure ASGI middleware (streaming stays intact):

1. request size: a declared ``Content-Length`` above the limit → 413; a chunked body is
   counted as it is read and cut off at the limit;
2. rate: a token bucket per client address → 429 with ``Retry-After``;
3. auth: when a token is set, ``Authorization: Bearer <token>`` is required (constant-time
   comparison) → 401 without any detail; ``/healthz`` and the static dashboard files
   (no data in them) stay open;
4. Host: without a token, a request must be addressed to an allowed host name
   (:func:`~gateway.api.bind.is_allowed_host`) → 400 naming the host and the key
   (against DNS rebinding: a page on ``attacker.example`` that re-resolves its name to
   127.0.0.1 would otherwise read the API from the visitor's browser);
5. security headers on every response.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from gateway.api.bind import is_allowed_host

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/", "/healthz", "/docs", "/openapi.json", "/favicon.svg"})
OPEN_PREFIXES = ("/static/",)
RATE_FREE_PATHS = frozenset({"/healthz", "/readyz"})
"""Health checks are never rate limited: they read only memory, and a client flooding
from the checker's own address must not make a healthy gateway look dead."""

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        b" connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]


class RateLimiter:
    """Token buckets keyed by client address: ``rate`` tokens a second up to ``burst``.

    Remembers at most ``max_clients`` addresses (least recently seen forgotten first),
    so memory stays bounded whatever the traffic. ``rate`` 0 disables limiting.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        max_clients: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> float:
        """Spend one token for ``client``: 0 when allowed, else seconds until one is
        available."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


def _json_body(error: str) -> bytes:
    return json.dumps({"error": error}).encode()


async def _reply(
    send: Send, status: int, error: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = _json_body(error)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class _BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit; an HTTPException so
    the application's own error handling answers 413 (it sees the error first)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class Guard:
    """The middleware. ``token`` None: no authentication (loopback, or an explicitly
    insecure bind). ``allowed_hosts`` None: no Host check (for a token-protected API);
    else the extra names allowed besides loopback names and IP addresses."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        limiter: RateLimiter,
        max_request_bytes: int,
        allowed_hosts: list[str] | None = None,
    ) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.token = token.encode() if token else None
        self.limiter = limiter
        self.max_request_bytes = max_request_bytes

    def _authorized(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        path: str = scope.get("path", "")
        if scope.get("method") == "OPTIONS":
            return True  # CORS preflight: carries no credentials and returns no data
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credentials = bytes(value).partition(b" ")
                if scheme.lower() == b"bearer":
                    return hmac.compare_digest(credentials.strip(), self.token)
                return False
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = -1
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reply(send, 400, "bad Content-Length")
                    return
        if declared > self.max_request_bytes:
            await _reply(send, 413, f"request body larger than {self.max_request_bytes} bytes")
            return
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        if scope.get("path", "") not in RATE_FREE_PATHS:
            wait = self.limiter.take(address)
            if wait > 0:
                retry = str(max(1, math.ceil(wait))).encode()
                await _reply(send, 429, "too many requests", [(b"retry-after", retry)])
                return
        if not self._authorized(scope):
            await _reply(send, 401, "unauthorized", [(b"www-authenticate", b"Bearer")])
            return
        if self.allowed_hosts is not None:
            host = _header(scope, b"host")
            if host is not None and not is_allowed_host(host, self.allowed_hosts):
                shown = host[:100]
                await _reply(
                    send,
                    400,
                    f"Host {shown!r} is not allowed: without a token only loopback names,"
                    " IP addresses and api.allowed_hosts are served",
                )
                return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_request_bytes:
                    raise _BodyTooLarge(self.max_request_bytes)
            return message

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except _BodyTooLarge:
            if not started:
                await _reply(send, 413, f"request body larger than {self.max_request_bytes} bytes")
