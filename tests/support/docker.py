"""Docker for the image tests and ``make image-test``: an engine, local bases, builds,
and the per-platform check (version, decode, a real ingest of 1,000 readings, query,
graceful stop).

Everything goes through the ``docker`` CLI and the scripts a user runs
(scripts/ensure-docker.sh, scripts/debian-base.sh, scripts/build-image.sh), each call
bounded by a timeout. Containers of the check use the host's network namespace and talk
to a private Mosquitto on a free loopback port — never the service on 1883.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cbor2

from tests.support import Broker, free_port, iter_json_messages, publish_many

ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = {"amd64": "linux/amd64", "arm64": "linux/arm64", "armv7": "linux/arm/v7"}
GATEWAY_UID = 10001  # the image's tidegate user (docker/Dockerfile)
INGEST_READINGS = 1000


class DockerError(AssertionError):
    """A docker command failed or timed out; the message has its output."""


def run(
    args: Sequence[str],
    timeout: float,
    check: bool = True,
    input_bytes: bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command with a deadline; DockerError with its output when it fails."""
    try:
        result = subprocess.run(
            list(args),
            input=input_bytes,
            capture_output=True,
            timeout=timeout,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DockerError(f"{' '.join(args)}: no answer within {timeout:.0f} s") from exc
    if check and result.returncode != 0:
        out = (result.stdout + result.stderr).decode(errors="replace").strip()
        raise DockerError(f"{' '.join(args)} exited {result.returncode}:\n{out[-4000:]}")
    return result


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    """``docker ARGS`` → its stdout as text."""
    return run(["docker", *args], timeout, check).stdout.decode(errors="replace")


def engine_problem(emulation: bool = False, compose: bool = False) -> str | None:
    """None when a Docker engine answers (installing/starting one if root can), else the
    reason, for a skip. ``emulation``: arm64/armv7 containers must run too."""
    args = [str(ROOT / "scripts" / "ensure-docker.sh")]
    args += ["--emulation"] if emulation else []
    args += ["--compose"] if compose else []
    result = run(args, timeout=600, check=False)
    if result.returncode == 0:
        return None
    lines = result.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"scripts/ensure-docker.sh exited {result.returncode}"


def base_image(arch: str) -> str:
    """The cached local Debian bookworm base (made once with debootstrap)."""
    out = run([str(ROOT / "scripts" / "debian-base.sh"), arch], timeout=1200)
    return out.stdout.decode().strip().splitlines()[-1]


def mosquitto_image(tag: str = "tidegate-mosquitto:2") -> str:
    """docker/mosquitto.Dockerfile on the amd64 base: the compose file's broker here."""
    if run(["docker", "image", "inspect", tag], 60, check=False).returncode != 0:
        base = base_image("amd64")
        run(
            [
                *("docker", "build", "--quiet", "--build-arg", f"BASE_IMAGE={base}"),
                *("--file", "docker/mosquitto.Dockerfile", "--tag", tag, "docker"),
            ],
            timeout=600,
        )
    return tag


@dataclass
class Build:
    tag: str
    arch: str
    seconds: float
    size_bytes: int


def unique_tag(label: str) -> str:
    """An image tag of this run only: several worktrees may test on one engine at once."""
    return f"tidegate-test:{label}-{secrets.token_hex(3)}"


def context_dir(arch: str, tag: str) -> Path:
    """Where scripts/build-image.sh staged the wheels for ``tag``."""
    return ROOT / "build" / "image-context" / f"{arch}-{re.sub(r'[^A-Za-z0-9_.-]', '_', tag)}"


def remove_image(tag: str) -> None:
    """Remove ``tag`` and its staged build context (after a test)."""
    run(["docker", "image", "rm", tag], 120, check=False)
    for arch in PLATFORMS:
        shutil.rmtree(context_dir(arch, tag), ignore_errors=True)


def build_image(arch: str, tag: str, base: str | None = None) -> Build:
    """scripts/build-image.sh for ``arch`` on the local base (or ``base``)."""
    base = base or base_image(arch)
    started = time.monotonic()
    run(
        [
            *(str(ROOT / "scripts" / "build-image.sh"), "--platform", PLATFORMS[arch]),
            *("--base", base, "--tag", tag),
        ],
        timeout=1800,
    )
    seconds = time.monotonic() - started
    size = int(docker("image", "inspect", "--format", "{{.Size}}", tag).strip())
    return Build(tag, arch, seconds, size)


def compose_command() -> list[str]:
    """``docker compose`` (the plugin) if present, else Debian's ``docker-compose``."""
    if run(["docker", "compose", "version"], 30, check=False).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def http_json(url: str, timeout: float = 2.0) -> object | None:
    """GET ``url`` → parsed JSON, or None when it does not answer 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


@contextlib.contextmanager
def removed_after(name: str) -> Iterator[str]:
    """Yield the container name; force-remove the container afterwards."""
    try:
        yield name
    finally:
        run(["docker", "rm", "--force", "--volumes", name], 120, check=False)


def sample_senml_cbor(ts_s: float) -> bytes:
    return bytes(cbor2.dumps([{"n": "temperature", "u": "Cel", "v": 21.5, "t": ts_s}]))


@dataclass
class PlatformCheck:
    """What ``check_platform`` found for one image; ``failures`` empty = all passed."""

    arch: str
    emulated: bool
    version: str = ""
    decode_ok: bool = False
    startup_s: float | None = None
    ingest_s: float | None = None
    readings_queried: int = 0
    stop_s: float | None = None
    exit_code: int | None = None
    health_ok: bool = False
    rss_mib: float | None = None
    file_modes: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ingest_ok(self) -> bool:
        return self.readings_queried == INGEST_READINGS and not self.failures


def check_platform(
    image: str, arch: str, workdir: Path, expected_version: str, emulated: bool
) -> PlatformCheck:
    """Run the image's checks on ``arch``; never raises for a failed check (see failures)."""
    result = PlatformCheck(arch, emulated)
    platform = ["--platform", PLATFORMS[arch]]
    slow = 6.0 if emulated else 1.0  # qemu-user runs Python several times slower
    try:
        _check_cli(image, platform, slow, expected_version, result)
        _check_ingest(image, platform, slow, workdir, result)
    except DockerError as exc:
        result.failures.append(str(exc))
    return result


def _check_cli(
    image: str, platform: list[str], slow: float, expected: str, result: PlatformCheck
) -> None:
    result.version = docker("run", "--rm", *platform, image, "--version", timeout=60 * slow).strip()
    if result.version != f"tidegate {expected}":
        result.failures.append(f"--version printed {result.version!r}, not 'tidegate {expected}'")
    now_s = int(time.time())
    json_out = run(
        [
            *("docker", "run", "--rm", *platform, image, "decode", "--topic", "sensors/kitchen"),
            *("--payload", json.dumps({"temperature": 21.5, "ts": now_s * 1000})),
        ],
        timeout=60 * slow,
    ).stdout
    cbor_out = run(
        [
            *("docker", "run", "--rm", "-i", *platform, image, "decode"),
            *("--topic", "sensors/kitchen", "--format", "senml-cbor"),
        ],
        timeout=60 * slow,
        input_bytes=sample_senml_cbor(now_s),
    ).stdout
    rows = json.loads(json_out) + json.loads(cbor_out)
    got = [(r["sensor_id"], r["metric"], r["value"], r["unit"]) for r in rows]
    want = [("kitchen", "temperature", 21.5, None), ("kitchen", "temperature", 21.5, "Cel")]
    result.decode_ok = got == want
    if not result.decode_ok:
        result.failures.append(f"decode printed {got}, expected {want}")


def _check_ingest(
    image: str, platform: list[str], slow: float, workdir: Path, result: PlatformCheck
) -> None:
    data = workdir / f"data-{result.arch}"
    data.mkdir(parents=True, exist_ok=True)
    os.chown(data, GATEWAY_UID, GATEWAY_UID)
    data.chmod(0o750)
    api_port = free_port()
    name = f"tidegate-check-{result.arch}-{secrets.token_hex(3)}"
    with Broker(workdir / f"broker-{result.arch}") as broker, removed_after(name):
        started = time.monotonic()
        docker(
            "run", "--detach", "--name", name, *platform, "--network", "host",
            "--volume", f"{data}:/data",
            "--env", "TIDEGATE_MQTT__HOST=127.0.0.1",
            "--env", f"TIDEGATE_MQTT__PORT={broker.port}",
            "--env", f"TIDEGATE_MQTT__CLIENT_ID={name}",
            "--env", f"TIDEGATE_API__PORT={api_port}",
            image, "run",
            timeout=60 * slow,
        )  # fmt: skip
        base = f"http://127.0.0.1:{api_port}"
        if not _poll(lambda: http_json(f"{base}/readyz") is not None, 30 * slow):
            result.failures.append(f"not ready within {30 * slow:.0f} s:\n{_logs(name)}")
            return
        result.startup_s = time.monotonic() - started
        health = json.loads(
            docker("inspect", "--format", "{{json .Config.Healthcheck.Test}}", image)
        )
        probe = run(["docker", "exec", name, *health[1:]], 30 * slow, check=False)
        result.health_ok = health[0] == "CMD" and probe.returncode == 0

        published = time.monotonic()
        publish_many(broker.port, list(iter_json_messages(INGEST_READINGS, sensors=10)))

        def stored() -> bool:
            live = http_json(f"{base}/api/v1/live")
            return isinstance(live, dict) and live.get("readings_stored") == INGEST_READINGS

        if not _poll(stored, 60 * slow):
            result.failures.append(f"1,000 readings not stored in time:\n{_logs(name)}")
            return
        result.ingest_s = time.monotonic() - published
        result.rss_mib = _rss_mib(name)
        query = ("tidegate", "query", "--since", "1d", "--limit", "0", "--format", "json")
        rows = json.loads(docker("exec", name, *query, timeout=60 * slow))
        result.readings_queried = len({(r["sensor_id"], r["ts"]) for r in rows})
        if len(rows) != INGEST_READINGS or result.readings_queried != INGEST_READINGS:
            result.failures.append(f"query returned {len(rows)} rows, expected 1,000 distinct")
        stopping = time.monotonic()
        docker("stop", "--time", "30", name, timeout=60 * slow)
        result.stop_s = time.monotonic() - stopping
        result.exit_code = int(docker("inspect", "--format", "{{.State.ExitCode}}", name).strip())
        if result.exit_code != 0:
            result.failures.append(f"exit code {result.exit_code} after SIGTERM:\n{_logs(name)}")
        for path in sorted(data.iterdir()):
            result.file_modes[path.name] = oct(path.stat().st_mode & 0o777)


def _poll(predicate: object, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(interval)
    return False


def _logs(name: str) -> str:
    result = run(["docker", "logs", "--tail", "40", name], 60, check=False)
    return (result.stdout + result.stderr).decode(errors="replace")


def _rss_mib(name: str) -> float | None:
    """Resident memory of the container's main process (the gateway), from /proc."""
    out = run(["docker", "exec", name, "cat", "/proc/1/status"], 60, check=False).stdout
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None
