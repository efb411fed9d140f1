"""Which backend serves a ``[storage]`` configuration.

The application, the CLI and the tools ask here for a store and get the interfaces of
:mod:`gateway.storage.base`; only this module names backend classes.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config import StorageConfig
from gateway.metrics import Metrics
from gateway.storage.base import ReadStore, WriteStore
from gateway.storage.sqlite.reader import SqliteReader
from gateway.storage.sqlite.store import SqliteStore


def write_store(config: StorageConfig, metrics: Metrics) -> WriteStore:
    """The write side for a running gateway (one per database)."""
    return SqliteStore(config, metrics)


def read_store(
    config: StorageConfig,
    *,
    path: Path | None = None,
    threads: int = 2,
    timeout_s: float | None = None,
) -> ReadStore:
    """A read side for ``config`` (``path`` overrides ``storage.path``): ``threads``
    worker threads, each query stopped after ``timeout_s`` (``None``: never)."""
    return SqliteReader(path if path is not None else config.path, threads, timeout_s)
