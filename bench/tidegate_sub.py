"""tidegate as a bench subscriber: ``gateway.app.Gateway`` in its own process.

``python -m bench.tidegate_sub --settings JSON drain --messages M --readings R``
runs the gateway (uvloop when installed, like ``tidegate run``) until its metrics say
``R`` readings were committed and ``M`` messages acknowledged after commit, stops it
gracefully, checks the row count in SQLite and prints one JSON line.

``python -m bench.tidegate_sub --settings JSON latency`` prints ``READY`` once
connected, runs until SIGTERM, and reports publish→commit latency per reading: the
publisher stamps each payload's ``ts`` with its send time (ms), and a wrapper around
the sink's ``write_batch`` takes the wall clock right after each commit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import json
import os
import sqlite3
import sys
import time
from array import array
from collections.abc import Sequence
from typing import Any

from bench.baselines import event_loop_factory, vmhwm_kb, vmrss_kb
from gateway.app import Gateway, install_signal_handlers, tune_interpreter
from gateway.config import Settings
from gateway.models import DeadLetter, Reading
from gateway.storage.base import WriteResult


def _services(settings: Settings) -> list[Any]:
    """The services ``tidegate run`` would start (storage maintenance), if any."""
    if os.environ.get("BENCH_NO_SERVICES"):
        return []
    try:
        from gateway.cli.run import default_services
    except ImportError:
        return []
    return list(default_services(settings))


def _metrics_summary(gateway: Gateway) -> dict[str, Any]:
    m = gateway.metrics
    return {
        "messages": m.messages_committed,
        "stored": m.readings_stored,
        "duplicates": m.duplicates_ignored,
        "dead": m.messages_dead_lettered,
        "batches": m.batches,
        "acks_sent": m.acks_sent,
        "acks_dropped": m.acks_dropped,
        "paused_reads": m.paused_reads,
        "write_s": round(m.commit_duration.total, 3),
        "compacted": m.storage.compacted_rows,
    }


async def drain(settings: Settings, messages: int, readings: int) -> dict[str, Any]:
    gateway = Gateway(settings, _services(settings))
    metrics = gateway.metrics
    cpu_start = time.process_time()
    t_start = time.monotonic()
    task = asyncio.create_task(gateway.run())
    t_done = 0.0
    cpu = 0.0
    while not task.done():
        if metrics.readings_stored >= readings and metrics.acks_sent >= messages:
            t_done = time.monotonic()
            cpu = time.process_time() - cpu_start
            break
        await asyncio.sleep(0.002)
    gateway.request_stop()
    clean = await task
    conn = sqlite3.connect(settings.storage.path)
    try:
        rows = int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
    finally:
        conn.close()
    return {
        "t_start": t_start,
        "t_done": t_done,
        "cpu_s": cpu,
        "clean": clean,
        "readings": rows,
        **_metrics_summary(gateway),
    }


async def latency(settings: Settings) -> dict[str, Any]:
    gateway = Gateway(settings, _services(settings))
    install_signal_handlers(gateway)
    samples = array("f")  # 4 bytes per reading (ms, float32 is plenty)
    worst: list[tuple[float, float, int, float]] = []
    inner = gateway.store.write_batch

    async def write_batch(
        batch: Sequence[Reading], dead_letters: Sequence[DeadLetter]
    ) -> WriteResult:
        t0 = time.time() * 1000
        result = await inner(batch, dead_letters)
        now_ms = time.time() * 1000
        samples.extend(now_ms - r.ts_ms for r in batch)
        if batch:
            entry = (max(now_ms - r.ts_ms for r in batch), now_ms - t0, len(batch), now_ms)
            # Bounded: a list of every batch grew by ~150 B per commit — 20 MB of the
            # harness's own in a 20 s run at 7,000 commits/s, counted as gateway RSS.
            if len(worst) < 8:
                heapq.heappush(worst, entry)
            elif entry > worst[0]:
                heapq.heapreplace(worst, entry)
        return result

    gateway.store.write_batch = write_batch  # type: ignore[method-assign]
    # Collector pauses by generation: a long one shows up as a latency spike.
    gc_pauses: list[tuple[int, float]] = []
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            gc_pauses.append((info["generation"], (time.perf_counter() - gc_start[0]) * 1000))

    gc.callbacks.append(on_gc)
    rss_mb: list[float] = []

    async def sample_rss() -> None:
        while True:
            rss_mb.append(round(vmrss_kb() / 1024, 1))
            await asyncio.sleep(1)

    task = asyncio.create_task(gateway.run())
    sampler = asyncio.create_task(sample_rss())
    await asyncio.wait_for(gateway.started.wait(), 30)
    if not await gateway.source.wait_connected(30):
        raise SystemExit("gateway did not connect")
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    clean = await task
    sampler.cancel()
    # The gateway's peak, read before the percentiles below build a list of a million
    # Python floats (≈ 32 MB that are the harness's, not the gateway's).
    peak_kb = vmhwm_kb()
    ordered = sorted(samples)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    return {
        "clean": clean,
        "samples": len(ordered),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": ordered[-1] if ordered else 0.0,
        # (worst latency ms, write ms, readings, commit wall-clock ms) of the 8 worst batches
        "worst_batches": sorted(worst, reverse=True)[:8],
        "rss_mb_each_s": rss_mb,
        "vmhwm_kb": peak_kb,
        "gc": {
            g: [
                sum(1 for gg, _ in gc_pauses if gg == g),
                round(max([d for gg, d in gc_pauses if gg == g] or [0]), 2),
            ]
            for g in (0, 1, 2)
        },
        **_metrics_summary(gateway),
    }


def main(argv: list[str] | None = None) -> int:
    tune_interpreter()  # as `tidegate run` does
    parser = argparse.ArgumentParser(prog="python -m bench.tidegate_sub")
    parser.add_argument("--settings", required=True, help="Settings as JSON")
    sub = parser.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("drain")
    d.add_argument("--messages", type=int, required=True)
    d.add_argument("--readings", type=int, required=True)
    sub.add_parser("latency")
    args = parser.parse_args(argv)
    settings = Settings.model_validate(json.loads(args.settings))
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        if args.mode == "drain":
            result = runner.run(drain(settings, args.messages, args.readings))
        else:
            result = runner.run(latency(settings))
    result.setdefault("vmhwm_kb", vmhwm_kb())
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
