"""Settings: ``config.toml`` + environment (``TIDEGATE_<SECTION>__<KEY>``) → pydantic models.

Precedence, lowest first: model defaults, the TOML file, environment variables. Any
problem raises :class:`~gateway.errors.ConfigError` naming the dotted key, which the CLI
prints as one line and exits 2.

Environment values are parsed as JSON when they look like JSON (numbers, booleans,
lists, objects) and as plain strings otherwise, so ``TIDEGATE_MQTT__PORT=1884`` and
``TIDEGATE_SUBSCRIPTIONS='[{"topic": "a/#"}]'`` both work. Secrets (``password``,
``token``) are always taken as the string given: ``TIDEGATE_API__TOKEN=null`` is the
token ``null``, never "no token".
"""

from __future__ import annotations

import json
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.errors import ConfigError, DecodeError
from gateway.parsing import (
    is_loopback_host,
    parse_duration_ms,
    parse_retention_ms,
    parse_size,
    resolve_timezone,
)
from gateway.topics import (
    MAX_TOPIC_BYTES,
    SHARE_PREFIX,
    TopicTemplate,
    check_share_group,
    check_topic_filter,
)
from gateway.validation import Limits, check_name_map, parse_iso_ms

ENV_PREFIX = "TIDEGATE_"
DEFAULT_CONFIG_PATH = Path("config.toml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Section):
    """``[mqtt.tls]``: TLS to the broker. Enabled when ``enabled`` or any file is set."""

    enabled: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False

    @property
    def active(self) -> bool:
        return self.enabled or self.ca is not None or self.cert is not None

    @model_validator(mode="after")
    def _files_exist(self) -> TlsConfig:
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: file not found: {path}")
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key must be given together")
        return self


class MqttConfig(_Section):
    """``[mqtt]``: the broker connection."""

    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = Field("tidegate", min_length=1, max_length=128)
    username: str | None = None
    password: SecretStr | None = None
    keepalive: int = Field(30, ge=5, le=65535)
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0)
    receive_maximum: int = Field(1000, ge=1, le=65535)
    connections: int = Field(1, ge=1, le=64)
    shared_group: str | None = None
    slots: int = Field(8, ge=1, le=256)
    """Writing straight into PostgreSQL with a ``shared_group``: broker sessions of the
    group (client ids ``<client_id>-0`` …), spread over its live processes and taken
    over from a dead one (``docs/central.md``, decision 0124). Ignored otherwise."""
    slot_claim_interval_s: float = Field(5.0, gt=0, le=300)
    """How often a group member checks the slots: a dead member's slots are taken over
    within about this long after PostgreSQL noticed the death."""
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    buffer_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024, le=1 << 30)
    broker_stats: bool = True
    max_packet_size: int = Field(0, ge=0, le=268_435_455)
    tls: TlsConfig = TlsConfig()

    @field_validator("shared_group")
    @classmethod
    def _group_is_valid(cls, value: str | None) -> str | None:
        return None if value is None else check_share_group(value)

    @model_validator(mode="after")
    def _shared_needs_group(self) -> MqttConfig:
        if self.connections > 1 and not self.shared_group:
            raise ValueError("connections > 1 needs shared_group (MQTT shared subscription)")
        return self


Format = Literal["json", "senml", "senml-cbor", "influx", "raw", "auto"]


class SubscriptionConfig(_Section):
    """``[[subscriptions]]``: one topic filter with its payload format and topic mapping."""

    topic: str = Field(min_length=1)
    qos: Literal[0, 1, 2] = 1
    format: Format = "json"
    topic_template: str | None = None
    topic_wins: bool = False
    name: str = ""
    # Codec options (used by the codecs that understand them).
    ts_field: str = "ts"
    ts_format: Literal["auto", "s", "ms", "us", "ns", "iso"] = "auto"
    sensor_id_field: str = "sensor_id"
    metric_field: str = "metric"
    value_field: str = "value"
    unit_field: str = "unit"
    tags_field: str = "tags"
    flatten_separator: str = "."
    influx_precision: Literal["auto", "s", "ms", "us", "ns"] = "ns"
    # Mapping options (gateway/codecs/mapping.py, docs/formats.md).
    timezone: str | None = None
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    rename: dict[str, str] = Field(default_factory=dict)
    strip_prefix: str = ""
    units: dict[str, str] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        """The name used in metrics and dead letters."""
        return self.name or self.topic

    @field_validator("topic")
    @classmethod
    def _filter_is_valid(cls, value: str) -> str:
        return check_topic_filter(value)  # ValueError names the rule; pydantic adds the key

    @model_validator(mode="after")
    def _template_is_valid(self) -> SubscriptionConfig:
        if self.topic_template is not None:
            TopicTemplate.parse(self.topic_template)  # raises ValueError on a bad template
        return self

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, value: str | None) -> str | None:
        resolve_timezone(value)  # ValueError names the problem; pydantic adds the key
        return value

    @field_validator("units")
    @classmethod
    def _units_are_usable(cls, value: dict[str, str]) -> dict[str, str]:
        check_name_map(value, "unit", Limits())
        return value

    @field_validator("rename")
    @classmethod
    def _renames_are_usable(cls, value: dict[str, str]) -> dict[str, str]:
        check_name_map(value, "metric", Limits())
        return value


class PipelineConfig(_Section):
    """``[pipeline]``: queue, batching and shutdown."""

    queue_size: int = Field(10_000, ge=1, le=10_000_000)
    batch_size: int = Field(20_000, ge=1, le=1_000_000)
    flush_interval_ms: int = Field(1000, ge=0, le=600_000)
    commit_on_idle: bool = True
    max_payload_bytes: int = Field(256 * 1024, ge=16, le=64 * 1024 * 1024)
    max_topic_bytes: int = Field(1024, ge=16, le=65_535)
    shutdown_timeout_s: float = Field(10.0, gt=0)
    retry_max_s: float = Field(30.0, gt=0)
    lag_threshold_s: float = Field(30.0, gt=0, le=86_400)


class RetentionConfig(_Section):
    """``[storage.retention]``: how long each tier is kept ("14d", "90d", "5y", "forever")."""

    raw: str = "14d"
    rollup_1m: str = "90d"
    rollup_1h: str = "5y"

    @field_validator("raw", "rollup_1m", "rollup_1h")
    @classmethod
    def _duration_parses(cls, value: str) -> str:
        parse_retention_ms(value)  # ValueError names the problem; pydantic adds the key
        return value


SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
PASSWORD_ENV = "PGPASSWORD"
"""libpq's variable, honoured as the last source of a PostgreSQL password."""


class PostgresConfig(_Section):
    """A PostgreSQL server to write to (``[storage.postgresql]``; the forwarder's
    ``[upstream]`` embeds the same keys). ``docs/central.md``.

    The password never sits in ``url`` (which is printed): it comes from ``password``
    (``TIDEGATE_<SECTION>__PASSWORD``), else ``password_file``, else ``PGPASSWORD``
    (else libpq's ``~/.pgpass``, which asyncpg reads itself). ``sslmode`` and the
    ``ssl*`` files mean what they mean to libpq. ``statement_timeout_s`` bounds every
    statement twice: on the server (``statement_timeout``) and on the client, so a
    silently dropped network fails the batch instead of hanging it.
    """

    url: str = Field(min_length=1)
    password: SecretStr | None = None
    password_file: Path | None = None
    sslmode: SslMode = "prefer"
    sslrootcert: Path | None = None
    sslcert: Path | None = None
    sslkey: Path | None = None
    connect_timeout_s: float = Field(10.0, gt=0, le=3600)
    statement_timeout_s: float = Field(30.0, gt=0, le=86_400)
    keepalive_s: int = Field(30, ge=1, le=7200)
    """TCP keepalive idle time (and probe interval) on the client's socket and, via
    ``tcp_keepalives_idle``, the server's: a dead peer is noticed in about 4×."""
    application_name: str = Field("tidegate", max_length=63)

    @property
    def shown_url(self) -> str:
        """The URL as it may be printed: scheme, user, host, port and database only."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{user}{host}{port}{parts.path}"

    @field_validator("url")
    @classmethod
    def _url_is_postgresql(cls, value: str) -> str:
        check_postgres_url(value)
        return value

    @model_validator(mode="after")
    def _secrets_and_files(self) -> PostgresConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        for name in ("password_file", "sslrootcert", "sslcert", "sslkey"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: file not found: {path}")
        if (self.sslcert is None) != (self.sslkey is None):
            raise ValueError("sslcert and sslkey must be given together")
        return self


def check_postgres_url(url: str) -> None:
    """ValueError unless ``url`` is ``postgresql://[user@]host[:port]/database`` (or
    ``postgres://``) without a password in it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a PostgreSQL URL: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("must start with postgresql:// (postgresql://user@host:5432/database)")
    if parts.password is not None:
        raise ValueError(
            "holds a password, and URLs get printed: give it in password,"
            " password_file or PGPASSWORD instead"
        )
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError("names no host (postgresql://user@host:5432/database)")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    if not parts.path.strip("/"):
        raise ValueError("names no database (postgresql://user@host:5432/database)")


class UpstreamConfig(PostgresConfig):
    """``[upstream]``: forward every stored reading to a central PostgreSQL, exactly once
    (``docs/upstream.md``). The server keys are :class:`PostgresConfig`'s (password from
    ``TIDEGATE_UPSTREAM__PASSWORD``, ``password_file`` or ``PGPASSWORD``)."""

    gateway_id: str | None = Field(None, min_length=1, max_length=128)
    """The id this edge's series and position carry centrally. Default: the host name."""
    batch_size: int = Field(20_000, ge=1, le=1_000_000)
    max_rate: float = Field(0.0, ge=0)
    """Readings per second at most while catching up (0: no cap)."""
    interval_s: float = Field(0.5, gt=0, le=3600)
    """How often an idle forwarder looks for new readings."""
    full_policy: Literal["stop", "drop_oldest"] = "stop"
    """When the local disk fills with unforwarded readings: hold ingestion (``stop``) or
    drop the oldest unforwarded readings, logged and counted (``drop_oldest``)."""
    retry_min_s: float = Field(0.5, gt=0, le=3600)
    retry_max_s: float = Field(30.0, gt=0, le=3600)
    degraded_after_s: float = Field(60.0, gt=0, le=7 * 86_400)
    """``/readyz`` is degraded once forwarding has failed this long (unreachable, refused),
    or the oldest unforwarded reading is this old."""
    maintenance: bool = True
    """Run central maintenance (partitions, rollups, retention) from this forwarder too,
    under its advisory lock (one process at a time does it)."""
    maintenance_interval_s: float = Field(60.0, gt=0, le=86_400)
    retention: RetentionConfig = RetentionConfig()
    """Central retention applied by this forwarder's maintenance (every writer into one
    database should use the same)."""

    @field_validator("gateway_id")
    @classmethod
    def _gateway_id_is_printable(cls, value: str | None) -> str | None:
        if value is not None and (value != value.strip() or not value.isprintable()):
            raise ValueError(f"{value!r} must be printable, without surrounding spaces")
        return value

    @model_validator(mode="after")
    def _retry_bounds(self) -> UpstreamConfig:
        if self.retry_max_s < self.retry_min_s:
            raise ConfigError("upstream.retry_max_s", "is below upstream.retry_min_s")
        return self


WEAK_SYNCHRONOUS_NAME = "NORMAL_LOSES_ACKS_ON_POWER_CUT"
"""``storage.synchronous`` for SQLite's ``NORMAL``: commits are not fsynced, so a power
cut loses readings that were already acknowledged (the broker will not resend them)."""
WEAK_SYNCHRONOUS = frozenset({"NORMAL", "OFF"})
"""SQLite's own names for modes that lose acknowledged readings: refused by name."""


class StorageConfig(_Section):
    """``[storage]``: the SQLite database and its lifecycle (``docs/storage.md``), or
    with ``backend = "postgresql"`` a central PostgreSQL written directly
    (``[storage.postgresql]``, ``docs/central.md``)."""

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    postgresql: PostgresConfig | None = None
    """The server when ``backend = "postgresql"`` (required then, refused otherwise)."""
    gateway_id: str | None = Field(None, min_length=1, max_length=128)
    """The id this gateway's series carry centrally (``backend = "postgresql"``).
    Default: ``mqtt.shared_group`` if set (every member of a direct-mode group must
    write under one id, so a message redelivered to another member meets its first
    copy), else the host name."""
    path: Path = Path("tidegate.db")
    synchronous: Literal["FULL", "EXTRA", "NORMAL_LOSES_ACKS_ON_POWER_CUT"] = "FULL"
    """How each commit reaches the disk (``docs/decisions/0080``). ``FULL`` (default): the
    WAL is fsynced before the batch's PUBACKs go out. The weak mode's name says what it
    costs: acknowledged readings since the last checkpoint are gone after a power cut."""
    busy_timeout_ms: int = Field(5000, ge=0)
    dead_letter_max_payload: int = Field(64 * 1024, ge=0)
    dead_letter_max_rows: int = Field(100_000, ge=1)
    series_cache_size: int = Field(100_000, ge=100)
    max_series: int = Field(250_000, ge=0)
    max_new_series_per_message: int = Field(1_000, ge=0)
    retention: RetentionConfig = RetentionConfig()
    max_size: str = "0"
    min_free_disk: str = "200MB"
    full_policy: Literal["purge_oldest", "stop"] = "purge_oldest"
    maintenance_interval_s: float = Field(10.0, gt=0, le=3600)
    checkpoint_interval_s: float = Field(30.0, gt=0, le=3600)
    step_budget_ms: float = Field(5.0, gt=0, le=1000)
    compaction_rows: int = Field(50_000, ge=1000, le=1_000_000)
    hot_max_age_s: float = Field(120.0, ge=1, le=86_400)
    integrity_check: Literal["quick", "full", "off"] = "quick"

    @field_validator("max_size", "min_free_disk")
    @classmethod
    def _size_parses(cls, value: str) -> str:
        parse_size(value)
        return value

    @field_validator("synchronous", mode="before")
    @classmethod
    def _honest_synchronous(cls, value: object) -> object:
        if isinstance(value, str) and value.upper() in WEAK_SYNCHRONOUS:
            raise ValueError(
                f"{value} loses acknowledged readings on a power cut; write"
                f' "{WEAK_SYNCHRONOUS_NAME}" to accept that, or use "FULL" (the default)'
            )
        return value

    @model_validator(mode="after")
    def _backend_has_its_server(self) -> StorageConfig:
        if self.backend == "postgresql" and self.postgresql is None:
            raise ConfigError(
                "storage.postgresql.url",
                'required with storage.backend = "postgresql"'
                ' ([storage.postgresql] url = "postgresql://user@host:5432/db")',
            )
        if self.backend != "postgresql" and self.postgresql is not None:
            raise ConfigError(
                "storage.backend",
                '[storage.postgresql] is set but backend is "sqlite";'
                ' write backend = "postgresql" to use it',
            )
        return self

    @property
    def sqlite_synchronous(self) -> str:
        """The value for SQLite's ``PRAGMA synchronous``."""
        return "NORMAL" if self.synchronous == WEAK_SYNCHRONOUS_NAME else self.synchronous


class ValidationConfig(_Section):
    """``[validation]``: what a reading must look like."""

    max_name_length: int = Field(128, ge=1, le=4096)
    min_ts: str = "2000-01-01T00:00:00Z"
    max_future_s: int = Field(86_400, ge=0)
    max_readings_per_message: int = Field(10_000, ge=1)

    def limits(self) -> Limits:
        return Limits(
            max_name_length=self.max_name_length,
            min_ts_ms=parse_iso_ms(self.min_ts),
            max_future_ms=self.max_future_s * 1000,
            max_readings_per_message=self.max_readings_per_message,
        )

    @model_validator(mode="after")
    def _min_ts_parses(self) -> ValidationConfig:
        try:
            self.limits()
        except DecodeError as exc:
            raise ValueError(f"min_ts: {exc.reason}") from None
        return self


class LogConfig(_Section):
    """``[log]``: logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ApiConfig(_Section):
    """``[api]``: the HTTP API, Prometheus metrics and dashboard (``docs/api.md``).

    Bound to a non-loopback address, a bearer token (``token``, ``TIDEGATE_API__TOKEN``
    or ``token_file``) is required unless ``allow_insecure_bind`` says otherwise.
    """

    enabled: bool = True
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8080, ge=0, le=65535)
    token: SecretStr | None = None
    token_file: Path | None = None
    allow_insecure_bind: bool = False
    max_rows: int = Field(10_000, ge=1, le=1_000_000)
    max_export_rows: int = Field(1_000_000, ge=1, le=100_000_000)
    max_range: str = "31d"
    max_buckets: int = Field(10_000, ge=1, le=1_000_000)
    query_timeout_s: float = Field(10.0, gt=0, le=3600)
    query_threads: int = Field(2, ge=1, le=16)
    max_exports: int = Field(2, ge=1, le=64)
    export_timeout_s: float = Field(600.0, gt=0, le=86_400)
    rate_limit_per_s: float = Field(20.0, ge=0)
    rate_limit_burst: int = Field(60, ge=1)
    max_request_bytes: int = Field(16_384, ge=0)
    max_connections: int = Field(64, ge=1, le=10_000)
    max_connections_per_client: int = Field(32, ge=1, le=10_000)
    header_timeout_s: float = Field(10.0, gt=0, le=600)
    send_timeout_s: float = Field(30.0, gt=0, le=3600)
    stale_after_s: int = Field(300, ge=1)
    cors_origins: list[str] = Field(default_factory=list)
    allowed_hosts: list[str] = Field(default_factory=list)

    @field_validator("allowed_hosts")
    @classmethod
    def _host_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            name = pattern.removeprefix("*.")
            bad = not name or "*" in name or any(c.isspace() or c in "/:@[]" for c in name)
            if bad and pattern != "*":
                raise ValueError(
                    f"{pattern[:60]!r} is not a host name (use gateway.local, *.example.org or *)"
                )
        return value

    @model_validator(mode="after")
    def _exposure_is_intended(self) -> ApiConfig:
        try:
            parse_duration_ms(self.max_range)
        except ValueError as exc:
            raise ConfigError("api.max_range", str(exc)) from None
        if self.token is not None and self.token_file is not None:
            raise ValueError("set token or token_file, not both")
        if self.token is not None and not self.token.get_secret_value().strip():
            raise ConfigError("api.token", "is empty")
        if self.enabled and not is_loopback_host(self.host) and self.token is not None:
            check_token_length(self.token.get_secret_value(), "api.token", self.host)
        if self.token_file is not None and not Path(self.token_file).is_file():
            raise ConfigError("api.token_file", f"file not found: {self.token_file}")
        exposed = self.enabled and not is_loopback_host(self.host)
        unprotected = self.token is None and self.token_file is None
        if exposed and unprotected and not self.allow_insecure_bind:
            raise ConfigError(
                "api.token",
                f"required when api.host ({self.host}) is not a loopback address: set"
                " api.token, TIDEGATE_API__TOKEN or api.token_file"
                " (or api.allow_insecure_bind = true to serve without one)",
            )
        return self


MIN_EXPOSED_TOKEN = 16


def check_token_length(token: str, key: str, host: str) -> None:
    """An API exposed beyond loopback refuses a guessable token (ConfigError naming
    ``key``)."""
    if len(token.strip()) < MIN_EXPOSED_TOKEN:
        raise ConfigError(
            key,
            f"is shorter than {MIN_EXPOSED_TOKEN} characters, too easy to guess for an API"
            f" exposed on {host}; e.g. openssl rand -hex 24",
        )


Component = Literal["sensor", "binary_sensor", "number", "switch"]
DEFAULT_COMPONENTS: tuple[Component, ...] = ("sensor", "binary_sensor")


class DiscoveryConfig(_Section):
    """``[discovery]``: devices that announce themselves (docs/formats.md, decision 0130).

    ``homeassistant``: read Home Assistant MQTT discovery configs under ``prefix`` and
    store their entities' states with names and units, no ``[[subscriptions]]`` needed.
    ``zigbee2mqtt``: base topics (or ``true`` for ``["zigbee2mqtt"]``) whose
    ``bridge/devices`` list gives units to readings a subscription decodes.
    """

    homeassistant: bool = False
    prefix: str = Field("homeassistant", min_length=1, max_length=256)
    zigbee2mqtt: list[str] = Field(default_factory=list)
    components: list[Component] = Field(default_factory=lambda: list(DEFAULT_COMPONENTS))
    qos: Literal[0, 1, 2] = 1
    max_configs: int = Field(10_000, ge=1, le=1_000_000)
    state_file: Path | None = None
    """Default: ``<storage.path>.discovery.json`` (decision 0131)."""

    @field_validator("zigbee2mqtt", mode="before")
    @classmethod
    def _true_means_default_base(cls, value: Any) -> Any:
        if value is True:
            return ["zigbee2mqtt"]
        if value is False:
            return []
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_topic(cls, value: str) -> str:
        if "+" in value or "#" in value or value.startswith("/") or "\x00" in value:
            raise ValueError(f"{value!r} must be plain topic levels (no wildcards)")
        return value.rstrip("/")

    @field_validator("zigbee2mqtt")
    @classmethod
    def _bases_are_topics(cls, value: list[str]) -> list[str]:
        for base in value:
            if not base or "+" in base or "#" in base:
                raise ValueError(f"{base!r} must be a base topic such as 'zigbee2mqtt'")
        return value

    @property
    def active(self) -> bool:
        return self.homeassistant or bool(self.zigbee2mqtt)


def _default_subscriptions() -> list[SubscriptionConfig]:
    return [SubscriptionConfig(topic="sensors/#", topic_template="sensors/{sensor_id}/#")]


class Settings(_Section):
    """The whole configuration."""

    mqtt: MqttConfig = MqttConfig()
    subscriptions: Annotated[list[SubscriptionConfig], Field(min_length=1)] = Field(
        default_factory=_default_subscriptions
    )
    pipeline: PipelineConfig = PipelineConfig()
    storage: StorageConfig = StorageConfig()
    validation: ValidationConfig = ValidationConfig()
    log: LogConfig = LogConfig()
    api: ApiConfig = ApiConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    upstream: UpstreamConfig | None = None
    """Forwarding to a central PostgreSQL (``docs/upstream.md``); off when absent."""

    @model_validator(mode="after")
    def _filters_fit_the_shared_group(self) -> Settings:
        if self.upstream is not None and self.storage.backend == "postgresql":
            raise ConfigError(
                "upstream",
                'forwards a local store; with storage.backend = "postgresql" the gateway'
                " writes into PostgreSQL already (remove [upstream])",
            )
        limit = self.mqtt.max_packet_size
        needed = self.pipeline.max_payload_bytes + self.pipeline.max_topic_bytes + 1024
        if limit and limit < needed:
            raise ConfigError(
                "mqtt.max_packet_size",
                f"{limit:,} is too small for pipeline.max_payload_bytes +"
                f" max_topic_bytes (needs at least {needed:,}; 0 picks one)",
            )
        group = self.mqtt.shared_group
        for index, sub in enumerate(self.subscriptions):
            key = f"subscriptions[{index}].topic"
            if group and sub.topic.startswith(SHARE_PREFIX):
                raise ConfigError(
                    key,
                    "is already a shared subscription; with mqtt.shared_group set, give"
                    " the plain filter (the gateway adds $share/<group>/)",
                )
            if group and len(f"{SHARE_PREFIX}{group}/{sub.topic}".encode()) > MAX_TOPIC_BYTES:
                raise ConfigError(
                    key, f"with $share/{group}/ it is longer than {MAX_TOPIC_BYTES:,} bytes"
                )
        if self.slot_group:
            if self.mqtt.connections > 1:
                raise ConfigError(
                    "mqtt.connections",
                    "a direct-mode group (storage.backend = postgresql with"
                    " mqtt.shared_group) opens one connection per slot it holds: set"
                    " mqtt.slots instead",
                )
            if self.discovery.active:
                raise ConfigError(
                    "discovery",
                    "not available in a direct-mode group (storage.backend = postgresql"
                    " with mqtt.shared_group): its per-process subscriptions would ride on"
                    " broker sessions that move between processes",
                )
        return self

    @property
    def slot_group(self) -> bool:
        """Whether this gateway is a member of a direct-mode group sharing its broker
        sessions as client-id slots (``docs/central.md``, decision 0124)."""
        return self.storage.backend == "postgresql" and bool(self.mqtt.shared_group)


SECRET_KEYS = frozenset({"password", "token"})


def _env_value(text: str) -> Any:
    stripped = text.strip()
    if stripped[:1] in "[{" or stripped in ("true", "false", "null"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return text
    return text


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            raise ConfigError(name, "empty key segment in environment variable")
        if path[0] not in Settings.model_fields:
            continue  # TIDEGATE_CONFIG and friends are not settings
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(".".join(path), f"cannot set a key inside {part!r}")
            node = child
        node[path[-1]] = raw if path[-1] in SECRET_KEYS else _env_value(raw)


def _key_of(error: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    parts = [str(part) for part in error.get("loc", ())]
    # Subscriptions are addressed as subscriptions[0].topic, like TOML tables.
    out: list[str] = []
    for part in parts:
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}[{part}]"
        else:
            out.append(part)
    return ".".join(out)


def _message_of(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load settings from ``path`` (default ``$TIDEGATE_CONFIG`` or ``./config.toml`` if it
    exists), then the environment, then ``overrides`` (a nested dict, e.g. from CLI flags).

    Raises :class:`ConfigError` naming the first bad key.
    """
    env = os.environ if environ is None else environ
    if path is None:
        env_path = env.get(f"{ENV_PREFIX}CONFIG")
        path = (
            Path(env_path)
            if env_path
            else (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None)
        )
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("", f"config file not found: {path}") from None
        except OSError as exc:
            raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("", f"{path} is not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError("", f"{path} is not UTF-8 text") from None
    _apply_env(data, env)
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(_key_of(first, data), _message_of(first)) from None


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with every secret replaced by ``"***"``."""

    def mask(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: mask(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [mask(v) for v in node]
        if key in SECRET_KEYS and node is not None:
            return "***"
        return node

    dumped = settings.model_dump(mode="json")
    return {k: mask(v, k) for k, v in dumped.items()}


def local_gateway_id(settings: Settings | None) -> str:
    """The id this gateway's readings carry in the fleet (``docs/fleet.md``): the host
    name unless configured (with forwarding, ``upstream.gateway_id``; writing straight
    into PostgreSQL, ``storage.gateway_id``, whose default is ``mqtt.shared_group``). A
    local store labels its rows with it and answers a ``gateway`` filter naming it.
    ``None`` (no configuration at hand): the host name."""
    if settings is not None and settings.upstream is not None and settings.upstream.gateway_id:
        return settings.upstream.gateway_id
    if settings is not None and settings.storage.backend == "postgresql":
        if settings.storage.gateway_id:
            return settings.storage.gateway_id
        if settings.mqtt.shared_group:
            return settings.mqtt.shared_group
    return socket.gethostname() or "tidegate"
