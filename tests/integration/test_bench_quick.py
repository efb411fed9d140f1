"""Keeps ``make bench`` working: the harness in its tiny size, end to end, once.

No timing assertions (speed is measured by ``make bench``, never asserted): only
that every part ran, every drain run delivered exactly what was published, and the
report has its tables.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.isolated,
    pytest.mark.slow,
    pytest.mark.timeout(420),
]

BENCH_TIMEOUT_S = 360
"""~20 s on a quiet 2-core machine, ~120 s at load 10 (measured): bounded, with room."""

ROOT = Path(__file__).resolve().parents[2]


def test_bench_tiny_runs_every_part(tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "tiny", "--json", str(out_json)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out_json.read_text())
    subscribers = {row["subscriber"] for row in data["drains"]}
    expected = {"aiomqtt", "naive", "tidegate"}
    if shutil.which("mosquitto_sub"):
        expected.add("mosquitto_sub")
    assert expected <= subscribers
    assert {row["scenario"] for row in data["drains"]} >= {"json-1", "json-100", "sensors-10k"}
    for row in data["drains"]:
        assert row["ok"] == row["runs"], row
        if row["subscriber"].startswith("tidegate"):
            for run in row["all"]:
                assert run["readings"] == run["messages"] * (
                    100 if row["scenario"].endswith("-100") else 1
                )
    assert data["latency"], "no latency run"
    for lat in data["latency"]:
        assert lat["ok"], lat
        assert lat["stored"] == lat["sent"] > 0
    assert [q["name"] for q in data["queries"]]
    assert data["storage"] and all(s["rows_per_s"] > 0 for s in data["storage"])
    assert "## QoS 1 backlog drain" in proc.stdout
    assert "## Targets" in proc.stdout
