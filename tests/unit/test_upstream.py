"""[upstream]: its config (bad values name the key, the password never shows), the
forwarding figures in /readyz, the status file, /metrics and the buffer estimate."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.api import prometheus
from gateway.cli.stats import upstream_line
from gateway.config import load_settings, local_gateway_id, masked_dump
from gateway.errors import ConfigError
from gateway.health import DEGRADED, READY, readiness
from gateway.metrics import Metrics
from gateway.status import snapshot
from gateway.upstream.forwarder import BYTES_PER_BUFFERED_READING, buffer_hours_left

URL = 'url = "postgresql://tidegate@central.example/tidegate"\n'


def test_upstream_defaults_and_gateway_id(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[upstream]\n" + URL)
    settings = load_settings(cfg, environ={})
    up = settings.upstream
    assert up is not None
    assert (up.batch_size, up.max_rate, up.full_policy) == (20_000, 0.0, "stop")
    assert local_gateway_id(settings)  # the host name
    cfg.write_text("[upstream]\n" + URL + 'gateway_id = "site-17"\n')
    assert local_gateway_id(load_settings(cfg, environ={})) == "site-17"
    assert load_settings(tmp_path / "c.toml", environ={}).upstream is not None
    assert load_settings(None, environ={}).upstream is None


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[upstream]\nbatch_size = 10\n", "upstream.url", "required"),
        ("[upstream]\n" + URL + "batch_size = 0\n", "upstream.batch_size", "greater"),
        ("[upstream]\n" + URL + "max_rate = -1\n", "upstream.max_rate", "greater"),
        ("[upstream]\n" + URL + 'full_policy = "purge"\n', "upstream.full_policy", "stop"),
        ("[upstream]\n" + URL + 'gateway_id = ""\n', "upstream.gateway_id", "at least"),
        ("[upstream]\n" + URL + 'gateway_id = " x"\n', "upstream.gateway_id", "spaces"),
        ("[upstream]\n" + URL + "retry_max_s = 0.1\n", "upstream.retry_max_s", "below"),
        ("[upstream]\n" + URL + "surprise = 1\n", "upstream.surprise", "unknown key"),
        (
            '[upstream]\nurl = "postgresql://u:pw@central/db"\n',
            "upstream.url",
            "holds a password",
        ),
        (
            '[storage]\nbackend = "postgresql"\n[storage.postgresql]\n'
            'url = "postgresql://h/db"\n[upstream]\n' + URL,
            "upstream",
            "writes into PostgreSQL already",
        ),
    ],
)
def test_bad_upstream_config_names_the_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(cfg, environ={})
    assert caught.value.key == key
    assert words in str(caught.value)


def test_check_config_masks_the_upstream_password(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[upstream]\n" + URL)
    settings = load_settings(cfg, environ={"TIDEGATE_UPSTREAM__PASSWORD": "s3cret-pw"})
    assert settings.upstream is not None
    assert settings.upstream.password is not None
    assert "s3cret-pw" not in str(masked_dump(settings))
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env={"TIDEGATE_UPSTREAM__PASSWORD": "s3cret-pw", "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "s3cret-pw" not in out.stdout + out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env={"TIDEGATE_UPSTREAM__BATCH_SIZE": "0", "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "upstream.batch_size" in out.stderr


def forwarding_metrics() -> Metrics:
    metrics = Metrics()
    up = metrics.upstream
    up.configured, up.gateway_id, up.connected = True, "site-17", True
    up.degraded_after_s = 60
    return metrics


def test_readiness_degrades_on_an_unreachable_centre_but_stays_ready() -> None:
    metrics = forwarding_metrics()
    assert readiness(metrics, True).status == READY
    up = metrics.upstream
    up.connected, up.last_error = False, "connecting to postgresql://central/db: refused"
    up.unreachable_since = time.time() - 10
    assert readiness(metrics, True).status == READY  # not for long yet
    up.unreachable_since = time.time() - 120
    up.pending, up.oldest_pending_age_s, up.buffer_hours_left = 12_000, 130.0, 41.5
    verdict = readiness(metrics, True)
    assert verdict.status == DEGRADED and verdict.ok
    (reason,) = verdict.reasons
    assert "forwarding to the central store failing for 2 min: connecting to" in reason
    assert "12,000 readings buffered locally, the oldest 2 min old" in reason
    assert "about 41.5 h of local buffer left" in reason
    # Connected but far behind is degraded too.
    up.connected, up.unreachable_since = True, 0.0
    assert readiness(metrics, True).reasons == [
        "forwarding behind: 12,000 readings buffered locally, the oldest 2 min old,"
        " about 41.5 h of local buffer left"
    ]


def test_status_metrics_and_stats_line_show_the_backlog() -> None:
    metrics = forwarding_metrics()
    up = metrics.upstream
    up.pending, up.oldest_pending_age_s, up.forwarded, up.forward_rate = 500, 3.2, 9000, 1500.0
    up.buffer_hours_left, up.dropped, up.position = 10.25, 7, 9500
    status = snapshot(metrics, True)["upstream"]
    assert status["pending"] == 500 and status["position"] == 9500
    assert snapshot(Metrics(), True)["upstream"] is None
    text = prometheus.render(metrics, None, started_at=time.time(), version="t")
    for line in (
        "tidegate_upstream_pending_readings 500",
        "tidegate_upstream_oldest_pending_age_seconds 3.2",
        "tidegate_upstream_forwarded_readings_total 9000",
        "tidegate_upstream_forward_rate 1500",
        "tidegate_upstream_buffer_hours_left 10.25",
        "tidegate_upstream_dropped_readings_total 7",
        "tidegate_upstream_connected 1",
    ):
        assert line in text
    assert "tidegate_upstream" not in prometheus.render(Metrics(), None, started_at=0, version="t")
    line = upstream_line(status)
    assert "as site-17, connected; 500 readings pending (oldest 3 s)" in line
    assert "10.2 h of local buffer left" in line and "7 DROPPED" in line


def test_buffer_hours_left_from_room_and_ingest_rate() -> None:
    metrics = Metrics()
    assert buffer_hours_left(metrics, 0, 0) is None  # nothing measured, nothing ingested
    metrics.upstream.ingest_rate = 1000.0
    metrics.storage.disk_free_bytes = int(3600 * 1000 * BYTES_PER_BUFFERED_READING) + 100
    assert buffer_hours_left(metrics, 0, 100) == pytest.approx(1.0)
    metrics.storage.database_bytes = 0
    cap = int(1800 * 1000 * BYTES_PER_BUFFERED_READING)
    assert buffer_hours_left(metrics, cap, 100) == pytest.approx(0.5)  # the cap is nearer


def test_buffer_left_reads_in_hours_then_days() -> None:
    from gateway.health import buffer_span

    assert buffer_span(41.46) == "41.5 h"
    assert buffer_span(57_194) == "2,383 days"
