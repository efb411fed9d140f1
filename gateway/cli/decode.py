"""``tidegate decode``: what would tidegate store for this one message?

Reads the payload from stdin (or ``--payload``), runs it through the same router and
codec the gateway uses, and prints the readings as a JSON array (the fields of
``query --format json`` plus ``tags``). A message that would be dead-lettered prints
the reason on stderr and exits 1; a well-formed message with nothing storable prints
``[]`` and exits 0. Nothing is written anywhere.

Without ``--format``/``--template`` the config's first subscription matching
``--topic`` decides, exactly as in the running gateway. With them, that subscription
(or a default one, if none matches) is used with the given format/template.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, get_args

from pydantic import ValidationError

from gateway.cli.common import add_config_argument, settings_from
from gateway.cli.output import write_rows
from gateway.config import Format, Settings, SubscriptionConfig
from gateway.errors import ConfigError
from gateway.models import Envelope
from gateway.router import Router, topic_matches
from gateway.validation import format_ms

COLUMNS = ("sensor_id", "metric", "ts", "value", "unit", "tags")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "decode",
        help="show what one message would become (readings or a dead-letter reason)",
        description="Decode one payload (stdin) for a topic, with the config's mapping.",
    )
    add_config_argument(parser)
    parser.add_argument("--topic", "-t", required=True, help="the MQTT topic the message has")
    parser.add_argument(
        "--format", "-f", dest="payload_format", choices=get_args(Format), help="payload format"
    )
    parser.add_argument("--template", help="topic template, e.g. sensors/{site}/{sensor_id}")
    parser.add_argument("--payload", "-p", help="payload text (default: read stdin)")
    parser.set_defaults(handler=handle)


def subscription_for(
    settings: Settings, topic: str, payload_format: str | None, template: str | None
) -> SubscriptionConfig | None:
    """The subscription to decode with: the config's match, overridden by the flags."""
    matched = next((s for s in settings.subscriptions if topic_matches(s.topic, topic)), None)
    if payload_format is None and template is None:
        return matched
    base = matched or SubscriptionConfig(topic=topic, name="decode")
    changes: dict[str, Any] = {"topic": topic}
    if payload_format is not None:
        changes["format"] = payload_format
    if template is not None:
        changes["topic_template"] = template
    try:
        # Validate again (model_copy would skip the template check).
        return SubscriptionConfig.model_validate({**base.model_dump(), **changes})
    except ValidationError as exc:
        message = str(exc.errors()[0].get("msg", "invalid")).removeprefix("Value error, ")
        raise ConfigError("--template", message) from None


def decode_one(
    settings: Settings,
    topic: str,
    payload: bytes,
    payload_format: str | None = None,
    template: str | None = None,
    now_ms: int | None = None,
) -> Envelope:
    """Route one message like the gateway would (never raises for the payload)."""
    if "+" in topic or "#" in topic:
        raise ConfigError("--topic", "a message topic cannot contain the wildcards + or #")
    sub = subscription_for(settings, topic, payload_format, template)
    router = Router(
        [sub] if sub is not None else [],
        settings.validation.limits(),
        settings.pipeline.max_payload_bytes,
    )
    return router.route(topic, payload, now_ms)


def envelope_rows(envelope: Envelope) -> list[dict[str, Any]]:
    """Readings as the JSON objects ``decode`` prints."""
    return [
        {
            "sensor_id": r.sensor_id,
            "metric": r.metric,
            "ts": format_ms(r.ts_ms),
            "value": r.value,
            "unit": r.unit,
            "tags": dict(r.tags),
        }
        for r in envelope.readings
    ]


def _read_payload(args: argparse.Namespace, limit: int) -> bytes:
    if args.payload is not None:
        return str(args.payload).encode("utf-8")
    # One byte over the limit is enough to report "too large" without reading a flood.
    return sys.stdin.buffer.read(limit + 1)


def handle(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    payload = _read_payload(args, settings.pipeline.max_payload_bytes)
    envelope = decode_one(
        settings, args.topic, payload, args.payload_format, args.template, int(time.time() * 1000)
    )
    if envelope.dead_letter is not None:
        print(f"tidegate: dead letter: {envelope.dead_letter.reason}", file=sys.stderr)
        return 1
    write_rows(envelope_rows(envelope), COLUMNS, "json")
    if envelope.skipped:
        print(f"tidegate: {skipped_summary(envelope)}", file=sys.stderr)
    return 0


def skipped_summary(envelope: Envelope) -> str:
    """One line saying how many fields were skipped and naming them (strings, nulls,
    NaN, arrays, or left out by ``include``/``exclude``)."""
    names = envelope.skipped_names or []
    count = envelope.skipped
    text = (
        f"{count} field{'s' if count != 1 else ''} skipped (not numbers, or excluded; not errors)"
    )
    if names:
        shown = ", ".join(names)
        more = count - len(names)
        text += f": {shown}" + (f" and {more} more" if more > 0 else "")
    return text
