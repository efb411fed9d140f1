"""The ledger, the report file and verify's comparison against a database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.storage.sqlite.schema import migrate
from simulators.errors import ReportError
from simulators.report import (
    Group,
    Ledger,
    decode_ts,
    encode_ts,
    load_report,
    write_report,
)
from simulators.verify import render, verify

T = 1_750_000_000_000


@given(st.lists(st.integers(min_value=0, max_value=2**53), unique=True, max_size=200))
def test_ts_encoding_round_trips(values: list[int]) -> None:
    encoded = encode_ts(values)
    assert decode_ts(encoded) == sorted(values)
    assert all(delta > 0 for delta in encoded[1:])


def test_ts_encoding_is_compact() -> None:
    stamps = [T + i * 1000 for i in range(100)]
    assert encode_ts(stamps) == [T] + [1000] * 99
    assert encode_ts([]) == [] and decode_ts([]) == []


def sample_ledger() -> Ledger:
    ledger = Ledger("r1", qos=1)
    temp = ledger.series_id("s-1", "temperature", "°C")
    hum = ledger.series_id("s-1", "humidity", "%RH")
    assert ledger.series_id("s-1", "temperature", "°C") == temp  # created once
    for i in range(5):
        group = Group((temp, hum), T + i)
        ledger.sent(group)
        ledger.acked(group)
    dup = Group((temp,), T + 10)
    ledger.sent(dup)
    ledger.sent(dup, duplicate=True)
    ledger.acked(dup)
    ledger.acked(dup)  # the duplicate's ack: counted as a message, not as readings
    lost = Group((temp,), T + 20)
    ledger.sent(lost, late=True)
    ledger.unconfirmed(lost)
    bad = ledger.new_fault("s-1", "malformed")
    ledger.sent(bad)
    ledger.acked(bad)
    unsure = ledger.new_fault("s-1", "out_of_range")
    ledger.sent(unsure)
    ledger.unconfirmed(unsure)
    return ledger


def test_ledger_counts_each_reading_once() -> None:
    ledger = sample_ledger()
    t = ledger.totals
    assert t.messages_sent == 10 and t.messages_acked == 8
    assert t.readings_acked == 11  # 5 × 2 + the duplicated one once
    assert t.duplicates_sent == 1 and t.late_sent == 1
    assert t.faults_sent == 2 and t.faults_acked == 1
    assert t.unconfirmed_messages == 2
    temp = ledger.series[0]
    assert list(temp.acked) == [T, T + 1, T + 2, T + 3, T + 4, T + 10]
    assert list(temp.unconfirmed) == [T + 20]
    assert temp.duplicates_sent == 1
    assert ledger.fault_id(ledger.faults[0]) == "r1-0"


def test_qos0_has_no_acknowledged_readings() -> None:
    ledger = Ledger("q0", qos=0)
    sid = ledger.series_id("s", "m", "")
    group = Group((sid,), T)
    ledger.sent(group)
    ledger.acked(group)  # "written to the socket"
    assert list(ledger.series[0].acked) == []
    assert list(ledger.series[0].unconfirmed) == [T]


def test_report_round_trip(tmp_path: Path) -> None:
    ledger = sample_ledger()
    data = ledger.report({"qos": 1, "sensors": 1}, {"kept_up": True}, T - 1000, T + 60_000)
    path = tmp_path / "sub" / "report.json"
    write_report(path, data)
    assert json.loads(path.read_text())["faults"]["by_sensor"] == {
        "s-1": {"malformed": 1, "out_of_range": 0}
    }
    loaded = load_report(path)
    assert loaded.run_id == "r1" and loaded.qos == 1
    assert [s.metric for s in loaded.series] == ["temperature", "humidity"]
    assert loaded.series[0].acked == [T, T + 1, T + 2, T + 3, T + 4, T + 10]
    assert loaded.series[0].unconfirmed == [T + 20]
    assert loaded.acked_faults == {0} and loaded.unconfirmed_faults == {1}
    assert not list(tmp_path.glob("sub/.report.json.*"))  # no temp file left behind


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("{not json", "cannot read"),
        ('{"format": "other"}', "not a tidegate-sim report"),
        ('{"format": "tidegate-sim-report", "version": 99}', "version 99"),
        ('{"format": "tidegate-sim-report", "version": 1, "series": []}', "malformed report"),
    ],
)
def test_bad_reports_say_what_is_wrong(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ReportError, match=message):
        load_report(path)


# --------------------------------------------------------------------------- verify


def database(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    migrate(conn)
    return conn


def add_series(conn: sqlite3.Connection, sensor: str, metric: str, unit: str) -> int:
    cur = conn.execute(
        "INSERT INTO series (sensor_id, metric, unit, tags, created_at) VALUES (?, ?, ?, '', 0)",
        (sensor, metric, unit),
    )
    return int(cur.lastrowid or 0)


def store(conn: sqlite3.Connection, series_id: int, stamps: list[int]) -> None:
    conn.executemany(
        "INSERT INTO readings (series_id, ts, value) VALUES (?, ?, 1.0)",
        [(series_id, ts) for ts in stamps],
    )


def dead_letter(conn: sqlite3.Connection, payload: bytes, received_at: int = T) -> None:
    conn.execute(
        "INSERT INTO dead_letters (received_at, subscription, topic, payload, payload_size, reason) "
        "VALUES (?, 'sub', 'sensors/x', ?, ?, 'bad')",
        (received_at, payload, len(payload)),
    )


@pytest.fixture
def report_path(tmp_path: Path) -> Path:
    ledger = sample_ledger()
    path = tmp_path / "report.json"
    write_report(path, ledger.report({"qos": 1}, {}, T - 1000, T + 60_000))
    return path


def complete_db(path: Path) -> sqlite3.Connection:
    conn = database(path)
    temp = add_series(conn, "s-1", "temperature", "°C")
    hum = add_series(conn, "s-1", "humidity", "%RH")
    store(conn, temp, [T, T + 1, T + 2, T + 3, T + 4, T + 10])
    store(conn, hum, [T, T + 1, T + 2, T + 3, T + 4])
    dead_letter(conn, b'{"note":"tgfault:r1-0","value":')
    conn.commit()
    return conn


def test_verify_ok_when_everything_acknowledged_is_stored(
    tmp_path: Path, report_path: Path
) -> None:
    db = tmp_path / "db.sqlite"
    conn = complete_db(db)
    other = add_series(conn, "someone-else", "temperature", "°C")
    store(conn, other, [T + 5])  # other sensors do not matter
    store(conn, 1, [T - 10_000_000])  # outside the run's window: older data, not ours
    conn.commit()
    conn.close()
    verdict = verify(report_path, db)
    assert verdict.ok, render(verdict)
    assert (verdict.published, verdict.stored, verdict.missing, verdict.unexpected) == (
        11,
        11,
        0,
        0,
    )
    assert verdict.faults_expected == 1 and verdict.faults_dead_lettered == 1
    assert verdict.unconfirmed == 1 and verdict.unconfirmed_stored == 0
    assert "OK" in render(verdict)


def test_verify_reports_missing_unexpected_and_duplicates(
    tmp_path: Path, report_path: Path
) -> None:
    db = tmp_path / "db.sqlite"
    conn = complete_db(db)
    conn.execute("DELETE FROM readings WHERE ts = ?", (T + 3,))  # lost: both series
    store(conn, 1, [T + 30])  # invented
    store(conn, 1, [T + 20])  # unconfirmed but stored: fine
    wrong_unit = add_series(conn, "s-1", "temperature", "K")
    store(conn, wrong_unit, [T + 1])  # the same reading in a second series
    conn.commit()
    conn.close()
    verdict = verify(report_path, db)
    assert not verdict.ok
    assert verdict.missing == 2
    assert verdict.unexpected == 1
    assert verdict.duplicates_stored == 1
    assert verdict.unconfirmed_stored == 1
    assert verdict.unit_mismatches == 1
    assert any("s-1/temperature" in e for e in verdict.missing_examples)
    text = render(verdict)
    assert "FAILED" in text and "first missing" in text


def test_verify_takes_an_empty_unit_sent_as_no_unit_stored(tmp_path: Path) -> None:
    """The gateway stores a unit of "" as no unit: that is not a mismatch (a counter
    has no unit; every demo run used to note one "mismatch" per counter)."""
    ledger = Ledger("r1", qos=1)
    counter = ledger.series_id("s-1", "counter", "")
    group = Group((counter,), T)
    ledger.sent(group)
    ledger.acked(group)
    report = tmp_path / "report.json"
    write_report(report, ledger.report({"qos": 1}, {}, T - 1000, T + 60_000))
    db = tmp_path / "db.sqlite"
    conn = database(db)
    cur = conn.execute(
        "INSERT INTO series (sensor_id, metric, unit, tags, created_at)"
        " VALUES ('s-1', 'counter', '', '', 0)"
    )
    store(conn, int(cur.lastrowid or 0), [T])
    conn.commit()
    conn.close()
    verdict = verify(report, db)
    assert verdict.ok, render(verdict)
    assert verdict.unit_mismatches == 0 and not verdict.notes


def test_verify_requires_every_acknowledged_fault_dead_lettered(
    tmp_path: Path, report_path: Path
) -> None:
    db = tmp_path / "db.sqlite"
    conn = complete_db(db)
    conn.execute("DELETE FROM dead_letters")
    dead_letter(conn, b"tgfault:r1-1 something")  # the unconfirmed one: a bonus, not required
    dead_letter(conn, b"tgfault:zz-0 from another run")
    conn.commit()
    conn.close()
    verdict = verify(report_path, db)
    assert not verdict.ok
    assert verdict.faults_missing == 1 and verdict.fault_examples == ["tgfault:r1-0"]
    assert verdict.unconfirmed_faults_dead_lettered == 1


def test_repeated_dead_letters_are_fine(tmp_path: Path, report_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    conn = complete_db(db)
    dead_letter(conn, b'{"note":"tgfault:r1-0","value":')  # redelivered after a crash
    conn.commit()
    conn.close()
    verdict = verify(report_path, db)
    assert verdict.ok and verdict.dead_letter_rows == 2
    assert any("more than once" in note for note in verdict.notes)


def test_verify_on_a_missing_database(tmp_path: Path, report_path: Path) -> None:
    from gateway.errors import StorageError

    with pytest.raises(StorageError, match="not found"):
        verify(report_path, tmp_path / "nope.db")
