"""The Docker image of this machine's platform, built and run for real (``make test``).

Starts a Docker engine if none answers (scripts/ensure-docker.sh; skipped with its
reason where that is impossible), builds the image with scripts/build-image.sh on the
cached local Debian base, then: ``tidegate --version``, ``tidegate decode`` of a JSON and
a SenML-CBOR sample, a real ingest of 1,000 readings from a private Mosquitto, ``tidegate
query``, the image's own health check, and a graceful stop (SIGTERM → exit 0). The
emulated platforms (arm64, armv7) and the compose run are in ``make image-test``.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway
from tests.support.docker import (
    INGEST_READINGS,
    Build,
    build_image,
    check_platform,
    docker,
    engine_problem,
    remove_image,
    unique_tag,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.isolated,
    pytest.mark.slow,
    pytest.mark.timeout(900),
]

NATIVE = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armv7"}.get(platform.machine())


@pytest.fixture(scope="module")
def image() -> Iterator[Build]:
    if NATIVE is None:
        pytest.skip(f"no image platform for this machine ({platform.machine()})")
    problem = engine_problem()
    if problem is not None:
        pytest.skip(f"no Docker engine: {problem}")
    build = build_image(NATIVE, unique_tag(NATIVE))
    yield build
    remove_image(build.tag)


def test_image_is_small_non_root_and_health_checked(image: Build) -> None:
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image.tag))
    assert config["User"] == "tidegate"
    assert config["Entrypoint"] == ["tidegate"] and config["Cmd"] == ["run"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    # The local base is ~125 MB (Debian minbase + python3); tidegate adds its venv.
    assert image.size_bytes < 200e6, f"image grew to {image.size_bytes / 1e6:.0f} MB"
    pip = docker("run", "--rm", "--entrypoint", "python3", image.tag, "-m", "pip", check=False)
    assert "No module named pip" in pip or not pip  # nothing to install things with at run time


def test_image_runs_decodes_ingests_and_stops_cleanly(image: Build, tmp_path: Path) -> None:
    assert NATIVE is not None
    check = check_platform(image.tag, NATIVE, tmp_path, gateway.__version__, emulated=False)
    assert not check.failures, "\n".join(check.failures)
    assert check.version == f"tidegate {gateway.__version__}"
    assert check.decode_ok
    assert check.readings_queried == INGEST_READINGS
    assert check.health_ok, "the image's HEALTHCHECK command failed against a running gateway"
    assert check.exit_code == 0
    # The container's umask is 0022; the database and its WAL files are private anyway.
    database = ("tidegate.db", "tidegate.db-wal", "tidegate.db-shm")
    modes = {name: m for name, m in check.file_modes.items() if name in database}
    assert "tidegate.db" in modes and set(modes.values()) == {"0o600"}, check.file_modes
