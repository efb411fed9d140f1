"""``tidegate discovery list``: every discovered entity — its sensor, metric, unit and state
topic, and whether it stores readings or why not (an unsupported value_template, a
component that is not stored, a hand-written subscription that handles its topic, a
template that failed on payloads)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import add_config_argument, settings_from
from gateway.cli.output import FORMATS, write_rows
from gateway.discovery import store
from gateway.discovery.registry import Entity, Registry
from gateway.router import topic_matches
from gateway.validation import format_ms

COLUMNS = ("sensor_id", "metric", "unit", "component", "state_topic", "status", "discovery_topic")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "discovery",
        help="devices found by Home Assistant MQTT discovery",
        description="Show what discovery found (from the state the gateway saves).",
    )
    commands = parser.add_subparsers(dest="discovery_command", metavar="COMMAND")
    commands.required = True
    listing = commands.add_parser("list", help="every discovered entity and its status")
    add_config_argument(listing)
    listing.add_argument(
        "--state",
        type=Path,
        default=None,
        help="discovery state file (default: beside the database)",
    )
    listing.add_argument("--sensor", "-s", help="only this sensor")
    listing.add_argument(
        "--problems", action="store_true", help="only entities that store nothing or fail"
    )
    listing.add_argument("--format", "-f", choices=FORMATS, default="table")
    listing.set_defaults(handler=handle_list)


def _status(entity: Entity, covered: str | None, errors: dict[str, Any]) -> str:
    if entity.problem is not None:
        return entity.problem
    if covered is not None:
        return f"handled by subscription {covered!r}"
    failed = errors.get(entity.key)
    if failed:
        when = format_ms(int(failed.get("at_ms", 0)))
        return f"template failed {failed.get('count')}x, last at {when}: {failed.get('last')}"
    return "ok"


def handle_list(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    config = settings.discovery
    path = args.state or config.state_file or store.state_path(Path(settings.storage.path))
    if not config.active:
        print(
            "tidegate: discovery is off ([discovery] homeassistant = true turns it on)",
            file=sys.stderr,
        )
    snapshot = store.read(path)
    if snapshot is None:
        print(f"tidegate: no discovery state at {path} (yet)", file=sys.stderr)
        write_rows([], COLUMNS, args.format)
        return 0
    registry = Registry(
        snapshot.prefix, frozenset(config.components), settings.validation.limits(), report=False
    )
    for problem in registry.load(snapshot.configs, snapshot.z2m_units):
        print(f"tidegate: unusable saved config: {problem}", file=sys.stderr)

    def covered(topic: str | None) -> str | None:
        if topic is None:
            return None
        return next(
            (s.label for s in settings.subscriptions if topic_matches(s.topic, topic)), None
        )

    rows = []
    for entity in registry.listing():
        if args.sensor is not None and entity.sensor_id != args.sensor:
            continue
        status = _status(entity, covered(entity.state_topic), snapshot.errors)
        if args.problems and status == "ok":
            continue
        rows.append(
            {
                "sensor_id": entity.sensor_id,
                "metric": entity.metric,
                "unit": entity.unit,
                "component": entity.config.component,
                "state_topic": entity.state_topic,
                "status": status,
                "discovery_topic": entity.key,
            }
        )
    write_rows(rows, COLUMNS, args.format)
    if snapshot.z2m_units and args.format == "table" and not args.problems:
        fields = sum(len(units) for units in snapshot.z2m_units.values())
        print(
            f"\nZigbee2MQTT units: {fields} fields of {len(snapshot.z2m_units)} devices",
            file=sys.stderr,
        )
    return 0
