"""Test-only fault injection: ``TIDEGATE_TEST_FAULTS`` switches faults on by name.

Integration tests start a real gateway process and need it to fail in ways a real
disk, broker or bug would, at a chosen moment. The variable holds comma-separated
``name`` or ``name=value`` items; with it unset (always, in production) every check is
one dictionary lookup on an empty dict. A gateway that finds faults enabled logs it at
WARNING when it starts.

Faults (where they act):

* ``hold-pubcomp`` — PUBREL from the broker is not answered (``sources/_paho_adapter``):
  freezes QoS 2 flows between PUBREC and PUBCOMP, for a kill in that window.
* ``storage-outage=<after>:<seconds>`` — every batch write fails with a storage error for
  ``seconds``, starting ``after`` seconds after the first write (``app``).
* ``writer-crash=<n>`` — the writer raises an unexpected error on its ``n``-th batch.
* ``reader-crash=<n>`` — a connection's reader raises on its ``n``-th message.
* ``upstream-exit-after-commit=<n>`` — the process exits at once (``os._exit``, like a
  ``kill -9``) right after its ``n``-th central batch committed, before the outbox drops
  the rows (``upstream/forwarder``): the window a restart must repair.
"""

from __future__ import annotations

import os

ENV = "TIDEGATE_TEST_FAULTS"

_active: dict[str, str] | None = None


def active() -> dict[str, str]:
    """Every enabled fault: name → value (``""`` when given without one)."""
    global _active
    if _active is None:
        parsed: dict[str, str] = {}
        for item in os.environ.get(ENV, "").split(","):
            name, _, value = item.strip().partition("=")
            if name:
                parsed[name] = value
        _active = parsed
    return _active


def enabled(name: str) -> bool:
    """True when fault ``name`` is switched on."""
    return name in active()


def value(name: str) -> str | None:
    """The value of fault ``name``; None when it is off."""
    return active().get(name)


def reset() -> None:
    """Read the environment again (tests that change it in-process)."""
    global _active
    _active = None
