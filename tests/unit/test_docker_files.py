"""docker/: the files parse, and everything they reference exists.

The image is built and run for real in tests/integration/test_image.py (and on three
platforms by ``make image-test``); these fast checks catch drift without an engine: the
Dockerfile is parsed into instructions and checked (base image as a build argument
defaulting to the slim Python image, non-root user, healthcheck on a real endpoint, only
what scripts/build-image.sh stages is copied, commands are real console scripts and
subcommands, nothing architecture-specific downloaded), the compose file is loaded with
PyYAML and its ports, paths, environment and commands are checked against the code, and
mosquitto.conf is started with the real broker when one is installed.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from gateway.cli.main import build_parser as gateway_parser
from gateway.config import load_settings
from simulators.broker import find_mosquitto, free_port, port_open, wait_until
from simulators.cli import build_parser as sim_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def exec_form(args: str) -> list[str]:
    """JSON exec form (["a", "b"]) or shell form."""
    if args.startswith("["):
        value = json.loads(args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value
    return shlex.split(args)


def console_scripts() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(data["project"]["scripts"])


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKER / "Dockerfile")


@pytest.fixture(scope="module")
def compose() -> dict[str, object]:
    data = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_dockerfile_instructions_are_known(dockerfile: list[tuple[str, str]]) -> None:
    known = {
        "FROM", "ARG", "ENV", "WORKDIR", "COPY", "RUN", "USER", "VOLUME", "HEALTHCHECK",
        "EXPOSE", "ENTRYPOINT", "CMD", "LABEL",
    }  # fmt: skip
    assert {word for word, _ in dockerfile} <= known
    assert dockerfile[0][0] in ("ARG", "FROM")


def test_base_image_is_a_build_argument_defaulting_to_slim_python(
    dockerfile: list[tuple[str, str]],
) -> None:
    bases = [args.split()[0] for word, args in dockerfile if word == "FROM"]
    assert bases and all(base == "${BASE_IMAGE}" for base in bases)
    default = [a for w, a in dockerfile if w == "ARG" and a.startswith("BASE_IMAGE=")]
    assert default and re.fullmatch(r"python:3\.1[1-9]-slim", default[0].split("=", 1)[1])
    assert dockerfile[0] == ("ARG", default[0])  # declared before the first FROM


def test_runs_as_a_non_root_user_with_a_healthcheck(dockerfile: list[tuple[str, str]]) -> None:
    users = [args for word, args in dockerfile if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    last_from = max(i for i, (w, _) in enumerate(dockerfile) if w == "FROM")
    useradd = [a for w, a in dockerfile[last_from:] if w == "RUN" and "useradd" in a]
    assert useradd and users[-1] in useradd[0]
    checks = [args for word, args in dockerfile if word == "HEALTHCHECK"]
    assert len(checks) == 1
    command = checks[0][checks[0].index("CMD") + 3 :].strip()
    argv = exec_form(command)
    assert argv[0] == "python3"  # in the official image and in Debian's
    url = re.search(
        r"http://127\.0\.0\.1:%s(/\w+)' % os\.environ\.get\('TIDEGATE_API__PORT', '(\d+)'\)",
        argv[2],
    )
    assert url is not None, argv[2]
    app = (ROOT / "gateway" / "api" / "app.py").read_text()
    assert f'Route("{url.group(1)}"' in app  # the endpoint exists
    assert int(url.group(2)) == load_settings(ROOT / "config.toml", environ={}).api.port


def test_copies_only_what_build_image_stages(dockerfile: list[tuple[str, str]]) -> None:
    script = (ROOT / "scripts" / "build-image.sh").read_text()
    staged = {"wheels/": 'mkdir -p "$CONTEXT/wheels"', "config.toml": 'cp config.toml "$CONTEXT/'}
    for word, args in dockerfile:
        if word != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert source in staged, f"COPY {source}: scripts/build-image.sh does not stage it"
            assert staged[source] in script
            assert (ROOT / source).exists() or source == "wheels/"
    assert "--only-binary=:all:" in script  # wheels for the target platform, nothing built


def test_entrypoint_and_cmd_are_real_commands(dockerfile: list[tuple[str, str]]) -> None:
    entry = exec_form(next(a for w, a in dockerfile if w == "ENTRYPOINT"))
    cmd = exec_form(next(a for w, a in dockerfile if w == "CMD"))
    assert entry == ["tidegate"] and entry[0] in console_scripts()
    gateway_parser().parse_args(cmd)  # SystemExit if not a real subcommand


def test_nothing_architecture_specific(dockerfile: list[tuple[str, str]]) -> None:
    text = (DOCKER / "Dockerfile").read_text().lower()
    for word in ("curl ", "wget ", "amd64.", "x86_64", "aarch64", "--platform="):
        assert word not in text
    assert not any(w == "ADD" for w, _ in dockerfile)


def test_compose_services_and_profiles(compose: dict[str, object]) -> None:
    services = compose["services"]
    assert isinstance(services, dict)
    assert {"mosquitto", "tidegate", "simulator"} <= set(services)
    assert services["simulator"]["profiles"] == ["simulator"]
    assert "profiles" not in services["tidegate"] and "profiles" not in services["mosquitto"]
    assert services["mosquitto"]["image"] == "${TIDEGATE_MOSQUITTO_IMAGE:-eclipse-mosquitto:2}"
    for name in ("tidegate", "simulator"):
        assert services[name]["image"] == "${TIDEGATE_IMAGE:-tidegate:latest}"
        assert "build" not in services[name]  # scripts/build-image.sh builds it
    # The simulator starts once the gateway is subscribed (/readyz), so nothing is dropped.
    assert services["simulator"]["depends_on"] == {"tidegate": {"condition": "service_healthy"}}
    test = services["tidegate"]["healthcheck"]["test"]
    assert test[0] == "CMD" and "/readyz" in test[-1]


def test_compose_publishes_on_loopback_only(compose: dict[str, object]) -> None:
    """Anyone reaching the broker could take over the gateway's session by client id."""
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        assert service.get("network_mode") != "host", name
    assert compose["services"]["mosquitto"]["ports"] == [
        "127.0.0.1:${TIDEGATE_MQTT_PORT:-1883}:1883"
    ]


def test_compose_volumes_and_mounts_exist(compose: dict[str, object]) -> None:
    services = compose["services"]
    named = set(compose["volumes"])
    for service in services.values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert target.startswith("/")
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"bind mount {source} missing"
            else:
                assert source in named, f"volume {source} not declared"
    data_mounts = [v for v in services["tidegate"]["volumes"] if v.endswith(":/data")]
    assert data_mounts, "the gateway's database must live in a volume"


def test_compose_environment_is_a_valid_gateway_config(compose: dict[str, object]) -> None:
    env = {k: str(v) for k, v in compose["services"]["tidegate"]["environment"].items()}
    settings = load_settings(ROOT / "config.toml", environ=env)  # ConfigError if not
    assert settings.mqtt.host == "mosquitto"
    assert str(settings.storage.path).startswith("/data/")


def test_simulator_command_parses(compose: dict[str, object]) -> None:
    simulator = compose["services"]["simulator"]
    assert simulator["entrypoint"] == ["tidegate-sim"]
    assert "tidegate-sim" in console_scripts()
    args = sim_parser().parse_args([str(a) for a in simulator["command"]])
    assert args.host == "mosquitto" and args.command == "run"
    # Its report lands beside the gateway's database, where `tidegate-sim verify` reads both.
    assert "tidegate-data:/data" in simulator["volumes"]
    assert str(args.report).startswith("/data/")


MOSQUITTO_KEYS = {
    "listener", "allow_anonymous", "persistence", "persistence_location", "autosave_interval",
    "max_inflight_messages", "max_queued_messages", "max_queued_bytes",
    "persistent_client_expiration", "max_packet_size", "log_dest", "log_type",
    "connection_messages", "password_file", "acl_file", "cafile", "certfile", "keyfile",
}  # fmt: skip


def test_mosquitto_conf_recommended_settings() -> None:
    lines = [
        line.split()
        for line in (DOCKER / "mosquitto.conf").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert {words[0] for words in lines} <= MOSQUITTO_KEYS
    conf = {words[0]: words[1:] for words in lines}
    assert conf["persistence"] == ["true"]
    assert int(conf["max_inflight_messages"][0]) >= 1000
    assert int(conf["max_queued_messages"][0]) >= 100_000
    assert conf["persistence_location"][0] == "/mosquitto/data/"


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
def test_mosquitto_accepts_the_conf(tmp_path: Path) -> None:
    port = free_port()
    text = (DOCKER / "mosquitto.conf").read_text()
    text = text.replace("/mosquitto/data/", f"{tmp_path}/")
    text = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", text, flags=re.M)
    tmp_path.chmod(0o777)  # run as root, mosquitto drops to its own user
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text)
    binary = find_mosquitto()
    assert binary is not None
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        up = wait_until(lambda: port_open("127.0.0.1", port) or proc.poll() is not None, 10)
        output = b"" if proc.poll() is None else (proc.stdout.read() if proc.stdout else b"")
        assert up and proc.poll() is None, output.decode(errors="replace")
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
