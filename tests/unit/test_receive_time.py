"""Receive times for readings without a timestamp never collide within a series."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gateway.config import SubscriptionConfig
from gateway.models import Reading
from gateway.receive_time import PRUNE_AT, ReceiveClock
from gateway.router import Router
from gateway.storage.sqlite.connection import apply_pragmas
from gateway.storage.sqlite.receive_floor import FLOOR_KEY, FloorHook, read_floor
from gateway.storage.sqlite.schema import prepare_database
from gateway.storage.sqlite.writer import BatchWriter
from gateway.validation import Limits

NOW = 1_800_000_000_000


def router(clock: ReceiveClock | None = None) -> Router:
    subs = [
        SubscriptionConfig(
            topic="esphome/+/sensor/+/state",
            format="raw",
            topic_template="esphome/{sensor_id}/sensor/{metric}/state",
        ),
        SubscriptionConfig(topic="lines/#", format="influx"),
        SubscriptionConfig(topic="json/+", format="json", topic_template="json/{sensor_id}"),
        SubscriptionConfig(
            topic="shelly/+",
            format="json",
            topic_template="shelly/{sensor_id}",
            exclude=["voltage"],
            rename={"apower": "power"},
        ),
    ]
    return Router(subs, Limits(), 1 << 16, clock)


def stamps(r: Router, topic: str, payload: bytes, now_ms: int = NOW) -> list[int]:
    envelope = r.route(topic, payload, now_ms=now_ms)
    assert envelope.dead_letter is None, envelope.dead_letter
    return [reading.ts_ms for reading in envelope.readings]


def test_a_burst_in_one_millisecond_gets_one_millisecond_each() -> None:
    r = router()
    got = [stamps(r, "esphome/node1/sensor/t/state", b"%d" % i)[0] for i in range(20)]
    assert got == [NOW + i for i in range(20)]
    # Another series starts at the receive time, independently.
    assert stamps(r, "esphome/node2/sensor/t/state", b"1") == [NOW]
    # Once the wall clock passes the spread, receive times are plain again.
    assert stamps(r, "esphome/node1/sensor/t/state", b"1", NOW + 100) == [NOW + 100]
    assert r.clock.moved == 19 and r.clock.high_ms == NOW + 19


def test_line_protocol_without_time_in_one_message_and_across_messages() -> None:
    r = router()
    payload = b"climate,sensor_id=attic temp=1\nclimate,sensor_id=attic temp=2\n"
    assert stamps(r, "lines/x", payload) == [NOW, NOW + 1]
    assert stamps(r, "lines/x", b"climate,sensor_id=attic temp=3") == [NOW + 2]
    # Two metrics of one line are two series: both keep the receive time.
    assert stamps(r, "lines/x", b"climate,sensor_id=cellar t=1,h=2") == [NOW, NOW]


def test_a_timestamp_of_its_own_is_never_moved() -> None:
    """A device whose own ts equals the receive millisecond keeps it, so its repeat (the
    same ts again) still meets the primary key — even right after a moved reading."""
    r = router()
    own = b'{"temperature": 1, "ts": %d}' % NOW
    assert stamps(r, "json/dev", b'{"temperature": 5}') == [NOW]
    assert stamps(r, "json/dev", own) == [NOW]  # collides, but it is its own ts
    assert stamps(r, "json/dev", own) == [NOW]
    assert stamps(r, "json/dev", b'{"temperature": 6}') == [NOW + 1]
    mixed = b'[{"sensor_id": "m", "metric": "x", "value": 1, "ts": %d},' % NOW
    mixed += b' {"sensor_id": "m", "metric": "x", "value": 2}]'
    assert stamps(r, "json/dev", mixed) == [NOW, NOW + 1]


def test_the_subscription_mapping_is_applied_to_the_second_decode_too() -> None:
    """Fields dropped by ``exclude`` must not shift which reading is which."""
    r = router()
    payload = b'{"voltage": 230, "apower": 5, "ts_dev": "x"}'
    assert stamps(r, "shelly/plug", payload) == [NOW]
    envelope = r.route("shelly/plug", payload, now_ms=NOW)
    assert [(x.metric, x.ts_ms) for x in envelope.readings] == [("power", NOW + 1)]


def test_the_floor_from_a_previous_run_is_respected() -> None:
    r = router(ReceiveClock(floor_ms=NOW + 50))
    assert stamps(r, "esphome/a/sensor/t/state", b"1") == [NOW + 51]
    assert stamps(r, "esphome/b/sensor/t/state", b"1") == [NOW + 51]
    assert stamps(r, "esphome/a/sensor/t/state", b"2") == [NOW + 52]
    assert stamps(r, "esphome/a/sensor/t/state", b"3", NOW + 60) == [NOW + 60]


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5)), min_size=1, max_size=200))
def test_never_two_equal_receive_times_in_a_series(events: list[tuple[int, int]]) -> None:
    """Any interleaving of series and (non-decreasing) arrival milliseconds."""
    clock = ReceiveClock()
    seen: set[tuple[str, int]] = set()
    now = NOW
    for series, advance in events:
        now += advance // 3  # mostly the same millisecond
        reading = Reading(f"s{series}", "v", now, 1.0)
        out = clock.stamp([reading], now, lambda r=reading, n=now: [r._replace(ts_ms=n + 1)])
        key = (out[0].sensor_id, out[0].ts_ms)
        assert key not in seen and out[0].ts_ms >= now
        seen.add(key)


def test_memory_stays_bounded() -> None:
    clock = ReceiveClock()
    for i in range(5 * PRUNE_AT):
        reading = Reading(f"s{i}", "v", NOW + i, 1.0)
        clock.stamp([reading], NOW + i, list)
    assert len(clock._last) <= PRUNE_AT


def test_floor_is_written_with_the_batch_only_while_ahead(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "f.db", isolation_level=None)
    apply_pragmas(conn, "FULL", 1000)
    prepare_database(conn)
    clock = ReceiveClock()
    writer = BatchWriter(1000, 1000, 1000)
    writer.after_insert = FloorHook(clock, None)
    writer.write(conn, [Reading("a", "v", NOW, 1.0)], [])
    assert read_floor(conn) == 0
    ahead = int(time.time() * 1000) + 60_000
    clock.high_ms = ahead
    writer.write(conn, [Reading("a", "v", ahead, 1.0)], [])
    assert read_floor(conn) == ahead
    assert conn.execute(
        "SELECT count(*) FROM storage_state WHERE key = ?", (FLOOR_KEY,)
    ).fetchone() == (1,)
