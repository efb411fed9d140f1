"""CSV output escapes cells a spreadsheet would run as formulas; ``csv-raw`` does not."""

from __future__ import annotations

import csv
import io

import pytest

from gateway.cli.output import write_rows
from gateway.csv_cells import escape_formula, safe_cell


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("kitchen", "kitchen"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_owasp_prefixes(text: str, escaped: str) -> None:
    assert escape_formula(text) == escaped


def test_numbers_and_none_are_untouched() -> None:
    assert safe_cell(-3.5) == -3.5
    assert safe_cell(-7) == -7
    assert safe_cell(None) is None


def rows() -> list[dict[str, object]]:
    return [{"sensor_id": "=cmd|' /C calc'!A0", "metric": "-t", "value": -1.5, "unit": "@u"}]


def parsed(fmt: str) -> list[list[str]]:
    out = io.StringIO()
    write_rows(rows(), ("sensor_id", "metric", "value", "unit"), fmt, out)
    return list(csv.reader(io.StringIO(out.getvalue())))


def test_cli_csv_escapes_text_but_not_numbers() -> None:
    assert parsed("csv")[1] == ["'=cmd|' /C calc'!A0", "'-t", "-1.5", "'@u"]


def test_cli_csv_raw_writes_cells_as_stored() -> None:
    assert parsed("csv-raw")[1] == ["=cmd|' /C calc'!A0", "-t", "-1.5", "@u"]
