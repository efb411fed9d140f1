"""PostgresConfig → asyncpg: URL shown without secrets, password sources, timeouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import PostgresConfig
from gateway.errors import StorageError
from gateway.storage.postgresql.connection import (
    client_timeout_s,
    connect,
    connect_kwargs,
    convert_error,
    is_connection_lost,
    password_of,
    shown_url,
)


def test_shown_url_and_password_sources(tmp_path: Path) -> None:
    config = PostgresConfig(url="postgresql://tidegate@db.example:5433/central?sslmode=require")
    assert shown_url(config) == "postgresql://tidegate@db.example:5433/central"
    assert password_of(config, {}) is None  # asyncpg then reads ~/.pgpass
    assert password_of(config, {"PGPASSWORD": "env"}) == "env"
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    filed = config.model_copy(update={"password_file": secret})
    assert password_of(filed, {"PGPASSWORD": "env"}) == "from-file"
    given = PostgresConfig(url=config.url, password="given")  # type: ignore[arg-type]
    assert password_of(given, {"PGPASSWORD": "env"}) == "given"
    assert "given" not in shown_url(given) and "given" not in repr(given)


def test_connect_kwargs_carry_tls_and_both_timeouts(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    config = PostgresConfig(
        url="postgresql://u@h/db",
        sslmode="verify-full",
        sslrootcert=ca,
        statement_timeout_s=10,
        application_name="gw-a",
    )
    kwargs = connect_kwargs(config, {})
    assert "sslmode=verify-full" in kwargs["dsn"] and "sslrootcert=" in kwargs["dsn"]
    assert kwargs["server_settings"]["statement_timeout"] == "10000"
    assert kwargs["server_settings"]["application_name"] == "gw-a"
    assert kwargs["command_timeout"] == client_timeout_s(config) > 10
    assert kwargs["timeout"] == config.connect_timeout_s


async def test_statement_timeout_fires_as_a_storage_error(pg_url: str) -> None:
    conn = await connect(PostgresConfig(url=pg_url, statement_timeout_s=0.3))
    try:
        assert await conn.fetchval("SHOW application_name") == "tidegate"
        assert await conn.fetchval("SHOW TimeZone") == "UTC"
        with pytest.raises(Exception) as info:
            await conn.execute("SELECT pg_sleep(3)")
        error = convert_error(info.value, "test")
        assert isinstance(error, StorageError) and "57014" in str(error)  # query_canceled
        assert not is_connection_lost(info.value)
    finally:
        await conn.close()


async def test_an_unreachable_server_is_a_storage_error_naming_the_shown_url() -> None:
    from simulators.broker import free_port

    config = PostgresConfig(
        url=f"postgresql://u@127.0.0.1:{free_port('127.0.0.1')}/db",
        password="hidden",  # type: ignore[arg-type]
        connect_timeout_s=2,
    )
    with pytest.raises(StorageError) as info:
        await connect(config)
    assert shown_url(config) in str(info.value) and "hidden" not in str(info.value)
