"""A real disk full while a simulated fleet publishes: the gateway keeps the batch,
acknowledges nothing, backs off, logs once, reports not-ready, and resumes by itself
when space returns — and `tidegate-sim verify` finds nothing lost or doubled.

The disk is a 6 MiB tmpfs mounted for the test (we run as root in CI), nearly filled
with a ballast file; freeing space = deleting the ballast. Where mounting is not
permitted, the same scenario runs with SQLite's ``max_page_count`` as the "disk".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import Gateway, storage_maintenance
from gateway.config import load_settings
from gateway.errors import StorageError
from gateway.storage.sqlite._aiosqlite_adapter import run_on_connection
from tests.support import Broker, write_config

pytestmark = pytest.mark.integration

SENSORS = 10
SAMPLES = 300  # per sensor: 3000 messages, one reading each
LEFT_FREE = 96 * 1024


@contextlib.contextmanager
def small_filesystem(mountpoint: Path, size: str) -> Iterator[bool]:
    """Mount a tmpfs of ``size`` at ``mountpoint``; yields False when not permitted."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(
            ["umount", "-l", str(mountpoint)], capture_output=True, timeout=10, check=False
        )


class TmpfsDisk:
    """Full = a ballast file takes all but a few KiB; freed = the ballast is deleted."""

    def __init__(self, mountpoint: Path) -> None:
        self.ballast = mountpoint / "ballast"

    async def fill(self, gateway: Gateway) -> None:
        free = shutil.disk_usage(self.ballast.parent).free
        with open(self.ballast, "wb") as fh:
            remaining = max(0, free - LEFT_FREE)
            chunk = b"\0" * (1 << 20)
            while remaining > 0:
                fh.write(chunk[: min(len(chunk), remaining)])
                remaining -= min(len(chunk), remaining)

    async def top_up(self, gateway: Gateway) -> None:
        """Take the last free bytes too, so the database file cannot grow any more."""
        with open(self.ballast, "ab", buffering=0) as fh:  # unbuffered: close has no rest
            for _ in range(4096):  # 16 MiB at most; the file system is 6 MiB
                try:
                    fh.write(b"\0" * 4096)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    return

    async def free(self, gateway: Gateway) -> None:
        self.ballast.unlink(missing_ok=True)


class PageCapDisk:
    """Fallback: SQLite's max_page_count on the writer's connection is the disk."""

    async def fill(self, gateway: Gateway) -> None:
        def cap(conn: sqlite3.Connection) -> None:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages + 8}")

        await run_on_connection(gateway.store.sink.connection, cap)

    async def top_up(self, gateway: Gateway) -> None:
        """The page cap leaves nothing to take."""

    async def free(self, gateway: Gateway) -> None:
        await run_on_connection(
            gateway.store.sink.connection, lambda c: c.execute("PRAGMA max_page_count = 1073741823")
        )


async def wait_until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def full_window(gateway: Gateway, db: Path, caplog: pytest.LogCaptureFixture) -> int:
    """Watch 1.5 s windows until one passes with no batch committed (at most 30 s), check
    what must hold while writes fail, and return the readings stored at its start.

    The first ENOSPC does not mean no batch can commit any more: once a checkpoint has
    copied the WAL into the database, SQLite rewrites the WAL file from its beginning,
    in space it already holds, so a batch or two may still commit (and be acked) until
    the database itself must grow. Those are real commits, not a failure to hold."""
    metrics = gateway.metrics
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        batches, acks, errors = metrics.batches, metrics.acks_sent, metrics.write_errors
        before = stored(db)
        logged = sum("write failed, retrying" in r.getMessage() for r in caplog.records)
        await asyncio.sleep(1.5)
        if metrics.batches != batches:
            continue  # a batch fit in reused WAL space: watch another window
        # While full: the batch is kept, nothing is acknowledged, nothing new is logged.
        assert metrics.acks_sent == acks
        assert not metrics.storage_ok and stored(db) == before
        assert "full" in metrics.storage_error
        assert metrics.write_errors >= 2 and metrics.write_errors > errors  # it retried
        assert sum("write failed, retrying" in r.getMessage() for r in caplog.records) == logged
        return before
    raise AssertionError("writes never stayed failed for 1.5 s while the disk was full")


def stored(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
    finally:
        conn.close()


def breakdown(db: Path) -> str:
    """Where the readings are, for a count that is off: hot and cold rows, keys held
    by both, rows per series."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        hot = conn.execute("SELECT count(*) FROM readings_hot").fetchone()[0]
        cold = conn.execute("SELECT count(*) FROM readings_cold").fetchone()[0]
        both = conn.execute(
            "SELECT count(*) FROM readings_hot h JOIN readings_cold c"
            " ON c.series_id = h.series_id AND c.ts = h.ts"
        ).fetchone()[0]
        per_series = conn.execute(
            "SELECT s.sensor_id, s.metric, s.unit, count(*), min(r.ts), max(r.ts)"
            " FROM readings r JOIN series s ON s.id = r.series_id GROUP BY s.id"
        ).fetchall()
    finally:
        conn.close()
    return f"hot {hot}, cold {cold}, keys in both {both}, per series {per_series}"


@pytest.mark.parametrize("disk_kind", ["tmpfs", "max_page_count"])
async def test_disk_full_pauses_acks_then_recovers_with_nothing_lost(
    disk_kind: str, fresh_broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_filesystem(tmp_path / "disk", "6m") as mounted:
        if disk_kind == "tmpfs" and not mounted:
            pytest.skip("mounting a tmpfs is not permitted here; the max_page_count case covers it")
        disk: TmpfsDisk | PageCapDisk
        if disk_kind == "tmpfs":
            db, disk = tmp_path / "disk" / "tidegate.db", TmpfsDisk(tmp_path / "disk")
        else:
            db, disk = tmp_path / "tidegate.db", PageCapDisk()
        config = write_config(tmp_path / "gw.toml", fresh_broker.port, db, client_id="tg-full")
        settings = load_settings(
            config,
            environ={},
            overrides={
                # A small queue: backpressure reaches the broker while the disk is full.
                "pipeline": {"retry_max_s": 0.5, "queue_size": 50},
                "storage": {
                    "min_free_disk": "0",
                    "maintenance_interval_s": 0.5,
                    "checkpoint_interval_s": 0.5,
                },
            },
        )
        gateway = Gateway(settings, [storage_maintenance])
        caplog.set_level(logging.INFO)
        run = asyncio.create_task(gateway.run())
        sim: subprocess.Popen[bytes] | None = None
        try:
            await wait_until(lambda: gateway.source.connected, 20, "gateway connected")
            await disk.fill(gateway)
            report = tmp_path / "sim.json"
            sim = subprocess.Popen(
                [sys.executable, "-m", "simulators", "run", "--port", str(fresh_broker.port),
                 "--host", "127.0.0.1", "--sensors", str(SENSORS), "--count", str(SAMPLES),
                 "--rate", "100", "--metrics", "temperature", "--format", "json-reading",
                 "--connections", "1", "--seed", "7", "--report", str(report), "--quiet",
                 "--no-progress"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            metrics = gateway.metrics
            await wait_until(lambda: not metrics.storage_ok, 60, "the disk to fill up")
            assert "full" in metrics.storage_error
            await disk.top_up(gateway)
            stored_when_full = await full_window(gateway, db, caplog)
            await asyncio.to_thread(sim.wait, 120)
            assert sim.returncode == 0, sim.stderr.read().decode() if sim.stderr else ""
            acked = json.loads(report.read_text())
            assert stored_when_full < SENSORS * SAMPLES, "the disk filled too late to test"

            await disk.free(gateway)
            await wait_until(lambda: metrics.storage_ok, 30, "writes to recover")
            await wait_until(lambda: stored(db) >= SENSORS * SAMPLES, 60, "every reading")
            assert metrics.queue_full_waits > 0  # backpressure reached the source
        finally:
            # Free the disk first: a gateway asked to stop while writes still fail waits
            # for them, and a failed assertion above should be what the run reports.
            with contextlib.suppress(StorageError):  # the page cap needs an open sink
                await disk.free(gateway)
            gateway.request_stop()
            assert await asyncio.wait_for(run, 60)
            if sim is not None and sim.poll() is None:
                sim.kill()
                sim.wait(10)
        # Logged once per outage, not per retry: a batch that fit in reused WAL space
        # (see full_window) ends an outage, and the next failure starts another.
        failures = [r for r in caplog.records if "write failed, retrying" in r.getMessage()]
        recoveries = [r for r in caplog.records if "writes recovered" in r.getMessage()]
        assert 1 <= len(failures) == len(recoveries), [r.getMessage() for r in failures]
        verdict = subprocess.run(
            [sys.executable, "-m", "simulators", "verify", "--report", str(report), "--db",
             str(db), "--json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert verdict.returncode == 0, verdict.stdout + verdict.stderr
        assert stored(db) == SENSORS * SAMPLES, breakdown(db) + "\n" + verdict.stdout
        assert acked  # the report was written
        os.sync()
