"""``tidegate backup PATH``: an online, consistent copy of the database (works while the
gateway ingests; the file at PATH is replaced atomically)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.cli.common import add_db_argument, db_path
from gateway.parsing import format_size
from gateway.storage.sqlite.backup import backup_database


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backup", help="copy the database to PATH while the gateway keeps running"
    )
    parser.add_argument("path", type=Path, help="backup file to write (replaced atomically)")
    add_db_argument(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    info = backup_database(db_path(args), args.path)
    print(
        f"backup written: {info.path} ({info.readings:,} readings, {info.series:,} series,"
        f" {format_size(info.size_bytes)}, schema v{info.schema_version}, quick_check ok)"
    )
    return 0
