"""The simulator's errors: a branch of tidegate's one exception tree.

::

    TidegateError                 (gateway/errors.py)
    └── SimError                  the simulator cannot go on; the CLI prints one line, exits 1
        ├── BrokerUnreachable     connecting to the broker failed (refused, timeout, TLS, auth)
        └── ReportError           a --report file is missing, unreadable or not a report
"""

from __future__ import annotations

from gateway.errors import TidegateError


class SimError(TidegateError):
    """The simulator cannot go on."""


class BrokerUnreachable(SimError):
    """Connecting to the broker failed; the message says where and why."""


class ReportError(SimError):
    """A report file cannot be read or is not a tidegate-sim report."""
