"""``tidegate check-config``: validate the configuration and print it, secrets masked."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.cli.common import add_config_argument, settings_from
from gateway.config import masked_dump


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check-config", help="validate the config and print the effective settings"
    )
    add_config_argument(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    print(json.dumps(masked_dump(settings), indent=2, ensure_ascii=False))
    print("config OK")
    return 0
