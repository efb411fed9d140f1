"""The storage maintenance service: rollups, retention, size guard, vacuum, checkpoints,
wear — on a timer, in steps that never hold the writer for long.

Every step that writes runs on the **writer's own connection** (aiosqlite's worker
thread), so it is serialised with the batches instead of competing for SQLite's write
lock: no ``SQLITE_BUSY``, no busy-wait, and a batch waits at most for the one step in
front of it. A step is bounded by ``storage.step_budget_ms`` (plus one statement), and
after each step the service sleeps at least as long as the step took, so it never
takes more than half of the writer's time even while catching up. Each step's
duration is recorded (``storage.maintenance_step``) — that is the ingestion stall.

Only the checkpoint uses a connection of its own: a PASSIVE checkpoint copies WAL
frames into the database file without the write lock, in parallel with commits.

Errors never stop the gateway: they are logged (once per distinct message), counted
in ``storage.maintenance_errors`` and retried next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Literal, TypeVar

from gateway.config import StorageConfig
from gateway.errors import StorageError
from gateway.metrics import Metrics
from gateway.parsing import parse_retention_ms
from gateway.storage.sqlite import compaction, outbox, wear
from gateway.storage.sqlite._aiosqlite_adapter import run_on_connection
from gateway.storage.sqlite.connection import convert_sqlite_error
from gateway.storage.sqlite.guard import RELIEF, Guard, Usage, emergency_cutoff, wal_size
from gateway.storage.sqlite.retention import (
    TABLES,
    Purger,
    Retention,
    incremental_vacuum,
    page_stats,
    retention_cutoffs,
)
from gateway.storage.sqlite.rollups import (
    TIER_1M,
    TIERS,
    WATERMARK,
    LateDataTracker,
    RollupJob,
    get_state,
    set_state,
)
from gateway.storage.sqlite.writer import SqliteSink

log = logging.getLogger(__name__)

T = TypeVar("T")
ForwardPolicy = Literal["stop", "drop_oldest"]
"""``upstream.full_policy``: what the guard does when only unforwarded readings are
left to make room with (``docs/upstream.md``)."""
Clock = Callable[[], int]
"""Epoch milliseconds; tests pass a controlled clock."""

VACUUM_FREE_FRACTION = 0.25
"""Return free pages to the disk once they are this share of the file (or under
pressure). Below it they are reused by new data: vacuuming and regrowing would only
add SD-card writes."""
VACUUM_PAGES_PER_STEP = 256
WEAR_PERSIST_S = 600.0
CHECKPOINT_POLL_S = 0.5
CHECKPOINT_WAL_BYTES = 8 * 1024 * 1024
"""Checkpoint early past this WAL size: above ``wear.JOURNAL_SIZE_LIMIT`` (a WAL cut back
after a reset does not trigger it), far below the writer's own threshold."""
WEAR_FIRST_PERSIST_S = 60.0
COMPACTION_POLL_S = 1.0
DROP_MIN_ROWS = 10_000


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def retention_of(config: StorageConfig) -> Retention:
    keep = config.retention
    return Retention(
        parse_retention_ms(keep.raw),
        parse_retention_ms(keep.rollup_1m),
        parse_retention_ms(keep.rollup_1h),
    )


class Maintenance:
    """One round (:meth:`run_once`) does: compaction, guard, rollups, retention, vacuum,
    wear. Compaction also runs on its own one-second timer."""

    def __init__(
        self,
        sink: SqliteSink,
        config: StorageConfig,
        metrics: Metrics,
        guard: Guard,
        tracker: LateDataTracker,
        clock: Clock = wall_clock_ms,
        forward: ForwardPolicy | None = None,
    ) -> None:
        self.sink = sink
        self.forward = forward
        self.config = config
        self.metrics = metrics
        self.guard = guard
        self.clock = clock
        self.rollups = RollupJob(tracker)
        self.compactor = compaction.Compactor(
            config.compaction_rows, max_age_ms=int(config.hot_max_age_s * 1000)
        )
        self.tracker = tracker
        self.retention = retention_of(config)
        self.purgers = {tier: Purger(tier) for tier in TABLES}
        self._purged_to: dict[str, int] = {}
        self.budget_s = config.step_budget_ms / 1000
        self.round_s = config.maintenance_interval_s
        self.meter = wear.WearMeter()
        # First figure after a minute of traffic, then every ten minutes.
        self._wear_persisted = time.monotonic() - WEAR_PERSIST_S + WEAR_FIRST_PERSIST_S
        self._logged: set[str] = set()

    # -- plumbing ----------------------------------------------------------------

    async def _step(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer connection; record how long it held it; then give
        the writer at least as much time back."""
        held = 0.0

        def timed(conn: sqlite3.Connection) -> T:
            nonlocal held
            started = time.perf_counter()
            try:
                return fn(conn)
            finally:
                held = time.perf_counter() - started

        try:
            return await run_on_connection(self.sink.connection, timed)
        except (sqlite3.Error, OSError) as exc:
            raise convert_sqlite_error(exc, "storage maintenance") from None
        finally:
            counters = self.metrics.storage
            counters.maintenance_step.observe(held)
            counters.maintenance_step_max_s = max(counters.maintenance_step_max_s, held)
            await asyncio.sleep(max(held, 0.001))

    # -- one round ---------------------------------------------------------------

    async def run_once(self) -> None:
        """One full round; each phase is bounded by about one maintenance interval."""
        now = self.clock()
        await self.enforce_limits()
        await self.roll_up(now)
        await self.purge_expired(now)
        await self.vacuum()
        self.sample_wear()

    async def roll_up(self, now_ms: int) -> None:
        """Compact what is due (rollups read only the per-series table), then advance
        the rollups for up to one round."""
        await self.compact()
        deadline = time.monotonic() + self.round_s
        while True:
            result = await self._step(lambda c: self.rollups.step(c, now_ms, self.budget_s))
            self.metrics.storage.rollup_too_late = self.rollups.too_late
            if result.caught_up or time.monotonic() >= deadline:
                break
        self.metrics.storage.rollup_late_buckets = self.tracker.marked

        def marks(conn: sqlite3.Connection) -> dict[str, int]:
            return {t.name: get_state(conn, WATERMARK[t.name]) or 0 for t in TIERS}

        self.metrics.storage.rollup_watermark_ms = await self._step(marks)

    async def purge_expired(self, now_ms: int) -> None:
        cutoffs = await self._step(lambda c: retention_cutoffs(c, now_ms, self.retention))
        deadline = time.monotonic() + self.round_s
        for tier, cutoff in cutoffs.items():
            purger = self.purgers[tier]
            if not purger.active and cutoff <= self._purged_to.get(tier, 0):
                continue
            await self._step(functools.partial(purger.start, cutoff=cutoff))
            await self._drain(purger, deadline)
            if not purger.active:
                self._purged_to[tier] = cutoff
            if time.monotonic() >= deadline:
                return

    async def _drain(self, purger: Purger, deadline: float) -> int:
        deleted = 0
        while purger.active and time.monotonic() < deadline:
            n = await self._step(lambda c: purger.step(c, self.budget_s))
            deleted += n
            counts = self.metrics.storage.purged_rows
            counts[purger.tier] = counts.get(purger.tier, 0) + n
        return deleted

    async def vacuum(self, force: bool = False, deadline: float | None = None) -> int:
        """Return free pages to the file system when worth it (or ``force``)."""
        deadline = deadline or time.monotonic() + self.round_s
        stats = await self._step(page_stats)
        if stats.auto_vacuum != 2 or stats.freelist_count == 0:
            return 0
        if not force and stats.freelist_count < stats.page_count * VACUUM_FREE_FRACTION:
            return 0
        returned = 0
        while time.monotonic() < deadline:
            n = await self._step(
                lambda c: incremental_vacuum(c, VACUUM_PAGES_PER_STEP, self.budget_s)
            )
            returned += n
            if n == 0:
                break
        self.metrics.storage.vacuumed_pages += returned
        return returned

    async def measure(self) -> Usage:
        usage = await self._step(self.guard.measure)
        counters = self.metrics.storage
        counters.database_bytes = usage.database_bytes
        counters.file_bytes = usage.file_bytes
        counters.wal_bytes = usage.wal_bytes
        counters.disk_free_bytes = usage.disk_free
        return usage

    async def enforce_limits(self) -> None:
        """The size cap and free-disk floor (see :mod:`gateway.storage.sqlite.guard`)."""
        guard = self.guard
        usage = await self.measure()
        if not guard.enabled:
            return
        pressure = guard.pressure(usage)
        if pressure is None:
            if guard.paused_reason is not None and guard.pressure(usage, RELIEF) is None:
                guard.resume()
            self._sync_pause()
            return
        if guard.policy == "stop":
            guard.pause(pressure)
            self._sync_pause()
            return
        deadline = time.monotonic() + 2 * self.round_s
        relieved = False
        warned = False
        while time.monotonic() < deadline:
            await self.vacuum(force=True, deadline=deadline)
            # Purging writes to the WAL, which counts against the cap: empty it.
            await self._step(wear.truncate_wal)
            usage = await self.measure()
            if guard.pressure(usage, RELIEF) is None:
                relieved = True
                break
            tier, cutoff = await self._step(_next_space_cut)
            if cutoff is None:
                if self.forward == "drop_oldest" and await self._drop_unforwarded(pressure):
                    continue
                left = " (unforwarded readings are kept)" if self.forward else ""
                guard.pause(f"{pressure}; nothing older than the rollups left to purge{left}")
                break
            if not warned:
                log.warning("storage guard: %s; purging the oldest %s data", pressure, tier)
                warned = True
            purger = self.purgers[tier]
            await self._step(functools.partial(purger.start, cutoff=cutoff))
            self.metrics.storage.purged_for_space_rows += await self._drain(purger, deadline)
        if relieved:
            guard.resume()
        self._sync_pause()

    async def _drop_unforwarded(self, pressure: str) -> int:
        """``upstream.full_policy = "drop_oldest"``: delete the oldest eighth of the
        unforwarded readings (at least :data:`DROP_MIN_ROWS`) — logged and counted, never
        silent. Returns how many (0: nothing left to drop)."""

        def drop(conn: sqlite3.Connection) -> int:
            backlog = outbox.pending(conn).count
            conn.execute("BEGIN IMMEDIATE")
            try:
                n = outbox.drop_oldest(conn, max(DROP_MIN_ROWS, backlog // 8))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return n

        dropped = await self._step(drop)
        if dropped:
            self.metrics.upstream.dropped += dropped
            log.error(
                "storage guard: %s; dropped the %d oldest UNFORWARDED readings"
                " (upstream.full_policy = drop_oldest): they will never reach the centre",
                pressure,
                dropped,
            )
        return dropped

    def _sync_pause(self) -> None:
        self.metrics.storage.paused = self.guard.paused_reason is not None
        self.metrics.storage.pause_reason = self.guard.paused_reason or ""

    def sample_wear(self) -> None:
        self.meter.sample(self.metrics.readings_stored)
        counters = self.metrics.storage
        counters.disk_write_bytes = self.meter.total_bytes
        counters.bytes_per_reading = self.meter.bytes_per_reading

    async def persist_wear(self) -> None:
        """Keep the wear figure in the database for ``tidegate stats`` (rarely: it is a
        write too)."""
        per_reading = self.meter.bytes_per_reading
        stamp = self.clock()

        def save(conn: sqlite3.Connection) -> None:
            set_state(conn, "wear.bytes_per_reading", f"{per_reading:.1f}")
            set_state(conn, "wear.sampled_at", stamp)

        await self._step(save)

    # -- forever -----------------------------------------------------------------

    def _log_once(self, exc: BaseException) -> None:
        self.metrics.storage.maintenance_errors += 1
        key = f"{type(exc).__name__}: {exc}"
        if key not in self._logged:
            if len(self._logged) > 100:
                self._logged.clear()
            self._logged.add(key)
            log.error("storage maintenance failed (retrying next round): %s", key)

    async def run(self) -> None:
        """Rounds every ``maintenance_interval_s`` and checkpoints every
        ``checkpoint_interval_s`` until cancelled."""
        checkpoints = asyncio.create_task(self._checkpoints(), name="tidegate-checkpoints")
        compactions = asyncio.create_task(self._compactions(), name="tidegate-compaction")
        try:
            with contextlib.suppress(StorageError):
                await self._step(wear.tune_writer)
            self.sample_wear()
            while True:
                try:
                    await self.run_once()
                    if (
                        time.monotonic() - self._wear_persisted >= WEAR_PERSIST_S
                        and self.meter.bytes_per_reading > 0
                    ):
                        self._wear_persisted = time.monotonic()
                        await self.persist_wear()
                except StorageError as exc:
                    self._log_once(exc)
                except Exception as exc:  # never let maintenance take the gateway down
                    log.exception("storage maintenance crashed a round")
                    self._log_once(exc)
                await asyncio.sleep(self.round_s)
        finally:
            for task in (compactions, checkpoints):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def compact(self) -> int:
        """Move hot readings into the per-series table while a round is due or under
        way (:mod:`gateway.storage.sqlite.compaction`), one short step at a time; returns rows
        moved."""
        total = 0
        deadline = time.monotonic() + self.round_s
        while time.monotonic() < deadline:
            moved = await self._step(functools.partial(self.compactor.step, now_ms=self.clock()))
            total += moved
            self.metrics.storage.compacted_rows += moved
            if moved == 0 and not self.compactor.in_round:
                break  # nothing (more) is due
        return total

    async def _compactions(self) -> None:
        """Compaction on its own short timer: the hot table must not wait for a long
        maintenance round (rollups of a big backlog, say) to be emptied."""
        while True:
            await asyncio.sleep(COMPACTION_POLL_S)
            try:
                await self.compact()
            except StorageError as exc:
                self._log_once(exc)

    async def _checkpoints(self) -> None:
        """PASSIVE checkpoints from a connection of their own: every
        ``checkpoint_interval_s``, or sooner when the WAL grows past
        :data:`CHECKPOINT_WAL_BYTES` — so the writer's own automatic checkpoint (which
        would copy the whole WAL inside a commit and stall ingestion) need not fire.
        The writer's connection only copies the tail written during the bulk copy."""
        conn: sqlite3.Connection | None = None
        running: asyncio.Future[tuple[int, int]] | None = None
        last = time.monotonic()
        try:
            while True:
                await asyncio.sleep(CHECKPOINT_POLL_S)
                due = time.monotonic() - last >= self.config.checkpoint_interval_s
                if not due and wal_size(self.sink.path) < CHECKPOINT_WAL_BYTES:
                    continue
                last = time.monotonic()
                try:
                    if conn is None:
                        conn = await asyncio.to_thread(wear.open_checkpointer, self.sink.path)
                    # Shielded, and awaited again below: cancelling an await does not
                    # stop the thread, and closing the connection under a running
                    # checkpoint crashes inside libsqlite3.
                    running = asyncio.ensure_future(asyncio.to_thread(wear.checkpoint, conn))
                    frames, done = await asyncio.shield(running)
                    if done < frames:
                        # Under steady writes the bulk copy never quite catches up, so
                        # the WAL could never restart from its beginning; the frames
                        # written meanwhile are few: copy them between two batches.
                        frames, done = await self._step(wear.checkpoint)
                    self.metrics.storage.checkpoints += 1
                    self.metrics.storage.checkpoint_frames += done
                except (sqlite3.Error, OSError) as exc:
                    self._log_once(convert_sqlite_error(exc, "WAL checkpoint"))
        finally:
            if running is not None and not running.done():
                await asyncio.wait({running}, timeout=30)
            if conn is not None and (running is None or running.done()):
                conn.close()


def _next_space_cut(conn: sqlite3.Connection) -> tuple[str, int | None]:
    """The oldest slice the guard may purge: raw readings first, then 1-minute rows."""
    cutoff = emergency_cutoff(conn, "raw")
    if cutoff is not None:
        return "raw", cutoff
    return TIER_1M.name, emergency_cutoff(conn, TIER_1M.name)
