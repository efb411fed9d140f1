"""Who may read the API, against a real gateway process: the Host allow-list without a
token (DNS rebinding), and tokens from the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Broker, start_gateway, write_config

pytestmark = pytest.mark.integration

TOKEN = "a-token-of-24-characters"


@pytest.fixture(scope="module")
def open_api(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Loopback, no token, one extra allowed name."""
    gateway = start_gateway(
        tmp_path_factory.mktemp("open"), broker, "open", api='allowed_hosts = ["gateway.local"]'
    )
    url = gateway.url
    try:
        yield url
    finally:
        assert gateway.terminate() == 0, gateway.log_text()


@pytest.mark.parametrize(
    "path", ["/api/v1/sensors", "/api/v1/readings?format=csv", "/metrics", "/"]
)
def test_without_a_token_a_foreign_host_name_gets_nothing(open_api: str, path: str) -> None:
    """DNS rebinding: a page on attacker.example whose name now resolves to 127.0.0.1."""
    response = httpx.get(open_api + path, headers={"host": "attacker.example:8080"}, timeout=10)
    assert response.status_code == 400
    assert "attacker.example" in response.json()["error"]
    assert "api.allowed_hosts" in response.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:8080", "[::1]:8080", "gateway.local"])
def test_loopback_names_addresses_and_allowed_names_are_served(open_api: str, host: str) -> None:
    response = httpx.get(open_api + "/api/v1/sensors", headers={"host": host}, timeout=10)
    assert response.status_code == 200, response.text


def test_with_a_token_the_host_is_not_checked(
    broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gateway = start_gateway(
        tmp_path_factory.mktemp("tok"), broker, "tok", api="", env={"TIDEGATE_API__TOKEN": TOKEN}
    )
    url = gateway.url
    try:
        headers = {"host": "gateway.example.org", "authorization": f"Bearer {TOKEN}"}
        assert httpx.get(url + "/api/v1/sensors", headers=headers, timeout=10).status_code == 200
    finally:
        assert gateway.terminate() == 0, gateway.log_text()


@pytest.mark.parametrize("value", ["null", "false"])
def test_a_token_from_the_environment_is_a_string_never_null(
    broker: Broker, tmp_path: Path, value: str
) -> None:
    """``TIDEGATE_API__TOKEN=null`` used to remove the file's token and open the API."""
    gateway = start_gateway(
        tmp_path,
        broker,
        f"envtok-{value}",
        api=f'token = "{TOKEN}"',
        env={"TIDEGATE_API__TOKEN": value},
    )
    url = gateway.url
    try:
        assert httpx.get(url + "/api/v1/sensors", timeout=10).status_code == 401
        headers = {"authorization": f"Bearer {value}"}
        assert httpx.get(url + "/api/v1/sensors", headers=headers, timeout=10).status_code == 200
    finally:
        assert gateway.terminate() == 0, gateway.log_text()


@pytest.mark.parametrize(
    ("api", "env", "key"),
    [
        ('host = "0.0.0.0"', {"TIDEGATE_API__TOKEN": "short-token"}, "api.token"),
        ('host = "0.0.0.0"\ntoken_file = "TOKEN_FILE"', {}, "api.token_file"),
    ],
    ids=["token", "token_file"],
)
def test_an_exposed_api_refuses_a_token_under_16_characters(
    broker: Broker, tmp_path: Path, api: str, env: dict[str, str], key: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("short-token\n")
    cfg = write_config(
        tmp_path / "exposed.toml",
        broker.port,
        tmp_path / "exposed.db",
        extra=f"[api]\nport = 0\n{api.replace('TOKEN_FILE', str(token_file))}\n",
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert result.returncode == 2, result.stderr
    assert f"config error: {key}: is shorter than 16 characters" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "exposed.db").exists()
