#!/usr/bin/env python3
"""``make image-test``: the image built and run on amd64, arm64 and armv7, then compose.

1. a Docker engine (started if none answers) with qemu-user-static for arm64/armv7;
2. per platform: the cached local Debian base (debootstrap once), scripts/build-image.sh,
   then ``tidegate --version``, ``tidegate decode`` (JSON and SenML-CBOR), a real ingest of
   1,000 readings from a private Mosquitto on a free loopback port, ``tidegate query``,
   the image's health check and a graceful stop;
3. on amd64, the README's Docker section command by command: compose up with mosquitto,
   tidegate and the simulator profile, ``tidegate-sim verify`` exact, down;
4. the README's systemd commands under a real systemd (PID 1 of a container,
   tests/support/systemd.py): active, fleet verified exact, 0600 files, clean stop;
5. a table per platform (emulated figures marked). Exit 0 only if everything passed.

``--platforms amd64,arm64`` narrows step 2; ``--no-compose`` skips step 3,
``--no-systemd`` step 4.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gateway  # noqa: E402
from tests.support import free_port  # noqa: E402
from tests.support.docker import (  # noqa: E402
    PLATFORMS,
    Build,
    DockerError,
    PlatformCheck,
    base_image,
    build_image,
    check_platform,
    compose_command,
    engine_problem,
    mosquitto_image,
    remove_image,
    run,
    unique_tag,
)
from tests.support.systemd import systemd_end_to_end  # noqa: E402

NATIVE = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armv7"}.get(platform.machine())


def say(text: str) -> None:
    print(f"image-test: {text}", flush=True)


def check_one(arch: str, workdir: Path) -> tuple[Build | None, PlatformCheck]:
    emulated = arch != NATIVE
    started = time.monotonic()
    try:
        base = base_image(arch)
        say(f"{arch}: base {base} ready in {time.monotonic() - started:.0f} s")
        build = build_image(arch, unique_tag(arch), base)
    except DockerError as exc:
        check = PlatformCheck(arch, emulated)
        check.failures.append(str(exc))
        return None, check
    say(f"{arch}: built {build.tag} ({build.size_bytes / 1e6:.1f} MB) in {build.seconds:.0f} s")
    check = check_platform(build.tag, arch, workdir, gateway.__version__, emulated)
    verdict = "ok" if not check.failures else "FAILED"
    say(f"{arch}: checks {verdict}" + "".join(f"\n  {f}" for f in check.failures))
    return build, check


def readme_docker_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Docker\n") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "README's Docker section has no sh block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def compose_end_to_end(workdir: Path) -> list[str]:
    """The README's Docker commands, in order, on this machine's platform; failures."""
    compose = compose_command()
    project = f"tidegate-image-test-{secrets.token_hex(3)}"
    image = unique_tag("compose")
    env = {
        "COMPOSE_PROJECT_NAME": project,
        "TIDEGATE_IMAGE": image,
        "TIDEGATE_BASE_IMAGE": base_image(NATIVE or "amd64"),
        "TIDEGATE_MOSQUITTO_IMAGE": mosquitto_image(),
        "TIDEGATE_MQTT_PORT": str(free_port()),  # never the host's 1883
        "TIDEGATE_API_PORT": str(free_port()),
    }
    say(f"compose: {' '.join(compose)}, project {project}")
    failures: list[str] = []
    commands = readme_docker_commands()
    down = [c for c in commands if c.endswith(" down")]
    try:
        for line in commands:
            argv = shlex.split(line)
            if argv[:2] == ["docker", "compose"]:
                argv = compose + argv[2:]
            started = time.monotonic()
            if "verify" in argv:
                # The gateway may still be committing the simulator's last messages.
                result = _retry(argv, env, attempts=10)
            else:
                result = run(argv, timeout=900, check=False, env=env)
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            took = time.monotonic() - started
            say(f"compose: $ {line}  → exit {result.returncode} in {took:.1f} s")
            if result.returncode != 0:
                failures.append(f"`{line}` exited {result.returncode}:\n{output[-3000:]}")
                break
            if "sensors" in argv and "exec" in argv:
                print(_indent(output, 12), flush=True)
                if output.count("\n") < 200:  # header + 200 simulated sensors x metrics
                    failures.append(f"`{line}` shows fewer than 200 sensors")
            if "verify" in argv:
                print(_indent(output, 20), flush=True)
            if "--profile simulator up -d" in line:
                time.sleep(20)  # let the fleet publish for a while
    finally:
        if down:
            argv = compose + shlex.split(down[0])[2:] + ["--volumes"]
            run(argv, timeout=300, check=False, env=env)
        remove_image(image)
    return failures


def _retry(argv: list[str], env: dict[str, str], attempts: int) -> object:
    for _ in range(attempts - 1):
        result = run(argv, timeout=300, check=False, env=env)
        if result.returncode == 0:
            return result
        time.sleep(2)
    return run(argv, timeout=300, check=False, env=env)


def _indent(text: str, max_lines: int) -> str:
    lines = text.splitlines()
    shown = lines[:max_lines] + (
        [f"… {len(lines) - max_lines} more lines"] if len(lines) > max_lines else []
    )
    return "\n".join("      " + line for line in shown)


def table(rows: list[tuple[Build | None, PlatformCheck]]) -> str:
    head = (
        "| platform | image size | build | start-up (run → ready) | --version | decode | "
        "ingest 1,000 + query | SIGTERM stop | RSS after ingest |"
    )
    lines = [head, "|" + "---|" * 9]  # an "(emulated)" platform: every figure of its row is
    for build, c in rows:
        mark = " (emulated)" if c.emulated else ""

        def fig(value: float | None, unit: str, digits: int = 1) -> str:
            return "—" if value is None else f"{value:.{digits}f} {unit}"

        ingest = f" ({fig(c.ingest_s, 's')})" if c.ingest_s is not None else ""
        lines.append(
            f"| {PLATFORMS[c.arch]}{mark} "
            f"| {f'{build.size_bytes / 1e6:.1f} MB' if build else '—'} "
            f"| {fig(build.seconds if build else None, 's', 0)} "
            f"| {fig(c.startup_s, 's')} "
            f"| {'ok' if c.version.startswith('tidegate ') else 'FAILED'} "
            f"| {'ok' if c.decode_ok else 'FAILED'} "
            f"| {'ok' if c.ingest_ok else 'FAILED'}"
            f"{ingest} "
            f"| {fig(c.stop_s, 's')}{'' if c.exit_code in (0, None) else f' exit {c.exit_code}'} "
            f"| {fig(c.rss_mib, 'MiB')} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--platforms", default="amd64,arm64,armv7")
    parser.add_argument("--no-compose", action="store_true")
    parser.add_argument("--no-systemd", action="store_true")
    args = parser.parse_args()
    arches = [a.strip() for a in args.platforms.split(",") if a.strip()]
    unknown = set(arches) - set(PLATFORMS)
    if unknown:
        parser.error(f"unknown platform(s) {sorted(unknown)}: choose from {sorted(PLATFORMS)}")
    if NATIVE is None:
        say(f"this machine ({platform.machine()}) is none of {sorted(PLATFORMS)}")
        return 2
    emulation = any(a != NATIVE for a in arches)
    problem = engine_problem(emulation=emulation, compose=not args.no_compose)
    if problem is not None:
        say(f"cannot run: {problem}")
        return 1
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tidegate-image-test-"))
    rows: list[tuple[Build | None, PlatformCheck]] = []
    try:
        for arch in arches:
            rows.append(check_one(arch, workdir))
        compose_failures = [] if args.no_compose else compose_end_to_end(workdir)
        systemd_failures = [] if args.no_systemd else systemd_end_to_end(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        for build, _check in rows:
            if build is not None:
                remove_image(build.tag)
    print()
    print(table(rows))
    print()
    failed = [c for _, c in rows if c.failures] or compose_failures or systemd_failures
    if not args.no_compose:
        print(
            f"compose end to end on {PLATFORMS[NATIVE]}: {'FAILED' if compose_failures else 'ok'}"
        )
        for failure in compose_failures:
            print(_indent(failure, 40))
    if not args.no_systemd:
        print(f"systemd end to end (README commands): {'FAILED' if systemd_failures else 'ok'}")
        for failure in systemd_failures:
            print(_indent(failure, 40))
    print(f"uptime: {os.getloadavg()[0]:.2f} load; total {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
