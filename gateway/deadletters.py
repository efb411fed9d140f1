"""Dead-letter tools: list, show, replay and purge rows of ``dead_letters``.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import QueryError, StorageError
from gateway.models import Reading
from gateway.router import Router
from gateway.sinks.sqlite import BatchWriter, convert_sqlite_error
from gateway.storage.rollups import LateDataTracker

REPLAY_CHUNK = 200
"""Dead letters per replay transaction (payloads ≤ 64 KiB each: bounded memory)."""
REPLAY_MAX_READINGS = 50_000
"""A replay transaction is committed early once it holds this many readings."""
PURGE_CHUNK = 5_000
"""Rows deleted per purge transaction, so the gateway's writer never waits long."""

_COLUMNS = "id, received_at, subscription, topic, payload, payload_size, reason"


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """One stored dead letter."""

    id: int
    received_at_ms: int
    subscription: str
    topic: str
    payload: bytes
    payload_size: int
    reason: str

    @property
    def truncated(self) -> bool:
        """True when only the first ``len(payload)`` of ``payload_size`` bytes were kept."""
        return self.payload_size > len(self.payload)


@dataclass(frozen=True, slots=True)
class ReasonGroup:
    """Dead letters sharing one reason."""

    reason: str
    count: int
    first_ms: int
    last_ms: int


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command acts on; all given conditions must hold.

    ``reason`` matches as a case-insensitive substring; ``since_ms``/``before_ms``
    bound ``received_at``. ``everything`` selects all rows (with no other condition).
    """

    ids: tuple[int, ...] = ()
    reason: str | None = None
    since_ms: int | None = None
    before_ms: int | None = None
    everything: bool = False

    @property
    def empty(self) -> bool:
        """True when nothing was asked for (commands refuse to act on that)."""
        return not (
            self.ids
            or self.reason is not None
            or self.since_ms is not None
            or self.before_ms is not None
            or self.everything
        )

    def where(self) -> tuple[str, list[object]]:
        """A parameterised SQL condition (never spliced user text) and its parameters."""
        clauses: list[str] = []
        params: list[object] = []
        if self.ids:
            clauses.append(f"id IN ({','.join('?' * len(self.ids))})")
            params.extend(self.ids)
        if self.reason is not None:
            clauses.append("instr(lower(reason), lower(?)) > 0")
            params.append(self.reason)
        if self.since_ms is not None:
            clauses.append("received_at >= ?")
            params.append(self.since_ms)
        if self.before_ms is not None:
            clauses.append("received_at < ?")
            params.append(self.before_ms)
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


def open_writable(path: Path, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A read-write connection to an existing tidegate database (autocommit mode, so
    every transaction here is explicit)."""
    if not Path(path).exists():
        raise StorageError(f"database not found: {path}")
    try:
        conn = sqlite3.connect(
            Path(path),
            isolation_level=None,
            timeout=busy_timeout_ms / 1000,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("SELECT 1 FROM dead_letters LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise convert_sqlite_error(exc, f"opening {path}") from None
    return conn


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
    where, params = selection.where()
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
    where, params = selection.where()
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
    router: Router,
    selection: Selection,
    *,
    dry_run: bool = False,
    chunk: int = REPLAY_CHUNK,
) -> ReplayResult:
    """Re-decode the selected dead letters with ``router`` (see the module docstring)."""
    if selection.empty:
        raise QueryError("select dead letters to replay (--id, --reason, --since or --all)")
    result = ReplayResult()
    where, params = selection.where()
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
                    envelope = router.route(row.topic, row.payload, now_ms=row.received_at_ms)
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
    where, params = selection.where()
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
