"""Topic filters as the MQTT spec defines them, and topic templates:
``sensors/{site}/{sensor_id}/{metric}`` → fields and tags.

:func:`check_topic_filter` enforces the filter rules of MQTT 3.1.1 §4.7 / MQTT 5 §4.7
and §4.8.2 (shared subscriptions), so a filter the broker would refuse — or silently
treat as a literal — is a config error before the gateway connects.

A template is split on ``/``. Each level is a literal, ``+`` (any one level, ignored),
``{name}`` (any one level, captured), or — last only — ``#`` (any remaining levels).
``sensor_id`` and ``metric`` captures feed the reading; every other capture becomes a
tag. Captured values are whole topic levels, so they never contain ``/``; they are
stored with parameterised SQL only, never spliced into a statement, and tags are
stored as canonical JSON (``json.dumps``), so a level such as ``'; DROP TABLE`` or
``","x":"y`` is kept verbatim as data. Tag values obey the same rules as names
(non-empty, printable, at most ``max_name_length`` characters); ``sensor_id`` and
``metric`` are checked when the reading is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.errors import DecodeError
from gateway.models import NO_TAGS, Tags
from gateway.validation import Limits, check_name

_DEFAULT_LIMITS = Limits()
_CACHE_BYTES = 8 << 20
"""Byte budget of a template's match cache (entries charged ~600 bytes plus the topic)."""


def _entry_cost(topic: str) -> int:
    return 600 + 2 * len(topic)


MAX_TOPIC_BYTES = 65_535
"""MQTT strings carry a two-byte length: a topic or filter is at most this many bytes."""
SHARE_PREFIX = "$share/"


def _show(text: str, limit: int = 80) -> str:
    """``repr`` of ``text``, shortened for an error message."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"… ({len(text):,} chars)"


def check_topic_filter(text: str) -> str:
    """Return ``text`` if it is a valid MQTT topic filter; raise ``ValueError`` naming
    the rule it breaks otherwise.

    Rules (MQTT 3.1.1 §4.7, MQTT 5 §4.7 and §4.8.2): at least one character; at most
    65,535 bytes as UTF-8; no NUL character (nor a lone surrogate, which has no UTF-8
    form); ``#`` only as the whole last level; ``+`` only as a whole level. A shared
    subscription ``$share/<group>/<filter>`` needs a group name of at least one
    character without ``/``, ``+`` or ``#``, followed by a valid filter.
    """
    if not text:
        raise ValueError("topic filter is empty")
    original = text
    if "\0" in text:
        raise ValueError(f"topic filter {_show(text)} contains a NUL character")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(
            f"topic filter {_show(text)} is not valid UTF-8 (lone surrogate)"
        ) from None
    if size > MAX_TOPIC_BYTES:
        raise ValueError(f"topic filter is {size:,} bytes, more than MQTT's {MAX_TOPIC_BYTES:,}")
    if text.startswith(SHARE_PREFIX):
        rest = text[len(SHARE_PREFIX) :]
        group, slash, inner = rest.partition("/")
        if not slash:
            raise ValueError(f"shared subscription {_show(text)} needs $share/<group>/<filter>")
        check_share_group(group)
        if not inner:
            raise ValueError(
                f"shared subscription {_show(text)} has an empty filter after the group"
            )
        text = inner
    levels = text.split("/")
    for index, level in enumerate(levels):
        if "#" in level:
            if level != "#":
                raise ValueError(f"topic filter {_show(text)}: '#' must be alone in its level")
            if index != len(levels) - 1:
                raise ValueError(
                    f"topic filter {_show(text)}: '#' is only allowed as the last level"
                )
        if "+" in level and level != "+":
            raise ValueError(f"topic filter {_show(text)}: '+' must be alone in its level")
    return original


def check_share_group(name: str) -> str:
    """Return ``name`` if it is a valid shared-subscription group name (MQTT 5 §4.8.2:
    at least one character, no ``/``, ``+`` or ``#``; no NUL); raise ``ValueError``."""
    if not name:
        raise ValueError("shared subscription group name is empty")
    for char, what in (("/", "'/'"), ("+", "'+'"), ("#", "'#'"), ("\0", "a NUL character")):
        if char in name:
            raise ValueError(f"shared subscription group {_show(name)} contains {what}")
    return name


_NAME = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]{0,63})\}$")
READING_FIELDS = frozenset({"sensor_id", "metric"})


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    """A parsed template; build with :meth:`parse`."""

    text: str
    levels: tuple[str | None, ...]
    """Per level: the capture name, ``None`` for ``+``, or ``"=literal"``."""
    trailing_hash: bool
    _cache: dict[tuple[str, int], tuple[dict[str, str], Tags]] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )
    """Recent topics already matched (sensors publish to the same topic again and again)."""
    _cache_bytes: list[int] = field(
        default_factory=lambda: [0], compare=False, repr=False, hash=False
    )
    """One-element list (the dataclass is frozen): bytes charged to ``_cache``."""

    @classmethod
    def parse(cls, text: str) -> TopicTemplate:
        """Parse ``text``; raises ``ValueError`` with a reason on a bad template."""
        if not text:
            raise ValueError("topic_template is empty")
        parts = text.split("/")
        trailing_hash = parts[-1] == "#"
        if trailing_hash:
            parts = parts[:-1]
        levels: list[str | None] = []
        seen: set[str] = set()
        for part in parts:
            if part == "+":
                levels.append(None)
            elif part == "#":
                raise ValueError(f"topic_template {text!r}: '#' is only allowed as the last level")
            elif part.startswith("{") or part.endswith("}"):
                match = _NAME.match(part)
                if match is None:
                    raise ValueError(f"topic_template {text!r}: bad placeholder {part!r}")
                name = match.group(1)
                if name in seen:
                    raise ValueError(f"topic_template {text!r}: {{{name}}} appears twice")
                seen.add(name)
                levels.append(name)
            elif "+" in part or "#" in part:
                raise ValueError(f"topic_template {text!r}: wildcard inside level {part!r}")
            else:
                levels.append("=" + part)
        return cls(text, tuple(levels), trailing_hash)

    @property
    def captures(self) -> tuple[str, ...]:
        """The names of the ``{…}`` levels, in order."""
        return tuple(level for level in self.levels if level is not None and level[0] != "=")

    def match(self, topic: str, limits: Limits = _DEFAULT_LIMITS) -> tuple[dict[str, str], Tags]:
        """Split ``topic`` into reading fields (sensor_id/metric) and tags.

        Raises :class:`DecodeError` when the topic does not fit the template or a
        captured tag value is empty, too long or holds control characters.
        """
        key = (topic, limits.max_name_length)
        hit = self._cache.get(key)
        if hit is not None:
            return dict(hit[0]), hit[1]
        fields, tags = self._match(topic, limits)
        cost = _entry_cost(topic)
        if self._cache_bytes[0] + cost > _CACHE_BYTES:
            self._cache.clear()  # bounded in bytes; refilled by the topics still in use
            self._cache_bytes[0] = 0
        self._cache[key] = (fields, tags)
        self._cache_bytes[0] += cost
        return dict(fields), tags

    def _match(self, topic: str, limits: Limits) -> tuple[dict[str, str], Tags]:
        parts = topic.split("/")
        count = len(self.levels)
        if len(parts) < count or (len(parts) > count and not self.trailing_hash):
            raise DecodeError(f"topic {topic!r} does not match template {self.text!r}")
        fields: dict[str, str] = {}
        tags: list[tuple[str, str]] = []
        for level, part in zip(self.levels, parts, strict=False):
            if level is None:
                continue
            if level[0] == "=":
                if level[1:] != part:
                    raise DecodeError(f"topic {topic!r} does not match template {self.text!r}")
                continue
            if not part:
                raise DecodeError(f"topic {topic!r}: empty level for {{{level}}}")
            if level in READING_FIELDS:
                fields[level] = part
            else:
                tags.append((level, check_name(f"topic level {{{level}}}", part, limits)))
        tags.sort()
        return fields, (tuple(tags) if tags else NO_TAGS)
