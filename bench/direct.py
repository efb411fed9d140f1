"""Direct mode: drain rate of a QoS 1 backlog with 1, 2 and 3 gateway processes on one
shared subscription, writing straight into PostgreSQL (docs/central.md, decision 0124).

``python -m bench.direct [--messages N] [--slots S] [--members 1,2,3] [--json PATH]``

Per member count k, in one run (same broker, same PostgreSQL, same machine state):

1. create the group's ``S`` slot sessions at the broker (persistent, subscribed to
   ``$share/<group>/<prefix>/#``, offline) — each run has its own prefix and client ids;
2. publish ``N`` one-reading JSON messages at QoS 1: the broker queues them over the
   ``S`` sessions;
3. start ``k`` ``tidegate run`` processes at once (``[storage] backend = "postgresql"``,
   same ``mqtt.shared_group``) and time them from the spawn until ``N`` readings are in
   ``tidegate.readings`` (polled every 0.25 s) — process start, slot claiming and the
   group's rebalancing included, as an operator would see it;
4. stop them (SIGTERM), delete the sessions.

Reports readings/s per k and the ratio to k = 1 measured in the same run. On a 2-core
machine shared with the broker and PostgreSQL the ratio says how much a member costs,
not how a group scales on real hardware.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from bench.broker import HOST, BenchBroker
from bench.mqttwire import create_session, delete_session, publish_backlog
from bench.workload import ONE
from tests.support.postgres import PostgresServer

GROUP = "benchdirect"


def config_text(broker_port: int, url: str, client_id: str, prefix: str, slots: int) -> str:
    template = ONE.topic_template(prefix)
    return f"""
[mqtt]
host = "{HOST}"
port = {broker_port}
client_id = "{client_id}"
shared_group = "{GROUP}"
slots = {slots}
slot_claim_interval_s = 0.5
reconnect_min_s = 0.1
reconnect_max_s = 1.0
broker_stats = false

[[subscriptions]]
topic = "{prefix}/#"
topic_template = "{template}"
qos = 1

[storage]
backend = "postgresql"

[storage.postgresql]
url = "{url}"

[api]
enabled = false
"""


async def _count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM tidegate.readings_data"))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


def count(url: str) -> int:
    return asyncio.run(_count(url))


def run_members(
    k: int, broker: BenchBroker, pg: PostgresServer, n: int, slots: int, work: Path
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    prefix = f"bd{k}x{run}"
    client_id = f"tgbench-{run}"
    url = pg.create_database(f"bench_direct_{k}_{run}")
    sessions = [f"{client_id}-{s}" for s in range(slots)]
    for session in sessions:
        create_session(broker.port, session, f"$share/{GROUP}/{prefix}/#", 1)
    published = publish_backlog(broker.port, ONE.messages(prefix, n), f"pub-{run}")
    assert published == n, f"published {published} of {n}"
    config = work / f"direct-{k}.toml"
    config.write_text(config_text(broker.port, url, client_id, prefix, slots))
    procs: list[subprocess.Popen[bytes]] = []
    logs = [open(work / f"direct-{k}-{i}.log", "wb") for i in range(k)]  # noqa: SIM115
    started = time.monotonic()
    try:
        for i in range(k):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gateway", "run", "--config", str(config)],
                    stdout=logs[i],
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = started + max(120.0, n / 500)
        stored = 0
        while stored < n and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a gateway exited; see {work}/direct-{k}-*.log")
            time.sleep(0.25)
            stored = count(url)
        elapsed = time.monotonic() - started
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for fh in logs:
            fh.close()
        for session in sessions:
            delete_session(broker.port, session)
    if stored < n:
        raise RuntimeError(f"{k} member(s): only {stored} of {n} readings after {elapsed:.0f}s")
    final = count(url)
    pg.drop_database(url.rsplit("/", 1)[1])
    return {
        "members": k,
        "readings": final,
        "seconds": round(elapsed, 2),
        "readings_per_s": round(n / elapsed),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.direct", description=__doc__)
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--slots", type=int, default=6)
    parser.add_argument("--members", default="1,2,3")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", type=Path, help="keep the gateways' logs in this directory")
    args = parser.parse_args(argv)
    members = [int(m) for m in args.members.split(",")]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-direct-") as tmp:
        work = Path(tmp)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep
        with BenchBroker(work / "broker", "tuned") as broker, PostgresServer() as pg:
            for k in members:
                result = run_members(k, broker, pg, args.messages, args.slots, work)
                results.append(result)
                print(
                    f"direct mode, {k} member(s), {args.slots} slots: {result['readings']:,}"
                    f" readings in {result['seconds']:.1f}s = {result['readings_per_s']:,}/s",
                    flush=True,
                )
    base = results[0]["readings_per_s"] if results else 0
    for result in results:
        result["ratio_to_first"] = round(result["readings_per_s"] / base, 2) if base else None
    print("ratios to", members[0], "member(s):", [r["ratio_to_first"] for r in results])
    summary = {
        "bench": "direct",
        "messages": args.messages,
        "slots": args.slots,
        "cpus": os.cpu_count(),
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
