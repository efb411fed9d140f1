"""``tidegate-sim run``: connect the fleet, publish on schedule, drain, report.

Lifecycle: raise the file-descriptor limit if the connections need it → connect every
client (bounded concurrency) → publish ticks as the :class:`~simulators.rate.Pacer`
makes them due, never more than ``max_pending`` unacknowledged messages in flight →
on ``--duration``/``--count``/SIGINT/SIGTERM stop scheduling, release held-back late
samples, wait for every QoS ≥ 1 acknowledgement (``--drain-timeout``; a second signal
stops waiting) → disconnect → write the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from simulators.errors import SimError
from simulators.fleet import FaultRates, Fleet
from simulators.formats import FORMATS, Encoded
from simulators.mqtt import BrokerOptions, Connection, Flow, Will
from simulators.progress import Progress
from simulators.rate import KeepUp, Pacer, RateMeter
from simulators.report import Ledger, Token, write_report

FD_RESERVE = 64
"""File descriptors kept for everything that is not a broker connection."""
MAX_RATE_HZ = 1000.0
"""Per sensor: timestamps are milliseconds and must stay unique per series."""
TICKS_PER_PASS = 2000
MAX_PENDING = 50_000
"""Packet ids are 16-bit per connection; leave room for one pass's overshoot."""
EVENTS_SHOWN = 20
"""Ticks served before the scheduler yields to socket I/O."""


@dataclass
class RunOptions:
    """Everything ``tidegate-sim run`` can be told (see ``docs/simulator.md``)."""

    broker: BrokerOptions = field(default_factory=BrokerOptions)
    sensors: int = 10
    rate_hz: float = 1.0
    duration_s: float | None = None
    count: int | None = None
    qos: int = 1
    format: str = "json-reading"
    topic: str | None = None
    metrics: tuple[str, ...] | None = None
    prefix: str = "sim"
    seed: int | None = None
    connections: int = 0
    """0: one client per sensor (own client id and last will); K: multiplex over K."""
    client_prefix: str | None = None
    will_topic: str = "tidegate-sim/status/{client_id}"
    faults: FaultRates = field(default_factory=FaultRates)
    jitter: float = 0.1
    max_pending: int = 20_000
    connect_concurrency: int = 64
    drain_timeout_s: float = 30.0
    report: Path | None = None
    progress: bool | None = None
    """None: a live line when stderr is a terminal."""
    quiet: bool = False

    def check(self) -> None:
        """Raise ``ValueError`` naming the option at fault."""
        if self.sensors < 1:
            raise ValueError("--sensors must be >= 1")
        if not 0 < self.rate_hz <= MAX_RATE_HZ:
            raise ValueError(
                f"--rate must be in (0, {MAX_RATE_HZ:g}] per sensor "
                "(millisecond timestamps must stay unique per series)"
            )
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("--duration must be > 0")
        if self.count is not None and self.count < 1:
            raise ValueError("--count must be >= 1")
        if self.qos not in (0, 1, 2):
            raise ValueError("--qos must be 0, 1 or 2")
        if self.format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}")
        if self.connections < 0:
            raise ValueError("--connections must be >= 0 (0 = one client per sensor)")
        if not 1 <= self.max_pending <= MAX_PENDING:
            # Packet ids are 16-bit per connection: more in flight would reuse one.
            raise ValueError(f"--max-pending must be in [1, {MAX_PENDING}]")
        if not self.prefix or "/" in self.prefix or "+" in self.prefix or "#" in self.prefix:
            raise ValueError("--prefix must be non-empty and contain no '/', '+' or '#'")


@dataclass
class RunResult:
    """What a run did; ``report`` is the JSON report dict."""

    report: dict[str, Any]
    clean: bool
    """Every QoS ≥ 1 message was acknowledged and nothing failed to publish."""
    interrupted: bool


def raise_fd_limit(needed: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to ``needed`` (up to the hard limit).

    Returns (soft, hard) after the change; raises :class:`SimError` explaining how to
    raise the hard limit when it is too low.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if needed <= soft:
        return soft, hard
    if hard != resource.RLIM_INFINITY and needed > hard:
        raise SimError(
            f"{needed} file descriptors needed but the hard limit is {hard}: raise it "
            f"(`ulimit -Hn {needed}` as root, LimitNOFILE= in systemd, `ulimits: nofile:` "
            "in compose) or multiplex with --connections"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed, hard


class Runner:
    """One run of the simulator."""

    def __init__(self, options: RunOptions, out: TextIO | None = None) -> None:
        options.check()
        self.options = options
        self.out = out or sys.stderr
        self.run_id = secrets.token_hex(3)
        self.ledger = Ledger(self.run_id, options.qos)
        self.fmt = FORMATS[options.format]
        self.topic = options.topic or self.fmt.default_topic
        self.rng = random.Random(options.seed)
        self.connections: list[Connection] = []
        self.stop_requested = asyncio.Event()
        self.abort_drain = asyncio.Event()
        self.interrupted = False
        self.keepup = KeepUp()
        self.events: list[str] = []
        self.event_count = 0
        self._clock: Callable[[], float] = time.monotonic
        self.progress: Progress | None = None
        self.flow = Flow(options.max_pending)
        self._conn_of: list[Connection] = []

    # --------------------------------------------------------------------------- helpers

    def say(self, message: str) -> None:
        """A line for the user (stderr), kept clear of the progress line."""
        if self.options.quiet:
            return
        if self.progress is not None:
            self.progress.clear()
        print(f"tidegate-sim: {message}", file=self.out, flush=True)

    def _event(self, message: str) -> None:
        # Thousands of clients losing a broker at once must not flood the terminal.
        self.event_count += 1
        if len(self.events) < 100:
            self.events.append(message)
        if self.event_count <= EVENTS_SHOWN:
            self.say(message)
        elif self.event_count == EVENTS_SHOWN + 1:
            self.say("… more connection events not shown (count in the report's totals.reconnects)")

    def _on_signal(self) -> None:
        if self.stop_requested.is_set():
            self.abort_drain.set()
            self.say("second signal: not waiting for more acknowledgements")
            return
        self.interrupted = True
        self.say("stopping: publishing ends, waiting for acknowledgements (signal again to skip)")
        self.stop_requested.set()

    # ------------------------------------------------------------------------------- run

    async def run(self) -> RunResult:
        opts = self.options
        n_conn = opts.sensors if opts.connections == 0 else min(opts.connections, opts.sensors)
        raise_fd_limit(n_conn + FD_RESERVE)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal)
        flow = self.flow
        client_prefix = opts.client_prefix or f"tidegate-sim-{self.run_id}"
        fleet = Fleet(
            count=opts.sensors,
            fmt=self.fmt,
            topic=self.topic,
            prefix=opts.prefix,
            ledger=self.ledger,
            rates=opts.faults,
            rng=self.rng,
            send=self._send,
            metrics=opts.metrics,
            samples_per_sensor=opts.count,
        )
        self.fleet = fleet
        per_sensor = opts.connections == 0
        for j in range(n_conn):
            name = (
                f"{client_prefix}-{fleet.sensors[j].target.sensor_id}"
                if per_sensor
                else f"{client_prefix}-c{j}"
            )
            will = Will(opts.will_topic.replace("{client_id}", name)) if opts.will_topic else None
            self.connections.append(
                Connection(
                    opts.broker,
                    name,
                    self.ledger,
                    flow,
                    will=will,
                    on_event=self._event,
                )
            )
        started_ms = time.time_ns() // 1_000_000
        try:
            await self._connect_all()
            self._conn_of = [self.connections[i % n_conn] for i in range(opts.sensors)]
            result = await self._publish_and_drain(fleet, flow, started_ms)
        finally:
            await self._close_all()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        if opts.report is not None:
            write_report(opts.report, result.report)
        return result

    async def _connect_all(self) -> None:
        total = len(self.connections)
        if total > 1:
            self.say(f"connecting {total} client(s) to {self.options.broker.where()} …")
        semaphore = asyncio.Semaphore(self.options.connect_concurrency)
        done = 0
        began = time.monotonic()

        async def one(conn: Connection) -> None:
            nonlocal done
            async with semaphore:
                if self.stop_requested.is_set():
                    return
                await conn.connect()
                done += 1

        tasks = [asyncio.ensure_future(one(conn)) for conn in self.connections]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        if total > 1:
            self.say(f"{done} client(s) connected in {time.monotonic() - began:.1f}s")

    async def _close_all(self) -> None:
        semaphore = asyncio.Semaphore(256)

        async def one(conn: Connection) -> None:
            async with semaphore:
                await conn.close()

        await asyncio.gather(*(one(c) for c in self.connections), return_exceptions=True)

    def _send(
        self, index: int, message: Encoded, token: Token, duplicate: bool, late: bool
    ) -> None:
        if self._conn_of[index].publish(message.topic, message.payload, self.options.qos, token):
            self.ledger.sent(token, duplicate, late)

    async def _publish_and_drain(self, fleet: Fleet, flow: Flow, started_ms: int) -> RunResult:
        opts = self.options
        clock = self._clock
        start = clock() + 0.05
        pacer = Pacer(opts.sensors, opts.rate_hz, start, self.rng, opts.jitter)
        deadline = start + opts.duration_s if opts.duration_s is not None else None
        meter = RateMeter(clock)
        show = opts.progress if opts.progress is not None else self.out.isatty()
        self.progress = (
            Progress(self.out, opts.sensors * opts.rate_hz) if show and not opts.quiet else None
        )
        requested = opts.sensors * opts.rate_hz
        pending_at_flow = False
        ticker = asyncio.ensure_future(self._housekeeping(pacer, meter))
        try:
            while not self.stop_requested.is_set():
                now = clock()
                if deadline is not None and now >= deadline:
                    break
                if not pacer.active:
                    break
                if flow.full:
                    pending_at_flow = True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(flow.wait_room(), 0.1)
                    continue
                # A tick can publish several messages (metrics, bursts, duplicates):
                # size the pass so the overshoot past --max-pending stays small.
                room = flow.limit - flow.n
                due = pacer.pop_due(now, min(TICKS_PER_PASS, max(1, room // 8)))
                for sensor, k in due:
                    if not fleet.tick(sensor, k):
                        pacer.finish(sensor)
                meter.add(len(due))
                if self.keepup.observe(now, pacer.lag(now)):
                    self._warn_behind(meter, requested, pending_at_flow)
                if len(due) >= TICKS_PER_PASS:
                    await asyncio.sleep(0)  # let acks and writes through
                    continue
                when = pacer.next_due()
                wait = 0.05 if when is None else min(0.05, max(0.0, when - clock()))
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - clock()))
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop_requested.wait(), wait)
                else:
                    await asyncio.sleep(0)
            ended = clock()
            fleet.release_everything()
            drained = await self._drain(flow)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            if self.progress is not None:
                self.progress.clear()
        unconfirmed = sum(conn.give_up_pending() for conn in self.connections)
        elapsed = max(1e-9, ended - start)
        achieved = pacer.ticks / elapsed
        totals = self.ledger.totals
        rate = {
            "requested_samples_per_s": requested,
            "achieved_samples_per_s": round(achieved, 2),
            "achieved_ratio": round(achieved / requested, 4) if requested else None,
            "messages_per_s": round(totals.messages_sent / elapsed, 2),
            "readings_per_s": round(totals.readings_sent / elapsed, 2),
            "elapsed_s": round(elapsed, 3),
            "kept_up": not self.keepup.fell_behind,
            "max_lag_s": round(self.keepup.max_lag_s, 3),
            "throttled_by_max_pending": pending_at_flow,
        }
        settings = {
            "broker": self.options.broker.where(),
            "sensors": opts.sensors,
            "rate_hz": opts.rate_hz,
            "duration_s": opts.duration_s,
            "count": opts.count,
            "qos": opts.qos,
            "format": opts.format,
            "topic": self.topic,
            "metrics": list(opts.metrics) if opts.metrics else "mixed",
            "prefix": opts.prefix,
            "seed": opts.seed,
            "connections": len(self.connections),
            "per_sensor_clients": opts.connections == 0,
            "faults": opts.faults.as_dict(),
        }
        ended_ms = time.time_ns() // 1_000_000
        report = self.ledger.report(settings, rate, started_ms, ended_ms)
        report["events"] = self.events[:100]
        clean = (opts.qos == 0 or unconfirmed == 0) and totals.publish_errors == 0 and drained
        if (
            not self.keepup.fell_behind
            and achieved < requested * 0.98
            and opts.count is None
            and not self.interrupted
            and elapsed > 5 * pacer.period  # short runs end inside a period
        ):
            self._warn_behind(meter, requested, pending_at_flow, final=True)
        return RunResult(report=report, clean=clean, interrupted=self.interrupted)

    def _warn_behind(
        self, meter: RateMeter, requested: float, throttled: bool, final: bool = False
    ) -> None:
        achieved = meter.overall()
        cause = (
            "the broker is slower than requested (acks are the bottleneck: --max-pending reached)"
            if throttled
            else "this process cannot publish faster (CPU-bound)"
        )
        when = "the run achieved" if final else "currently"
        print(
            f"tidegate-sim: warning: cannot keep up: requested {requested:,.0f} samples/s, "
            f"{when} {achieved:,.0f}/s — {cause}; lower --sensors/--rate or add processes",
            file=self.out,
            flush=True,
        )

    async def _drain(self, flow: Flow) -> bool:
        """Wait for every acknowledgement (QoS ≥ 1) or every socket write (QoS 0)."""
        if flow.n == 0:
            return True
        self.say(f"waiting for {flow.n:,} acknowledgement(s) …")
        empty = asyncio.ensure_future(flow.wait_empty(self.options.drain_timeout_s))
        abort = asyncio.ensure_future(self.abort_drain.wait())
        done, pending = await asyncio.wait({empty, abort}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        ok = empty in done and empty.result()
        if not ok:
            self.say(f"{flow.n:,} message(s) never acknowledged: recorded as unconfirmed")
        return ok

    async def _housekeeping(self, pacer: Pacer, meter: RateMeter) -> None:
        """Keepalive for every client once a second; the progress line twice."""
        last_misc = 0.0
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if now - last_misc >= 1.0:
                last_misc = now
                for conn in self.connections:
                    conn.misc()
            if self.progress is not None:
                self.progress.show(
                    elapsed=now - pacer.start,
                    totals=self.ledger.totals,
                    samples_rate=meter.sample(),
                    in_flight=self.flow.n,
                    behind=self.keepup.behind,
                )


def summary(result: RunResult) -> str:
    """A few human lines about a finished run."""
    report = result.report
    t = report["totals"]
    r = report["rate"]
    s = report["settings"]
    lines = [
        f"run {report['run_id']}: {s['sensors']:,} sensors over {s['connections']:,} connection(s), "
        f"{r['elapsed_s']:.1f}s, QoS {s['qos']}, {s['format']}",
        f"  messages: {t['messages_sent']:,} sent, {t['messages_acked']:,} acknowledged"
        + (f", {t['unconfirmed_messages']:,} unconfirmed" if t["unconfirmed_messages"] else "")
        + (f", {t['publish_errors']:,} publish errors" if t["publish_errors"] else ""),
        f"  readings acknowledged: {t['readings_acked']:,}; faults sent: {t['faults_sent']:,} "
        f"(expected dead letters: {report['faults']['expected_dead_letters']:,}); "
        f"duplicates: {t['duplicates_sent']:,}; late: {t['late_sent']:,}; "
        f"burst samples: {t['burst_samples']:,}; silent periods: {t['silent_periods']:,}",
        f"  rate: {r['achieved_samples_per_s']:,.1f} samples/s of {r['requested_samples_per_s']:,.1f} "
        f"requested ({100 * (r['achieved_ratio'] or 0):.1f} %), {r['messages_per_s']:,.0f} messages/s"
        + ("" if r["kept_up"] else f" — could NOT keep up (max lag {r['max_lag_s']:.1f}s)"),
    ]
    if t["reconnects"]:
        lines.append(f"  reconnects: {t['reconnects']}")
    return "\n".join(lines)
