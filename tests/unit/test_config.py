"""Config loading: TOML, environment overrides, one readable error naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import Settings, load_settings, masked_dump
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_repo_config_toml_is_valid_and_matches_defaults() -> None:
    settings = load_settings(REPO / "config.toml", environ={})
    defaults = Settings()
    assert settings.mqtt == defaults.mqtt
    assert settings.pipeline == defaults.pipeline
    assert settings.storage.path == defaults.storage.path
    assert [s.topic for s in settings.subscriptions] == ["sensors/+", "sensors/+/+"]


def test_env_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[mqtt]\nhost = "a"\nport = 1000\n')
    settings = load_settings(
        cfg,
        environ={
            "TIDEGATE_MQTT__PORT": "1884",
            "TIDEGATE_MQTT__PASSWORD": "pw",
            "TIDEGATE_PIPELINE__COMMIT_ON_IDLE": "false",
            "TIDEGATE_SUBSCRIPTIONS": '[{"topic": "x/#", "format": "json"}]',
            "TIDEGATE_CONFIG": "ignored-here",
        },
    )
    assert settings.mqtt.host == "a"
    assert settings.mqtt.port == 1884
    assert settings.mqtt.password is not None and settings.mqtt.password.get_secret_value() == "pw"
    assert settings.pipeline.commit_on_idle is False
    assert [s.topic for s in settings.subscriptions] == ["x/#"]


@pytest.mark.parametrize(
    ("toml", "env", "key", "fragment"),
    [
        ("[mqtt]\nport = 70000\n", {}, "mqtt.port", "65535"),
        ("[mqtt]\nprot = 1\n", {}, "mqtt.prot", "unknown key"),
        ("", {"TIDEGATE_MQTT__PORT": "abc"}, "mqtt.port", "integer"),
        ("[[subscriptions]]\nqos = 1\n", {}, "subscriptions[0].topic", "missing"),
        (
            '[[subscriptions]]\ntopic = "a/#"\nformat = "xml"\n',
            {},
            "subscriptions[0].format",
            "json",
        ),
        (
            '[[subscriptions]]\ntopic = "a/#"\ntopic_template = "a/{bad name}"\n',
            {},
            "subscriptions[0]",
            "placeholder",
        ),
        ('[storage]\nsynchronous = "SOMETIMES"\n', {}, "storage.synchronous", "NORMAL"),
        ("[mqtt]\nconnections = 2\n", {}, "mqtt", "shared_group"),
        ('[mqtt.tls]\nca = "/nonexistent/ca.crt"\n', {}, "mqtt.tls", "file not found"),
        ('[validation]\nmin_ts = "yesterday"\n', {}, "validation", "min_ts"),
    ],
)
def test_bad_config_names_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], key: str, fragment: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ=env)
    assert info.value.key == key
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unparseable_toml_and_missing_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[mqtt\nport=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_masked_dump_hides_secrets() -> None:
    settings = load_settings(None, environ={"TIDEGATE_MQTT__PASSWORD": "hunter2"})
    dumped = masked_dump(settings)
    assert dumped["mqtt"]["password"] == "***"
    assert "hunter2" not in repr(dumped)


def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[pipeline]\nbatch_size = 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "pipeline.batch_size" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_check_config_masks_password(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[mqtt]\npassword = "s3cret"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "s3cret" not in proc.stdout
    assert "config OK" in proc.stdout
