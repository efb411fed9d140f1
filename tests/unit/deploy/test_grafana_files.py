"""deploy/grafana: the dashboard JSON and the provisioning files fit together, and every
Prometheus panel asks for metrics the gateway or the hub really exports. (The SQL panels
run against PostgreSQL in tests/integration/test_grafana_sql.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.api import prometheus
from gateway.metrics import Metrics
from gateway.storage.base import Forwarding, GatewayInfo
from tests.support import grafana

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "tidegate-fleet.json"


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def targets(board: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in board["panels"] for t in p.get("targets", [])]


def test_every_datasource_the_dashboard_names_is_provisioned() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "tidegate.yaml").read_text()
    )
    by_uid = {d["uid"]: d["type"] for d in provisioned["datasources"]}
    board = dashboard()
    used = [p["datasource"] for p in board["panels"] if "datasource" in p]
    used += [t["datasource"] for _p, t in targets(board)]
    used += [v["datasource"] for v in board["templating"]["list"]]
    assert used
    for ref in used:
        assert ref["uid"] in by_uid, ref
        assert ref["type"] == by_uid[ref["uid"]], ref
    # The password comes from Grafana's environment, never from the file.
    pg = next(d for d in provisioned["datasources"] if d["type"] == "postgres")
    assert pg["secureJsonData"]["password"].startswith("${")


def test_dashboard_provisioning_and_identity() -> None:
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "tidegate.yaml").read_text()
    )
    assert provider["providers"][0]["type"] == "file"
    board = dashboard()
    assert board["uid"] == "tidegate-fleet"
    assert [v["name"] for v in board["templating"]["list"]] == ["gateway", "sensor", "metric"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_panels_do_not_overlap_and_fit_the_grid() -> None:
    taken: set[tuple[int, int]] = set()
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, f"{p['title']} overlaps another panel"
        taken |= cells


def test_every_sql_query_expands_completely() -> None:
    """Each rawSql uses only macros the SQL test expands (it raises on any other)."""
    board = dashboard()
    window = grafana.TimeRange(*grafana_range())
    variables: dict[str, grafana.Value] = {"gateway": ["a"], "sensor": "s", "metric": ["m"]}
    sqls = [t["rawSql"] for _p, t in targets(board) if "rawSql" in t]
    sqls += [v["query"] for v in board["templating"]["list"]]
    assert len(sqls) >= 8
    for sql in sqls:
        out = grafana.render(sql, variables, window)
        assert "$" not in out.replace("$$", ""), out


def grafana_range() -> tuple[Any, Any]:
    from datetime import UTC, datetime

    return datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 6, tzinfo=UTC)


def exported_names() -> set[str]:
    gateway = prometheus.render(Metrics(), None, started_at=0.0, version="test")
    hub = prometheus.render_hub(
        True,
        None,
        [GatewayInfo("site-a", 1, 1, Forwarding(10, 2, 1_000, 2_000))],
        started_at=0.0,
        version="test",
    )
    names: set[str] = set()
    for line in (gateway + hub).splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_prometheus_panels_ask_for_exported_metrics() -> None:
    exported = exported_names()
    exprs = [t["expr"] for _p, t in targets(dashboard()) if "expr" in t]
    assert len(exprs) >= 4
    for expr in exprs:
        for name in re.findall(r"\btidegate_\w+", expr):
            assert name in exported, f"{name} (in {expr}) is exported by neither /metrics"
        assert 'gateway=~"$gateway"' in expr, expr


def test_grafana_interpolation_matches_grafana() -> None:
    """The expansions Grafana produces (its macros.go and SqlDatasource tests)."""
    from datetime import UTC, datetime

    window = grafana.TimeRange(
        datetime(2026, 11, 30, 10, 0, tzinfo=UTC),
        datetime(2026, 11, 30, 10, 5, 30, 500_000, tzinfo=UTC),
    )
    assert grafana.expand_macros("WHERE $__timeFilter(ts)", window) == (
        "WHERE ts BETWEEN '2026-11-30T10:00:00Z' AND '2026-11-30T10:05:30.5Z'"
    )
    assert grafana.expand_macros("$__timeGroupAlias(ts, 5m)", window) == (
        'floor(extract(epoch from ts)/300)*300 AS "time"'
    )
    assert grafana.expand_macros("$__timeFrom() $__timeTo()", window) == (
        "'2026-11-30T10:00:00Z' '2026-11-30T10:05:30.5Z'"
    )
    assert grafana.interpolate("IN ($g) AND s = '$s'", {"g": ["a", "o'b"], "s": "o'b"}, "1m") == (
        "IN ('a','o''b') AND s = 'o''b'"
    )
    assert grafana.auto_interval(window, None) == "500ms"
    assert grafana.auto_interval(window, "1m") == "1m"
