"""The dashboard in headless Chromium (Debian's package, driven by Playwright) while the
simulator publishes: sensors appear, charts render, live figures move. Screenshots go
to test-output/ (desktop and phone widths) for a person to look at.

Chromium comes from ``scripts/ensure-chromium.sh`` (run by ``make test``); we never run
``playwright install``.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    HOST,
    Broker,
    publish_many,
    start_gateway,
    wait_for,
)

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
SIM_SENSORS = 5
SIM_METRICS = ("temperature", "humidity")
SIM_SEED = 7
STALE_SENSOR = "cellar-probe"
POINTS_PER_CHART = """charts => charts.map(chart => {
  const line = chart.querySelector("path.line");
  return line ? line.getAttribute("d").split("L").length : 0;
})"""


def history(now_ms: int) -> list[tuple[str, bytes]]:
    """An hour of past readings for the simulated fleet (same seed → same signal models,
    so the live data continues the curves) and for one sensor that went silent 25
    minutes ago (shown as stale)."""
    from simulators import signals
    from simulators.fleet import sensor_ids

    rng = random.Random(SIM_SEED)
    fleet = [(sid, signals.build(SIM_METRICS, rng)) for sid in sensor_ids("sim", SIM_SENSORS)]
    fleet.append((STALE_SENSOR, signals.build(SIM_METRICS, random.Random(99))))
    noise = random.Random(1)
    messages: list[tuple[str, bytes]] = []
    for step in range(120, 0, -1):
        ts = now_ms - step * 30_000
        for sid, models in fleet:
            if sid == STALE_SENSOR and ts > now_ms - 25 * 60_000:
                continue
            for metric, model in zip(SIM_METRICS, models, strict=True):
                value = round(model.next(ts / 1000, noise), 2)
                unit = signals.UNITS[metric]
                payload = {"value": value, "ts": ts, "unit": unit}
                messages.append((f"sensors/{sid}/{metric}", json.dumps(payload).encode()))
    return messages


@pytest.fixture
def dashboard(broker: Broker, tmp_path: Path) -> Iterator[str]:
    """A gateway with an hour of history and the simulator publishing live."""
    gateway = start_gateway(tmp_path, broker, "dash", api="", client_id="tidegate-dashboard")
    port = gateway.api_port
    sim: subprocess.Popen[bytes] | None = None
    try:
        publish_many(broker.port, history(int(time.time() * 1000)), client_id="dash-history")
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulators",
                "run",
                "--host",
                HOST,
                "--port",
                str(broker.port),
                "--sensors",
                str(SIM_SENSORS),
                "--metrics",
                ",".join(SIM_METRICS),
                "--rate",
                "2",
                "--duration",
                "90",
                "--seed",
                str(SIM_SEED),
                "--connections",
                "1",
                "--quiet",
                "--no-progress",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        yield f"http://{HOST}:{port}/"
    finally:
        if sim is not None and sim.poll() is None:
            sim.terminate()
            sim.wait(30)
        gateway.terminate()


def wait_js(page: Any, expression: str, seconds: float = 30) -> None:
    """Poll a JavaScript expression from Python. Playwright's ``wait_for_function``
    polls with ``eval`` inside the page once the first check is false, which the
    dashboard's Content-Security-Policy (``script-src 'self'``) rightly refuses; a
    one-off ``evaluate`` goes through the DevTools protocol and is not subject to it."""
    wait_for(lambda: bool(page.evaluate(expression)), seconds, interval=0.2, what=expression)


def test_dashboard_shows_the_fleet_and_charts(dashboard: str) -> None:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: run scripts/ensure-chromium.sh (make test does)")
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1000})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(dashboard)

            # Every simulated sensor plus the silent one appears; the silent one is stale.
            rows = page.locator("#fleet tbody tr")
            rows.nth(SIM_SENSORS).wait_for(timeout=30_000)
            assert rows.count() == SIM_SENSORS + 1
            stale = page.locator(f'#fleet tbody tr.stale[data-sensor="{STALE_SENSOR}"]')
            assert stale.count() == 1
            assert page.locator("#fleet tbody tr.stale").count() == 1

            # Charts render lines from the aggregate endpoint.
            wait_js(page, "document.querySelectorAll('#charts .chart path.line').length >= 8")

            # Live figures: broker connected, readings flowing.
            wait_js(page, "document.querySelector('#pill-broker').classList.contains('ok')")
            wait_js(page, "parseFloat(document.querySelector('#k-rate').textContent) > 0")

            # The range picker refetches with another bucket.
            page.click('#range button[data-range="15m"]')
            wait_js(page, "document.querySelector('#range .active').dataset.range === '15m'")
            page.click('#range button[data-range="1h"]')
            # Back-filled history reaches the rollup tiers within a maintenance interval;
            # wait until every chart shows a curve (charts refresh every 15 s at 1h).
            charts = page.locator("#charts .chart")
            wait_for(
                lambda: min(charts.evaluate_all(POINTS_PER_CHART) or [0]) > 10,
                60,
                interval=0.5,
                what="every chart drawn with its history",
            )
            page.wait_for_timeout(500)
            page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)

            phone = browser.new_page(
                viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
            )
            phone.goto(dashboard)
            phone.locator("#charts .chart path.line").first.wait_for(timeout=30_000)
            phone.wait_for_timeout(1000)
            phone.screenshot(path=str(OUTPUT / "dashboard-phone.png"), full_page=True)

            docs = browser.new_page(viewport={"width": 1200, "height": 900})
            docs.goto(dashboard + "docs")
            docs.locator("details.op").nth(7).wait_for(timeout=10_000)
            docs.locator("details.op").nth(6).locator("summary").click()
            docs.locator("details.op").nth(6).locator("button").click()
            docs.locator("details.op").nth(6).locator("pre").wait_for(timeout=10_000)
            docs.wait_for_timeout(500)
            docs.screenshot(path=str(OUTPUT / "docs.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert (OUTPUT / "dashboard.png").stat().st_size > 10_000
