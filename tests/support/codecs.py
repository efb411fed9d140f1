"""The one way codec tests build a :class:`~gateway.validation.DecodeContext`.

Each codec test module binds its own defaults once::

    ctx = context_factory(NOW, {"sensor_id": "topic-sensor"}, with_options=True)

and calls ``ctx()`` / ``ctx({"sensor_id": "x"}, tags=..., limits=..., ts_format="s")``:
topic ``"t"``, receive time ``now_ms``, ``fields`` as the topic template would give
them (the module's default when omitted; ``{}`` for none), keyword options as the
subscription's codec options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.config import SubscriptionConfig
from gateway.models import NO_TAGS, Tags
from gateway.validation import DecodeContext, Limits

ContextFactory = Callable[..., DecodeContext]


def context_factory(
    now_ms: int, default_fields: Mapping[str, str], *, with_options: bool = False
) -> ContextFactory:
    """A ``ctx()`` for one test module. ``with_options``: always give the codec a
    subscription's options (defaults unless the call names some), as the router does;
    without, the codec sees none unless the call names some."""

    def ctx(
        fields: dict[str, str] | None = None,
        tags: Tags = NO_TAGS,
        topic_wins: bool = False,
        limits: Limits | None = None,
        **options: Any,
    ) -> DecodeContext:
        return DecodeContext(
            topic="t",
            now_ms=now_ms,
            limits=limits or Limits(),
            topic_fields=dict(default_fields) if fields is None else fields,
            topic_tags=tags,
            topic_wins=topic_wins,
            options=SubscriptionConfig(topic="#", **options) if with_options or options else None,
        )

    return ctx
