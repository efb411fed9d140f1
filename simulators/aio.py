"""Running the gateway's asynchronous read interface from the simulator's synchronous
tools (``verify``, the ingestion probe)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(call: Coroutine[Any, Any, T]) -> T:
    """Run ``call`` to the end from synchronous code, on a loop of its own (in a thread
    when the caller runs a loop already)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(call)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, call).result()
