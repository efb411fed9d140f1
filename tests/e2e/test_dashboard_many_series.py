"""The dashboard with 100,000 series in headless Chromium: it shows the first pages of
the fleet quickly, says how many sensors there are, loads more on request, and its
filter finds sensors beyond the pages shown (it asks the gateway)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_dashboard import CHROMIUM, CHROMIUM_ARGS, OUTPUT, wait_js
from tests.support import Broker, count, publish_many, start_gateway, wait_for
from tests.support.series import wide_fleet

pytestmark = pytest.mark.integration

SERIES = 100_000
FLEET_PAGE = 500  # series per page, as in dashboard.js


@pytest.fixture
def crowded(broker: Broker, tmp_path: Path) -> Iterator[str]:
    gateway = start_gateway(tmp_path, broker, "crowd", api="rate_limit_per_s = 0")
    base_ms = int(time.time() * 1000) - 3_600_000
    try:
        publish_many(
            broker.port, list(wide_fleet(base_ms, SERIES)), client_id="crowd-pub", timeout=300
        )
        wait_for(
            lambda: count(tmp_path / "crowd.db") >= SERIES, 300, what="100,000 readings stored"
        )
        yield gateway.url + "/"
    finally:
        gateway.terminate()


def test_dashboard_pages_a_fleet_of_100000_series(crowded: str) -> None:
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
            started = time.monotonic()
            page.goto(crowded)
            rows = page.locator("#fleet tbody tr")
            rows.nth(FLEET_PAGE // 2 - 1).wait_for(timeout=30_000)
            first_page_s = time.monotonic() - started
            assert rows.count() == FLEET_PAGE // 2  # two metrics per sensor
            wait_js(
                page,
                "document.querySelector('#k-sensors').textContent === '50.0 k'",
            )
            assert page.locator("#more-sensors").is_visible()
            assert page.locator("#fleet-shown").inner_text() == "showing 250 sensors"

            page.click("#more-sensors")
            rows.nth(FLEET_PAGE - 1).wait_for(timeout=30_000)
            assert rows.count() == FLEET_PAGE

            # A sensor far beyond the pages shown: the gateway finds it.
            page.fill("#filter", "dev-49999")
            wait_js(page, "document.querySelectorAll('#fleet tbody tr').length === 1")
            assert page.locator('#fleet tbody tr[data-sensor="dev-49999"]').count() == 1
            assert page.locator("#more-sensors").is_hidden()
            page.wait_for_timeout(300)
            page.screenshot(path=str(OUTPUT / "dashboard-100k-series.png"), full_page=False)
        finally:
            browser.close()
    print(
        f"dashboard, 100,000 series: first page of the fleet shown {first_page_s:.2f}s after load"
    )
    assert not errors, errors
