"""The dashboard in hub mode (``tidegate serve --store``) in headless Chromium, at desktop
and phone width, over three simulated sites in one PostgreSQL: two edges (one stopped
forwarding 25 minutes ago) and a direct-mode group. The fleet table is grouped by
gateway, the stopped one highlighted, charts name their gateway; screenshots go to
test-output/hub*.png for a person to look at (hub.png: desktop; hub-filtered.png: the
filter naming a gateway; hub-phone.png: a phone's first screen, hub-phone-full.png: its
whole page)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.test_dashboard import CHROMIUM, CHROMIUM_ARGS, OUTPUT, POINTS_PER_CHART, wait_js
from tests.support import wait_for
from tests.support.fleet import (
    SITES,
    STOPPED_SITE,
    Hub,
    create_owner,
    create_reader,
    live_sites,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def hub(pg_url: str, tmp_path: Path) -> Iterator[str]:
    async def fill() -> None:
        conn = await asyncpg.connect(await create_owner(pg_url))
        try:
            await live_sites(conn, int(time.time() * 1000))
        finally:
            await conn.close()

    asyncio.run(fill())
    with Hub(tmp_path, create_reader(pg_url)) as running:
        yield running.url + "/"


def test_hub_dashboard_groups_the_fleet_by_gateway(hub: str) -> None:
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
            page.goto(hub)
            wait_js(page, "document.body.classList.contains('hub')")
            heads = page.locator("#fleet tr.gw-row")
            heads.nth(len(SITES) - 1).wait_for(timeout=30_000)
            assert heads.count() == len(SITES)
            assert sorted(heads.evaluate_all("rows => rows.map(r => r.dataset.gateway)")) == sorted(
                SITES
            )
            stopped = page.locator(f'#fleet tr.gw-row.stale[data-gateway="{STOPPED_SITE}"]')
            assert stopped.count() == 1
            assert page.locator("#fleet tr.gw-row.stale").count() == 1
            assert "stopped forwarding" in stopped.inner_text()
            # Every group's sensors are listed (a small fleet starts expanded), the
            # stopped site's sensors are stale.
            wait_js(page, "document.querySelectorAll('#fleet tbody tr:not(.gw-row)').length >= 12")
            for site in SITES:
                rows = page.locator(f'#fleet tbody[data-gateway="{site}"] tr:not(.gw-row)')
                assert rows.count() == 4, site
            stale_rows = page.locator(
                f'#fleet tbody[data-gateway="{STOPPED_SITE}"] tr.stale:not(.gw-row)'
            )
            assert stale_rows.count() == 4
            assert page.locator("#fleet tbody tr.stale:not(.gw-row)").count() == 4
            wait_js(page, "document.querySelector('#pill-db').classList.contains('ok')")
            charts = page.locator("#charts .chart")
            charts.first.wait_for(timeout=30_000)
            wait_for(
                lambda: min(charts.evaluate_all(POINTS_PER_CHART) or [0]) > 10,
                60,
                interval=0.5,
                what="every chart drawn with its history",
            )
            titles = charts.evaluate_all(
                "cs => cs.map(c => c.querySelector('.chart-metric').textContent)"
            )
            assert all(" · " in t for t in titles), titles  # "<gateway> · <metric>"
            page.wait_for_timeout(500)
            page.screenshot(path=str(OUTPUT / "hub.png"), full_page=True)

            # The filter finds a gateway by its name.
            page.fill("#filter", STOPPED_SITE)
            wait_js(page, "document.querySelectorAll('#fleet tr.gw-row').length === 1")
            page.wait_for_timeout(300)
            page.screenshot(path=str(OUTPUT / "hub-filtered.png"), full_page=True)

            phone = browser.new_page(
                viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
            )
            phone.on("pageerror", lambda exc: errors.append(str(exc)))
            phone.goto(hub)
            phone.locator("#fleet tr.gw-row").nth(len(SITES) - 1).wait_for(timeout=30_000)
            phone.locator("#charts .chart path.line").first.wait_for(timeout=30_000)
            phone.wait_for_timeout(1000)
            overflow = phone.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            phone.screenshot(path=str(OUTPUT / "hub-phone.png"))
            phone.screenshot(path=str(OUTPUT / "hub-phone-full.png"), full_page=True)
            assert overflow <= 1, f"the page scrolls sideways on a phone by {overflow}px"
        finally:
            browser.close()
    assert not errors, errors
    assert (OUTPUT / "hub.png").stat().st_size > 10_000
