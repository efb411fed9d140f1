"""The read commands over the central store print what they print over an edge's file.

An edge's SQLite file (written by the gateway's own batch writer: units, tags, a sensor
whose id a spreadsheet would run as a formula, dead letters) is copied into a central
PostgreSQL through the ingest path every writer uses, under this host's name — the id
``--db`` labels its rows with when no configuration names one — beside a second
gateway's data. Then ``tidegate query|sensors|aggregate|dead-letters list`` with
``--store URL --gateway <host>`` (and with ``$TIDEGATE_STORE``) must print byte for
byte what ``--db FILE`` prints, in every format; without ``--gateway`` they list both
gateways; ``stats`` prints the same lines (its sizes differ: another engine).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.cli.main import main
from gateway.models import DeadLetter, Reading
from tests.support.fleet import copy_file_to_central, create_owner, create_reader
from tests.support.postgres import PostgresServer
from tests.support.storage import T0, open_writer

pytestmark = pytest.mark.integration

HOST_ID = socket.gethostname()
FORMATS = ("table", "csv", "csv-raw", "json")


def edge_file(path: Path, sensors: list[str], shift: float) -> Path:
    conn, writer, _ = open_writer(path)
    readings = [
        Reading(
            sensor,
            metric,
            T0 + i * 15_000 + j,
            round(shift + i * 0.25 + j, 3),
            unit,
            (("room", sensor[-1]),) if metric == "temperature" else (),
        )
        for j, sensor in enumerate(sensors)
        for metric, unit in (("temperature", "°C"), ("humidity", "%"), ("count", None))
        for i in range(400)
    ]
    letters = [
        DeadLetter(
            received_at_ms=T0 + k * 1000,
            topic=f"sensors/{sensors[0]}/bad",
            payload=b"{not json" * k,
            reason="not JSON",
            subscription="sensors",
        )
        for k in range(1, 4)
    ]
    for i in range(0, len(readings), 500):
        writer.write(conn, readings[i : i + 500], letters if i == 0 else [])
    conn.close()
    return path


@pytest.fixture(scope="module")
def stores(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    tmp = tmp_path_factory.mktemp("cli")
    mine = edge_file(tmp / "edge.db", ["greenhouse-1", "=HYPERLINK(1)", "cellar"], 10.0)
    other = edge_file(tmp / "other.db", ["greenhouse-1", "attic"], 50.0)
    name = postgres.new_database_name("cli")
    admin_url = postgres.create_database(name)

    async def fill() -> None:
        conn = await asyncpg.connect(await create_owner(admin_url))
        try:
            await copy_file_to_central(conn, mine, HOST_ID)
            await copy_file_to_central(conn, other, "site-x")
        finally:
            await conn.close()

    asyncio.run(fill())
    yield mine, create_reader(admin_url)
    postgres.drop_database(name)


def run(capsys: Any, *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, (argv, err)
    return out


COMMANDS = [
    ["query", "--since", "2000-01-01", "--limit", "0"],
    ["query", "--since", "2000-01-01", "--sensor", "greenhouse-1", "--latest", "--limit", "7"],
    ["sensors"],
    ["sensors", "--metric", "temperature"],
    ["aggregate", "--since", "2000-01-01", "--until", "2030-01-01", "--bucket", "1h", "--agg",
     "min,max,avg,sum,count,last", "--max-buckets", "1000000"],
    ["aggregate", "--since", "2024-11-19", "--until", "2024-11-20", "--bucket", "5m", "--sensor",
     "cellar", "--tier", "raw", "--max-buckets", "1000000"],
    ["dead-letters", "list"],
    ["dead-letters", "list", "--all"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("fmt", FORMATS)
def test_store_prints_what_the_file_prints(
    stores: tuple[Path, str], capsys: Any, command: list[str], fmt: str
) -> None:
    db, url = stores
    from_file = run(capsys, *command, "--db", str(db), "-f", fmt)
    central = run(capsys, *command, "--store", url, "--gateway", HOST_ID, "-f", fmt)
    assert central == from_file
    assert from_file.count("\n") > 1


def test_the_store_from_the_environment(
    stores: tuple[Path, str], capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, url = stores
    monkeypatch.setenv("TIDEGATE_STORE", url)
    central = run(capsys, "sensors", "--gateway", HOST_ID, "-f", "csv")
    assert central == run(capsys, "sensors", "--db", str(db), "-f", "csv")  # --db still wins


def test_without_a_gateway_every_gateway(stores: tuple[Path, str], capsys: Any) -> None:
    _db, url = stores
    rows = json.loads(run(capsys, "sensors", "--store", url, "-f", "json"))
    seen = {(r["gateway"], r["sensor_id"]) for r in rows}
    assert ("site-x", "attic") in seen and (HOST_ID, "cellar") in seen
    assert ("site-x", "greenhouse-1") in seen and (HOST_ID, "greenhouse-1") in seen
    listed = run(
        capsys, "query", "--store", url, "--since", "2000-01-01", "--limit", "0", "-f", "csv"
    )
    assert len(listed.splitlines()) == 1 + (3 + 2) * 3 * 400


def test_stats_prints_the_same_lines(stores: tuple[Path, str], capsys: Any) -> None:
    db, url = stores
    local = json.loads(run(capsys, "stats", "--db", str(db), "--format", "json"))
    central = json.loads(
        run(capsys, "stats", "--store", url, "--gateway", HOST_ID, "--format", "json")
    )
    for key in ("readings", "series", "sensors", "dead_letters"):
        assert central[key] == local[key], key
