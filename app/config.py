"""Service configuration: the variables operators already use, plus new ones.

Every setting, its default and its meaning: docs/configuration.md.

Everything is read from the environment or a `.env` file with the `MANAGER_` prefix.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

StageName = Literal["preprocessing", "transcribing", "feedback"]
STAGES: tuple[StageName, ...] = ("preprocessing", "transcribing", "feedback")


# Loopback and the private ranges compose and Kubernetes networks draw from (RFC 1918,
# IPv6 unique local): where the ILPS gateway calls from.
DEFAULT_TRUSTED_CLIENTS = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)


class ConfigurationError(Exception):
    """Start-up configuration is unusable; the message is one line naming the variable(s)."""


class DownstreamService(BaseModel):
    """Where one audio service lives and how hard we may lean on it."""

    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["http", "https"] = "http"
    timeout: float = Field(default=30.0, gt=0, description="Seconds for one call.")
    concurrency: int = Field(default=4, ge=1, description="Calls in flight per process.")

    @property
    def base_url(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}"


class PreprocessingService(DownstreamService):
    timeout: float = Field(default=60.0, gt=0)


class TranscribingService(DownstreamService):
    # A neural network on the CPU, one request at a time per worker: slow and easily flooded.
    timeout: float = Field(default=300.0, gt=0)
    concurrency: int = Field(default=1, ge=1)


class FeedbackService(DownstreamService):
    pass


class Settings(BaseSettings):
    """All settings of one process. Build it once in `start.py` or a test and pass it down."""

    model_config = SettingsConfigDict(
        env_prefix="MANAGER_",
        env_file=".env",
        env_file_encoding="utf-8",
        # `MANAGER_X=` (as in .env.example) means "not set", not an empty value.
        env_ignore_empty=True,
        env_nested_delimiter="_",
        env_nested_max_split=2,
        extra="ignore",
    )

    # Debug logs and text log lines; never fake scores or an embedded database by itself.
    debug_mode: bool = False
    # Development opt-ins: a stage without a host is served by the in-process sandbox
    # (made-up assessments), and no database host starts an embedded PostgreSQL.
    sandbox_services: bool = False
    db_embedded: bool = False
    service_name: str = "ilps-service-task-manager"
    host: str = "0.0.0.0"
    port: int = Field(default=8064, ge=1, le=65535)

    db_postgres_password: SecretStr | None = None
    db_postgres_host: str | None = None
    db_postgres_user: str = "service_task_manager"
    db_postgres_name: str = "tasks"
    # One port, or one per host of a host list (`h1,h2` with `p1,p2`, as libpq takes them).
    db_postgres_port: Annotated[int | tuple[int, ...], NoDecode] = 5432
    db_pool_size: int = Field(default=10, ge=1)
    # Bounds on every database session, so a frozen or cut-off process cannot hold up the
    # others (see app/db/sessions.py and docs/operations.md).
    db_statement_timeout_seconds: float = Field(default=30.0, gt=0)
    db_lock_timeout_seconds: float = Field(default=5.0, gt=0)
    db_idle_in_transaction_timeout_seconds: float = Field(default=10.0, gt=0)
    db_keepalive_idle_seconds: int = Field(default=5, ge=1)
    db_tcp_user_timeout_seconds: float = Field(default=10.0, gt=0)
    db_embedded_data_dir: Path = Path(".data/postgres")

    service_preprocessing: PreprocessingService = Field(default_factory=PreprocessingService)
    service_transcribing: TranscribingService = Field(default_factory=TranscribingService)
    service_feedback: FeedbackService = Field(default_factory=FeedbackService)

    max_upload_mb: float = Field(default=25, gt=0)
    # Upload bytes held in memory at once across requests; more uploads wait their turn.
    upload_memory_mb: float = Field(default=64, gt=0)
    # A request body must keep arriving at this average rate after a grace period, or
    # the request is ended with 408: a stalled upload holds a connection and memory.
    upload_min_rate_kbps: float = Field(default=8, gt=0, description="KiB per second.")
    upload_rate_grace_seconds: float = Field(default=10, gt=0)
    # A connection must send each request's complete head within this, or it is closed.
    header_timeout_seconds: float = Field(default=10, gt=0)

    # The pipeline (see app/pipeline).
    worker_concurrency: int = Field(default=8, ge=0, description="0 runs no workers here.")
    worker_poll_seconds: float = Field(default=5.0, gt=0)
    worker_lease_seconds: float = Field(default=30.0, ge=1)
    pipeline_max_attempts: int = Field(default=5, ge=1)
    pipeline_backoff_base_seconds: float = Field(default=1.0, gt=0)
    pipeline_backoff_max_seconds: float = Field(default=60.0, gt=0)
    # Claims that took over an expired lease (the holder vanished), not retries.
    pipeline_max_claims: int = Field(default=20, ge=1)
    max_active_tasks_per_user: int = Field(default=2, ge=1)
    # A learner's voice is personal data: the audio of a task goes this long after the task
    # ends (completed or failed); 0 deletes it as the task ends. Results and history stay.
    audio_retention_hours: float = Field(default=168, ge=0)
    # Per-user caps on creation (429 beyond them), so one account cannot fill the disk.
    max_unfinished_tasks_per_user: int = Field(default=20, ge=1)
    max_stored_audio_mb_per_user: float = Field(default=500, gt=0)
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)

    # Logs: JSON lines for shippers, readable text for people; optional GELF to Graylog.
    log_format: Literal["text", "json"] | None = Field(
        default=None, description="Default: text in debug mode, json otherwise."
    )
    graylog_enable: bool = False
    graylog_host: str | None = None
    graylog_port: int = Field(default=12201, ge=1, le=65535)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The ILPS platform gives every service one shared .env. With "_" as the nesting
        # delimiter, a foreign MANAGER_SERVICE_FEEDBACK_HOST_ALIAS would be read as
        # service_feedback.host = {"alias": ...} and stop the service; so both sources
        # see only the names of real settings, and everything else is ignored.
        for source in (env_settings, dotenv_settings):
            if isinstance(source, EnvSettingsSource):
                source.env_vars = _only_settings(source.env_vars, source.env_prefix)
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @property
    def logs_as_json(self) -> bool:
        return self.log_format == "json" if self.log_format else not self.debug_mode

    # Verify gateway JWTs on the resource routes instead of trusting X-User-Id.
    auth_jwt_secret: SecretStr | None = None
    # When set, a token must name this audience / issuer (`aud` / `iss`).
    auth_jwt_audience: str | None = None
    auth_jwt_issuer: str | None = None
    # The networks whose X-User-Id header and legacy calls are believed (the gateway's):
    # loopback and the private ranges of a compose or Kubernetes network by default. A
    # comma-separated list; `*` (None here) trusts anyone who reaches the port.
    trusted_clients: Annotated[list[IPv4Network | IPv6Network] | None, NoDecode] = Field(
        default_factory=lambda: [ip_network(network) for network in DEFAULT_TRUSTED_CLIENTS]
    )
    # The proxies whose X-Forwarded-For names the client (uvicorn's forwarded_allow_ips,
    # comma-separated addresses or networks, `*` for any). Unset: the headers are ignored.
    forwarded_allow_ips: str | None = None
    # A JSON request body larger than this is refused with 413 while it streams in.
    json_body_max_kb: float = Field(default=64, gt=0)

    @field_validator("db_postgres_port", mode="before")
    @classmethod
    def _parse_ports(cls, value: object) -> object:
        if isinstance(value, str):
            ports = tuple(int(part) for part in value.split(",") if part.strip())
            if not ports or any(not 1 <= port <= 65535 for port in ports):
                raise ValueError("ports must be between 1 and 65535")
            return ports[0] if len(ports) == 1 else ports
        return value

    def database_hosts(self) -> list[tuple[str, int]]:
        """The configured servers as (host, port): one port for all, or one per host."""
        if not self.db_postgres_host:
            return []
        hosts = [host.strip() for host in self.db_postgres_host.split(",") if host.strip()]
        ports = self.db_postgres_port
        if isinstance(ports, int):
            return [(host, ports) for host in hosts]
        if len(ports) != len(hosts):
            raise ConfigurationError(
                "MANAGER_DB_POSTGRES_PORT must name one port, or one per host of "
                "MANAGER_DB_POSTGRES_HOST"
            )
        return list(zip(hosts, ports, strict=True))

    @field_validator("trusted_clients", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        """`10.0.0.0/8, 192.168.1.5` (a bare address is a one-address network); `*`: anyone."""
        if isinstance(value, str):
            if value.strip() == "*":
                return None
            items = [item.strip() for item in value.split(",") if item.strip()]
            if not items:
                raise ValueError("name at least one network, or * to trust anyone")
            return [ip_network(item, strict=False) for item in items]
        return value

    @property
    def trusts_everyone(self) -> bool:
        return self.trusted_clients is None

    @cached_property
    def json_body_max_bytes(self) -> int:
        return int(self.json_body_max_kb * 1024)

    def is_trusted_client(self, host: str | None) -> bool:
        """Is this peer address one whose X-User-Id and legacy calls are believed?"""
        if self.trusted_clients is None:
            return True
        try:
            address = ip_address(host or "")
        except ValueError:  # no address (a Unix socket) or not an IP: not trusted
            return False
        if address.version == 6 and address.ipv4_mapped is not None:  # a dual-stack socket
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted_clients)

    # The operator console and its API (docs/console.md): off (404) unless a token is set;
    # only trusted clients presenting it (Bearer header or the console's cookie) get in.
    operator_token: SecretStr | None = None

    # Completion webhooks (see app/webhooks and docs/webhooks.md). One secret, or two
    # separated by a space while rotating: both sign every delivery. Never handed out:
    # each receiver verifies with its own, derived (python -m app.webhooks.secrets URL).
    webhook_secret: SecretStr | None = None
    # Hosts (names or IP literals, comma-separated, `host` for any port or `host:port`)
    # that may take `http` callbacks and resolve to private, loopback or link-local
    # addresses: internal receivers.
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, description="A whole attempt.")
    webhook_max_age_hours: float = Field(default=24.0, gt=0)
    webhook_backoff_base_seconds: float = Field(default=5.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=600.0, gt=0)
    webhook_concurrency: int = Field(default=8, ge=0, description="0 sends nothing here.")
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    # Callback DNS lookups run on threads of their own (a name server that never answers
    # holds only these), at most this many at once for one user's task creations.
    webhook_dns_threads: int = Field(default=4, ge=1)
    webhook_dns_lookups_per_user: int = Field(default=2, ge=1)
    # Fairness between receivers (docs/webhooks.md, "Fairness"): one host's share of this
    # process's slots, its circuit breaker, and a cap on one user's pending deliveries.
    webhook_concurrency_per_host: int = Field(default=2, ge=1)
    webhook_breaker_failures: int = Field(default=5, ge=1)
    webhook_breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    webhook_breaker_max_cooldown_seconds: float = Field(default=600.0, gt=0)
    webhook_max_pending_per_user: int = Field(default=100, ge=0, description="0: no cap.")

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        """`lms-bridge, 10.0.0.7, lms:8443` (compared case-insensitively, without a
        trailing dot; with a port, only that port)."""
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            entries = [str(item).strip().lower().rstrip(".") for item in value if str(item).strip()]
            for entry in entries:
                allowed_host_entry(entry)  # a malformed one stops the start, named
            return entries
        return value

    # Live streams (see app/events).
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0)
    sse_max_followers: int = Field(default=20000, ge=1)
    sse_max_followers_per_user: int = Field(default=20, ge=1)
    # A client that reads nothing for this long (its socket buffers full) is disconnected.
    sse_send_timeout_seconds: float = Field(default=30.0, gt=0)

    @cached_property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @cached_property
    def max_stored_audio_bytes_per_user(self) -> int:
        return int(self.max_stored_audio_mb_per_user * 1024 * 1024)

    @property
    def uses_embedded_database(self) -> bool:
        return self.db_embedded and not self.db_postgres_host

    @property
    def serves_demo(self) -> bool:
        """The demo page is a development tool: debug mode or the sandbox asked for."""
        return self.debug_mode or self.sandbox_services

    def service(self, stage: StageName) -> DownstreamService:
        """The downstream service configuration of a pipeline stage."""
        service: DownstreamService = getattr(self, f"service_{stage}")
        return service

    def sandboxed_stages(self) -> list[StageName]:
        """Stages without a configured host, served by the in-process sandbox (asked for only)."""
        if not self.sandbox_services:
            return []
        return [stage for stage in STAGES if self.service(stage).host is None]

    def check_required(self) -> None:
        """Refuse to start when a required value is missing (see docs/configuration.md).

        Only the explicit development opt-ins stand in for a missing host: with
        MANAGER_DB_EMBEDDED a missing database host means "embedded PostgreSQL", with
        MANAGER_SANDBOX_SERVICES a missing service host means "the sandbox". Debug mode
        alone never does, so a forgotten host cannot turn into made-up assessments.
        """
        missing: list[str] = []
        if not self.db_postgres_host:
            if not self.db_embedded:
                missing.append("MANAGER_DB_POSTGRES_HOST")
        elif self.db_postgres_password is None:
            missing.append("MANAGER_DB_POSTGRES_PASSWORD")
        for stage in STAGES:
            service = self.service(stage)
            # Asked for: an unconfigured stage is served by the in-process sandbox.
            if service.host is None and self.sandbox_services:
                continue
            prefix = f"MANAGER_SERVICE_{stage.upper()}"
            if service.host is None:
                missing.append(f"{prefix}_HOST")
            if service.port is None:
                missing.append(f"{prefix}_PORT")
        secret = self.auth_jwt_secret
        if secret is not None and len(secret.get_secret_value()) < 32 and not self.debug_mode:
            raise ConfigurationError(
                "MANAGER_AUTH_JWT_SECRET is too short: use at least 32 random characters"
            )
        if self.webhook_secret is not None:
            check_webhook_secrets(self.webhook_secret.get_secret_value())
        if self.graylog_enable and not self.graylog_host:
            missing.append("MANAGER_GRAYLOG_HOST")
        if missing:
            raise ConfigurationError(
                "missing required setting(s): " + ", ".join(missing) + " (see .env.example)"
            )

    def check_consistent(self) -> None:
        """Refuse settings that contradict each other, naming both variables."""
        self.database_hosts()  # as many ports as hosts, or one
        base, cap = self.pipeline_backoff_base_seconds, self.pipeline_backoff_max_seconds
        if base > cap:
            raise ConfigurationError(
                f"MANAGER_PIPELINE_BACKOFF_BASE_SECONDS ({base:g}) exceeds "
                f"MANAGER_PIPELINE_BACKOFF_MAX_SECONDS ({cap:g}): every retry would wait "
                "the maximum; lower the base or raise the maximum"
            )
        base, cap = self.webhook_backoff_base_seconds, self.webhook_backoff_max_seconds
        if base > cap:
            raise ConfigurationError(
                f"MANAGER_WEBHOOK_BACKOFF_BASE_SECONDS ({base:g}) exceeds "
                f"MANAGER_WEBHOOK_BACKOFF_MAX_SECONDS ({cap:g}): lower the base or raise "
                "the maximum"
            )

    @property
    def webhook_keys(self) -> list[bytes]:
        """The signing keys (one, or two while rotating); empty: no webhooks."""
        if self.webhook_secret is None:
            return []
        return check_webhook_secrets(self.webhook_secret.get_secret_value())


WEBHOOK_SECRET_PREFIX = "whsec_"
# Standard Webhooks asks for 24 to 64 random bytes; shorter keys are refused at start.
WEBHOOK_KEY_MIN_BYTES = 16


def check_webhook_secrets(value: str) -> list[bytes]:
    """The keys of `whsec_<base64> [whsec_<base64>]`, or a one-line `ConfigurationError`."""
    secrets = value.split()
    if not 1 <= len(secrets) <= 2:
        raise ConfigurationError(
            "MANAGER_WEBHOOK_SECRET must hold one secret, or two separated by a space while "
            "rotating"
        )
    keys: list[bytes] = []
    for number, secret in enumerate(secrets, start=1):
        problem = f"MANAGER_WEBHOOK_SECRET (secret {number} of {len(secrets)})"
        if not secret.startswith(WEBHOOK_SECRET_PREFIX):
            raise ConfigurationError(f"{problem} must start with {WEBHOOK_SECRET_PREFIX}")
        try:
            key = base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(
                f"{problem} is not base64 after {WEBHOOK_SECRET_PREFIX}"
            ) from None
        if len(key) < WEBHOOK_KEY_MIN_BYTES:
            raise ConfigurationError(
                f"{problem} is too short: use at least {WEBHOOK_KEY_MIN_BYTES} random bytes "
                "(24 to 64 recommended)"
            )
        keys.append(key)
    return keys


def allowed_host_entry(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal → (host, port or
    None for any port). `ValueError` for a port that is not one."""
    entry = entry.strip().lower()
    port: str | None = None
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"not host[:port]: {entry!r}")
            port = rest[1:]
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    else:
        host = entry  # a name, an IPv4 address or a bare IPv6 address
    host = host.rstrip(".")
    if not host:
        raise ValueError(f"no host in {entry!r}")
    if port is None:
        return host, None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"not a port in {entry!r}")
    return host, int(port)


def setting_names() -> frozenset[str]:
    """Every variable name the settings read, without the prefix, in lower case.

    A nested service is read field by field (`service_feedback_host`) or, as pydantic
    also allows, whole as JSON (`service_feedback`).
    """
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        names.add(name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= {f"{name}_{sub}" for sub in annotation.model_fields}
    return frozenset(names)


def _only_settings(variables: Mapping[str, str | None], prefix: str) -> dict[str, str | None]:
    """The variables that name a setting (unprefixed ones are never read anyway)."""
    prefix = prefix.lower()
    known = setting_names()
    return {
        name: value
        for name, value in variables.items()
        if not name.lower().startswith(prefix) or name.lower()[len(prefix) :] in known
    }


def load_settings() -> Settings:
    """Read the settings, turning pydantic's report into a one-line `ConfigurationError`."""
    try:
        settings = Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"MANAGER_{'_'.join(str(part) for part in issue['loc']).upper()}: {issue['msg']}"
            for issue in error.errors()
        )
        raise ConfigurationError(f"invalid setting(s): {problems}") from None
    settings.check_required()
    settings.check_consistent()
    return settings
