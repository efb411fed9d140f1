"""The PostgreSQL backend: the central store (``docs/central.md``, issue 13).

Everything here imports asyncpg, an optional dependency (``tidegate[postgresql]``: no
armv7 wheels exist), so nothing on the SQLite-only path may import this package; only
:mod:`gateway.storage.backends` (lazily) and ``gateway.upstream`` do.

* :mod:`.schema`       the ``tidegate`` schema and its forward migrations
* :mod:`.connection`   a :class:`~gateway.config.PostgresConfig` → asyncpg connection;
  asyncpg errors → :mod:`gateway.errors`
* :mod:`.ingest`       series ids, day partitions, COPY of readings (shared with the
  forwarder)
* :mod:`.store`        :class:`~.store.PostgresStore`, the direct-mode write side
* :mod:`.maintenance`  partitions ahead, rollups from ``rollup_pending``, retention —
  one process at a time under an advisory lock
"""
