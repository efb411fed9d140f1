#!/usr/bin/env python3
"""``make demo``: the whole tidegate loop in about a minute, explained as it goes.

fake sensors (tidegate-sim) → MQTT broker → tidegate gateway → SQLite → verify → query

Uses a broker already answering on localhost:1883 if there is one (everything of this
demo lives under a unique topic prefix and client ids, so other traffic there does
not interfere), else — or with ``TIDEGATE_DEMO_BROKER=private`` — starts a private
Mosquitto on a free port. All files go to
``.demo/`` (database, gateway config and log, the simulator's report). Exit 0 when
verify finds the database holds exactly what the broker acknowledged.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulators.broker import PrivateBroker, clear_session, mqtt_answers  # noqa: E402
from simulators.probe import wait_until_ingesting  # noqa: E402

DEMO = ROOT / ".demo"
SENSORS = 200
RATE_HZ = 1.0
DURATION_S = 20
STEPS = 7
BOLD = "\033[1m" if sys.stdout.isatty() else ""
DIM = "\033[2m" if sys.stdout.isatty() else ""
RESET = "\033[0m" if sys.stdout.isatty() else ""


def step(n: int, title: str) -> None:
    print(f"\n{BOLD}[{n}/{STEPS}] {title}{RESET}", flush=True)


def say(text: str) -> None:
    print(f"      {text}", flush=True)


def show_command(args: list[str]) -> None:
    shown = " ".join(a if " " not in a and "{" not in a else f"'{a}'" for a in args)
    print(f"      {DIM}$ {shown}{RESET}", flush=True)


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def count(db: Path, sql: str, params: tuple[object, ...] = ()) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            return int(conn.execute(sql, params).fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def gateway_config(path: Path, host: str, port: int, prefix: str, db: Path) -> None:
    path.write_text(
        f"""# Written by scripts/demo.py for one demo run.
[mqtt]
host = {json.dumps(host)}
port = {port}
client_id = {json.dumps("tidegate-" + prefix)}
reconnect_min_s = 0.2
reconnect_max_s = 2.0

[[subscriptions]]
topic = {json.dumps(prefix + "/sensors/+/+")}
topic_template = {json.dumps(prefix + "/sensors/{sensor_id}/{metric}")}
format = "json"

[pipeline]
shutdown_timeout_s = 20

[storage]
path = {json.dumps(str(db))}

[log]
level = "INFO"
"""
    )


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def main() -> int:
    os.chdir(ROOT)
    DEMO.mkdir(exist_ok=True)
    run = secrets.token_hex(3)
    prefix = f"demo-{run}"
    db = DEMO / "tidegate.db"
    for old in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        old.unlink(missing_ok=True)
    report = DEMO / "report.json"
    report.unlink(missing_ok=True)
    python = sys.executable

    print(
        f"{BOLD}tidegate demo{RESET} — fake sensors → MQTT broker → tidegate → SQLite → verify → query"
    )
    print(f"      (run {run}; every file of this demo is in {rel(DEMO)}/)")

    step(1, "MQTT broker")
    broker: PrivateBroker | None = None
    force_private = os.environ.get("TIDEGATE_DEMO_BROKER") == "private"
    if not force_private and mqtt_answers("127.0.0.1", 1883):
        host, port = "127.0.0.1", 1883
        say("a broker already answers on localhost:1883: using it.")
        say(f"this demo's topics live under {prefix}/ and its client ids are unique,")
        say("so other traffic on that broker does not interfere.")
    else:
        broker = PrivateBroker(DEMO / "mosquitto")
        broker.start()
        host, port = broker.host, broker.port
        why = "TIDEGATE_DEMO_BROKER=private" if force_private else "no broker on localhost:1883"
        say(f"{why}: started a private Mosquitto on {host}:{port}")
        say(f"(config, persistence and log in {rel(broker.workdir)}/; stopped at the end)")

    gateway: subprocess.Popen[bytes] | None = None
    gateway_log = DEMO / "gateway.log"
    try:
        step(2, "tidegate gateway")
        config = DEMO / "gateway.toml"
        gateway_config(config, host, port, prefix, db)
        say(f"config   {rel(config)}  (subscribes {prefix}/sensors/+/+)")
        say(f"database {rel(db)}")
        say(f"log      {rel(gateway_log)}")
        show_command(["tidegate", "run", "--config", rel(config)])
        with open(gateway_log, "wb") as log:
            gateway = subprocess.Popen(
                [python, "-m", "gateway", "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        say(f"started (pid {gateway.pid}); checking that messages really arrive …")
        ready = wait_until_ingesting(host, port, f"{prefix}/sensors/probe/check", db, timeout=30)
        if not ready or gateway.poll() is not None:
            say("the gateway did not start ingesting within 30 s. Its log says:")
            print(tail(gateway_log))
            return 1
        say("ready: a probe message went broker → gateway → database (one dead-letter row).")

        step(
            3,
            f"simulator: {SENSORS} sensors, {RATE_HZ:g} sample/s each, {DURATION_S} s, a few faults",
        )
        say("kinds in turn: climate (temperature, humidity, pressure), air (co2, temperature,")
        say("humidity), meter (counter, battery); one MQTT client per sensor; QoS 1.")
        say("faults injected on purpose: malformed payloads and NaN/absurd timestamps (the gateway")
        say("must dead-letter them), duplicates (must be stored once), late/out-of-order")
        say("readings, bursts, and sensors that go silent and come back.")
        sim = [
            python, "-m", "simulators", "run",
            "--host", host, "--port", str(port),
            "--sensors", str(SENSORS), "--rate", str(RATE_HZ), "--duration", str(DURATION_S),
            "--topic", f"{prefix}/sensors/{{sensor_id}}/{{metric}}",
            "--prefix", "demo", "--client-prefix", f"tidegate-sim-{prefix}",
            "--will-topic", f"{prefix}/status/{{client_id}}",
            "--malformed", "0.003", "--out-of-range", "0.003", "--duplicates", "0.01",
            "--late", "0.01", "--bursts", "0.002", "--silent", "0.002",
            "--seed", "42", "--report", rel(report),
        ]  # fmt: skip
        show_command(["tidegate-sim", *sim[3:]])
        result = subprocess.run(sim, check=False)
        if result.returncode not in (0, 1) or not report.exists():
            say(f"the simulator failed (exit {result.returncode}).")
            return 1
        data = json.loads(report.read_text())
        readings = int(data["totals"]["readings_acked"])
        faults = int(data["faults"]["expected_dead_letters"])

        step(4, "letting the gateway catch up")
        say("the broker acknowledged every message above; the gateway may still be writing.")
        marker = f"tgfault:{data['run_id']}-".encode()
        deadline = time.monotonic() + 60
        stored = dead = 0
        last_change = time.monotonic()
        while time.monotonic() < deadline:
            now_stored = count(db, "SELECT count(*) FROM readings")
            now_dead = count(
                db, "SELECT count(*) FROM dead_letters WHERE instr(payload, ?) > 0", (marker,)
            )
            if (now_stored, now_dead) != (stored, dead):
                last_change = time.monotonic()
            stored, dead = now_stored, now_dead
            if stored >= readings and dead >= faults:
                break
            if time.monotonic() - last_change > 10:
                break  # nothing moves any more: verify will say what is missing
            time.sleep(0.25)
        say(
            f"{stored:,} of {readings:,} readings stored, {dead:,} of {faults:,} faulty messages dead-lettered"
        )

        step(5, "stopping the gateway cleanly")
        say("SIGTERM: it stops reading, drains its queue, commits, acknowledges, disconnects.")
        gateway.send_signal(signal.SIGTERM)
        code = gateway.wait(60)
        gateway = None
        say(f"exit code {code}; last log line: {tail(gateway_log, 1).strip()[:150]}")

        step(6, "verify: does the database hold exactly what the broker acknowledged?")
        verify = [python, "-m", "simulators", "verify", "--report", str(report), "--db", str(db)]
        show_command(["tidegate-sim", "verify", "--report", rel(report), "--db", rel(db)])
        verdict = subprocess.run(verify, check=False)

        step(7, "look at the data")
        sensors = subprocess.run(
            [python, "-m", "gateway", "sensors", "--db", str(db)],
            check=False,
            capture_output=True,
            text=True,
        )
        rows = sensors.stdout.splitlines()
        show_command(["tidegate", "sensors", "--db", rel(db)])
        for line in rows[:14]:
            print(f"      {line}")
        if len(rows) > 14:
            say(f"… {len(rows) - 14:,} more rows")
        if sensors.returncode != 0:
            print(sensors.stderr)
        query = [
            "query",
            "--db",
            str(db),
            "--sensor",
            "demo-00000",
            "--metric",
            "temperature",
            "--latest",
            "-n",
            "5",
        ]
        show_command(["tidegate", "query", "--db", rel(db), *query[3:]])
        out = subprocess.run(
            [python, "-m", "gateway", *query], check=False, capture_output=True, text=True
        )
        for line in (out.stdout or out.stderr).splitlines():
            print(f"      {line}")

        print()
        if verdict.returncode == 0:
            print(
                f"{BOLD}Demo complete: every acknowledged reading was stored exactly once.{RESET}"
            )
        else:
            print(f"{BOLD}Demo finished, but verify found a problem (see step 6).{RESET}")
        print(f"Explore: .venv/bin/tidegate stats --db {rel(db)}")
        print(f"         .venv/bin/tidegate query --db {rel(db)} --sensor demo-00001 --format csv")
        print("         .venv/bin/tidegate-sim run --help        (docs/simulator.md)")
        return verdict.returncode
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(30)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait(5)
        if broker is not None:
            broker.stop()
        else:
            # Leave nothing behind on a shared broker: drop the gateway's persistent session.
            clear_session(host, port, f"tidegate-{prefix}")


if __name__ == "__main__":
    no_binary = shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists()
    if no_binary and not mqtt_answers("127.0.0.1", 1883):
        print("demo: no broker on localhost:1883 and no mosquitto binary: run `make mosquitto`")
        sys.exit(1)
    sys.exit(main())
