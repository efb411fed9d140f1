"""deploy/systemd: the unit is what the issue asks for, verifies cleanly, and the README's
install commands work.

There is no systemd running here (no PID 1 to start units), so the README's commands are
replayed into a scratch root instead: ``install`` lines copy for real, ``systemd-sysusers``
and ``systemd-analyze`` get ``--root``, the venv gets a ``tidegate`` that runs this
checkout's; only the ``systemctl`` lines are checked, not run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.main import build_parser
from gateway.config import load_settings

ROOT = Path(__file__).resolve().parents[3]
UNIT = ROOT / "deploy" / "systemd" / "tidegate.service"
SYSUSERS = ROOT / "deploy" / "systemd" / "tidegate.sysusers"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="no systemd-analyze: apt-get install systemd (make test does)"
)


def directives(path: Path = UNIT) -> dict[str, list[str]]:
    """``Section.Key`` → every value it is given (systemd keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def one(unit: dict[str, list[str]], key: str) -> str:
    values = unit.get(key)
    assert values and len(values) == 1, f"{key} must be set once"
    return values[0]


def test_unit_has_the_required_hardening_and_stop_behaviour() -> None:
    unit = directives()
    assert one(unit, "Service.User") == "tidegate" == one(unit, "Service.Group")
    assert one(unit, "Service.UMask") == "0077"
    assert one(unit, "Service.ProtectSystem") == "strict"
    assert one(unit, "Service.NoNewPrivileges") in ("yes", "true")
    assert one(unit, "Service.Restart") == "on-failure"
    assert one(unit, "Service.KillSignal") == "SIGTERM"
    assert one(unit, "Service.RestartPreventExitStatus") == "2"  # bad config: exit 2
    db = Path(one(unit, "Service.Environment").removeprefix("TIDEGATE_STORAGE__PATH="))
    assert db.is_absolute()
    assert str(db.parent) in one(unit, "Service.ReadWritePaths").split()
    assert db.parent == Path("/var/lib") / one(unit, "Service.StateDirectory")


def test_stop_timeout_is_above_the_drain_timeout() -> None:
    unit = directives()
    drain = load_settings(ROOT / "config.toml", environ={}).pipeline.shutdown_timeout_s
    stop = float(one(unit, "Service.TimeoutStopSec").removesuffix("s"))
    assert stop >= drain + 10, f"TimeoutStopSec={stop} leaves no margin over the {drain} s drain"


def test_exec_start_is_a_real_command_line() -> None:
    argv = shlex.split(one(directives(), "Service.ExecStart"))
    assert argv[0] == "/opt/tidegate/bin/tidegate"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run" and args.config == Path("/etc/tidegate/config.toml")


def readme_systemd_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Running it as a service (systemd)") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]


@needs_analyze
def test_readme_install_commands_give_a_unit_that_verifies(tmp_path: Path) -> None:
    """Replay the README's commands into ``tmp_path`` as the root directory."""
    scratch = tmp_path / "root"
    (scratch / "etc").mkdir(parents=True)
    # systemd-analyze --root needs the distribution's units (sysinit.target, …) there too.
    shutil.copytree("/lib/systemd/system", scratch / "usr/lib/systemd/system", symlinks=True)
    systemctl: list[list[str]] = []
    for argv in readme_systemd_commands():
        assert argv[0] == "sudo", f"README command not run as root: {argv}"
        argv = argv[1:]
        if argv[:3] == ["python3", "-m", "venv"]:
            (scratch / argv[3].lstrip("/") / "bin").mkdir(parents=True)
        elif argv[0].endswith("/bin/pip") and argv[1] == "install":
            # Not a 30 s install from PyPI: a tidegate that runs this checkout's.
            tidegate = scratch / argv[0].lstrip("/").replace("/pip", "/tidegate")
            tidegate.write_text(f'#!/bin/sh\nexec {sys.executable} -m gateway "$@"\n')
            tidegate.chmod(0o755)
        elif argv[0] == "install":
            source, dest = Path(argv[-2]), Path(argv[-1])
            assert (ROOT / source).is_file(), f"README installs a missing file {source}"
            subprocess.run(
                [*argv[:-2], str(ROOT / source), str(scratch / dest.relative_to("/"))],
                check=True,
            )
        elif argv == ["systemd-sysusers"]:
            subprocess.run(["systemd-sysusers", f"--root={scratch}"], check=True)
        elif argv[:2] == ["systemd-analyze", "verify"]:
            result = subprocess.run(
                [ANALYZE or "", "verify", "--man=no", f"--root={scratch}", *argv[2:]],
                capture_output=True,
                text=True,
            )
            # verify exits 0 even for unknown keys or bad values: any output is a failure.
            assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
                result.stdout + result.stderr
            )
        elif argv[0] == "systemctl":
            systemctl.append(argv)
        else:
            pytest.fail(f"README command the test does not know how to replay: {argv}")
    assert systemctl == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "tidegate"],
    ]
    passwd = (scratch / "etc/passwd").read_text()
    assert re.search(
        r"^tidegate:x:\d+:\d+:[^:]*:/var/lib/tidegate:/usr/sbin/nologin$", passwd, re.M
    )
    # The installed config plus the unit's environment is a valid gateway config.
    unit = directives(scratch / "etc/systemd/system/tidegate.service")
    env = dict([one(unit, "Service.Environment").split("=", 1)])
    settings = load_settings(scratch / "etc/tidegate/config.toml", environ=env)
    assert str(settings.storage.path) == "/var/lib/tidegate/tidegate.db"
    installed = scratch / "opt/tidegate/bin/tidegate"
    out = subprocess.run(
        [str(installed), "--version"], capture_output=True, text=True, check=True, env=os.environ
    )
    assert out.stdout.startswith("tidegate ")


@needs_analyze
def test_security_exposure_is_low_and_the_documented_one(tmp_path: Path) -> None:
    scratch = tmp_path / "root"
    (scratch / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, scratch / "etc/systemd/system/tidegate.service")
    result = subprocess.run(
        [ANALYZE or "", "security", "--offline=true", f"--root={scratch}", "tidegate.service"],
        capture_output=True,
        text=True,
    )
    found = re.search(r"Overall exposure level for tidegate\.service: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    score = found.group(1)
    assert float(score) <= 2.0, f"exposure {score}: the sandbox got weaker"
    for doc in ("docs/raspberry-pi.md", "README.md"):
        assert f"**{score} OK**" in (ROOT / doc).read_text(), f"{doc} should record {score}"
