"""The discovery state on disk: a small JSON file next to the database
(``<database>.discovery.json``, ``docs/decisions/0131-discovery-state-file.md``).

It holds the discovery configs in force (as received, so a restart parses them again
with the same code), the Zigbee2MQTT units, and each entity's last template error. A
restart with a resumed broker session gets no retained configs again (the subscription
is unchanged), so without this file the gateway would forget its devices.

Written atomically: a temporary file, fsync, rename over the old one, fsync of the
directory — a power cut leaves the old or the new file, never half of one. Mode 0600,
like the database.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

VERSION = 1


def state_path(database: Path) -> Path:
    """Where the discovery state of ``database`` lives."""
    return database.with_name(database.name + ".discovery.json")


@dataclass(slots=True)
class Snapshot:
    """What the file holds."""

    prefix: str = "homeassistant"
    configs: dict[str, str] = field(default_factory=dict)
    z2m_units: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Entity key → {"count", "last", "at_ms"} of template errors."""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "prefix": self.prefix,
            "configs": dict(sorted(self.configs.items())),
            "zigbee2mqtt_units": dict(sorted(self.z2m_units.items())),
            "errors": dict(sorted(self.errors.items())),
        }

    @classmethod
    def from_json(cls, data: Any) -> Snapshot:
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError("not a tidegate discovery state file (version 1)")
        configs = data.get("configs", {})
        units = data.get("zigbee2mqtt_units", {})
        errors = data.get("errors", {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in configs.items()):
            raise ValueError("configs must map topics to payload text")
        return cls(
            prefix=str(data.get("prefix", "homeassistant")),
            configs=dict(configs),
            z2m_units={
                str(t): {str(k): str(v) for k, v in u.items()}
                for t, u in units.items()
                if isinstance(u, dict)
            },
            errors={str(k): dict(v) for k, v in errors.items() if isinstance(v, dict)},
        )


def read(path: Path) -> Snapshot | None:
    """The saved state, or None when there is none. A damaged file is logged and moved
    aside (``.bad``), and treated as none: the retained configs arrive again with the
    next new subscription."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("discovery state %s unreadable (%s): starting without it", path, exc)
        return None
    try:
        return Snapshot.from_json(json.loads(text))
    except (ValueError, TypeError, AttributeError) as exc:
        aside = path.with_name(path.name + ".bad")
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        log.warning("discovery state %s damaged (%s): moved to %s", path, exc, aside)
        return None


def write(path: Path, snapshot: Snapshot) -> None:
    """Save ``snapshot`` atomically and durably. Raises ``OSError``."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        # Owner-only, like the database beside it (decision 0143), whatever the umask.
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with open(fd, "w", encoding="utf-8") as handle:
            json.dump(snapshot.to_json(), handle, ensure_ascii=False, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
