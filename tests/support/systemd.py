"""The README's systemd commands under a real systemd: PID 1 of a container.

The build machines have no systemd running, so ``make image-test`` boots one: a local
Debian base plus Debian's systemd and mosquitto, run with CAP_SYS_ADMIN (systemd sets up
the unit's sandbox with mount namespaces). Into it go this checkout's sources and the
dependency wheels (downloaded on the host: pip reads ``PIP_NO_INDEX``/``PIP_FIND_LINKS``,
so the README's ``pip install '.[fast]'`` runs verbatim without network). Then the
README's commands (``sudo`` dropped: the container's shell is root), and checks: the
service becomes active, a simulated fleet is stored exactly (``tidegate-sim verify``),
its files are 0600, ``systemctl stop`` ends with ``Result=success``, and the online
``systemd-analyze security`` score is the documented one.
"""

from __future__ import annotations

import re
import secrets
import shlex
import tempfile
import time
from pathlib import Path

from tests.support.docker import ROOT, DockerError, base_image, docker, removed_after, run

IMAGE = "tidegate-systemd-test:bookworm-amd64"
DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
        systemd systemd-sysv mosquitto \\
    && rm -rf /var/lib/apt/lists/*
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
"""
SOURCES = ("pyproject.toml", "README.md", "config.toml", "gateway", "simulators", "deploy")


def readme_systemd_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Running it as a service (systemd)") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "README's systemd section has no sh block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def systemd_image() -> str:
    if run(["docker", "image", "inspect", IMAGE], 60, check=False).returncode != 0:
        with tempfile.TemporaryDirectory() as context:
            (Path(context) / "Dockerfile").write_text(DOCKERFILE)
            run(
                [
                    *("docker", "build", "--quiet", "--tag", IMAGE),
                    *("--build-arg", f"BASE_IMAGE={base_image('amd64')}", context),
                ],
                timeout=900,
            )
    return IMAGE


def _sh(name: str, script: str, timeout: float = 300, check: bool = True) -> str:
    result = run(["docker", "exec", name, "bash", "-c", script], timeout, check=check)
    return (result.stdout + result.stderr).decode(errors="replace")


def systemd_end_to_end(workdir: Path) -> list[str]:
    """Run the README's systemd commands under systemd; the failures (empty: passed)."""
    failures: list[str] = []
    wheels = workdir / "systemd-wheels"
    run(
        [
            *(str(ROOT / ".venv/bin/python"), "-m", "pip", "download", "--quiet"),
            *("--dest", str(wheels), "--only-binary=:all:", ".[fast]", "setuptools>=68", "wheel"),
        ],
        timeout=600,
    )
    for built in wheels.glob("tidegate-*"):
        built.unlink()  # the README installs tidegate from the checkout, not a wheel
    name = f"tidegate-systemd-{secrets.token_hex(3)}"
    with removed_after(name):
        docker(
            "run", "--detach", "--name", name, "--cap-add", "SYS_ADMIN",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run",
            "--tmpfs", "/run/lock", systemd_image(),
        )  # fmt: skip
        deadline = time.monotonic() + 90
        state = ""
        while time.monotonic() < deadline and state not in ("running", "degraded"):
            time.sleep(0.5)
            state = _sh(name, "systemctl is-system-running", 30, check=False).strip()
        if state not in ("running", "degraded"):
            return [f"systemd did not boot in the container (state {state!r})"]
        docker("exec", name, "mkdir", "-p", "/src")
        docker("cp", str(wheels), f"{name}:/wheels")
        for source in SOURCES:
            docker("cp", str(ROOT / source), f"{name}:/src/{source}")
        script = ["set -ex", "cd /src", "export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels"]
        for line in readme_systemd_commands():
            argv = shlex.split(line)
            script.append(shlex.join(argv[1:] if argv[0] == "sudo" else argv))
        try:
            _sh(name, "\n".join(script), timeout=600)
        except DockerError as exc:
            return [f"the README's systemd commands failed:\n{exc}"]
        failures += _check_service(name)
    return failures


def _check_service(name: str) -> list[str]:
    failures: list[str] = []
    journal = "journalctl -u tidegate --no-pager | tail -20"
    deadline = time.monotonic() + 60
    while "ready:" not in _sh(name, journal, check=False):
        if time.monotonic() > deadline:
            return [f"tidegate.service never became ready:\n{_sh(name, journal, check=False)}"]
        time.sleep(0.5)
    sim = (
        "/opt/tidegate/bin/tidegate-sim run --host localhost --sensors 100 --count 10"
        " --rate 5 --connections 2 --no-progress --quiet --report /root/report.json"
    )
    _sh(name, sim, timeout=300)
    verify = (
        "/opt/tidegate/bin/tidegate-sim verify --report /root/report.json"
        " --db /var/lib/tidegate/tidegate.db"
    )
    for _attempt in range(20):
        out = _sh(name, verify + "; echo exit=$?", check=False)
        if "exit=0" in out:
            break
        time.sleep(1)
    else:
        failures.append(f"verify under systemd:\n{out}")
    modes = _sh(name, "stat -c '%a %U %n' /var/lib/tidegate/tidegate.db*").split("\n")
    for line in filter(None, modes):
        mode, owner, path = line.split(" ", 2)
        if path.endswith((".db", ".db-wal", ".db-shm")) and (mode != "600" or owner != "tidegate"):
            failures.append(f"{path} is {mode} {owner}, not 600 tidegate")
    _sh(name, "systemctl stop tidegate", timeout=120)
    result = _sh(name, "systemctl show -p Result -p ExecMainStatus tidegate")
    if "Result=success" not in result or "ExecMainStatus=0" not in result:
        failures.append(f"stop: {result}\n{_sh(name, journal, check=False)}")
    score = re.search(
        r"exposure level for tidegate\.service: (\d+\.\d)",
        _sh(name, "systemd-analyze security tidegate"),
    )
    documented = (ROOT / "docs" / "raspberry-pi.md").read_text()
    if score is None or f"**{score.group(1)} OK**" not in documented:
        failures.append(
            f"online security score {score and score.group(1)} is not the documented one"
        )
    return failures
