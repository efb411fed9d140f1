"""The live status file the running gateway keeps for ``tidegate stats``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gateway.cli.stats import live_lines
from gateway.status import STALE_AFTER_S, read_status, status_path, write_status


def test_path_and_round_trip(tmp_path: Path) -> None:
    path = status_path(tmp_path / "tidegate.db")
    assert path.name == "tidegate.db.status.json"
    assert read_status(path) is None
    data = {"pid": os.getpid(), "running": True, "written_at": 1000.0, "status": "ready"}
    write_status(path, data)
    assert not path.with_name(path.name + ".tmp").exists()
    fresh = read_status(path, now=1005.0)
    assert fresh is not None and fresh["live"] and fresh["age_s"] == 5.0
    stale = read_status(path, now=1000.0 + STALE_AFTER_S + 1)
    assert stale is not None and not stale["live"]


def test_a_dead_process_or_stopped_gateway_is_not_live(tmp_path: Path) -> None:
    path = status_path(tmp_path / "db")
    write_status(path, {"pid": 2**22 + 12345, "running": True, "written_at": 1000.0})
    assert read_status(path, now=1001.0)["live"] is False  # type: ignore[index]
    write_status(path, {"pid": os.getpid(), "running": False, "written_at": 1000.0})
    assert read_status(path, now=1001.0)["live"] is False  # type: ignore[index]
    path.write_text("{broken")
    assert read_status(path) is None
    path.write_text(json.dumps([1, 2]))
    assert read_status(path) is None


def test_stats_lines() -> None:
    assert live_lines(None)[0][1].startswith("no status file")
    assert live_lines({"live": False, "age_s": 7200.0, "status": "stopped"}) == [
        ("gateway", "not running (last status 2.0 h ago: stopped)")
    ]
    lines = dict(
        live_lines(
            {
                "live": True,
                "age_s": 3.0,
                "pid": 42,
                "status": "degraded",
                "reasons": ["the broker dropped 2,880 messages since the gateway started"],
                "lag": {"reading_age_s": 41.52, "receipt_to_commit_s": 0.012},
                "broker": {
                    "dropped": 2880,
                    "dropped_since_start": 2880,
                    "stored_messages": 120,
                    "stored_bytes": 4096,
                },
            }
        )
    )
    assert lines["gateway"] == (
        "running (pid 42), degraded: the broker dropped 2,880 messages since the gateway"
        " started — as of 3 s ago"
    )
    assert (
        lines["lag"] == "readings committed 41.5 s after their timestamps; arrival to commit 12 ms"
    )
    assert lines["broker"] == (
        "dropped 2,880 since the gateway started (broker total 2,880); holds 120 messages (4.0 KiB)"
    )
