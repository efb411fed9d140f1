"""The one place that touches aiosqlite's private API.

Why: a batch is several statements (resolve new series, insert readings, insert dead
letters, commit). Through aiosqlite's public API each statement is a separate hop to
its worker thread and back through the event loop; running one plain function on the
worker thread makes the whole batch a single hop and lets the batch logic be ordinary
synchronous sqlite3 code (testable without a loop). aiosqlite 0.17–0.22 expose exactly
this as ``Connection._execute(fn, *args)`` and the raw connection as ``_conn``; if a
future release drops them, only this module changes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite

T = TypeVar("T")


async def run_on_connection(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn(raw_connection)`` on ``conn``'s worker thread and return its result.

    Like every aiosqlite call, cancelling the await does not stop ``fn``.
    """

    def call() -> T:
        raw: sqlite3.Connection = conn._conn  # noqa: SLF001 - see module docstring
        return fn(raw)

    result: Any = await conn._execute(call)  # type: ignore[no-untyped-call]  # noqa: SLF001 - see module docstring
    return result  # type: ignore[no-any-return]
