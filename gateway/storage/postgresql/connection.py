"""Connections to the central PostgreSQL and the errors they raise.

Every connection tidegate opens to PostgreSQL — the direct-mode store, the forwarder,
maintenance — is made from a :class:`~gateway.config.PostgresConfig` here:

* the URL as configured (never with a password: the config refuses one), which is
  also what :func:`shown_url` prints;
* the password from ``password``, else ``password_file``, else ``PGPASSWORD`` (else
  asyncpg reads libpq's ``~/.pgpass`` itself) — never logged;
* TLS with libpq's ``sslmode`` and ``sslrootcert`` / ``sslcert`` / ``sslkey``;
* every statement bounded twice: ``statement_timeout`` on the server and asyncpg's
  ``command_timeout`` (a little longer) on the client, because a network that silently
  drops packets never lets the server's error arrive;
* TCP keepalives on both ends (a dead peer is noticed on an idle connection too, and
  the server frees a dead client's locks), ``idle_in_transaction_session_timeout`` as a
  last resort, ``application_name`` and ``TimeZone = UTC``.

:func:`convert_error` is the one place where asyncpg/OS errors become
:class:`~gateway.errors.StorageError`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from gateway.config import PASSWORD_ENV, PostgresConfig
from gateway.errors import StorageError, StorageFull
from gateway.storage.postgresql._asyncpg_adapter import set_keepalive

CLIENT_TIMEOUT_MARGIN = 0.25
"""The client gives a statement this much longer (fraction, at least a second) than the
server's ``statement_timeout``, so a slow statement fails with the server's clear error
and only a silent network hits the client's timeout."""

_TLS_KEYS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


def shown_url(config: PostgresConfig) -> str:
    """The server's URL as it may be printed (it never holds a password)."""
    return config.shown_url


def password_of(config: PostgresConfig, environ: dict[str, str] | None = None) -> str | None:
    """The password: ``password``, else the first line of ``password_file``, else
    ``PGPASSWORD``; ``None`` lets asyncpg look in ``~/.pgpass``."""
    if config.password is not None:
        return config.password.get_secret_value()
    if config.password_file is not None:
        try:
            text = Path(config.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise StorageError(
                f"cannot read the PostgreSQL password file {config.password_file}: {exc.strerror}"
            ) from None
        return text.splitlines()[0] if text else ""
    env = os.environ if environ is None else environ
    return env.get(PASSWORD_ENV) or None


def client_timeout_s(config: PostgresConfig) -> float:
    """asyncpg's ``command_timeout``: the server's timeout plus a margin."""
    return config.statement_timeout_s + max(1.0, config.statement_timeout_s * CLIENT_TIMEOUT_MARGIN)


def connect_kwargs(config: PostgresConfig, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``asyncpg.connect`` (holds the password: never log it)."""
    parts = urlsplit(config.url)
    query = dict(parse_qsl(parts.query))
    for key in _TLS_KEYS:
        value = getattr(config, key)
        if value is not None and key not in query:
            query[key] = str(value)
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    statement_ms = round(config.statement_timeout_s * 1000)
    keepalive = str(config.keepalive_s)
    return {
        "dsn": dsn,
        "password": password_of(config, environ),
        "timeout": config.connect_timeout_s,
        "command_timeout": client_timeout_s(config),
        "server_settings": {
            "application_name": config.application_name,
            "statement_timeout": str(statement_ms),
            "idle_in_transaction_session_timeout": str(max(60_000, 2 * statement_ms)),
            "tcp_keepalives_idle": keepalive,
            "tcp_keepalives_interval": keepalive,
            "tcp_keepalives_count": "4",
            "TimeZone": "UTC",
        },
    }


async def connect(config: PostgresConfig) -> Any:
    """A new asyncpg connection to ``config``'s server, client keepalives set;
    :class:`~gateway.errors.StorageError` (naming :func:`shown_url`) if it cannot be
    made within ``connect_timeout_s``."""
    kwargs = connect_kwargs(config)
    try:
        # asyncpg's own timeout covers the TCP connect and the startup; the outer one
        # also bounds the TLS and authentication exchange on a silent network.
        conn = await asyncio.wait_for(
            asyncpg.connect(**kwargs), timeout=config.connect_timeout_s + 1.0
        )
    except Exception as exc:
        raise convert_error(exc, f"connecting to {shown_url(config)}") from None
    set_keepalive(conn, config.keepalive_s)
    return conn


def convert_error(exc: BaseException, what: str) -> StorageError:
    """Map an asyncpg/OS/timeout error to our tree (the message never holds a
    password: asyncpg does not put one in its errors, and ``what`` is ours)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, asyncpg.DiskFullError):
        return StorageFull(f"{what}: the PostgreSQL server's disk is full ({exc})")
    if isinstance(exc, TimeoutError):
        return StorageError(f"{what}: timed out (no answer from the server)")
    if isinstance(exc, asyncpg.PostgresError):
        code = getattr(exc, "sqlstate", "") or ""
        return StorageError(f"{what}: {type(exc).__name__} [{code}]: {exc}")
    if isinstance(exc, OSError):
        return StorageError(f"{what}: {exc.strerror or exc}")
    return StorageError(f"{what}: {type(exc).__name__}: {exc}")


def is_connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection cannot be used any more (the caller must
    close it and connect again) rather than that one statement failed."""
    if isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError)):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        code = getattr(exc, "sqlstate", "") or ""
        # 08: connection exception; 57P: operator intervention (shutdown, terminated);
        # 53: insufficient resources (the server may be going down).
        return code.startswith(("08", "57P", "53"))
    return False
