"""Auto-detection for mixed fleets: pick a codec per message and delegate.

Rules, in order (``docs/decisions/0043-auto-detection.md``):

1. first byte ``0x80``–``0x9f`` (a CBOR array) or the CBOR self-describe tag
   ``d9 d9 f7`` → ``senml-cbor`` (no UTF-8 text starts with these bytes);
2. after leading whitespace, ``[`` → JSON array: ``senml`` if its first element is an
   object whose keys are all SenML labels (``bn``, ``n``, ``v``, ``t``, …), else ``json``;
3. ``{`` or ``"`` → ``json``;
4. a bare number or ``true``/``false``, or a "no value" word (``nan``, ``None``,
   ``null``) → ``raw``;
5. anything else → ``influx`` (line protocol), whose parser explains what is wrong.

The dead-letter reason names the detected format: ``auto-detected influx: line 1: …``.
"""

from __future__ import annotations

from typing import Any

import pydantic_core

from gateway.codecs import influx, json, raw, register, senml
from gateway.errors import DecodeError
from gateway.models import Decoded
from gateway.validation import DecodeContext

_WHITESPACE = b" \t\r\n"


def _looks_senml(data: Any) -> bool:
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        return False
    keys = data[0].keys()
    return bool(keys) and all(isinstance(k, str) and k in senml.SENML_KEYS for k in keys)


def detect(payload: bytes) -> str:
    """The format name ``auto`` would use for ``payload`` (parses JSON arrays once)."""
    return _detect(payload)[0]


def _detect(payload: bytes) -> tuple[str, Any]:
    """(format, parsed JSON array or None)."""
    if not payload:
        return "raw", None
    first = payload[0]
    if 0x80 <= first <= 0x9F or payload[:3] == b"\xd9\xd9\xf7":
        return "senml-cbor", None
    stripped = payload.lstrip(_WHITESPACE)
    lead = stripped[:1]
    if lead == b"[":
        try:
            data = pydantic_core.from_json(stripped, allow_inf_nan=False)
        except ValueError:
            return "json", None  # the json codec reports the syntax error
        return ("senml" if _looks_senml(data) else "json"), data
    if lead in (b"{", b'"'):
        return "json", None
    if not stripped or raw.parse_scalar(stripped) is not None or raw.is_no_value(stripped):
        return "raw", None
    return "influx", None


def decode(payload: bytes, ctx: DecodeContext) -> Decoded:
    """Detect the format of ``payload`` and decode it; raises only DecodeError."""
    fmt, parsed = _detect(payload)
    try:
        if fmt == "senml" and parsed is not None:
            return senml.decode_pack(parsed, ctx, cbor=False)
        if fmt == "senml-cbor":
            return senml.decode_cbor(payload, ctx)
        if fmt == "json":
            return json.decode(payload, ctx)
        if fmt == "raw":
            return raw.decode(payload, ctx)
        return influx.decode(payload, ctx)
    except DecodeError as exc:
        raise DecodeError(f"auto-detected {fmt}: {exc.reason}") from None


register("auto", decode)
