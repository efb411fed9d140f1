"""``tidegate query`` says on stderr when ``--limit`` cut the result short."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.cli.main import main
from gateway.models import Reading
from tests.support.storage import T0, open_writer, write


def database(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "q.db"
    conn, writer, _ = open_writer(path)
    write(conn, writer, [Reading("s", "m", T0 + i, float(i)) for i in range(count)])
    conn.close()
    return path


def test_truncation_is_reported_on_stderr(tmp_path: Path, capsys: Any) -> None:
    db = database(tmp_path, 5)
    assert (
        main(["query", "--db", str(db), "--since", "2000-01-01", "--limit", "3", "-f", "csv"]) == 0
    )
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 4  # header + 3
    assert "showing the first 3 rows; more match (raise --limit, or --limit 0 for all)" in err


def test_no_note_when_everything_fit(tmp_path: Path, capsys: Any) -> None:
    db = database(tmp_path, 3)
    for limit in ("3", "0", "10"):
        assert main(["query", "--db", str(db), "--since", "2000-01-01", "--limit", limit]) == 0
        out, err = capsys.readouterr()
        assert err == ""
        assert len(out.splitlines()) == 5  # header, rule, 3 rows
