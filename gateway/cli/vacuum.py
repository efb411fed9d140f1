"""``tidegate vacuum``: rewrite the database compactly and switch it to incremental
auto-vacuum, so purged space goes back to the disk (needs the gateway stopped and free
space for one copy of the database)."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import add_db_argument, db_path
from gateway.errors import StorageError
from gateway.parsing import format_size
from gateway.storage.sqlite.integrity import ensure_incremental_vacuum
from gateway.storage.sqlite.lock import DatabaseLock


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "vacuum", help="compact the database and enable incremental vacuum (gateway stopped)"
    )
    add_db_argument(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    db = db_path(args)
    if not db.exists():
        raise StorageError(f"database not found: {db}")
    lock = DatabaseLock(db)
    lock.acquire()  # refuses while a gateway runs on it
    try:
        before = db.stat().st_size
        ensure_incremental_vacuum(db, force=True)
        print(
            f"{db}: {format_size(before)} → {format_size(db.stat().st_size)}, incremental vacuum on"
        )
    finally:
        lock.release()
    return 0
