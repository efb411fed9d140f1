"""Which backend serves a ``[storage]`` configuration.

The application, the CLI and the tools ask here for a store and get the interfaces of
:mod:`gateway.storage.base`; only this module names backend classes.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config import Settings, StorageConfig
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.receive_time import ReceiveClock
from gateway.series_gate import SeriesGate
from gateway.storage.base import ReadStore, SlotLocks, WriteStore
from gateway.storage.outbox import Outbox
from gateway.storage.postgresql.reader import PostgresReader
from gateway.storage.postgresql.urls import checked_url
from gateway.storage.sqlite.maintenance import ForwardPolicy
from gateway.storage.sqlite.reader import SqliteReader
from gateway.storage.sqlite.store import SqliteStore


def write_store(
    config: StorageConfig,
    metrics: Metrics,
    receive_clock: ReceiveClock | None = None,
    series_gate: SeriesGate | None = None,
    *,
    gateway_id: str = "",
    forward: ForwardPolicy | None = None,
) -> WriteStore:
    """The write side for a running gateway (one per database). With ``receive_clock``,
    the store seeds it at open and keeps its floor with the batches (decision 0082);
    with ``series_gate``, the store seeds it with its series at open (decision 0154).
    ``storage.backend = "postgresql"``: the central store, written under ``gateway_id``
    (:func:`gateway.config.local_gateway_id`; decision 0112 says what of the clock and
    the gate it honours). With ``forward`` (``upstream.full_policy``), a local store
    keeps an outbox for the forwarder (:func:`outbox_of`, ``docs/upstream.md``)."""
    if config.backend == "postgresql":
        return _postgres_store(config, metrics, receive_clock, series_gate, gateway_id)
    return SqliteStore(
        config, metrics, receive_clock=receive_clock, series_gate=series_gate, forward=forward
    )


def outbox_of(store: WriteStore) -> Outbox | None:
    """The outbox of a store opened with ``forward`` (``None``: it keeps none)."""
    return store.outbox if isinstance(store, SqliteStore) else None


def _postgres_store(
    config: StorageConfig,
    metrics: Metrics,
    receive_clock: ReceiveClock | None,
    series_gate: SeriesGate | None,
    gateway_id: str,
) -> WriteStore:
    # Imported here: asyncpg is an optional extra (no armv7 wheels), never loaded on
    # the SQLite path.
    try:
        from gateway.storage.postgresql.store import PostgresStore
    except ImportError as exc:
        raise ConfigError(
            "storage.backend",
            f'"postgresql" needs the PostgreSQL driver ({exc.name} is missing):'
            " pip install 'tidegate[postgresql]'",
        ) from None
    if not gateway_id:
        raise ConfigError("storage.gateway_id", "is empty")
    return PostgresStore(config, metrics, gateway_id, receive_clock, series_gate)


def slot_locks(settings: Settings) -> SlotLocks | None:
    """The claims on the client-id slots of a direct-mode group
    (:attr:`~gateway.config.Settings.slot_group`, decision 0124), or None when the
    gateway is not a member of one: PostgreSQL advisory locks on a connection of their
    own, to the same server as the store."""
    server = settings.storage.postgresql
    if not settings.slot_group or server is None:
        return None
    # Imported here, like the store (asyncpg stays off the SQLite path); the store's
    # open() already said it if the driver is missing.
    from gateway.storage.postgresql.connection import connect
    from gateway.storage.postgresql.slot_locks import PostgresSlotLocks

    return PostgresSlotLocks(
        lambda: connect(server), settings.mqtt.client_id, keepalive_s=server.keepalive_s
    )


def read_store(
    config: StorageConfig,
    *,
    path: Path | None = None,
    threads: int = 2,
    timeout_s: float | None = None,
    gateway_id: str = "",
) -> ReadStore:
    """A read side for ``config`` (``path`` overrides ``storage.path``): ``threads``
    worker threads, each query stopped after ``timeout_s`` (``None``: never); its rows
    carry ``gateway_id`` (the local gateway's, :func:`gateway.config.local_gateway_id`).

    ``storage.backend = "postgresql"`` (a direct-mode gateway's own API): the central
    store it writes to, every gateway's rows with their own ids, at most ``threads``
    connections (unless ``path`` names a file to read instead)."""
    if config.backend == "postgresql" and path is None and config.postgresql is not None:
        # Imported here: the connection settings module imports asyncpg.
        from gateway.storage.postgresql.connection import connect_kwargs

        options = connect_kwargs(config.postgresql)
        return PostgresReader(
            options["dsn"], threads=threads, timeout_s=timeout_s, password=options["password"]
        )
    return SqliteReader(
        path if path is not None else config.path, threads, timeout_s, gateway_id=gateway_id
    )


def central_read_store(
    url: str, *, threads: int = 4, timeout_s: float | None = 30.0
) -> tuple[ReadStore, str]:
    """A read side over the central PostgreSQL at ``url`` (password from ``PGPASSWORD``
    or ``~/.pgpass``; one inside the URL is accepted but never shown): up to
    ``threads`` connections, each statement stopped after ``timeout_s``; and ``url`` as
    it may be shown (without a password). Connects on first use."""
    checked, shown = checked_url(url, "--store")
    return PostgresReader(checked, threads=threads, timeout_s=timeout_s), shown
