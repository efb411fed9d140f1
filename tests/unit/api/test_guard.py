"""The API's front door without a server: token, rate limit, request size, headers;
plus loopback detection and the [api] config rules."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.api.bind import bind_socket, is_allowed_host, is_loopback_host
from gateway.api.guard import Guard, RateLimiter
from gateway.api.service import resolve_token
from gateway.config import ApiConfig, load_settings
from gateway.errors import ConfigError


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_burst_then_refills() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a")
    assert wait == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # per client
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    clock.now += 100
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # capped at burst


def test_token_bucket_memory_is_bounded_and_zero_rate_disables() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_clients=10, clock=FakeClock())
    for i in range(1000):
        limiter.take(f"10.0.0.{i}")
    assert len(limiter._buckets) == 10
    unlimited = RateLimiter(rate=0, burst=1)
    assert all(unlimited.take("x") == 0 for _ in range(100))


async def _data(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"secret": "data", "bytes": len(body)})


def guarded(token: str | None, rate: float = 0, burst: int = 1, max_bytes: int = 100) -> Guard:
    app = Starlette(
        routes=[Route("/api/v1/x", _data, methods=["GET", "POST"]), Route("/healthz", _data)]
    )
    return Guard(app, token=token, limiter=RateLimiter(rate, burst), max_request_bytes=max_bytes)


def client_for(app: Guard) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_token_required_when_set() -> None:
    async with client_for(guarded("tok")) as client:
        for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "Basic tok"}):
            response = await client.get("/api/v1/x", headers=headers)
            assert response.status_code == 401
            assert response.json() == {"error": "unauthorized"}
            assert "secret" not in response.text
        ok = await client.get("/api/v1/x", headers={"authorization": "Bearer tok"})
        assert ok.json()["secret"] == "data"
        assert (await client.get("/healthz")).status_code == 200
        preflight = await client.options("/api/v1/x")
        assert preflight.status_code != 401


async def test_no_token_means_open_and_security_headers_everywhere() -> None:
    async with client_for(guarded(None)) as client:
        response = await client.get("/api/v1/x")
        assert response.status_code == 200
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_request_size_is_bounded_declared_or_streamed() -> None:
    async with client_for(guarded(None, max_bytes=100)) as client:
        assert (await client.post("/api/v1/x", content=b"x" * 100)).json()["bytes"] == 100
        too_big = await client.post("/api/v1/x", content=b"x" * 101)
        assert too_big.status_code == 413

        async def chunks():  # no Content-Length: counted as it is read
            for _ in range(10):
                yield b"x" * 50

        streamed = await client.post("/api/v1/x", content=chunks())
        assert streamed.status_code == 413


async def test_rate_limit_gives_429_with_retry_after_but_not_on_healthz() -> None:
    async with client_for(guarded(None, rate=0.01, burst=2)) as client:
        codes = [(await client.get("/api/v1/x")).status_code for _ in range(4)]
        assert codes == [200, 200, 429, 429]
        limited = await client.get("/api/v1/x")
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json() == {"error": "too many requests"}
        assert (await client.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("gateway.example", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_busy_port_is_a_config_error_naming_api_port() -> None:
    first = bind_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(ConfigError) as info:
            bind_socket("127.0.0.1", port)
        assert info.value.key == "api.port"
    finally:
        first.close()


def test_exposed_host_needs_a_token_or_explicit_consent(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"TIDEGATE_API__HOST": "0.0.0.0"})
    assert info.value.key == "api.token"
    assert "allow_insecure_bind" in str(info.value)
    env = {"TIDEGATE_API__HOST": "0.0.0.0", "TIDEGATE_API__TOKEN": "t0ken-of-16-chars"}
    assert resolve_token(load_settings(None, environ=env).api) == "t0ken-of-16-chars"
    insecure = {"TIDEGATE_API__HOST": "0.0.0.0", "TIDEGATE_API__ALLOW_INSECURE_BIND": "true"}
    assert resolve_token(load_settings(None, environ=insecure).api) is None
    disabled = {"TIDEGATE_API__HOST": "0.0.0.0", "TIDEGATE_API__ENABLED": "false"}
    assert load_settings(None, environ=disabled).api.enabled is False


def test_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  from-file  \nignored second line\n")
    assert resolve_token(ApiConfig(token_file=token_file)) == "from-file"
    token_file.write_text("\n")
    with pytest.raises(ConfigError) as info:
        resolve_token(ApiConfig(token_file=token_file))
    assert info.value.key == "api.token_file"
    with pytest.raises(ConfigError) as missing:
        load_settings(None, environ={"TIDEGATE_API__TOKEN_FILE": str(tmp_path / "nope")})
    assert missing.value.key == "api.token_file"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"TIDEGATE_API__MAX_RANGE": "a month"}, "api.max_range"),
        ({"TIDEGATE_API__PORT": "70000"}, "api.port"),
        ({"TIDEGATE_API__TOKEN": "  "}, "api.token"),
        ({"TIDEGATE_API__RATE_LIMIT_BURST": "0"}, "api.rate_limit_burst"),
        ({"TIDEGATE_API__COLOUR": "blue"}, "api.colour"),
    ],
)
def test_bad_api_settings_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ=env)
    assert info.value.key == key


@pytest.mark.parametrize(
    ("header", "allowed", "ok"),
    [
        ("127.0.0.1:8080", [], True),
        ("localhost:8080", [], True),
        ("LOCALHOST.", [], True),
        ("app.localhost", [], True),
        ("[::1]:8080", [], True),
        ("192.168.1.20:8080", [], True),  # an address cannot be a rebinding name
        ("attacker.example", [], False),
        ("attacker.example:8080", [], False),
        ("localhost.attacker.example", [], False),
        ("gateway.local:8080", ["gateway.local"], True),
        ("GATEWAY.LOCAL", ["gateway.local"], True),
        ("a.example.org", ["*.example.org"], True),
        ("example.org", ["*.example.org"], False),
        ("evil-example.org", ["*.example.org"], False),
        ("anything.at.all", ["*"], True),
    ],
)
def test_host_allow_list(header: str, allowed: list[str], ok: bool) -> None:
    assert is_allowed_host(header, allowed) is ok


async def test_host_check_without_token_refuses_foreign_names() -> None:
    app = Guard(
        Starlette(routes=[Route("/api/v1/x", _data)]),
        token=None,
        limiter=RateLimiter(0, 1),
        max_request_bytes=100,
        allowed_hosts=["gateway.local"],
    )
    async with client_for(app) as client:
        refused = await client.get("/api/v1/x", headers={"host": "attacker.example"})
        assert refused.status_code == 400
        assert "attacker.example" in refused.json()["error"]
        assert "api.allowed_hosts" in refused.json()["error"]
        assert "secret" not in refused.text
        for host in ("127.0.0.1:8080", "localhost", "gateway.local:8080"):
            assert (await client.get("/api/v1/x", headers={"host": host})).status_code == 200


def test_allowed_hosts_config_is_checked() -> None:
    assert ApiConfig(allowed_hosts=["gateway.local", "*.example.org", "*"]).allowed_hosts
    for bad in ("", "a b", "http://x", "x/y", "a.*.b"):
        with pytest.raises((ConfigError, ValueError)):
            ApiConfig(allowed_hosts=[bad])
