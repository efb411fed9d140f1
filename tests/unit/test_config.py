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
        ('[storage]\nsynchronous = "SOMETIMES"\n', {}, "storage.synchronous", "FULL"),
        ('[storage]\nsynchronous = "NORMAL"\n', {}, "storage.synchronous", "power cut"),
        ('[storage]\nsynchronous = "off"\n', {}, "storage.synchronous", "POWER_CUT"),
        ("[mqtt]\nconnections = 2\n", {}, "mqtt", "shared_group"),
        ("[mqtt]\nslots = 0\n", {}, "mqtt.slots", "greater than or equal to 1"),
        ("", {"TIDEGATE_MQTT__SLOTS": "many"}, "mqtt.slots", "integer"),
        ("[mqtt]\nslot_claim_interval_s = 0\n", {}, "mqtt.slot_claim_interval_s", "greater"),
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


@pytest.mark.parametrize("value", ["null", "true", "false", "1234", '{"a": 1}', " spaced "])
def test_secrets_from_the_environment_stay_strings(tmp_path: Path, value: str) -> None:
    """``TIDEGATE_API__TOKEN=null`` must not silently remove the file's token."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[api]\ntoken = "from-the-file-0123456789"\n[mqtt]\npassword = "p"\n')
    env = {"TIDEGATE_API__TOKEN": value, "TIDEGATE_MQTT__PASSWORD": value}
    settings = load_settings(cfg, environ=env)
    assert settings.api.token is not None
    assert settings.api.token.get_secret_value() == value
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == value


def test_non_secret_values_are_still_parsed_from_json() -> None:
    settings = load_settings(None, environ={"TIDEGATE_API__ENABLED": "false"})
    assert settings.api.enabled is False


def test_exposed_api_refuses_a_short_token() -> None:
    env = {"TIDEGATE_API__HOST": "0.0.0.0", "TIDEGATE_API__TOKEN": "fifteen-chars-x"}
    with pytest.raises(ConfigError, match="shorter than 16") as caught:
        load_settings(None, environ=env)
    assert caught.value.key == "api.token"
    env["TIDEGATE_API__TOKEN"] = "sixteen-chars-xx"
    assert load_settings(None, environ=env).api.token is not None
    # On loopback a short token is the owner's business.
    assert load_settings(None, environ={"TIDEGATE_API__TOKEN": "null"}).api.token is not None


def test_exposed_api_refuses_a_short_token_file(tmp_path: Path) -> None:
    from gateway.api.service import api_service

    secret = tmp_path / "token"
    secret.write_text("short\n")
    settings = load_settings(
        None,
        environ={"TIDEGATE_API__HOST": "0.0.0.0", "TIDEGATE_API__TOKEN_FILE": str(secret)},
    )
    with pytest.raises(ConfigError, match="shorter than 16") as caught:
        api_service(settings)
    assert caught.value.key == "api.token_file"


@pytest.mark.parametrize(
    ("toml", "key", "fragment"),
    [
        ('[storage]\nbackend = "postgresql"\n', "storage.postgresql.url", "required"),
        ('[storage]\nbackend = "mysql"\n', "storage.backend", "postgresql"),
        (
            '[storage.postgresql]\nurl = "postgresql://h/db"\n',
            "storage.backend",
            'backend = "postgresql"',
        ),
        (
            '[storage]\nbackend = "postgresql"\n[storage.postgresql]\nurl = "mysql://h/db"\n',
            "storage.postgresql.url",
            "postgresql://",
        ),
        (
            '[storage]\nbackend = "postgresql"\n[storage.postgresql]\n'
            'url = "postgresql://u:secret@h/db"\n',
            "storage.postgresql.url",
            "password",
        ),
        (
            '[storage]\nbackend = "postgresql"\n[storage.postgresql]\nurl = "postgresql://h"\n',
            "storage.postgresql.url",
            "database",
        ),
        (
            '[storage]\nbackend = "postgresql"\n[storage.postgresql]\n'
            'url = "postgresql://h:99999/db"\n',
            "storage.postgresql.url",
            "",
        ),
        (
            '[storage]\nbackend = "postgresql"\n[storage.postgresql]\n'
            'url = "postgresql://h/db"\nsslmode = "sometimes"\n',
            "storage.postgresql.sslmode",
            "verify-full",
        ),
        (
            '[storage]\nbackend = "postgresql"\n[storage.postgresql]\n'
            'url = "postgresql://h/db"\nsslrootcert = "/nonexistent/ca.pem"\n',
            "storage.postgresql",
            "file not found",
        ),
        (
            '[storage]\nbackend = "postgresql"\n[storage.postgresql]\n'
            'url = "postgresql://h/db"\nstatement_timeout_s = 0\n',
            "storage.postgresql.statement_timeout_s",
            "greater than 0",
        ),
    ],
)
def test_bad_postgresql_config_names_the_key(
    tmp_path: Path, toml: str, key: str, fragment: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    assert info.value.key == key
    assert fragment in str(info.value)


def test_postgresql_backend_password_and_gateway_id(tmp_path: Path) -> None:
    from gateway.config import local_gateway_id

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[storage]\nbackend = "postgresql"\n[storage.postgresql]\n'
        'url = "postgresql://tidegate@db.example:5433/central"\nsslmode = "require"\n'
        '[mqtt]\nshared_group = "plant"\n'
    )
    settings = load_settings(cfg, environ={"TIDEGATE_STORAGE__POSTGRESQL__PASSWORD": "s3cret"})
    pg = settings.storage.postgresql
    assert pg is not None and pg.sslmode == "require"
    assert pg.password is not None and pg.password.get_secret_value() == "s3cret"
    assert "s3cret" not in str(masked_dump(settings))
    # a direct-mode group shares one id: the shared group's name, unless configured
    assert local_gateway_id(settings) == "plant"
    named = load_settings(cfg, environ={"TIDEGATE_STORAGE__GATEWAY_ID": "site-a"})
    assert local_gateway_id(named) == "site-a"


GROUP_TOML = """
[mqtt]
shared_group = "plant"
{mqtt}
[storage]
backend = "postgresql"
[storage.postgresql]
url = "postgresql://tidegate@db.example/tidegate"
{extra}
"""


@pytest.mark.parametrize(
    ("mqtt", "extra", "key", "fragment"),
    [
        ("connections = 2", "", "mqtt.connections", "mqtt.slots"),
        ("", "[discovery]\nhomeassistant = true\n", "discovery", "direct-mode group"),
    ],
)
def test_a_direct_mode_group_refuses_what_cannot_move_between_members(
    tmp_path: Path, mqtt: str, extra: str, key: str, fragment: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(GROUP_TOML.format(mqtt=mqtt, extra=extra))
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    assert info.value.key == key and fragment in str(info.value)


def test_slot_group_only_with_postgresql_and_a_shared_group(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(GROUP_TOML.format(mqtt="", extra=""))
    assert load_settings(cfg, environ={}).slot_group
    cfg.write_text(GROUP_TOML.format(mqtt="", extra="").replace('shared_group = "plant"', ""))
    assert not load_settings(cfg, environ={}).slot_group
    assert not load_settings(None, environ={"TIDEGATE_MQTT__SHARED_GROUP": "plant"}).slot_group
