"""``python -m bench.large_message``: what one huge message costs a running gateway.

Starts a private Mosquitto and ``python -m gateway run`` (default limits:
``max_payload_bytes`` 256 KiB, or ``--max-payload``), publishes one message of
``--size`` bytes at QoS 1 and
right behind it a normal reading, and reports the gateway's CPU seconds and peak RSS
(``VmHWM``) spent from before the big publish until the normal reading is stored, and
how long that took (the stall every other sensor sees). ``--code DIR`` runs the gateway
from another source tree (e.g. an export of an older commit) for a before/after.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho

from simulators.broker import LOOPBACK, PrivateBroker


def _proc(pid: int) -> tuple[float, int, int]:
    """(cpu seconds, VmRSS KiB, VmHWM KiB) of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return cpu, rss, hwm


def _count(db: Path, table: str) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def run(
    size: int, code: Path | None, timeout: float, max_payload: int | None = None
) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="tidegate-large-") as tmp:
        work = Path(tmp)
        broker = PrivateBroker(work / "mosquitto")
        broker.start()
        db = work / "gw.db"
        config = work / "gw.toml"
        config.write_text(
            f'[mqtt]\nhost = "{LOOPBACK}"\nport = {broker.port}\nclient_id = "large"\n'
            '[[subscriptions]]\ntopic = "sensors/+/+"\n'
            'topic_template = "sensors/{sensor_id}/{metric}"\n'
            f'[storage]\npath = "{db}"\n[api]\nenabled = false\n'
            + (f"[pipeline]\nmax_payload_bytes = {max_payload}\n" if max_payload else "")
        )
        env = dict(os.environ)
        if code is not None:
            env["PYTHONPATH"] = str(code)
        log = open(work / "gw.log", "wb")  # noqa: SIM115
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=code,  # -m puts the working directory first on sys.path
        )
        try:
            deadline = time.monotonic() + 30
            while b"ready" not in (work / "gw.log").read_bytes():
                if time.monotonic() > deadline or gateway.poll() is not None:
                    raise SystemExit((work / "gw.log").read_text())
                time.sleep(0.05)
            time.sleep(1.0)  # settle: imports done, first GC passes
            cpu0, rss0, _ = _proc(gateway.pid)
            client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="large-pub")
            client.connect(LOOPBACK, broker.port)
            client.loop_start()
            started = time.monotonic()
            big = client.publish("sensors/cam/snapshot", b"\x00" * size, qos=1)
            small = client.publish(
                "sensors/s1/temperature",
                json.dumps({"value": 21.5, "ts": int(time.time() * 1000)}),
                qos=1,
            )
            big.wait_for_publish(timeout)
            small.wait_for_publish(timeout)
            while _count(db, "readings") < 1:
                if time.monotonic() - started > timeout:
                    raise SystemExit("the normal reading was never stored")
                time.sleep(0.01)
            stall = time.monotonic() - started
            cpu1, rss1, hwm = _proc(gateway.pid)
            client.disconnect()
            client.loop_stop()
            return {
                "size_bytes": size,
                "max_payload_bytes": max_payload or 262_144,
                "code": str(code or "this tree"),
                "stall_s": round(stall, 3),
                "gateway_cpu_s": round(cpu1 - cpu0, 3),
                "rss_before_mib": round(rss0 / 1024, 1),
                "rss_after_mib": round(rss1 / 1024, 1),
                "rss_peak_mib": round(hwm / 1024, 1),
                "dead_letters": _count(db, "dead_letters"),
                "readings": _count(db, "readings"),
            }
        finally:
            gateway.terminate()
            gateway.wait(30)
            log.close()
            broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=60_000_000, help="payload bytes")
    parser.add_argument("--code", type=Path, help="source tree to run the gateway from")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument(
        "--max-payload", type=int, help="pipeline.max_payload_bytes (default 262144)"
    )
    args = parser.parse_args()
    print(json.dumps(run(args.size, args.code, args.timeout, args.max_payload)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
