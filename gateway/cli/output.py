"""Writing rows as a table (for people), CSV or JSON (for scripts), streaming."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from gateway.csv_cells import escape_formula

FORMATS = ("table", "csv", "csv-raw", "json")
"""``csv`` escapes cells a spreadsheet would run as formulas (:mod:`gateway.csv_cells`);
``csv-raw`` writes them as stored."""
_TABLE_BUFFER = 200  # rows used to size columns; later rows stream with those widths


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _csv_cell(value: Any) -> str:
    """Numbers as numbers; any text (names, tags, reasons) escaped against formulas."""
    text = _text(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return text
    return escape_formula(text)


def write_rows(
    rows: Iterable[dict[str, Any]], columns: Sequence[str], fmt: str, out: TextIO | None = None
) -> int:
    """Write ``rows`` (dicts keyed by ``columns``) in ``fmt``; returns the row count.

    Never holds more than a small buffer of rows: JSON is written as an array one
    object at a time, tables size their columns from the first rows.
    """
    out = out or sys.stdout
    count = 0
    if fmt == "json":
        out.write("[")
        for row in rows:
            out.write(("," if count else "") + "\n  " + json.dumps(row, ensure_ascii=False))
            count += 1
        out.write("\n]\n" if count else "]\n")
        return count
    if fmt in ("csv", "csv-raw"):
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        cell = _text if fmt == "csv-raw" else _csv_cell
        for row in rows:
            writer.writerow([cell(row.get(c)) for c in columns])
            count += 1
        return count
    iterator = iter(rows)
    head: list[dict[str, Any]] = []
    for row in iterator:
        head.append(row)
        if len(head) >= _TABLE_BUFFER:
            break
    widths = [max([len(c)] + [len(_text(r.get(c))) for r in head]) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip() + "\n"

    out.write(line(list(columns)))
    out.write(line(["-" * w for w in widths]))
    for row in head:
        out.write(line([_text(row.get(c)) for c in columns]))
        count += 1
    for row in iterator:
        out.write(line([_text(row.get(c)) for c in columns]))
        count += 1
    if count == 0:
        out.write("(no rows)\n")
    return count
