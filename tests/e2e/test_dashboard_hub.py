"""The dashboard in hub mode (``tidegate serve --store``) in headless Chromium, at desktop
and phone width, over three simulated sites — three real gateways, each with its own
broker and simulator, forwarding into one PostgreSQL ([upstream]); one of them stopped
(its gateway terminated) so it shows as "stopped forwarding" with its sensors stale.
The fleet table is grouped by gateway, charts name their gateway; screenshots go to
test-output/ for a person to look at (hub.png: desktop; hub-filtered.png: the filter
naming a gateway; hub-phone.png: a phone's first screen, hub-phone-full.png: its whole
page)."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.test_dashboard import CHROMIUM, CHROMIUM_ARGS, OUTPUT, POINTS_PER_CHART, wait_js
from tests.support import HOST, Broker, GatewayProcess, publish_many, start_gateway, wait_for
from tests.support.fleet import Hub, create_owner, create_reader

pytestmark = pytest.mark.integration

SITES = ("harbour", "orchard", "plant")
STOPPED_SITE = "orchard"
SENSORS = 4
METRICS = ("temperature", "humidity")
STALE_AFTER_S = 15
SEEDS = {"harbour": 7, "orchard": 8, "plant": 9}
"""The simulator's seed per site: the history uses the same signal models, so the live
readings continue its curves."""
HISTORY_STEPS = 120  # an hour, every 30 s


def upstream(url: str, gateway_id: str) -> str:
    return (
        f'\n[upstream]\nurl = "{url}"\ngateway_id = "{gateway_id}"\nsslmode = "disable"\n'
        "batch_size = 500\ninterval_s = 0.2\nretry_min_s = 0.1\nretry_max_s = 0.5\n"
    )


def history(site: str, now_ms: int) -> list[tuple[str, bytes]]:
    """An hour of a site's past readings, with the simulator's ids and signal models (the
    same seed: its live data continues the curves)."""
    from simulators import signals
    from simulators.fleet import sensor_ids

    rng = random.Random(SEEDS[site])
    fleet = [(sid, signals.build(METRICS, rng)) for sid in sensor_ids(site, SENSORS)]
    noise = random.Random(1)
    messages = []
    for step in range(HISTORY_STEPS, 0, -1):
        ts = now_ms - step * 30_000
        for sid, models in fleet:
            for metric, model in zip(METRICS, models, strict=True):
                value = round(model.next(ts / 1000, noise), 2)
                payload = {"value": value, "ts": ts, "unit": signals.UNITS[metric]}
                messages.append((f"sensors/{sid}/{metric}", json.dumps(payload).encode()))
    return messages


def simulate(broker: Broker, site: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "simulators", "run", "--host", HOST, "--port", str(broker.port),
         "--prefix", site, "--sensors", str(SENSORS), "--metrics", ",".join(METRICS),
         "--rate", "1", "--duration", "180", "--seed", str(SEEDS[site]), "--connections", "1",
         "--quiet", "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def forwarded(admin_url: str, site: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(admin_url)
        try:
            if await conn.fetchval("SELECT to_regclass('tidegate.readings')") is None:
                return 0
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM tidegate.readings WHERE gateway_id = $1", site
                )
            )
        finally:
            await conn.close()

    return asyncio.run(count())


@pytest.fixture
def hub(pg_url: str, tmp_path: Path) -> Iterator[str]:
    owner_url = asyncio.run(create_owner(pg_url))
    brokers: list[Broker] = []
    gateways: dict[str, GatewayProcess] = {}
    sims: list[subprocess.Popen[bytes]] = []
    try:
        now_ms = int(time.time() * 1000)
        for site in SITES:
            broker = Broker(tmp_path / f"mq-{site}")
            broker.start()
            brokers.append(broker)
            gateways[site] = start_gateway(tmp_path, broker, site, extra=upstream(owner_url, site))
            publish_many(broker.port, history(site, now_ms), client_id=f"history-{site}")
            if site != STOPPED_SITE:
                sims.append(simulate(broker, site))
        expected = HISTORY_STEPS * SENSORS * len(METRICS)
        for site in SITES:
            wait_for(
                lambda site=site: forwarded(pg_url, site) >= expected,
                60,
                interval=0.5,
                what=f"{site}'s history forwarded",
            )
        assert gateways[STOPPED_SITE].terminate() == 0
        stopped_at = time.monotonic()
        reader_url = create_reader(pg_url)
        with Hub(tmp_path, reader_url, api=f"stale_after_s = {STALE_AFTER_S}") as running:
            time.sleep(max(0.0, STALE_AFTER_S + 1 - (time.monotonic() - stopped_at)))
            yield running.url + "/"
    finally:
        for sim in sims:
            sim.terminate()
            sim.wait(30)
        for gateway in gateways.values():
            gateway.ensure_stopped()
        for broker in brokers:
            broker.stop()


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
                assert rows.count() == SENSORS, site
            stale_rows = page.locator(
                f'#fleet tbody[data-gateway="{STOPPED_SITE}"] tr.stale:not(.gw-row)'
            )
            assert stale_rows.count() == SENSORS
            # The live sites' sensors are fresh: only the stopped site's are stale.
            assert page.locator("#fleet tbody tr.stale:not(.gw-row)").count() == SENSORS
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
