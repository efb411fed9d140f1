"""The PostgreSQL backend: the central store (``docs/central.md``, issue 13).

asyncpg is an optional dependency (``tidegate[postgresql]``: no armv7 wheels exist), so
nothing on the SQLite-only path may import the write side of this package; only
:mod:`gateway.storage.backends` (lazily) and ``gateway.upstream`` do. The read side
imports asyncpg only when it first connects, so :mod:`gateway.storage.backends` may
import it at module level.

Write side (imports asyncpg):

* :mod:`.schema`       the ``tidegate`` schema and its forward migrations
* :mod:`.connection`   a :class:`~gateway.config.PostgresConfig` → asyncpg connection;
  asyncpg errors → :mod:`gateway.errors`
* :mod:`.ingest`       series ids, day partitions, COPY of readings (shared with the
  forwarder)
* :mod:`.store`        :class:`~.store.PostgresStore`, the direct-mode write side
* :mod:`.maintenance`  partitions ahead, rollups from ``rollup_pending``, retention —
  one process at a time under an advisory lock

Read side (asyncpg on first use only):

* :mod:`.reader`       :class:`~.reader.PostgresReader`, the
  :class:`~gateway.storage.base.ReadStore` over the central store
* :mod:`.queries`, :mod:`.tiers`, :mod:`.details`  its SQL
* :mod:`.urls`         URLs checked, and shown without a password
"""
