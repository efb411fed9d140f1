"""Which topic filters each broker session should hold, and how to get it there.

A persistent MQTT session keeps its subscriptions at the broker, and the broker does
not tell a reconnecting client what they are. So the gateway remembers, per broker
session (broker address + client id), which filters it subscribed — in a small JSON
file next to the database (:class:`SessionStore`, ``docs/decisions/0090``) — and on
every connect brings the session to the *wanted* set: filters added since are
subscribed, filters no longer wanted are unsubscribed, unchanged ones are left alone
(MQTT 3.1.1 re-sends every retained message on a repeated SUBSCRIBE).

Wanted filters come from **owners** (:class:`FilterGroup`): ``config`` holds the
``[[subscriptions]]``; other parts of the gateway (Home Assistant discovery, the
broker-statistics probe) get their own group from
:meth:`gateway.sources.mqtt.MqttSource.filters` and add or remove filters at runtime::

    group = source.filters("discovery", shared=False)
    await group.add("homeassistant/+/+/config", qos=1)   # subscribed on live connections now
    await group.remove("zigbee2mqtt/old-lamp")            # unsubscribed now
    await group.replace({"zigbee2mqtt/lamp": 1})          # the complete set: settles the group

A change is applied at once on every live connection in the group's scope and again on
every reconnect. Until a group is *settled* (its first :meth:`FilterGroup.replace`), the
filters remembered for it from an earlier run are kept subscribed — a provider that
rebuilds its set after a restart does not lose messages in between — except those it
explicitly removes. Filters remembered for an owner that is not registered at all in
this process (a feature switched off) are unsubscribed.

:func:`plan` is the pure decision; :class:`gateway.sources.mqtt.Connection` applies it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.topics import SHARE_PREFIX, check_topic_filter

log = logging.getLogger(__name__)

CONFIG_OWNER = "config"

Record = dict[str, tuple[int, frozenset[str]]]
"""What a session holds: broker filter (``$share/…`` included) → (QoS, owners)."""


class FilterGroup:
    """The filters one owner wants. Build with :meth:`MqttSource.filters`.

    ``shared``: with ``mqtt.shared_group`` set, the filters are subscribed as
    ``$share/<group>/<filter>`` on every connection (load spread over the group, like
    ``[[subscriptions]]``); ``shared=False`` subscribes them plainly on the first
    connection only (every message once per gateway: discovery configs, ``$SYS``).
    """

    def __init__(
        self,
        owner: str,
        shared: bool,
        apply: Callable[[FilterGroup], Awaitable[bool]],
        *,
        settled: bool = False,
        optional: bool = False,
    ) -> None:
        if not owner:
            raise ValueError("a filter group needs an owner name")
        self.owner = owner
        self.shared = shared
        self.optional = optional
        """A refusal of only this group's filters is a warning, not unreadiness (the
        broker-statistics probe: a broker may keep ``$SYS`` to itself)."""
        self.filters: dict[str, int] = {}
        self.settled = settled
        self.removed: set[str] = set()
        """Filters explicitly removed before the group settled (unsubscribed even then)."""
        self._apply = apply

    def _check(self, topic_filter: str, qos: int) -> None:
        check_topic_filter(topic_filter)
        if topic_filter.startswith(SHARE_PREFIX):
            raise ValueError(
                f"{topic_filter!r}: give the plain filter; shared=True adds $share/<group>/"
            )
        if qos not in (0, 1, 2):
            raise ValueError(f"{topic_filter!r}: QoS must be 0, 1 or 2, not {qos!r}")

    def set_initial(self, filters: Mapping[str, int]) -> None:
        """Set the filters before the source starts (no broker traffic); settles."""
        for topic_filter, qos in filters.items():
            self._check(topic_filter, qos)
        self.filters = dict(filters)
        self.settled = True

    async def add(self, topic_filter: str, qos: int = 1) -> bool:
        """Want ``topic_filter``: subscribe it on every live connection now (and on every
        reconnect). Raises ``ValueError`` for an invalid filter. Returns False when a
        live connection's broker refused it (logged, shown by ``/readyz``)."""
        self._check(topic_filter, qos)
        self.filters[topic_filter] = qos
        self.removed.discard(topic_filter)
        return await self._apply(self)

    async def remove(self, topic_filter: str) -> bool:
        """No longer want ``topic_filter``: unsubscribe it now (unless another owner
        wants it too)."""
        self.filters.pop(topic_filter, None)
        self.removed.add(topic_filter)
        return await self._apply(self)

    async def replace(self, filters: Mapping[str, int]) -> bool:
        """Want exactly ``filters``: everything else this owner holds — including what
        an earlier run remembered — is unsubscribed. Settles the group."""
        for topic_filter, qos in filters.items():
            self._check(topic_filter, qos)
        self.removed |= set(self.filters) - set(filters)
        self.filters = dict(filters)
        self.settled = True
        return await self._apply(self)


def broker_filter(topic_filter: str, shared_group: str | None, shared: bool) -> str:
    """The filter as sent to the broker."""
    if shared and shared_group:
        return f"{SHARE_PREFIX}{shared_group}/{topic_filter}"
    return topic_filter


def plain_filter(sent: str) -> str:
    """``sent`` without a ``$share/<group>/`` prefix."""
    if sent.startswith(SHARE_PREFIX):
        parts = sent.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return sent


class Registry:
    """Every owner's :class:`FilterGroup`, and what a connection should therefore hold."""

    def __init__(self, shared_group: str | None) -> None:
        self.shared_group = shared_group
        self.groups: dict[str, FilterGroup] = {}

    def _sent(self, group: FilterGroup, first: bool) -> dict[str, int]:
        if not group.shared and not first:
            return {}
        return {
            broker_filter(f, self.shared_group, group.shared): qos
            for f, qos in group.filters.items()
        }

    def wanted(self, first: bool) -> Record:
        """Broker filter → (QoS, owners) for a connection (``first``: the connection
        that also carries the non-shared groups). Two owners of one filter share one
        subscription at the higher QoS."""
        out: dict[str, tuple[int, set[str]]] = {}
        for owner, group in self.groups.items():
            for sent, qos in self._sent(group, first).items():
                held = out.setdefault(sent, (qos, set()))
                held[1].add(owner)
                out[sent] = (max(held[0], qos), held[1])
        return {sent: (qos, frozenset(owners)) for sent, (qos, owners) in out.items()}

    def optional(self, owners: frozenset[str]) -> bool:
        """True when every owner of a filter is an optional group."""
        return bool(owners) and all(
            (g := self.groups.get(o)) is not None and g.optional for o in owners
        )

    def disowned(self, owner: str, sent: str, first: bool) -> bool:
        """True if ``owner`` no longer wants ``sent``, a filter it was remembered holding:
        always for an owner not registered; for a settled group when the filter is not
        in its set; for an unsettled group only when explicitly removed."""
        group = self.groups.get(owner)
        if group is None:
            return True
        if group.settled:
            return sent not in self._sent(group, first)
        return plain_filter(sent) in group.removed


@dataclass(frozen=True, slots=True)
class Plan:
    """What to send on one connection, and what the session holds afterwards if the
    broker grants it all."""

    subscribe: dict[str, int]
    """Broker filter → QoS."""
    unsubscribe: list[str]
    unchanged: int
    target: Record = field(default_factory=dict)


def plan(
    wanted: Record,
    remembered: Record | None,
    disowned: Callable[[str, str], bool],
) -> Plan:
    """Bring a session from ``remembered`` (None: unknown) to ``wanted``.

    ``disowned(owner, broker_filter)`` says whether ``owner`` gave up a filter it held
    (see :meth:`Registry.disowned`). A
    remembered filter nobody wants any more is unsubscribed unless some owner still
    holds it (an unsettled group keeps what an earlier run subscribed). With an
    unknown session every wanted filter is subscribed again and nothing is unsubscribed.
    """
    if remembered is None:
        return Plan({f: qos for f, (qos, _owners) in wanted.items()}, [], 0, dict(wanted))
    subscribe: dict[str, int] = {}
    unsubscribe: list[str] = []
    unchanged = 0
    target: Record = {}
    for sent, (qos, owners) in wanted.items():
        held = remembered.get(sent)
        kept = frozenset(o for o in held[1] if not disowned(o, sent)) if held else frozenset()
        target[sent] = (qos, owners | kept)
        if held is not None and held[0] == qos:
            unchanged += 1
        else:
            subscribe[sent] = qos
    for sent, (qos, owners) in remembered.items():
        if sent in wanted:
            continue
        kept = frozenset(o for o in owners if not disowned(o, sent))
        if kept:
            target[sent] = (qos, kept)
            unchanged += 1
        else:
            unsubscribe.append(sent)
    return Plan(subscribe, unsubscribe, unchanged, target)


def encode_record(record: Record) -> dict[str, dict[str, object]]:
    """``record`` as JSON-ready data (the file's per-session form)."""
    return {
        f: {"qos": qos, "owners": sorted(owners)} for f, (qos, owners) in sorted(record.items())
    }


def decode_record(data: Mapping[str, Mapping[str, object]]) -> Record:
    """The inverse of :func:`encode_record`; raises ValueError/KeyError/TypeError on junk."""
    out: Record = {}
    for f, entry in data.items():
        qos = entry["qos"]
        owners = entry["owners"]
        if not isinstance(qos, int) or not isinstance(owners, list):
            raise TypeError(f"bad entry for {f!r}")
        out[str(f)] = (qos, frozenset(map(str, owners)))
    return out


class SessionStore:
    """Per broker session, the filters it holds: a JSON file written atomically (temp
    file, fsync, rename, fsync of the directory), read at start. ``path=None`` keeps it
    in memory only (every start is then "unknown"). ``on_save(key, record)`` is called
    after each change (a direct-mode group also records slot sessions in PostgreSQL)."""

    VERSION = 1

    def __init__(
        self, path: Path | None, on_save: Callable[[str, Record], None] | None = None
    ) -> None:
        self.path = path
        self.on_save = on_save
        self._sessions: dict[str, Record] | None = None

    def put(self, key: str, record: Record | None) -> None:
        """Set what session ``key`` holds without writing it anywhere (None: unknown)."""
        sessions = self._load_all()
        if record is None:
            sessions.pop(key, None)
        else:
            sessions[key] = dict(record)

    def _load_all(self) -> dict[str, Record]:
        if self._sessions is not None:
            return self._sessions
        sessions: dict[str, Record] = {}
        if self.path is not None:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                for key, filters in data.get("sessions", {}).items():
                    sessions[str(key)] = decode_record(filters)
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning(
                    "subscription state %s unreadable (%s): treating every session as unknown",
                    self.path,
                    exc,
                )
                sessions = {}
        self._sessions = sessions
        return sessions

    def load(self, key: str) -> Record | None:
        """What session ``key`` holds, or None when this store never saw it."""
        record = self._load_all().get(key)
        return None if record is None else dict(record)

    def save(self, key: str, record: Record) -> None:
        """Remember ``record`` for session ``key`` (durably, when backed by a file)."""
        sessions = self._load_all()
        if sessions.get(key) == record:
            return
        sessions[key] = dict(record)
        if self.on_save is not None:
            self.on_save(key, dict(record))
        if self.path is None:
            return
        data = {
            "version": self.VERSION,
            "sessions": {k: encode_record(filters) for k, filters in sorted(sessions.items())},
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            # Not fatal: the next start treats the session as unknown and subscribes
            # every wanted filter again (nothing is lost, retained messages repeat).
            log.warning("cannot write subscription state %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
