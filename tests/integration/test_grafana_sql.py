"""Every SQL query of deploy/grafana's dashboard, as Grafana would send it, against a real
PostgreSQL with the central schema and a small fleet's readings: each one runs, returns
the columns Grafana expects (``time``, ``value``, ``metric`` for time series; named
columns for tables) and the numbers the data says.

The data is tests/support/fleet.py's (a late reading makes a rolled-up minute and hour
stale and pending: the rollup panels must answer those from raw readings). Every query
runs as the read-only role of deploy/postgresql/reader-role.sql, as Grafana's datasource
does, in a session time zone of +05:30 (hour buckets must not depend on it).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support import grafana
from tests.support.fleet import (
    END,
    GATEWAYS,
    LATE_AT,
    METRICS,
    SENSORS,
    START,
    Key,
    Rows,
    create_owner,
    create_reader,
    fleet_rows,
    load,
    ms,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tidegate-fleet.json"
SESSION_TZ = "Asia/Kolkata"


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[tuple[asyncpg.Connection, Rows]]:
    rows = fleet_rows()
    owner = await asyncpg.connect(await create_owner(pg_url))
    try:
        await load(owner, rows)
    finally:
        await owner.close()
    conn = await asyncpg.connect(create_reader(pg_url))
    try:
        await conn.execute(f"SET TIME ZONE '{SESSION_TZ}'")
        yield conn, rows
    finally:
        await conn.close()


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


WINDOW = grafana.TimeRange(START, END)


async def run(conn: asyncpg.Connection, sql: str) -> tuple[list[tuple[str, str]], list[Any]]:
    """Columns (name, type) and rows of ``sql``."""
    try:
        statement = await conn.prepare(sql)
    except asyncpg.PostgresError as exc:
        raise AssertionError(f"{exc}\n--- the statement Grafana would send:\n{sql}") from None
    columns = [(a.name, a.type.name) for a in statement.get_attributes()]
    return columns, list(await statement.fetch())


async def resolve_variables(
    conn: asyncpg.Connection, gateway: list[str] | None, sensor: str
) -> dict[str, grafana.Value]:
    """Run the variable queries in order, as Grafana does on load: All (every value the
    query returned) for multi-value variables unless ``gateway`` picks some, ``sensor``
    for the single-value one (it must be offered)."""
    values: dict[str, grafana.Value] = {}
    for var in dashboard()["templating"]["list"]:
        columns, rows = await run(conn, grafana.render(var["query"], values, WINDOW))
        assert len(columns) == 1 and columns[0][1] == "text", (var["name"], columns)
        offered = [r[0] for r in rows]
        if var["name"] == "sensor":
            assert sensor in offered, offered
            values["sensor"] = sensor
        elif var["name"] == "gateway" and gateway is not None:
            assert set(gateway) <= set(offered)
            values["gateway"] = gateway
        else:
            assert var["multi"] and var["includeAll"], var["name"]
            values[var["name"]] = offered
    return values


TIME_TYPES = {"timestamptz", "numeric", "float8"}
NUMERIC_TYPES = {"numeric", "float8", "int8", "int4"}


def check_time_series(title: str, columns: list[tuple[str, str]], rows: list[Any]) -> None:
    """Grafana's time-series format: a ``time`` column (timestamp or epoch seconds), an
    optional text ``metric`` naming the series, every other column a number; ascending time."""
    names = dict(columns)
    assert names.get("time") in TIME_TYPES, (title, columns)
    assert names.get("metric", "text") == "text", (title, columns)
    values = [n for n, _t in columns if n not in ("time", "metric")]
    assert values == ["value"], (title, columns)
    assert names["value"] in NUMERIC_TYPES, (title, columns)
    times = [epoch_ms(r["time"]) for r in rows]
    assert times == sorted(times), f"{title}: rows not in time order"


def check_table(panel: dict[str, Any], columns: list[tuple[str, str]]) -> None:
    names = [n for n, _t in columns]
    assert "?column?" not in names and len(names) == len(set(names)), (panel["title"], names)
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        if override["matcher"]["id"] == "byName":
            assert override["matcher"]["options"] in names, (panel["title"], override, names)
    if "time" in names:
        assert dict(columns)["time"] == "timestamptz", (panel["title"], columns)


def epoch_ms(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(float(value) * 1000)


def averages(rows: Rows, keys: list[Key], bucket_ms: int) -> dict[tuple[str, int], float]:
    """Expected: ``{(metric label, bucket start ms): average}`` within the window."""
    sums: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0])
    for key in keys:
        label = f"{key[2]} @ {key[0]}"
        for t, v in rows[key]:
            if ms(START) <= t <= ms(END):
                acc = sums[(label, t - t % bucket_ms)]
                acc[0] += v
                acc[1] += 1
    return {k: s / n for k, (s, n) in sums.items()}


def got(rows: list[Any], label: str = "metric") -> dict[tuple[str, int], float]:
    out = {(r[label], epoch_ms(r["time"])): float(r["value"]) for r in rows}
    assert len(out) == len(rows), "a (series, time) pair came twice"
    return out


def panel_sql(panel: dict[str, Any]) -> list[str]:
    return [t["rawSql"] for t in panel.get("targets", []) if "rawSql" in t]


@pytest.mark.parametrize("gateways", [None, ["site-b"]], ids=["all-gateways", "one-gateway"])
async def test_every_sql_query_of_the_dashboard(
    db: tuple[asyncpg.Connection, Rows], gateways: list[str] | None
) -> None:
    conn, rows = db
    sensor = SENSORS[1]
    values = await resolve_variables(conn, gateways, sensor)
    selected = gateways or list(GATEWAYS)
    assert values["gateway"] == selected
    assert values["metric"] == sorted(METRICS)
    keys = [k for k in rows if k[0] in selected and k[1] == sensor]
    ran = 0
    for panel in dashboard()["panels"]:
        for sql in panel_sql(panel):
            minimum = panel.get("interval")
            statement = grafana.render(sql, values, WINDOW, minimum_interval=minimum)
            columns, result = await run(conn, statement)
            ran += 1
            assert result, f"{panel['title']}: no rows\n{statement}"
            target = next(t for t in panel["targets"] if t.get("rawSql") == sql)
            if target["format"] == "table":
                check_table(panel, columns)
            else:
                check_time_series(panel["title"], columns, result)
            interval = grafana.interval_ms(grafana.auto_interval(WINDOW, minimum))
            check_values(panel["title"], result, rows, keys, selected, interval)
    assert ran == 7


def check_values(
    title: str, result: list[Any], rows: Rows, keys: list[Key], selected: list[str], interval: int
) -> None:
    """What each panel must show for the data."""
    if title == "$sensor: values":
        assert got(result) == pytest.approx(averages(rows, keys, interval))
    elif title == "$sensor: minute averages":
        expected = averages(rows, keys, 60_000)
        assert got(result) == pytest.approx(expected)
        late = ("temperature @ site-b", ms(LATE_AT) - ms(LATE_AT) % 60_000)
        if late in expected:  # the stale rollup of the late reading's minute is not used
            assert got(result)[late] > 100
    elif title == "$sensor: hourly averages":
        expected = averages(rows, keys, 3_600_000)
        assert len(expected) == 3 * len(keys)
        assert got(result) == pytest.approx(expected)
    elif title == "Readings per gateway and hour":
        counts: dict[tuple[str, int], float] = defaultdict(float)
        for key, series in rows.items():
            if key[0] in selected:
                for t, _v in series:
                    counts[(key[0], t - t % interval)] += 1
        assert got(result) == counts
    elif title == "Latest values":
        expected_latest = {
            (k[0], k[1], k[2]): series[-1] for k, series in rows.items() if k[0] in selected
        }
        assert {
            (r["gateway"], r["sensor"], r["metric"]): (epoch_ms(r["time"]), r["value"])
            for r in result
        } == expected_latest
        assert {r["unit"] for r in result} == set(METRICS.values())
    elif title == "Gateways":
        assert [r["gateway"] for r in result] == selected
        for r in result:
            assert (r["series"], r["sensors"]) == (len(SENSORS) * len(METRICS), len(SENSORS))
            assert r["mode"] == GATEWAYS[r["gateway"]]
        by = {r["gateway"]: r for r in result}
        if "site-a" in by:
            assert (by["site-a"]["backlog"], by["site-a"]["forwarded"]) == (12, 4321)
            assert 25 <= by["site-a"]["behind"] < 600
        if "site-b" in by:
            assert by["site-b"]["since_last_forward"] >= 3600
        if "site-c" in by:
            assert by["site-c"]["last_forward"] is None and by["site-c"]["behind"] == 0
    elif title == "Dead letters":
        letters = [("site-b", 3), ("site-a", 2), ("site-a", 1)]
        assert [(r["gateway"], r["bytes"]) for r in result] == [
            (g, n) for g, n in letters if g in selected
        ]
    else:
        raise AssertionError(f"no value check for panel {title!r}: add one")
