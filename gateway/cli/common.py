"""Pieces shared by several subcommands: config loading, the store's read side, logging."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from gateway.config import Settings, StorageConfig, load_settings
from gateway.errors import StorageError
from gateway.storage.backends import read_store
from gateway.storage.base import ReadStore

T = TypeVar("T")


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


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from ``--config`` plus the environment."""
    return load_settings(getattr(args, "config", None))


def db_path(args: argparse.Namespace) -> Path:
    """``--db`` if given, else ``storage.path`` from the config."""
    if getattr(args, "db", None) is not None:
        return Path(args.db)
    return settings_from(args).storage.path


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


@contextlib.contextmanager
def open_reader(args: argparse.Namespace) -> Iterator[tuple[Reader, Path]]:
    """The read side of the database the command should read (``--db`` or the
    config's ``storage.path``), and that path."""
    if getattr(args, "db", None) is not None:
        path, config = Path(args.db), StorageConfig()
    else:
        config = settings_from(args).storage
        path = config.path
    if not path.exists():
        raise StorageError(f"database not found: {path}")
    reader = Reader(read_store(config, path=path))
    try:
        yield reader, path
    finally:
        reader.close()


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
