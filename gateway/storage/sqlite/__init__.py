"""The SQLite backend: every SQL statement tidegate runs on its edge database.

The two interfaces of :mod:`gateway.storage.base`, implemented over one WAL-mode file:

* :mod:`.store`       :class:`~.store.SqliteStore`, the write side: the batch writer
  wrapped in the file's lifecycle (lock, integrity check, hooks, maintenance)
* :mod:`.reader`      :class:`~.reader.SqliteReader`, the read side, on worker threads
  (:mod:`.readpool`) with a per-query deadline; snapshots for ``verify``

and behind them, one module per job (``docs/storage.md``):

* :mod:`.schema`      tables, migrations, the hot/cold layout's names
* :mod:`.connection`  opening connections; sqlite3 errors → :mod:`gateway.errors`
* :mod:`.writer`      the batch writer (:class:`~.writer.BatchWriter`, :class:`~.writer.SqliteSink`)
* :mod:`.compaction`  moving readings from the hot table into the per-series table
* :mod:`.rollups`     1-minute / 1-hour aggregates, computed in the background
* :mod:`.tiers`       pick the coarsest tier that answers an aggregate query
* :mod:`.queries`     the read side's SQL
* :mod:`.deadletters` dead letters: list, show, replay, purge
* :mod:`.retention`   chunked purges of expired rows, incremental vacuum
* :mod:`.guard`       size cap and free-disk guard (purge oldest or stop)
* :mod:`.wear`        bytes written per reading, background WAL checkpoints
* :mod:`.integrity`   quick_check at start, corrupt files moved aside
* :mod:`.lock`        one gateway per database file (advisory lock)
* :mod:`.backup`      online backup and validated restore
* :mod:`.report`      the storage part of ``tidegate stats``
* :mod:`.maintenance` the scheduled background service (run by ``SqliteStore.maintain``)
"""
