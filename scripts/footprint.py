#!/usr/bin/env python3
"""``make footprint``: what the gateway costs on a small machine, in its image.

Per platform (amd64 native; arm64/armv7 under qemu-user, marked emulated): start-up time
(docker run → /readyz answers), idle CPU over 30 s, then 1,000 simulated sensors at 1 Hz
(``tidegate-sim --format json-multi``: one message per sample, 3 readings) for 60 s from
the host into a private Mosquitto on a free loopback port: RSS, CPU, bytes written to disk
per reading (``/proc/1/io`` write_bytes of the container's process over the load window)
and ``tidegate-sim verify`` (exact). Figures for docs/raspberry-pi.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import Broker, free_port  # noqa: E402
from tests.support.docker import (  # noqa: E402
    GATEWAY_UID,
    PLATFORMS,
    base_image,
    build_image,
    docker,
    engine_problem,
    http_json,
    remove_image,
    removed_after,
)

NATIVE = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armv7"}.get(platform.machine())
SENSORS = 1000
LOAD_S = 60
IDLE_S = 30
TICKS = os.sysconf("SC_CLK_TCK")


def proc(name: str, what: str) -> str:
    return docker("exec", name, "cat", f"/proc/1/{what}", timeout=120)


def cpu_seconds(name: str) -> float:
    fields = proc(name, "stat").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(name: str) -> float:
    line = next(x for x in proc(name, "status").splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def write_bytes(name: str) -> int:
    line = next(x for x in proc(name, "io").splitlines() if x.startswith("write_bytes:"))
    return int(line.split()[1])


def readings(base: str) -> int:
    live = http_json(f"{base}/api/v1/live")
    return int(live["readings_stored"]) if isinstance(live, dict) else -1


# The SD-card settings of docs/raspberry-pi.md: one commit per second instead of one per
# idle moment (the broker's in-flight window must cover a second of traffic).
PROFILES = {
    "default": {},
    "sd-card": {
        "TIDEGATE_PIPELINE__COMMIT_ON_IDLE": "false",
        "TIDEGATE_PIPELINE__FLUSH_INTERVAL_MS": "1000",
    },
}


def measure(arch: str, image: str, workdir: Path, profile: str) -> dict[str, object]:
    emulated = arch != NATIVE
    data = workdir / f"data-{arch}-{profile}"
    data.mkdir(parents=True)
    os.chown(data, GATEWAY_UID, GATEWAY_UID)
    api_port = free_port()
    base = f"http://127.0.0.1:{api_port}"
    name = f"tidegate-footprint-{arch}-{secrets.token_hex(3)}"
    out: dict[str, object] = {"platform": PLATFORMS[arch], "emulated": emulated, "profile": profile}
    settings = [
        arg for key, value in PROFILES[profile].items() for arg in ("--env", f"{key}={value}")
    ]
    with Broker(workdir / f"broker-{arch}-{profile}") as broker, removed_after(name):
        started = time.monotonic()
        docker(
            "run", "--detach", "--name", name, "--platform", PLATFORMS[arch],
            "--network", "host", "--volume", f"{data}:/data",
            "--env", "TIDEGATE_MQTT__HOST=127.0.0.1", "--env", f"TIDEGATE_MQTT__PORT={broker.port}",
            "--env", f"TIDEGATE_API__PORT={api_port}", *settings, image, "run",
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while http_json(f"{base}/readyz") is None:
            if time.monotonic() > deadline:
                raise SystemExit(docker("logs", name, check=False))
            time.sleep(0.1)
        out["startup_s"] = round(time.monotonic() - started, 2)
        time.sleep(5)  # imports done, first maintenance pass over
        cpu0 = cpu_seconds(name)
        time.sleep(IDLE_S)
        out["idle_cpu_pct"] = round(100 * (cpu_seconds(name) - cpu0) / IDLE_S, 2)
        out["idle_rss_mib"] = round(rss_mib(name), 1)

        report = workdir / f"report-{arch}-{profile}.json"
        sim = subprocess.Popen(
            [
                *(str(ROOT / ".venv/bin/tidegate-sim"), "run", "--host", "127.0.0.1"),
                *("--port", str(broker.port), "--sensors", str(SENSORS), "--rate", "1"),
                *("--connections", "4", "--format", "json-multi", "--duration", str(LOAD_S)),
                *("--no-progress", "--quiet", "--report", str(report)),
            ]
        )
        time.sleep(10)  # ramp-up
        cpu0, bytes0, readings0, t0 = (
            cpu_seconds(name),
            write_bytes(name),
            readings(base),
            time.monotonic(),
        )
        samples = []
        while sim.poll() is None and time.monotonic() - t0 < LOAD_S:
            samples.append(rss_mib(name))
            time.sleep(5)
        cpu1, bytes1, readings1, t1 = (
            cpu_seconds(name),
            write_bytes(name),
            readings(base),
            time.monotonic(),
        )
        sim.wait(LOAD_S + 120)
        out["load_rss_mib_max"] = round(max(samples), 1)
        out["load_cpu_pct"] = round(100 * (cpu1 - cpu0) / (t1 - t0), 1)
        out["readings_per_s"] = round((readings1 - readings0) / (t1 - t0))
        out["bytes_written_per_reading"] = round(
            (bytes1 - bytes0) / max(1, readings1 - readings0), 1
        )
        verdict = "missing"
        for _ in range(60):  # the gateway may still be draining (emulated: slowly)
            result = subprocess.run(
                [
                    *(str(ROOT / ".venv/bin/tidegate-sim"), "verify", "--json"),
                    *("--report", str(report), "--db", str(data / "tidegate.db")),
                ],
                capture_output=True,
                text=True,
            )
            if result.returncode == 0:
                verdict = "exact"
                break
            time.sleep(2)
        out["verify"] = verdict
        out["verify_detail"] = json.loads(result.stdout) if result.stdout.startswith("{") else ""
        out["database_bytes_per_reading"] = (
            (http_json(f"{base}/api/v1/stats") or {}).get("database", {}).get("bytes_per_reading")  # type: ignore[union-attr]
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--platforms", default="amd64,arm64")
    parser.add_argument("--profiles", default="default,sd-card")
    args = parser.parse_args()
    arches = [a for a in args.platforms.split(",") if a]
    problem = engine_problem(emulation=any(a != NATIVE for a in arches))
    if problem:
        print(f"footprint: cannot run: {problem}")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="tidegate-footprint-"))
    results = []
    try:
        for arch in arches:
            tag = f"tidegate-footprint:{arch}"
            build_image(arch, tag, base_image(arch))
            for profile in args.profiles.split(","):
                results.append(measure(arch, tag, workdir, profile))
                print(json.dumps(results[-1]), flush=True)
            remove_image(tag)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0 if all(r["verify"] == "exact" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
