"""Forwarding committed readings from the edge's SQLite outbox to the central
PostgreSQL, exactly once (``docs/upstream.md``).

* :mod:`.forwarder` — the supervised task: outbox rows → one central transaction with
  the position → confirm locally; reconnects with backoff, paces catch-up, runs central
  maintenance.

Only this package and :mod:`gateway.storage.postgresql` import asyncpg (an optional
extra: nothing on the SQLite-only path may need it).
"""
