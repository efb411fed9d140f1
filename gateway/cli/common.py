"""Pieces shared by several subcommands: config loading, the store's read side, logging."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from gateway import request
from gateway.config import Settings, StorageConfig, load_settings, local_gateway_id
from gateway.errors import ConfigError, StorageError
from gateway.storage.backends import central_read_store, read_store
from gateway.storage.base import ReadStore

T = TypeVar("T")

STORE_ENV = "TIDEGATE_STORE"
"""The central store a read command (and ``tidegate serve``) reads without ``--store``."""


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help="config file (default: $TIDEGATE_CONFIG or ./config.toml if present)",
    )


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--db", type=Path, default=None, help="database file (overrides storage.path)"
    )


def add_read_arguments(parser: argparse.ArgumentParser, gateway: bool = True) -> None:
    """Where a read command reads: ``--db PATH`` (a gateway's file), ``--store URL`` (the
    central PostgreSQL), else the config's ``storage.path``; and ``--gateway``."""
    add_config_argument(parser)
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--db", type=Path, default=None, help="database file (overrides storage.path)"
    )
    where.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help="the central store instead: postgresql://user@host:port/db (default:"
        f" ${STORE_ENV} unless --db is given; password from PGPASSWORD or ~/.pgpass; a"
        " read-only role is enough)",
    )
    if gateway:
        parser.add_argument(
            "--gateway",
            "-g",
            default=None,
            help="only this gateway's data (a gateway's own file holds only its own)",
        )


def gateway_of(args: argparse.Namespace) -> str | None:
    """The checked ``--gateway`` filter (None: every gateway)."""
    return request.gateway_filter(getattr(args, "gateway", None), "--gateway")


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from ``--config`` plus the environment."""
    return load_settings(getattr(args, "config", None))


def db_path(args: argparse.Namespace) -> Path:
    """``--db`` if given, else ``storage.path`` from the config — which a gateway that
    writes straight into PostgreSQL does not have: then a ConfigError (exit 2) says so
    (these are the SQLite file's tools: backup, restore, vacuum, dead-letter replay)."""
    if getattr(args, "db", None) is not None:
        return Path(args.db)
    storage = settings_from(args).storage
    if storage.backend != "sqlite":
        raise ConfigError(
            "storage.backend",
            f'is "{storage.backend}": this command works on a SQLite file (give --db FILE);'
            " the central PostgreSQL is backed up and vacuumed by its own tools (pg_dump,"
            " autovacuum), docs/central.md",
        )
    return storage.path


class Reader:
    """The read side of the store for one command, driven from synchronous code.

    Its calls run on an event loop of the command's own, in a thread (so a command also
    works when called from code that runs a loop already, such as tests).
    ``reader(coro)`` runs a call to the end; ``reader.rows(stream)`` turns a stream of
    chunks into rows, so output stays streamed (``query --limit 0`` never holds the
    whole result).
    """

    def __init__(self, store: ReadStore) -> None:
        self.store = store
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tidegate-cli-loop", daemon=True
        )
        self._thread.start()

    def __call__(self, call: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def rows(self, chunks: AsyncIterator[list[T]]) -> Iterator[T]:
        async def next_chunk() -> list[T] | None:
            return await anext(chunks, None)

        async def close() -> None:
            closing = getattr(chunks, "aclose", None)
            if closing is not None:
                await closing()

        try:
            while (chunk := self(next_chunk())) is not None:
                yield from chunk
        finally:
            self(close())

    def close(self) -> None:
        try:
            self(self.store.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


def central_url(args: argparse.Namespace) -> str | None:
    """The central store a read command reads: ``--store``, else ``$TIDEGATE_STORE``
    unless ``--db`` names a file; None: a gateway's own file."""
    url = getattr(args, "store", None)
    if not url and getattr(args, "db", None) is None:
        url = os.environ.get(STORE_ENV) or None
    return url or None


@contextlib.contextmanager
def open_reader(args: argparse.Namespace) -> Iterator[tuple[Reader, str]]:
    """The read side the command should read — ``--store`` (the central store),
    ``--db``, ``$TIDEGATE_STORE`` or the config's ``storage.path`` (with
    ``storage.backend = "postgresql"``: the central store it writes), in that order —
    and what to call it (the path, or the URL without its password).

    A gateway's file labels its rows with the local gateway id
    (:func:`gateway.config.local_gateway_id` of ``--config``; with ``--db`` and no
    ``--config``, this host's name)."""
    url = central_url(args)
    if url:
        store, shown = central_read_store(url)
        reader = Reader(store)
        try:
            yield reader, shown
        finally:
            reader.close()
        return
    if getattr(args, "db", None) is not None:
        path, config = Path(args.db), StorageConfig()
        settings = settings_from(args) if getattr(args, "config", None) else None
    else:
        settings = settings_from(args)
        config = settings.storage
        path = config.path
        if config.postgresql is not None and config.backend == "postgresql":
            # A gateway writing straight into PostgreSQL: read what it writes.
            reader = Reader(read_store(config))
            try:
                yield reader, config.postgresql.shown_url
            finally:
                reader.close()
            return
    if not path.exists():
        raise StorageError(f"database not found: {path}")
    reader = Reader(read_store(config, path=path, gateway_id=local_gateway_id(settings)))
    try:
        yield reader, str(path)
    finally:
        reader.close()


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
