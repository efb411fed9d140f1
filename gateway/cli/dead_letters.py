"""``tidegate dead-letters list|show|replay|purge``: inspect and fix rejected messages.

* ``list``: reasons grouped with counts (``--all``: one line per dead letter);
* ``show ID``: one dead letter with its payload (text if UTF-8, else a hex dump);
* ``replay``: re-decode selected dead letters with the current config; those that
  decode now are stored and removed, the rest keep their (updated) reason;
* ``purge``: delete selected dead letters (``--older-than 30d``, ``--reason``, ``--all``).

``replay`` and ``purge`` write to the database directly, which is safe while the
gateway runs (WAL mode, short transactions behind a busy timeout).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from gateway import request
from gateway.cli.common import (
    add_db_argument,
    add_read_arguments,
    db_path,
    gateway_of,
    open_reader,
    settings_from,
)
from gateway.cli.output import FORMATS, write_rows
from gateway.errors import QueryError
from gateway.router import Router
from gateway.series_gate import SeriesGate
from gateway.storage.base import Selection
from gateway.storage.sqlite.deadletters import purge_dead_letters, replay_dead_letters
from gateway.validation import format_ms

GROUP_COLUMNS = ("count", "first", "last", "reason")
ROW_COLUMNS = ("id", "received", "subscription", "topic", "size", "reason", "gateway")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dead-letters", help="list, show, replay or purge messages that could not be decoded"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    listing = actions.add_parser("list", help="reasons with counts (--all: every dead letter)")
    add_read_arguments(listing)
    listing.add_argument("--all", "-a", action="store_true", help="one line per dead letter")
    listing.add_argument("--reason", "-r", help="only reasons containing this text")
    listing.add_argument("--since", help="only received since (ISO 8601, epoch s, or 2h ago)")
    listing.add_argument("--limit", "-n", type=int, default=100, help="rows with --all (0 = all)")
    listing.add_argument("--format", "-f", choices=FORMATS, default="table")
    listing.set_defaults(handler=handle_list)

    show = actions.add_parser("show", help="one dead letter with its payload")
    add_read_arguments(show, gateway=False)
    show.add_argument("id", type=int)
    show.add_argument("--hex", action="store_true", help="always show the payload as hex")
    show.set_defaults(handler=handle_show)

    replay = actions.add_parser("replay", help="re-decode dead letters with the current config")
    add_db_argument(replay)
    _add_selection(replay, "replay")
    replay.add_argument(
        "--dry-run", action="store_true", help="report what would happen, change nothing"
    )
    replay.set_defaults(handler=handle_replay)

    purge = actions.add_parser("purge", help="delete dead letters")
    add_db_argument(purge)
    _add_selection(purge, "purge")
    purge.add_argument("--older-than", help="received longer ago than this (e.g. 30d, 12h)")
    purge.set_defaults(handler=handle_purge)


def _add_selection(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument(
        "--id", type=int, action="append", default=[], help=f"{verb} this id (repeatable)"
    )
    parser.add_argument("--reason", "-r", help="reasons containing this text (case-insensitive)")
    parser.add_argument("--since", help="received since (ISO 8601, epoch s, or 2h for 2h ago)")
    parser.add_argument("--all", action="store_true", help=f"{verb} every dead letter")


def _selection(args: argparse.Namespace) -> Selection:
    since = getattr(args, "since", None)
    older = getattr(args, "older_than", None)
    return Selection(
        ids=tuple(getattr(args, "id", None) or ()),
        reason=getattr(args, "reason", None),
        since_ms=request.time_ms(since, "--since") if since else None,
        before_ms=request.time_ms("now") - request.duration_ms(older, "--older-than")
        if older
        else None,
        everything=bool(getattr(args, "all", False)),
    )


def handle_list(args: argparse.Namespace) -> int:
    selection = Selection(
        reason=args.reason,
        since_ms=request.time_ms(args.since, "--since") if args.since else None,
        gateway=gateway_of(args),
    )
    with open_reader(args) as (reader, _path):
        if args.all:
            rows: Iterator[dict[str, Any]] = (
                {
                    "id": d.id,
                    "gateway": d.gateway_id,
                    "received": format_ms(d.received_at_ms),
                    "subscription": d.subscription,
                    "topic": d.topic,
                    "size": d.payload_size,
                    "reason": d.reason,
                }
                for d in reader.rows(reader.store.stream_dead_letters(selection, args.limit))
            )
            write_rows(rows, ROW_COLUMNS, args.format)
        else:
            groups = reader(reader.store.dead_letter_groups(selection))
            write_rows(
                (
                    {
                        "count": g.count,
                        "first": format_ms(g.first_ms),
                        "last": format_ms(g.last_ms),
                        "reason": g.reason,
                    }
                    for g in groups
                ),
                GROUP_COLUMNS,
                args.format,
            )
            if args.format == "table" and groups:
                total = sum(g.count for g in groups)
                print(f"{total} dead letter(s), {len(groups)} reason(s)")
    return 0


def handle_show(args: argparse.Namespace) -> int:
    with open_reader(args) as (reader, _path):
        dead = reader(reader.store.dead_letter(args.id))
    out = sys.stdout
    out.write(f"id            {dead.id}\n")
    out.write(f"gateway       {dead.gateway_id or '-'}\n")
    out.write(f"received      {format_ms(dead.received_at_ms)}\n")
    out.write(f"subscription  {dead.subscription or '-'}\n")
    out.write(f"topic         {dead.topic}\n")
    out.write(f"reason        {dead.reason}\n")
    size = f"{dead.payload_size} bytes"
    if dead.truncated:
        size += f" (truncated: only the first {len(dead.payload)} bytes were kept)"
    out.write(f"size          {size}\n")
    text = None if args.hex else payload_text(dead.payload)
    if text is not None:
        out.write("payload (UTF-8 text):\n")
        out.write(text + ("" if text.endswith("\n") else "\n"))
    else:
        out.write("payload (hex):\n")
        out.write(hexdump(dead.payload) + "\n")
    return 0


def handle_replay(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    selection = _selection(args)
    if selection.empty:
        raise QueryError("select dead letters to replay: --id, --reason, --since or --all")
    # The series caps apply to a replay as to ingestion: raise them first to replay a
    # message refused for them.
    gate = SeriesGate(settings.storage.max_series, settings.storage.max_new_series_per_message)
    router = Router(
        settings.subscriptions,
        settings.validation.limits(),
        settings.pipeline.max_payload_bytes,
        series_gate=gate,
    )
    result = replay_dead_letters(
        db_path(args),
        router.route,
        selection,
        dry_run=args.dry_run,
        busy_timeout_ms=settings.storage.busy_timeout_ms,
        series_gate=gate,
    )
    verb = "would be" if args.dry_run else "were"
    print(f"{result.selected} dead letter(s) selected")
    print(
        f"  {result.decoded} decode now and {verb} removed: {result.readings} reading(s)"
        + ("" if args.dry_run else f", {result.stored} new")
    )
    print(f"  {result.still_failing} still fail and {'would stay' if args.dry_run else 'stay'}")
    if result.truncated:
        print(f"  {result.truncated} skipped: payload was truncated when stored")
    for reason, count in sorted(result.reasons.items(), key=lambda kv: -kv[1])[:10]:
        print(f"    {count:>6}  {reason}")
    return 0


def handle_purge(args: argparse.Namespace) -> int:
    selection = _selection(args)
    if selection.empty:
        raise QueryError("select dead letters to purge: --older-than, --reason, --id or --all")
    busy = settings_from(args).storage.busy_timeout_ms
    deleted = purge_dead_letters(db_path(args), selection, busy)
    print(f"purged {deleted} dead letter(s)")
    return 0


def hexdump(data: bytes, width: int = 16) -> str:
    """``xxd``-style dump: offset, hex bytes, printable ASCII."""
    lines = []
    for offset in range(0, len(data), width):
        chunk = data[offset : offset + width]
        hexed = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {hexed.ljust(width * 3 - 1)}  {text}")
    return "\n".join(lines)


def payload_text(data: bytes) -> str | None:
    """The payload as text if it is UTF-8 without control characters (tabs and
    newlines allowed), else None (show it as hex)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(not ch.isprintable() and ch not in "\n\r\t" for ch in text):
        return None
    return text
