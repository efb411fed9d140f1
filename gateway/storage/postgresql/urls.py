"""PostgreSQL URLs as users give them and as tidegate shows them.

A password may come from ``PGPASSWORD`` or ``~/.pgpass`` (asyncpg reads both, as libpq
does) or, accepted but discouraged, from the URL itself. Whatever tidegate prints or
logs is :func:`shown_url`: the URL with any password removed.
"""

from __future__ import annotations

import importlib.util
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.errors import ConfigError

SCHEMES = ("postgresql", "postgres")


def shown_url(url: str) -> str:
    """``url`` without a password (in the user part or a ``password=`` parameter)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://(unparsable URL)"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hosts}" if user else hosts
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def checked_url(url: str, key: str) -> tuple[str, str]:
    """``(url, shown)`` for a ``postgresql://`` URL given as ``key``, or a
    :class:`ConfigError` naming ``key`` (not a PostgreSQL URL; no driver installed)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ConfigError(key, "expected a postgresql://user@host:port/database URL")
    try:
        urlsplit(url).port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise ConfigError(key, f"bad URL: {exc}") from None
    if importlib.util.find_spec("asyncpg") is None:
        raise ConfigError(
            key, "the PostgreSQL driver is not installed: pip install 'tidegate[postgresql]'"
        )
    return url, shown_url(url)
