"""The one exception tree of tidegate.

Every error that tidegate raises on purpose derives from :class:`TidegateError`.
Library errors (paho/aiomqtt, sqlite3/aiosqlite, pydantic, OS errors) are converted
into one of these where they enter our code, so callers never catch a library type::

    TidegateError
    ├── ConfigError          bad configuration; names the key (CLI exits 2)
    ├── DecodeError          a payload cannot be turned into readings; carries a human reason
    │   └── TemplateError    a discovered value_template cannot be evaluated on this payload
    ├── DiscoveryError       a discovery config (or its value_template) cannot be used
    ├── StorageError         the database failed
    │   ├── StorageFull      disk or size cap reached (SQLITE_FULL / ENOSPC); retried, never acked
    │   └── StorageCorrupt   the database file is damaged
    ├── QueryError           a read request is invalid (bad range, unknown sensor, limits)
    ├── ProtocolError        the broker sent bytes that are not MQTT (the connection is closed)
    ├── IncompatibleLibrary  an installed aiomqtt/paho lacks what the MQTT adapter relies on
    └── SimError             (simulators/errors.py) the simulator failed
        ├── BrokerUnreachable    the broker cannot be reached
        └── ReportError          a --report file is missing or malformed
"""

from __future__ import annotations


class TidegateError(Exception):
    """Base of every error tidegate raises on purpose."""


class ConfigError(TidegateError):
    """Invalid configuration. ``key`` is the dotted config key at fault (e.g. ``mqtt.port``)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"config error: {key}: {problem}" if key else f"config error: {problem}")


class DecodeError(TidegateError):
    """A payload cannot be decoded into readings. ``reason`` is shown to users and stored
    with the dead letter."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TemplateError(DecodeError):
    """A (supported) value_template failed on one payload: a missing key without a
    default, a non-number where a number is needed, a division by zero."""


class DiscoveryError(TidegateError):
    """A discovery config cannot be used: bad JSON, no state topic, or a value_template
    outside the supported subset (never executed). ``reason`` is shown to users."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class StorageError(TidegateError):
    """The database failed to read or write."""


class StorageFull(StorageError):
    """The disk is full or the configured size cap is reached."""


class StorageCorrupt(StorageError):
    """The database file is damaged."""


class QueryError(TidegateError):
    """A read request is invalid (bad time range, limits exceeded, unknown format)."""


class ProtocolError(TidegateError):
    """The broker sent bytes that are not valid MQTT; the connection must be closed."""


class IncompatibleLibrary(TidegateError):
    """An installed library (aiomqtt, paho-mqtt) lacks what the MQTT adapter relies on;
    the gateway refuses to start."""
