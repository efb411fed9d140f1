"""Dead letters in SQLite: list, show (the read side), replay and purge (tools).

These run beside a live gateway: SQLite in WAL mode lets readers work alongside the
writer, and the short write transactions here (``BEGIN IMMEDIATE``, a busy timeout,
bounded chunks) simply queue behind the gateway's batches for a few milliseconds.

Replay (``docs/decisions/0044-dead-letter-replay.md``) re-routes each selected dead
letter through the *current* config (after a template or format was fixed). In one
transaction per chunk, the ones that now decode are written as readings and removed
from ``dead_letters``; the ones that still fail stay, with their reason updated. A dead
letter whose payload was truncated when it was stored (``payload_size`` larger than
the kept bytes) is never replayed: a cut-off payload could decode into a wrong or
partial set of readings. Payloads without a timestamp get their original receive
time, as they would have then.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import QueryError
from gateway.models import Envelope, Reading
from gateway.series_gate import SeriesGate
from gateway.storage.base import DeadLetterRow, ReasonGroup, Selection
from gateway.storage.sqlite.connection import convert_sqlite_error, open_writable
from gateway.storage.sqlite.rollups import LateDataTracker
from gateway.storage.sqlite.writer import BatchWriter, series_keys

Decode = Callable[[str, bytes, int], Envelope]
"""``(topic, payload, received_at_ms) → Envelope``: how the current config routes a
message (``Router.route``)."""

REPLAY_CHUNK = 200
"""Dead letters per replay transaction (payloads ≤ 64 KiB each: bounded memory)."""
REPLAY_MAX_READINGS = 50_000
"""A replay transaction is committed early once it holds this many readings."""
PURGE_CHUNK = 5_000
"""Rows deleted per purge transaction, so the gateway's writer never waits long."""

_COLUMNS = "id, received_at, subscription, topic, payload, payload_size, reason"


def selection_where(selection: Selection) -> tuple[str, list[object]]:
    """A parameterised SQL condition for ``selection`` (never spliced user text) and its
    parameters."""
    clauses: list[str] = []
    params: list[object] = []
    if selection.ids:
        clauses.append(f"id IN ({','.join('?' * len(selection.ids))})")
        params.extend(selection.ids)
    if selection.reason is not None:
        clauses.append("instr(lower(reason), lower(?)) > 0")
        params.append(selection.reason)
    if selection.since_ms is not None:
        clauses.append("received_at >= ?")
        params.append(selection.since_ms)
    if selection.before_ms is not None:
        clauses.append("received_at < ?")
        params.append(selection.before_ms)
    if selection.payload_contains is not None:
        clauses.append("instr(payload, ?) > 0")
        params.append(selection.payload_contains)
    return (" AND ".join(clauses) or "1"), params


@dataclass(slots=True)
class ReplayResult:
    """What a replay did (or, with ``dry_run``, would do)."""

    selected: int = 0
    decoded: int = 0
    """Dead letters that now decode (removed from dead_letters)."""
    readings: int = 0
    """Readings they produced."""
    stored: int = 0
    """Readings newly stored (the rest were already there)."""
    still_failing: int = 0
    truncated: int = 0
    """Skipped because only part of the payload was kept."""
    reasons: dict[str, int] = field(default_factory=dict)
    """Remaining failure reasons with counts."""


def _row(values: Sequence[object]) -> DeadLetterRow:
    ident, received, sub, topic, payload, size, reason = values
    return DeadLetterRow(
        int(ident),  # type: ignore[call-overload]
        int(received),  # type: ignore[call-overload]
        str(sub),
        str(topic),
        bytes(payload),  # type: ignore[call-overload]
        int(size),  # type: ignore[call-overload]
        str(reason),
    )


def groups(conn: sqlite3.Connection, selection: Selection = Selection()) -> list[ReasonGroup]:
    """Dead letters grouped by reason, most frequent first."""
    where, params = selection_where(selection)
    try:
        rows = conn.execute(
            "SELECT reason, count(*), min(received_at), max(received_at) FROM dead_letters"
            f" WHERE {where} GROUP BY reason ORDER BY count(*) DESC, reason",
            params,
        ).fetchall()
    except sqlite3.Error as exc:
        raise convert_sqlite_error(exc, "listing dead letters") from None
    return [ReasonGroup(str(r), int(c), int(a), int(b)) for r, c, a, b in rows]


def listing(
    conn: sqlite3.Connection, selection: Selection = Selection(), limit: int = 100
) -> Iterator[DeadLetterRow]:
    """Dead letters newest first (``limit`` 0 = all), streamed."""
    where, params = selection_where(selection)
    sql = f"SELECT {_COLUMNS} FROM dead_letters WHERE {where} ORDER BY id DESC"
    if limit > 0:
        sql += " LIMIT ?"
        params = [*params, limit]
    try:
        for values in conn.execute(sql, params):
            yield _row(values)
    except sqlite3.Error as exc:
        raise convert_sqlite_error(exc, "listing dead letters") from None


def get(conn: sqlite3.Connection, ident: int) -> DeadLetterRow:
    """One dead letter; raises QueryError if there is no such id."""
    try:
        values = conn.execute(
            f"SELECT {_COLUMNS} FROM dead_letters WHERE id = ?", (ident,)
        ).fetchone()
    except sqlite3.Error as exc:
        raise convert_sqlite_error(exc, "reading a dead letter") from None
    if values is None:
        raise QueryError(f"no dead letter with id {ident}")
    return _row(values)


def _replay_writer() -> BatchWriter:
    """The gateway's own batch insert (series resolution, sorted multi-row insert), with
    rollup late-data tracking: replayed readings are usually older than the rollups'
    watermark, so their buckets are marked for recomputation in the same transaction,
    as the gateway's writer does."""
    writer = BatchWriter(dead_letter_max_payload=0, dead_letter_max_rows=1, cache_size=10_000)
    writer.after_insert = LateDataTracker()
    return writer


def replay(
    conn: sqlite3.Connection,
    decode: Decode,
    selection: Selection,
    *,
    dry_run: bool = False,
    chunk: int = REPLAY_CHUNK,
) -> ReplayResult:
    """Re-decode the selected dead letters with ``decode`` (see the module docstring)."""
    if selection.empty:
        raise QueryError("select dead letters to replay (--id, --reason, --since or --all)")
    result = ReplayResult()
    where, params = selection_where(selection)
    sql = f"SELECT {_COLUMNS} FROM dead_letters WHERE id > ? AND ({where}) ORDER BY id LIMIT ?"
    last_id = 0
    writer = _replay_writer()
    try:
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = [_row(v) for v in conn.execute(sql, [last_id, *params, chunk]).fetchall()]
                if not rows:
                    conn.execute("ROLLBACK")
                    break
                readings: list[Reading] = []
                removed: list[tuple[int]] = []
                updated: list[tuple[str, str, int]] = []
                for row in rows:
                    last_id = row.id
                    result.selected += 1
                    if row.truncated:
                        result.truncated += 1
                        continue
                    envelope = decode(row.topic, row.payload, row.received_at_ms)
                    if envelope.dead_letter is None:
                        result.decoded += 1
                        readings.extend(envelope.readings)
                        removed.append((row.id,))
                    else:
                        reason = envelope.dead_letter.reason
                        result.still_failing += 1
                        result.reasons[reason] = result.reasons.get(reason, 0) + 1
                        if reason != row.reason or envelope.subscription != row.subscription:
                            updated.append((reason, envelope.subscription, row.id))
                    if len(readings) >= REPLAY_MAX_READINGS:
                        break  # commit this much; the next chunk starts after last_id
                result.readings += len(readings)
                if dry_run:
                    conn.execute("ROLLBACK")
                    continue
                stored, _attempted, new_series = writer.insert(conn, readings)
                result.stored += stored
                conn.executemany("DELETE FROM dead_letters WHERE id = ?", removed)
                conn.executemany(
                    "UPDATE dead_letters SET reason = ?, subscription = ? WHERE id = ?", updated
                )
                conn.execute("COMMIT")
                writer.remember(new_series)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
    except sqlite3.Error as exc:
        raise convert_sqlite_error(exc, "replaying dead letters") from None
    return result


def purge(conn: sqlite3.Connection, selection: Selection, chunk: int = PURGE_CHUNK) -> int:
    """Delete the selected dead letters in bounded transactions; returns the count."""
    if selection.empty:
        raise QueryError("select dead letters to purge (--older-than, --reason, --id or --all)")
    where, params = selection_where(selection)
    sql = (
        f"DELETE FROM dead_letters WHERE id IN"
        f" (SELECT id FROM dead_letters WHERE {where} ORDER BY id LIMIT ?)"
    )
    total = 0
    try:
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = conn.execute(sql, [*params, chunk]).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            total += deleted
            if deleted < chunk:
                return total
    except sqlite3.Error as exc:
        raise convert_sqlite_error(exc, "purging dead letters") from None


def replay_dead_letters(
    path: Path,
    decode: Decode,
    selection: Selection,
    *,
    dry_run: bool = False,
    busy_timeout_ms: int = 5000,
    series_gate: SeriesGate | None = None,
) -> ReplayResult:
    """:func:`replay` on the database at ``path`` (beside a running gateway). A
    ``series_gate`` (the one ``decode`` asks) is seeded with the stored series first, so
    a replay keeps the series caps too."""
    conn = open_writable(path, busy_timeout_ms)
    try:
        if series_gate is not None:
            series_gate.load(series_keys(conn))
        return replay(conn, decode, selection, dry_run=dry_run)
    finally:
        conn.close()


def purge_dead_letters(path: Path, selection: Selection, busy_timeout_ms: int = 5000) -> int:
    """:func:`purge` on the database at ``path`` (beside a running gateway)."""
    conn = open_writable(path, busy_timeout_ms)
    try:
        return purge(conn, selection)
    finally:
        conn.close()
