"""``tidegate restore PATH``: validate a backup and put it in place of the database
(the previous database is kept as ``<name>.pre-restore-<UTC timestamp>``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.cli.common import add_db_argument, db_path
from gateway.storage.sqlite.backup import restore_database


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "restore", help="replace the database with a validated backup (gateway stopped)"
    )
    parser.add_argument("path", type=Path, help="backup file written by `tidegate backup`")
    add_db_argument(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="restore even while a gateway runs on the database (restart it afterwards)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    db = db_path(args)
    info, moved = restore_database(args.path, db, force=args.force)
    print(f"restored {db} from {info.path} ({info.readings:,} readings, {info.series:,} series)")
    if moved is not None:
        print(f"previous database kept as {moved}")
    return 0
