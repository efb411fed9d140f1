"""Storage lifecycle on a small disk (``docs/storage.md``).

One module per job, all working on the writer's own SQLite connection in short,
time-budgeted steps so ingestion never waits more than a few milliseconds:

* :mod:`~gateway.storage.units`       sizes ("2GB") and retention durations ("14d", "5y")
* :mod:`~gateway.storage.rollups`     1-minute / 1-hour aggregates, computed in the background
* :mod:`~gateway.storage.tiers`       the read side: pick the coarsest tier that answers a query
* :mod:`~gateway.storage.retention`   chunked purges of expired rows, incremental vacuum
* :mod:`~gateway.storage.guard`       size cap and free-disk guard (purge oldest or stop)
* :mod:`~gateway.storage.wear`        bytes written per reading, background WAL checkpoints
* :mod:`~gateway.storage.integrity`   quick_check at start, corrupt files moved aside
* :mod:`~gateway.storage.lock`        one gateway per database file (advisory lock)
* :mod:`~gateway.storage.backup`      online backup and validated restore
* :mod:`~gateway.storage.lifecycle`   open/close wiring used by :class:`gateway.app.Gateway`
* :mod:`~gateway.storage.maintenance` the scheduled background service
"""
