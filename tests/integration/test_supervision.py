"""Task supervision: a long-lived task that fails (test faults make the writer or a
connection's reader raise) is logged with its traceback, /readyz turns 503, and the
process exits non-zero (70) after a bounded drain — and the next run stores everything
exactly once."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest

from gateway import faults
from gateway.app import EXIT_TASK_FAILED, Gateway
from gateway.config import load_settings
from gateway.health import NOT_READY, readiness
from tests.support import (
    Broker,
    GatewayProcess,
    count,
    db_rows,
    iter_json_messages,
    publish_many,
    wait_for,
)
from tests.support.mqtt import gateway_config

pytestmark = pytest.mark.integration

N = 3000
SHUTDOWN_TIMEOUT_S = 20  # gateway_config's pipeline.shutdown_timeout_s
EXIT_BOUND_S = SHUTDOWN_TIMEOUT_S + 15
"""The failed process must be gone within its drain bound plus disconnect and close."""


@pytest.mark.parametrize(
    ("fault", "task"), [("writer-crash=5", "tidegate-writer"), ("reader-crash=300", "reader-")]
)
def test_a_failed_task_exits_non_zero_and_loses_nothing(
    fresh_broker: Broker, tmp_path: Path, fault: str, task: str
) -> None:
    db, cfg = tmp_path / "gw.db", tmp_path / "gw.toml"
    gateway_config(cfg, fresh_broker.port, db, client_id="tg-sup")
    failing = GatewayProcess(cfg, tmp_path / "failing.log", env={"TIDEGATE_TEST_FAULTS": fault})
    healthy = GatewayProcess(cfg, tmp_path / "gw.log")
    try:
        failing.start()
        publisher = threading.Thread(
            target=publish_many, args=(fresh_broker.port, list(iter_json_messages(N)))
        )
        publisher.start()
        assert failing.proc is not None
        failed_at = None
        deadline = time.monotonic() + 60
        while failing.proc.poll() is None and time.monotonic() < deadline:
            if failed_at is None and "shutting down to be restarted" in failing.log_text():
                failed_at = time.monotonic()
            time.sleep(0.05)
        assert failed_at is not None, failing.log_text()
        code = failing.proc.wait(EXIT_BOUND_S)
        assert time.monotonic() - failed_at < EXIT_BOUND_S
        assert code == EXIT_TASK_FAILED
        text = failing.log_text()
        assert "Traceback (most recent call last)" in text
        assert f"task {task}" in text and "RuntimeError: test fault" in text
        publisher.join(120)
        assert not publisher.is_alive()
        stored_by_failing = count(db)
        assert stored_by_failing < N, "the fault came too late to test anything"

        healthy.start()
        wait_for(lambda: count(db) >= N, 60, what="every reading after the restart")
        assert healthy.terminate() == 0
    finally:
        failing.ensure_stopped()
        healthy.ensure_stopped()
    assert count(db) == N
    assert db_rows(db, "SELECT count(DISTINCT value) FROM readings")[0][0] == N
    assert count(db, "dead_letters") == 0


async def test_readyz_turns_not_ready_and_run_reports_the_failure(
    broker: Broker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In-process: a service that raises fails the gateway; readiness says why."""
    caplog.set_level(logging.INFO)
    db, cfg = tmp_path / "gw.db", tmp_path / "gw.toml"
    gateway_config(cfg, broker.port, db, client_id="tg-sup-inproc")
    settings = load_settings(cfg, environ={})

    async def flaky_service(gateway: Gateway) -> None:
        await asyncio.sleep(0.3)
        raise ValueError("service bug")

    gateway = Gateway(settings, [flaky_service])
    run = asyncio.create_task(gateway.run())
    while not gateway.failure:
        await asyncio.sleep(0.01)
    verdict = readiness(gateway.metrics, gateway.source.connected)
    assert verdict.status == NOT_READY
    assert verdict.reasons[0].startswith(
        "gateway failing, exiting after a bounded drain: task service-0-"
    )
    assert await asyncio.wait_for(run, 30) is False
    assert "flaky_service failed: ValueError: service bug" in gateway.failure
    assert any(r.exc_info for r in caplog.records if "flaky_service" in r.getMessage())


async def test_a_clean_stop_is_not_a_failure(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.reset()
    db, cfg = tmp_path / "gw.db", tmp_path / "gw.toml"
    gateway_config(cfg, broker.port, db, client_id="tg-sup-clean")
    gateway = Gateway(load_settings(cfg, environ={}))
    task = asyncio.create_task(gateway.run())
    await asyncio.sleep(1.0)
    gateway.request_stop()
    assert await asyncio.wait_for(task, 30) is True
    assert gateway.failure == ""
