"""Payload codecs: pure functions ``decode(payload, ctx) -> Decoded``.

A codec does no I/O, keeps no state between calls, and raises only
:class:`~gateway.errors.DecodeError` (with a reason a person can act on). Codecs are
looked up by the subscription's ``format`` name with :func:`get_codec`.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.models import Decoded
from gateway.validation import DecodeContext

Codec = Callable[[bytes, DecodeContext], Decoded]

_REGISTRY: dict[str, Codec] = {}


def register(name: str, codec: Codec) -> None:
    """Make ``codec`` available as format ``name``."""
    _REGISTRY[name] = codec


def get_codec(name: str) -> Codec:
    """The codec for format ``name``; raises ``KeyError`` for an unknown format."""
    if name not in _REGISTRY:
        _load_builtin()  # a test may have imported one codec module directly first
    return _REGISTRY[name]


def available() -> list[str]:
    """Names of every registered format."""
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    import importlib

    for module in ("json", "senml", "influx", "raw", "auto"):
        try:
            importlib.import_module(f"gateway.codecs.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gateway.codecs.{module}":
                raise
