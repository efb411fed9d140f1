"""Keeps ``python -m bench.fleet`` (in ``make bench``) working: its tiny size end to end,
once — load through ingest, the edge baseline, the reader, the hub over HTTP and every
Grafana panel. No timing assertions (speed is measured by ``make bench``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_bench_fleet_tiny_runs_every_part(tmp_path: Path) -> None:
    out_json = tmp_path / "fleet.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.fleet", "--size", "tiny", "--json", str(out_json)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out_json.read_text())
    assert data["load"]["readings"] == 3 * 20 * 50
    parts = {t["part"] for t in data["timings"]}
    assert parts == {"edge", "bare", "reader", "http", "grafana"}
    by_kind = {(t["part"], t["kind"]): t["rows"] for t in data["timings"]}
    assert by_kind[("reader", "latest")] == by_kind[("http", "latest")] == 60
    assert by_kind[("reader", "hourly")] == by_kind[("http", "hourly")] > 0
    assert len([t for t in data["timings"] if t["part"] == "grafana"]) == 7
    assert "latest value of 60 sensors" in proc.stdout
