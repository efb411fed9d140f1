"""The dashboard with what real devices produce: large numbers (air pressure in Pa, an
energy counter in Wh), small and negative ones, 60-character sensor names, long metric
names and units — at desktop width and on a 390 px phone, in headless Debian Chromium
(Playwright; never a browser download). Screenshots go to test-output/ to be looked at.

Checked in the page: every y-axis label is whole inside its chart (no clipped leading
digits), labels differ from each other and carry enough digits, the unit is on the axis,
the cards and tooltip show units, full names are reachable (title attributes, wrapping),
nothing is wider than the phone, and the "Stored" card counts the database, not the
readings since the gateway started.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_dashboard import CHROMIUM, CHROMIUM_ARGS, OUTPUT, wait_js
from tests.support import (
    HOST,
    Broker,
    GatewayProcess,
    free_port,
    publish_many,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

LONG_SENSOR = "weather-station-rooftop-north-east-corner-building-b-unit-07"  # 60 characters
SERIES: list[tuple[str, str, str, float, float]] = [
    # sensor, metric, unit, centre, swing
    (LONG_SENSOR, "pressure", "Pa", 101_300.0, 40.0),
    (LONG_SENSOR, "params.switch:0.aenergy.total", "Wh", 12_345_678_901.0, 900.0),
    ("boiler", "temperature", "°C", -12.5, 3.0),
    ("lab-probe", "concentration", "mol/L", 0.000123, 0.000004),
    ("kitchen", "humidity", "%", 47.0, 6.0),
]
POINTS = 90  # one every 40 s over the last hour


def history(now_ms: int) -> list[tuple[str, bytes]]:
    messages: list[tuple[str, bytes]] = []
    for step in range(POINTS, 0, -1):
        ts = now_ms - step * 40_000
        for index, (sensor, metric, unit, centre, swing) in enumerate(SERIES):
            value = centre + swing * math.sin(step / 9 + index)
            payload = {"value": value, "ts": ts, "unit": unit}
            messages.append((f"sensors/{sensor}/{metric}", json.dumps(payload).encode()))
    return messages


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def dashboard(broker: Broker, tmp_path: Path) -> Iterator[str]:
    """History stored by one gateway run; the dashboard served by a second run, so the
    readings stored since start (0) differ from the database total."""
    port = free_port()
    cfg = write_config(
        tmp_path / "dash.toml",
        broker.port,
        tmp_path / "dash.db",
        client_id="tidegate-dashboard-devices",
        extra=f"[api]\nport = {port}\n",
    )
    first = GatewayProcess(cfg, tmp_path / "first.log").start()
    try:
        publish_many(broker.port, history(int(time.time() * 1000)), client_id="dash-devices")
        wait_for(
            lambda: (
                httpx.get(f"http://{HOST}:{port}/api/v1/live", timeout=2).json()["readings_stored"]
                >= POINTS * len(SERIES)
            ),
            60,
            what="the history stored",
        )
    finally:
        assert first.terminate() == 0
    gateway = GatewayProcess(cfg, tmp_path / "dash.log").start()
    try:
        wait_for(lambda: _answers(port), 20, what="the dashboard")
        yield f"http://{HOST}:{port}/"
    finally:
        gateway.terminate()


AXIS_LABELS = """() => [...document.querySelectorAll('#charts .chart')].map(card => {
  const svg = card.querySelector('svg');
  const box = svg.getBoundingClientRect();
  const labels = [...svg.querySelectorAll('text.axis.y')].map(t => {
    const r = t.getBoundingClientRect();
    return {text: t.textContent, left: r.left - box.left, right: r.right - box.left};
  });
  const unit = svg.querySelector('text.axis-unit');
  return {
    key: card.dataset.sensor + ' · ' + card.dataset.metric,
    labels,
    unit: unit ? unit.textContent : null,
    last: card.querySelector('.chart-last').textContent,
    titled: card.querySelector('.chart-title').getAttribute('title'),
    width: box.width,
  };
})"""


def _check_axes(charts: list[dict[str, Any]]) -> None:
    assert len(charts) == len(SERIES), charts
    units = {f"{s} · {m}": u for s, m, u, _c, _w in SERIES}
    for chart in charts:
        texts = [label["text"] for label in chart["labels"]]
        assert len(texts) >= 3, chart
        assert len(set(texts)) == len(texts), f"repeated tick labels: {chart}"
        for label in chart["labels"]:
            assert label["left"] >= 0 and label["right"] <= chart["width"], f"clipped: {chart}"
        # The unit, with an SI prefix when the labels are scaled (GWh, µmol/L).
        assert chart["unit"] is not None and chart["unit"].endswith(units[chart["key"]]), chart
        assert len(chart["unit"]) <= len(units[chart["key"]]) + 1, chart
        assert units[chart["key"]] in chart["last"], chart
        assert chart["titled"] == chart["key"], chart


def test_large_numbers_long_names_and_units(dashboard: str) -> None:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: run scripts/ensure-chromium.sh (make test does)")
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for name, viewport, scale in (
                ("desktop", {"width": 1360, "height": 1100}, 1),
                ("phone", {"width": 390, "height": 844}, 2),
            ):
                page = browser.new_page(
                    viewport=viewport, device_scale_factor=scale, is_mobile=name == "phone"
                )
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.goto(dashboard)
                wait_js(
                    page,
                    f"document.querySelectorAll('#charts .chart path.line').length >= {len(SERIES)}",
                    60,
                )
                page.wait_for_timeout(800)
                charts = page.evaluate(AXIS_LABELS)
                page.screenshot(path=str(OUTPUT / f"dashboard-devices-{name}.png"), full_page=True)
                if name == "phone":  # close-ups at full resolution, to look at
                    page.locator(".kpis").screenshot(
                        path=str(OUTPUT / "dashboard-devices-phone-cards.png")
                    )
                    page.locator("#fleet").screenshot(
                        path=str(OUTPUT / "dashboard-devices-phone-fleet.png")
                    )
                    energy = page.locator(
                        '#charts .chart[data-metric="params.switch:0.aenergy.total"]'
                    )
                    energy.screenshot(path=str(OUTPUT / "dashboard-devices-phone-chart.png"))
                _check_axes(charts)
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= viewport["width"], f"{name}: page is {width} px wide"
                # The database total, not the readings stored since this gateway started.
                stored = page.locator("#k-stored").inner_text()
                assert stored.replace(",", "").replace("\u202f", "") == str(POINTS * len(SERIES)), (
                    stored
                )
                # Full names: the fleet row carries the whole name and a chart's title too.
                row = page.locator(f'#fleet tbody tr[data-sensor="{LONG_SENSOR}"] td.sensor')
                assert LONG_SENSOR in row.inner_text()
                # The tooltip shows the unit.
                pressure = page.locator('#charts .chart[data-metric="pressure"] svg')
                box = pressure.bounding_box()
                assert box is not None
                pressure.hover(position={"x": box["width"] * 0.7, "y": box["height"] / 2})
                tip = page.locator("#tooltip")
                tip.wait_for(state="visible", timeout=5000)
                assert "Pa" in tip.inner_text()
                page.screenshot(path=str(OUTPUT / f"dashboard-devices-{name}-tooltip.png"))
                page.close()
        finally:
            browser.close()
    assert not errors, errors
