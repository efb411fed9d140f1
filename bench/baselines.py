"""Baseline subscribers, each run as its own process by the drain harness.

``python -m bench.baselines aiomqtt|naive --port P --client-id ID --n N [--db FILE]``
connects with the persistent session the harness created, drains ``N`` messages and
prints one JSON line: ``{"t_start", "t_done", "messages", "readings", "vmhwm_kb"}``
(``time.monotonic()`` stamps, comparable across processes on Linux).

* ``aiomqtt`` — the client library's ceiling: ``async for message in
  client.messages`` that only counts (aiomqtt acks each message as it arrives).
* ``naive`` — what tutorials teach: paho's callback, ``json.loads``, one INSERT and
  one ``commit()`` per message into a default-configured ``sqlite3`` database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from typing import Any

HOST = "127.0.0.1"


def proc_status_kb(field: str, pid: int | str = "self") -> int:
    """A ``/proc/<pid>/status`` memory field (``VmHWM``, ``VmRSS``) in KiB; 0 if absent."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def vmhwm_kb() -> int:
    """Peak resident set size of this process (``VmHWM``), in KiB."""
    return proc_status_kb("VmHWM")


def vmrss_kb() -> int:
    """Current resident set size of this process (``VmRSS``), in KiB."""
    return proc_status_kb("VmRSS")


def event_loop_factory() -> Any:
    """uvloop when installed (as ``tidegate run`` uses it), else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def drain_aiomqtt(port: int, client_id: str, n: int) -> dict[str, Any]:
    import aiomqtt

    client = aiomqtt.Client(HOST, port, identifier=client_id, clean_session=False)
    cpu_start = time.process_time()
    t_start = time.monotonic()
    count = 0
    async with client:
        async for _message in client.messages:
            count += 1
            if count >= n:
                break
        t_done = time.monotonic()
        cpu = time.process_time() - cpu_start
    return {"t_start": t_start, "t_done": t_done, "cpu_s": cpu, "messages": count, "readings": 0}


def drain_naive(port: int, client_id: str, n: int, db: str) -> dict[str, Any]:
    import paho.mqtt.client as paho

    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS readings (sensor_id TEXT, metric TEXT, ts INTEGER, value REAL)"
    )
    conn.commit()
    state = {"messages": 0, "readings": 0}

    def on_message(client: Any, _userdata: Any, msg: Any) -> None:
        data = json.loads(msg.payload)
        parts = msg.topic.split("/")
        sensor = parts[2]
        if isinstance(data, dict):
            rows = [(sensor, parts[3], data["ts"], data["value"])]
        else:
            rows = [
                (sensor, item.get("metric", item.get("n")), item.get("ts", item.get("t")),
                 item.get("value", item.get("v")))
                for item in data
            ]  # fmt: skip
        conn.executemany("INSERT INTO readings VALUES (?, ?, ?, ?)", rows)
        conn.commit()
        state["messages"] += 1
        state["readings"] += len(rows)
        if state["messages"] >= n:
            client.disconnect()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.on_message = on_message
    cpu_start = time.process_time()
    t_start = time.monotonic()
    client.connect(HOST, port)
    client.loop_forever()
    t_done = time.monotonic()
    cpu = time.process_time() - cpu_start
    conn.close()
    return {"t_start": t_start, "t_done": t_done, "cpu_s": cpu, **state}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    parser.add_argument("kind", choices=["aiomqtt", "naive"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--db", default="")
    args = parser.parse_args(argv)
    if args.kind == "aiomqtt":
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            result = runner.run(drain_aiomqtt(args.port, args.client_id, args.n))
    else:
        result = drain_naive(args.port, args.client_id, args.n, args.db)
    result["vmhwm_kb"] = vmhwm_kb()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
