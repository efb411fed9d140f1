"""Which store a read command reads: ``--store``, else ``$TIDEGATE_STORE`` unless
``--db`` names a file, else the configuration's file."""

from __future__ import annotations

import pytest

from gateway.cli.common import central_url
from gateway.cli.main import build_parser

URL = "postgresql://reader@db.example:5432/tidegate"
OTHER = "postgresql://reader@elsewhere/tidegate"


@pytest.mark.parametrize(
    "argv",
    [
        ["query"],
        ["sensors"],
        ["stats"],
        ["aggregate"],
        ["dead-letters", "list"],
        ["dead-letters", "show", "1"],
    ],
)
def test_precedence(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    monkeypatch.delenv("TIDEGATE_STORE", raising=False)
    assert central_url(parser.parse_args(argv)) is None
    assert central_url(parser.parse_args([*argv, "--store", URL])) == URL
    monkeypatch.setenv("TIDEGATE_STORE", OTHER)
    assert central_url(parser.parse_args(argv)) == OTHER
    assert central_url(parser.parse_args([*argv, "--store", URL])) == URL
    assert central_url(parser.parse_args([*argv, "--db", "edge.db"])) is None


def test_db_and_store_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["query", "--db", "x.db", "--store", URL])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
