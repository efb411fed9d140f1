"""Dead letters: the size bound, and ``tidegate dead-letters list|show|replay|purge``."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.dead_letters import hexdump, payload_text
from gateway.cli.main import main
from gateway.config import SubscriptionConfig
from gateway.models import DeadLetter, Reading
from gateway.router import Router
from gateway.storage.base import Selection
from gateway.storage.sqlite import deadletters
from gateway.storage.sqlite.connection import open_writable
from gateway.storage.sqlite.writer import SqliteSink
from gateway.validation import Limits

NOW = int(time.time() * 1000)
DAY = 86_400_000

BROKEN = [SubscriptionConfig(topic="sensors/+/+", format="raw")]  # forgot the template
FIXED = """
[[subscriptions]]
topic = "sensors/+/+"
format = "raw"
topic_template = "sensors/{sensor_id}/{metric}"

[storage]
path = "%s"
dead_letter_max_payload = 32
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("TIDEGATE_")]:
        monkeypatch.delenv(name)


async def write(
    db: Path, dead: list[DeadLetter], readings: list[Reading] | None = None, **kw: Any
) -> None:
    sink = SqliteSink(db, **kw)
    await sink.open()
    try:
        await sink.write_batch(readings or [], dead)
    finally:
        await sink.close()


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- the size bound -------------------------------------------------------------------


async def test_rows_and_payloads_are_bounded(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    sink = SqliteSink(db, dead_letter_max_rows=5, dead_letter_max_payload=10)
    await sink.open()
    try:
        for batch in range(4):
            await sink.write_batch(
                [],
                [DeadLetter(NOW, f"t/{batch}/{i}", b"x" * (i + 8), f"r{batch}") for i in range(3)],
            )
    finally:
        await sink.close()
    kept = rows(db, "SELECT topic, length(payload), payload_size FROM dead_letters ORDER BY id")
    assert [t for t, _l, _s in kept] == ["t/2/1", "t/2/2", "t/3/0", "t/3/1", "t/3/2"]
    assert [(length, size) for _t, length, size in kept][-3:] == [(8, 8), (9, 9), (10, 10)]
    assert rows(
        db, "SELECT length(payload), payload_size FROM dead_letters WHERE topic = 't/2/2'"
    ) == [(10, 10)]


async def test_long_payload_is_truncated_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    await write(db, [DeadLetter(NOW, "a/b", b"y" * 100, "too big")], dead_letter_max_payload=16)
    conn = open_writable(db)
    try:
        (dead,) = list(deadletters.listing(conn))
    finally:
        conn.close()
    assert (len(dead.payload), dead.payload_size, dead.truncated) == (16, 100, True)


# --- a database with dead letters from a broken config ----------------------------------


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "g.db"
    router = Router(BROKEN, Limits(), 4096)
    envelopes = [
        router.route(f"sensors/s{i}/temp", f"{20 + i}".encode(), NOW - 1000 + i) for i in range(6)
    ]
    envelopes.append(router.route("sensors/s9/temp", b"ON", NOW - 500))  # stays bad
    envelopes.append(router.route("sensors/s8/temp", b"\x00\xff\x10binary", NOW - 400))
    envelopes.append(router.route("sensors/old/temp", b"1", NOW - 40 * DAY))
    dead = [e.dead_letter for e in envelopes if e.dead_letter is not None]
    assert len(dead) == 9
    dead.append(DeadLetter(NOW - 300, "sensors/s7/temp", b"1" * 100, "payload cut", "x"))
    dead.append(DeadLetter(NOW - 200, "sensors/s6/temp", b"warm", "old reason", "x"))
    await write(path, dead, dead_letter_max_payload=50)
    return path


@pytest.fixture
def config(tmp_path: Path, db: Path) -> Path:
    path = tmp_path / "fixed.toml"
    path.write_text(FIXED % db)
    return path


def test_list_groups_reasons(config: Path, capsys: Any) -> None:
    code, out, _ = cli(capsys, "dead-letters", "list", "-c", str(config), "--format", "json")
    assert code == 0
    groups = {g["reason"]: g["count"] for g in json.loads(out)}
    assert groups == {
        "raw payloads need {sensor_id} in the subscription's topic_template": 7,
        "raw payload 'ON' is not a number or true/false": 1,
        "raw payload '\\x00\ufffd\\x10binary' is not a number or true/false": 1,
        "payload cut": 1,
        "old reason": 1,
    }
    code, out, _ = cli(capsys, "dead-letters", "list", "-c", str(config))
    assert "11 dead letter(s), 5 reason(s)" in out


def test_list_all_and_filters(config: Path, capsys: Any) -> None:
    code, out, _ = cli(
        capsys, "dead-letters", "list", "-c", str(config), "--all", "--format", "json", "-n", "3"
    )
    listed = json.loads(out)
    assert code == 0 and len(listed) == 3
    assert set(listed[0]) == {
        "id",
        "gateway",
        "received",
        "subscription",
        "topic",
        "size",
        "reason",
    }
    assert listed[1]["topic"] == "sensors/s7/temp" and listed[1]["size"] == 100
    code, out, _ = cli(
        capsys,
        "dead-letters",
        "list",
        "-c",
        str(config),
        "--all",
        "-f",
        "json",
        "--reason",
        "NOT A",
    )
    assert [d["topic"] for d in json.loads(out)] == ["sensors/s8/temp", "sensors/s9/temp"]


def test_show_text_binary_and_truncated(config: Path, db: Path, capsys: Any) -> None:
    ids = dict(rows(db, "SELECT topic, id FROM dead_letters"))
    code, out, _ = cli(
        capsys, "dead-letters", "show", "-c", str(config), str(ids["sensors/s9/temp"])
    )
    assert code == 0 and "payload (UTF-8 text):\nON\n" in out and "reason        raw payload" in out
    code, out, _ = cli(
        capsys, "dead-letters", "show", "-c", str(config), str(ids["sensors/s8/temp"])
    )
    assert "payload (hex):" in out and "00 ff 10 62 69 6e" in out and "..binary" in out
    code, out, _ = cli(
        capsys, "dead-letters", "show", "-c", str(config), str(ids["sensors/s7/temp"])
    )
    assert "truncated: only the first 50 bytes were kept" in out
    code, _out, err = cli(capsys, "dead-letters", "show", "-c", str(config), "99999")
    assert code == 1 and "no dead letter with id 99999" in err


def test_replay_after_fixing_the_template(config: Path, db: Path, capsys: Any) -> None:
    code, out, _ = cli(capsys, "dead-letters", "replay", "-c", str(config), "--all", "--dry-run")
    assert code == 0 and "7 decode now and would be removed: 7 reading(s)" in out
    assert rows(db, "SELECT count(*) FROM dead_letters") == [(11,)]
    assert rows(db, "SELECT count(*) FROM readings") == [(0,)]

    code, out, _ = cli(capsys, "dead-letters", "replay", "-c", str(config), "--all")
    assert code == 0, out
    assert "7 decode now and were removed: 7 reading(s), 7 new" in out
    assert "1 skipped: payload was truncated" in out
    # Readings keep their original receive time; the old one too (40 days is in range).
    stored = rows(
        db,
        "SELECT s.sensor_id, s.metric, r.ts, r.value FROM readings r"
        " JOIN series s ON s.id = r.series_id ORDER BY r.ts",
    )
    assert stored[0] == ("old", "temp", NOW - 40 * DAY, 1.0)
    assert stored[1:] == [(f"s{i}", "temp", NOW - 1000 + i, 20.0 + i) for i in range(6)]
    left = rows(db, "SELECT topic, reason FROM dead_letters ORDER BY id")
    assert [t for t, _ in left] == [
        "sensors/s9/temp",
        "sensors/s8/temp",
        "sensors/s7/temp",
        "sensors/s6/temp",
    ]
    assert left[2][1] == "payload cut"  # truncated: never replayed, left as it was
    assert left[3][1] == "raw payload 'warm' is not a number or true/false"  # reason updated

    # Replaying again changes nothing and stores nothing twice.
    code, out, _ = cli(capsys, "dead-letters", "replay", "-c", str(config), "--all")
    assert "0 decode now" in out
    assert rows(db, "SELECT count(*) FROM readings") == [(7,)]


def test_replay_selects_by_id_reason_and_since(config: Path, db: Path, capsys: Any) -> None:
    ids = dict(rows(db, "SELECT topic, id FROM dead_letters"))
    cli(capsys, "dead-letters", "replay", "-c", str(config), "--id", str(ids["sensors/s0/temp"]))
    assert rows(db, "SELECT count(*) FROM readings") == [(1,)]
    cli(
        capsys, "dead-letters", "replay", "-c", str(config), "--since", "1h", "--reason", "template"
    )
    assert rows(db, "SELECT count(*) FROM readings") == [(6,)]  # not the 40-day-old one
    code, _out, err = cli(capsys, "dead-letters", "replay", "-c", str(config))
    assert code == 1 and "select dead letters" in err


async def test_replay_while_the_gateway_sink_is_open(config: Path, db: Path) -> None:
    sink = SqliteSink(db)
    await sink.open()
    try:
        await sink.write_batch([Reading("live", "temp", NOW, 1.0)], [])
        conn = open_writable(db)
        try:
            router = Router(
                [
                    SubscriptionConfig(
                        topic="sensors/+/+",
                        format="raw",
                        topic_template="sensors/{sensor_id}/{metric}",
                    )
                ],
                Limits(),
                4096,
            )
            result = deadletters.replay(conn, router.route, Selection(everything=True), chunk=2)
        finally:
            conn.close()
        assert (result.decoded, result.stored, result.still_failing) == (7, 7, 3)
        # The gateway keeps writing, including to a series replay created.
        await sink.write_batch(
            [Reading("s0", "temp", NOW + 5, 2.0), Reading("live", "temp", NOW + 1, 3.0)], []
        )
    finally:
        await sink.close()
    assert rows(db, "SELECT count(*) FROM readings") == [(10,)]
    assert rows(db, "SELECT count(*) FROM series WHERE sensor_id = 's0'") == [(1,)]


def test_purge(config: Path, db: Path, capsys: Any) -> None:
    code, out, _ = cli(capsys, "dead-letters", "purge", "-c", str(config), "--older-than", "30d")
    assert code == 0 and "purged 1 dead letter(s)" in out
    code, out, _ = cli(
        capsys, "dead-letters", "purge", "-c", str(config), "--reason", "payload cut"
    )
    assert "purged 1" in out
    code, _out, err = cli(capsys, "dead-letters", "purge", "-c", str(config))
    assert code == 1 and "select dead letters" in err
    assert rows(db, "SELECT count(*) FROM dead_letters") == [(9,)]
    code, out, _ = cli(capsys, "dead-letters", "purge", "-c", str(config), "--all")
    assert "purged 9" in out
    assert rows(db, "SELECT count(*) FROM dead_letters") == [(0,)]


def test_purge_in_chunks(db: Path) -> None:
    conn = open_writable(db)
    try:
        assert deadletters.purge(conn, Selection(everything=True), chunk=3) == 11
    finally:
        conn.close()


def test_missing_database(tmp_path: Path, capsys: Any) -> None:
    code, _out, err = cli(capsys, "dead-letters", "list", "--db", str(tmp_path / "nope.db"))
    assert code == 1 and "database not found" in err
    code, _out, err = cli(
        capsys, "dead-letters", "purge", "--all", "--db", str(tmp_path / "nope.db")
    )
    assert code == 1 and "database not found" in err


def test_hexdump_and_payload_text() -> None:
    assert hexdump(b"AB\x00") == "00000000  " + "41 42 00".ljust(47) + "  AB."
    assert hexdump(bytes(range(20))).count("\n") == 1
    assert payload_text("temp 21°C\n".encode()) == "temp 21°C\n"
    assert payload_text(b"\x00a") is None
    assert payload_text(b"\xff") is None


def test_replayed_old_readings_are_marked_for_rollup(config: Path, db: Path, capsys: Any) -> None:
    from gateway.storage.sqlite.rollups import WATERMARK, set_state

    conn = sqlite3.connect(db, isolation_level=None)
    try:
        set_state(conn, WATERMARK["1m"], NOW)  # rollups are done up to now
    finally:
        conn.close()
    cli(capsys, "dead-letters", "replay", "-c", str(config), "--all")
    dirty = rows(db, "SELECT count(*) FROM rollup_dirty")[0][0]
    assert dirty == 7  # one 1-minute bucket per replayed series (all older than the watermark)
