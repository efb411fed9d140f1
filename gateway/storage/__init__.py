"""Storage: every SQL statement tidegate runs, behind two small interfaces.

* :mod:`~gateway.storage.base`     the write side (:class:`~.base.WriteStore`: what the
  pipeline needs) and the read side (:class:`~.base.ReadStore`: what the CLI, the HTTP
  API and ``tidegate-sim verify`` need), and the data they carry
* :mod:`~gateway.storage.backends` which backend serves a ``[storage]`` config
* :mod:`~gateway.storage.sqlite`   the SQLite backend (the edge database)
* :mod:`~gateway.storage.memory`   an in-memory fake of both sides, for unit tests

Nothing outside this package opens a database connection or knows a table name
(``docs/architecture.md``; checked by the import-linter contracts in pyproject.toml).
"""
