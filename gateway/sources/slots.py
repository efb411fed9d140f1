"""Client-id slots: how several gateway processes share one MQTT shared subscription
without stranding a dead member's messages (``docs/decisions/0124``).

Mosquitto keeps queuing a dead member's share of a ``$share/`` subscription to its
persistent session and hands none of it to the others. So a direct-mode group has a
fixed number of broker sessions, ``mqtt.slots``, with client ids
``<mqtt.client_id>-<slot>``, and every session is driven by exactly one live process:

* a process claims a slot through :class:`~gateway.storage.base.SlotLocks` (PostgreSQL
  advisory locks on a connection held for the process's life: a process that dies
  loses its claims with its connection) and only then opens the slot's MQTT connection
  (persistent session: it receives what was queued for the slot, then its share of
  everything new);
* every ``mqtt.slot_claim_interval_s`` it asks who holds what (:func:`plan`): it claims
  free slots up to its fair share, ``ceil(slots / members)``, and hands back what it
  holds beyond it — so a dead member's slots are taken over within about one interval
  after the store noticed the death, and a new member gets slots from the others;
* handing a slot back is graceful: stop reading it, wait (bounded) until what it
  received is committed and acknowledged, close the MQTT connection, *then* release the
  claim — no two processes ever drive one session;
* a slot above ``mqtt.slots`` that the store still has a session record for (the
  setting was lowered) is *retired* by one member: it connects to that session, takes
  what was queued there, unsubscribes it from the share group, and when nothing more
  arrives disconnects and forgets it — the broker would otherwise go on queuing that
  session's share forever;
* when the store cannot be asked (PostgreSQL down, a partition) the process drops every
  slot at once, without waiting: its claims may already be gone and another member may
  be taking the sessions over. A slot connection also re-checks its claim before every
  reconnect, so a connection kicked by the broker (same client id elsewhere) does not
  fight back.

:func:`plan` is the pure policy; :class:`SlotManager` runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from gateway.errors import StorageError
from gateway.metrics import SlotState
from gateway.storage.base import SlotLocks, SlotSurvey

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """What one process does after a survey."""

    claim: tuple[int, ...]
    """Free slots to try, in order, until ``wanted`` are claimed."""
    wanted: int
    release: tuple[int, ...]


def fair_share(total: int, members: int) -> int:
    """Slots each member should hold: ``ceil(total / members)`` (one member: all)."""
    members = max(1, members)
    return -(-total // members)


def plan(total: int, survey: SlotSurvey) -> SlotPlan:
    """The claims and releases that move this process toward its fair share.

    Shares are ceilings, so together they cover every slot: while one is free, some
    member is below its share and claims it. A member above its share (one that was
    alone, then others joined) releases its highest slots; nobody releases below the
    share, so the group settles instead of trading slots back and forth."""
    share = fair_share(total, survey.members)
    mine = sorted(survey.mine)
    if len(mine) > share:
        return SlotPlan((), 0, tuple(mine[share:]))
    free = tuple(s for s in range(total) if s not in survey.taken)
    return SlotPlan(free, min(len(free), share - len(mine)), ())


class SlotConnection(Protocol):
    """What the manager needs of one slot's MQTT connection
    (:class:`gateway.sources.mqtt.Connection`)."""

    client_id: str
    connected: asyncio.Event
    unacked: int
    last_message: float
    """``time.monotonic()`` of the last message received (0: none)."""

    async def run(self) -> None: ...

    async def read_loop(self) -> None: ...

    async def stop_reading(self, wait: bool = True) -> None: ...

    def close(self) -> None: ...


@dataclass
class _Held:
    conn: SlotConnection
    runner: asyncio.Task[None]
    reader: asyncio.Task[None]


class SlotManager:
    """Claims slots, runs one MQTT connection per held slot, hands slots over.

    ``connect(slot, retiring)`` builds the slot's connection (not started; ``retiring``:
    it must unsubscribe the session from everything); the manager starts its runner and
    reader after awaiting ``prepare(slot)`` (loading what the slot's session holds; a
    :class:`StorageError` there counts as losing the locks). :meth:`run` is a long-lived
    task: it raises when a slot's reader or runner fails with an unexpected error (the
    supervisor fails the gateway), and otherwise runs until cancelled. Stop with :meth:`stop_claiming` (no new slots, e.g.
    when the gateway drains), then :meth:`close` (disconnect, then release).
    """

    def __init__(
        self,
        locks: SlotLocks,
        total: int,
        interval_s: float,
        connect: Callable[[int, bool], SlotConnection],
        state: SlotState,
        handover_timeout_s: float = 10.0,
        survey_timeout_s: float = 5.0,
        prepare: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.locks = locks
        self.prepare = prepare
        self.total = total
        self.interval_s = interval_s
        self.connect = connect
        self.state = state
        self.handover_timeout_s = handover_timeout_s
        self.survey_timeout_s = survey_timeout_s
        self.held: dict[int, _Held] = {}
        self._joined = False
        self._stopping = False
        self._members_seen = 0
        self._taken_seen: frozenset[int] = frozenset()
        self._changed = asyncio.Event()
        self._retiring: asyncio.Task[None] | None = None
        self._retiring_slot: int | None = None
        self.retire_quiet_s = 1.0
        """A retired session is let go after this long without a message."""
        self.retire_timeout_s = 60.0
        state.total = total

    # -- what the source asks --

    @property
    def connections(self) -> list[SlotConnection]:
        return [h.conn for _, h in sorted(self.held.items())]

    @property
    def connected(self) -> bool:
        """The claims are known and every held slot's connection is up (a member that
        holds no slot — more members than slots — is a ready standby)."""
        return self._joined and all(h.conn.connected.is_set() for h in self.held.values())

    def owns(self, slot: int) -> bool:
        """Whether this process still holds ``slot`` as of the last survey (asked by a
        slot connection before every connect attempt). Also asks for a survey now: a
        lost connection may mean the broker gave the session to another client, and
        if our claims are gone the next attempt must see it."""
        self._changed.set()
        mine = slot in self.held or slot == self._retiring_slot
        return self._joined and mine and not self._stopping

    # -- the loop --

    async def run(self) -> None:
        attempt = 0
        while not self._stopping:
            self._changed.clear()
            try:
                await self._tick()
                attempt = 0
            except (StorageError, TimeoutError) as exc:
                attempt += 1
                await self._lost(str(exc) or "no answer in time")
            self._failed_task()
            self._publish()
            delay = self.interval_s if not attempt else min(30.0, self.interval_s * attempt)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._changed.wait()

    async def _tick(self) -> None:
        if not self._joined:
            await self._bounded(self.locks.open())
            self._joined = True
            self.state.locks_ok = True
            self.state.locks_error = ""
            # Claim nothing for one interval: members started together see each other
            # first, instead of the first one taking every slot and handing most back
            # (a handover in the middle of a backlog costs a drain).
            self.state.members = (await self._survey()).members
            return
        survey = await self._survey()
        # A held slot the server no longer counts as ours: someone else may drive it now.
        for slot in sorted(set(self.held) - survey.mine):
            log.error("mqtt slot %d: the claim is gone; closing its connection at once", slot)
            await self._drop(slot)
        self.state.members = survey.members
        left = self._members_seen and survey.members < self._members_seen
        orphans = self._taken_seen - survey.taken
        self._members_seen = survey.members
        self._taken_seen = survey.taken
        if self._stopping:
            return
        step = plan(self.total, survey)
        for slot in step.release:
            await self._hand_over(slot, survey.members)
        claimed = 0
        for slot in step.claim:
            if claimed >= step.wanted or self._stopping:
                break
            if not await self._bounded(self.locks.try_claim(slot)):
                continue
            claimed += 1
            self._taken_seen |= {slot}
            if self.prepare is not None:
                await self._bounded(self.prepare(slot))
            self._start(slot)
            self.state.claims += 1
            if left and slot in orphans:
                self.state.takeovers += 1
                log.warning(
                    "mqtt slot %d taken over: its member left the group (%d members now);"
                    " its session's queued messages come here now",
                    slot,
                    survey.members,
                )
            else:
                log.info(
                    "mqtt slot %d claimed (%d members, share %d)",
                    slot,
                    survey.members,
                    fair_share(self.total, survey.members),
                )

        await self._retire_one(survey)

    async def _bounded(self, step: Awaitable[T]) -> T:
        """``step`` within the survey timeout. (Not ``asyncio.wait_for``: on Python 3.11
        it can swallow a cancel that arrives as its inner call completes, and the
        manager would run on after :meth:`close`.)"""
        async with asyncio.timeout(self.survey_timeout_s):
            return await step

    async def _survey(self) -> SlotSurvey:
        return await self._bounded(self.locks.survey())

    def _spawn(self, slot: int, retiring: bool = False) -> _Held:
        conn = self.connect(slot, retiring)
        runner = asyncio.create_task(conn.run(), name=f"mqtt-{conn.client_id}")
        reader = asyncio.create_task(conn.read_loop(), name=f"reader-{conn.client_id}")
        runner.add_done_callback(lambda _t: self._changed.set())
        reader.add_done_callback(lambda _t: self._changed.set())
        return _Held(conn, runner, reader)

    def _start(self, slot: int) -> None:
        self.held[slot] = self._spawn(slot)

    # -- retiring the sessions of slots above mqtt.slots --

    async def _retire_one(self, survey: SlotSurvey) -> None:
        """Start retiring one recorded slot above ``total`` that nobody holds."""
        if self._retiring is not None:
            if not self._retiring.done():
                return
            task, self._retiring = self._retiring, None
            self._retiring_slot = None
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error  # StorageError: the locks are lost (handled by run)
        if self._stopping:
            return
        extra = await self._bounded(self.locks.recorded())
        for slot in sorted(s for s in extra if s >= self.total and s not in survey.taken):
            if await self._bounded(self.locks.try_claim(slot)):
                self._retiring_slot = slot
                self._retiring = asyncio.create_task(self._retire(slot), name=f"retire-{slot}")
                return

    async def _retire(self, slot: int) -> None:
        """Empty and retire ``slot``'s session (claimed by the caller)."""
        if self.prepare is not None:
            await self._bounded(self.prepare(slot))
        held = self._spawn(slot, retiring=True)
        log.warning(
            "mqtt slot %d is above mqtt.slots (%d) but its session is still at the broker:"
            " taking what is queued there and unsubscribing it from the group",
            slot,
            self.total,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retire_timeout_s
        done = False
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await held.conn.connected.wait()
                    while True:
                        quiet = time.monotonic() - held.conn.last_message
                        if held.conn.unacked == 0 and quiet >= self.retire_quiet_s:
                            done = True
                            break
                        await asyncio.sleep(0.1)
            await held.conn.stop_reading(wait=False)
        finally:
            await self._end(held)
        if done:
            await self._bounded(self.locks.forget_record(slot))
            log.warning("mqtt slot %d retired: its session no longer takes a share", slot)
        else:
            log.warning(
                "mqtt slot %d not retired yet (still busy after %.0fs)", slot, self.retire_timeout_s
            )
        await self._bounded(self.locks.release(slot))

    def _failed_task(self) -> None:
        """Raise the error of a slot task that failed (a bug: the supervisor fails the
        gateway); a runner that ended because its claim was gone just drops the slot."""
        for slot, held in list(self.held.items()):
            for task in (held.runner, held.reader):
                if task.done() and not task.cancelled():
                    error = task.exception()
                    if error is not None:
                        raise error
            if held.reader.done():
                raise RuntimeError(f"reader of mqtt slot {slot} ended unexpectedly")
            if held.runner.done():
                held.reader.cancel()
                del self.held[slot]

    def _publish(self) -> None:
        self.state.held = tuple(sorted(self.held))

    async def _lost(self, why: str) -> None:
        """The store cannot be asked: assume every claim is gone and drop every slot
        now (another member may be taking the sessions over), then rejoin later."""
        if self._joined or self.held:
            log.error(
                "mqtt slots: cannot reach the slot locks (%s); dropping %d slot(s) at once",
                why,
                len(self.held),
            )
        elif self.state.locks_error != why:
            log.warning("mqtt slots: cannot reach the slot locks (%s); retrying", why)
        self.state.locks_ok = False
        self.state.locks_error = why
        self._joined = False
        await self._stop_retiring()
        for slot in list(self.held):
            await self._drop(slot)
        with contextlib.suppress(Exception):
            await self._bounded(self.locks.close())

    async def _drop(self, slot: int) -> None:
        """Close a slot's connection without waiting for its acks (the claim is gone:
        what it received unacknowledged goes to the session's next owner)."""
        held = self.held.pop(slot, None)
        if held is None:
            return
        self.state.drops += 1
        await held.conn.stop_reading(wait=False)
        await self._end(held)
        self._publish()

    async def _hand_over(self, slot: int, members: int) -> None:
        """Release a slot gracefully: what it received is committed and acked first."""
        held = self.held.get(slot)
        if held is None:
            return
        started = time.monotonic()
        deadline = started + self.handover_timeout_s
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.handover_timeout_s):
                await held.conn.stop_reading(wait=True)
        while held.conn.unacked > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        del self.held[slot]
        await self._end(held)
        await self._bounded(self.locks.release(slot))
        self.state.releases += 1
        self._publish()
        log.info(
            "mqtt slot %d handed over (%d members, share %d; %d unacknowledged left to"
            " redelivery, %.1fs)",
            slot,
            members,
            fair_share(self.total, members),
            held.conn.unacked,
            time.monotonic() - started,
        )

    async def _end(self, held: _Held) -> None:
        held.conn.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(held.runner, return_exceptions=True)
        for task in (held.reader, held.runner):
            task.cancel()
        await asyncio.gather(held.reader, held.runner, return_exceptions=True)

    # -- shutdown --

    async def stop_claiming(self) -> None:
        """No new slots from now on (the gateway is draining)."""
        self._stopping = True
        self._changed.set()

    async def _stop_retiring(self) -> None:
        task, self._retiring = self._retiring, None
        self._retiring_slot = None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        """Disconnect every slot, then leave the group (releasing the claims)."""
        self._stopping = True
        await self._stop_retiring()
        for slot in list(self.held):
            held = self.held.pop(slot)
            await self._end(held)
        self._publish()
        with contextlib.suppress(Exception):
            await self._bounded(self.locks.close())
        self._joined = False
