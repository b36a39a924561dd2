"""One pydantic-settings class for every process (API, worker, beat, CLI).

Nothing is read at import time: `get_settings()` reads the environment on first use,
so tests and the CLI can set variables before anything asks.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.errors import ConfigError

ENV_PREFIX = "BOXTASKS_"
_SUPPORTED_DB_SCHEMES = ("sqlite", "mysql+pymysql", "mariadb+pymysql", "postgresql+psycopg", "postgresql")
_PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "admin", "changethis"}
_HH_MM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_SUPPORTED_BROKER_SCHEMES = ("filesystem", "amqp", "pyamqp", "redis", "rediss", "memory")
_ADDON_SCHEMES = {
    "mysql_addon_url": ("mysql+pymysql", "mariadb+pymysql"),
    "postgresql_addon_url": ("postgresql+psycopg", "postgresql"),
}
_LIMIT_KEY = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")

#: Soft time limits in seconds, by task kind or `kind.operation` (the more precise wins). Past its
#: soft limit a task cleans up and ends `failed` ("timed out after ..."); past soft + the grace it is
#: killed. Generous: they catch a task that hangs, not a slow one. Waiting for locks does not count.
DEFAULT_TIME_LIMITS: dict[str, float] = {
    "apptask": 3600.0,
    "apptask.backup": 6 * 3600.0,
    "apptask.restore": 6 * 3600.0,
    "apptask.clone": 6 * 3600.0,
    "apptask.update": 3 * 3600.0,  # backs the app up first
    "apptask.uninstall": 3 * 3600.0,  # may archive the app
    "fullbackup": 12 * 3600.0,
    "update": 3 * 3600.0,
    "platformstart": 2 * 3600.0,
    "appcron": 3600.0,  # one run of an app's cron job (the scheduler addon)
}


class Settings(BaseSettings):
    """Every knob of boxtasks. Empty URLs mean the embedded default under `data_dir`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    env: Literal["development", "production"] = Field(
        default="development", description="`production` refuses missing or placeholder secrets"
    )
    data_dir: Path = Field(
        default=Path("var"), description="where the embedded database, the broker's folders and app data live"
    )
    database_url: str = Field(
        default="",
        description=(
            "SQLAlchemy URL: `mysql+pymysql://user:pw@host/db` (production), `postgresql+psycopg://…` "
            "(extra `postgres`), `sqlite:///…`; empty: SQLite under data_dir"
        ),
    )
    broker_url: str = Field(
        default="",
        description=(
            "Celery broker URL: `amqp://…` (RabbitMQ), `redis://…` (extra `redis`); "
            "empty: kombu `filesystem://` under data_dir"
        ),
    )
    lock_row: str = Field(default="main", min_length=1, max_length=64, description="id of the lock row")
    lock_lease_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="a lock holder whose heartbeat is older than this is dead"
    )
    heartbeat_seconds: float = Field(
        default=0.0, ge=0, description="how often a running task stamps its heartbeat; 0: a third of the lease"
    )
    sweep_seconds: float = Field(
        default=10.0, gt=0, description="how often beat sweeps dead lock owners and lost wake-ups"
    )
    stop_grace_seconds: float = Field(default=10.0, ge=0, description="SIGTERM to SIGKILL when a task is stopped")
    broker_transport_options: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict,
        description="JSON object handed to kombu for an amqp/redis broker, e.g. Redis's global_keyprefix",
    )
    requeue_after_seconds: float = Field(
        default=120.0,
        gt=0,
        description=(
            "a task `queued` this long whose queue holds no message (lost between acknowledgement and claim) "
            "is sent again by the sweep"
        ),
    )
    time_limits: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description=(
            'JSON object of soft time limits in seconds by kind or `kind.operation` (e.g. `{"apptask.backup": 7200}`), '
            'over the defaults; 0: none. Past its limit a task cleans up and ends `failed`, "timed out after …"'
        ),
    )
    time_limit_grace_seconds: float = Field(
        default=300.0,
        gt=0,
        description="soft time limit to hard: the process is killed, the task ends `interrupted` once it is gone",
    )
    sql_echo: bool = Field(default=False, description="log every SQL statement (debugging)")

    # Flower, as `make run` starts it: basic auth, never open. In development an empty password
    # means "make one and keep it under the data dir"; in production it must be set.
    flower_address: str = Field(default="127.0.0.1", min_length=1, description="address Flower listens on")
    flower_port: int = Field(default=5555, ge=1, le=65535, description="port Flower listens on")
    flower_user: str = Field(default="admin", min_length=1, description="Flower's basic-auth user")
    flower_password: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Flower's basic-auth password, handed to Flower as `FLOWER_BASIC_AUTH` in its environment, never on "
            "its command line; empty in development: made once and kept under data_dir; required in production"
        ),
    )
    worker_concurrency: int = Field(default=4, ge=1, le=256, description="processes of the worker `make run` starts")

    # Each task's own log (`boxtasks task logs ID`, GET /tasks/{id}/log): what its process logs while
    # it runs, kept in the database. Per task: the first lines and the last ones; the middle is dropped.
    task_log_head_lines: int = Field(
        default=500, ge=0, le=1_000_000, description="first lines kept of each task's own log"
    )
    task_log_tail_lines: int = Field(
        default=2000, ge=1, le=1_000_000, description="last lines kept of each task's own log; the middle is dropped"
    )
    task_log_line_chars: int = Field(default=4000, ge=80, le=1_000_000, description="a longer log line is cut")
    task_log_flush_seconds: float = Field(
        default=0.5, gt=0, le=60, description="how often a worker writes a running task's log lines"
    )

    # The REST API (`boxtasks api`, started by `make run`): bearer tokens from the `api_tokens` table.
    # In development `make run` makes an admin token once and keeps it under the data dir; in
    # production there is none until `boxtasks token create` makes one.
    api_address: str = Field(
        default="127.0.0.1", min_length=1, description="address `boxtasks api` (and `make run`) serves the REST API on"
    )
    api_port: int = Field(default=3000, ge=1, le=65535, description="port the API listens on")
    metrics_public: bool = Field(
        default=True, description="`GET /metrics` without a token; false: a token with scope `read`"
    )
    api_max_body_bytes: int = Field(
        default=1 << 20, ge=1024, le=1 << 30, description="larger request bodies are refused (413)"
    )

    # Schedules (celery beat): the nightly full backup and the alert checks.
    backup_at: str = Field(
        default="02:00",
        description="UTC time HH:MM of the nightly full backup (beat); empty: off, and a `backup_config` alert",
    )
    backup_max_age_hours: float = Field(
        default=48.0, gt=0, description="no successful full backup for this long: `backup_config` alert"
    )
    alert_check_seconds: float = Field(default=300.0, gt=0, description="how often beat runs the alert checks")
    disk_min_free_percent: float = Field(
        default=10.0, ge=0, le=100, description="less free on the data dir's disk: `disk_space` alert"
    )

    # Apps: the Docker engine they run on, and how their containers are made.
    docker_host: str = Field(default="unix:///var/run/docker.sock", description="the Docker engine apps run on")
    docker_timeout_seconds: float = Field(default=120.0, gt=0, description="one Docker API call, pulls included")
    app_network: str = Field(default="bridge", min_length=1, description="network app containers join")
    app_stop_timeout_seconds: int = Field(
        default=10, ge=0, le=600, description="SIGTERM to SIGKILL when an app's container stops"
    )
    app_health_timeout_seconds: float = Field(
        default=120.0,
        ge=0,
        le=3600,
        description=(
            "how long a started app has to answer its manifest's healthCheckPath with 2xx before the task "
            "fails and the app shows `error`; 0 does not wait"
        ),
    )
    oom_watch: bool = Field(
        default=True,
        description=(
            "beat watches the Docker engine for app containers killed out of memory (one watcher per deployment)"
        ),
    )

    # Admin email: what needs an admin now goes over SMTP (smtplib); empty host: email is off.
    smtp_host: str = Field(default="", description="SMTP relay for admin email; empty disables email")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="port of the SMTP relay")
    smtp_from: str = Field(default="boxtasks@localhost", min_length=3, description="From: of admin email")
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, description="one connection to the SMTP relay")
    admin_emails: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated addresses that receive admin email"
    )

    # Mail addons of apps: the platform's own mail server, as the apps see it.
    mail_domain: str = Field(default="localhost", min_length=1, description="domain of app mail addresses")
    addon_smtp_host: str = Field(default="mail", min_length=1, description="SMTP host apps send through")
    addon_smtp_port: int = Field(default=2525, ge=1, le=65535, description="SMTP port apps send through")
    addon_imap_host: str = Field(default="mail", min_length=1, description="IMAP host apps read mail from")
    addon_imap_port: int = Field(default=9993, ge=1, le=65535, description="IMAP port apps read mail from")
    receives_mail: bool = Field(default=False, description="whether this server receives mail (recvmail addon)")

    # Database addons of apps (`hosting.apps.databases`): the servers the platform provisions each app's own
    # database and user on. An empty admin URL: the addon is not provided, and apps asking for it are refused.
    mysql_addon_url: str = Field(
        default="",
        description=(
            "admin URL of the MySQL/MariaDB server for the `mysql` addon, `mysql+pymysql://root:pw@host:3306`; "
            "needs CREATE USER and GRANT OPTION; empty: the addon is not provided"
        ),
    )
    mysql_addon_host: str = Field(
        default="", description="MySQL host as app containers reach it; empty: the admin URL's host"
    )
    mysql_addon_port: int = Field(
        default=0, ge=0, le=65535, description="MySQL port as app containers reach it; 0: the admin URL's port"
    )
    postgresql_addon_url: str = Field(
        default="",
        description=(
            "admin URL of the PostgreSQL server for the `postgresql` addon, "
            "`postgresql+psycopg://postgres:pw@host:5432/postgres`; needs CREATEROLE and CREATEDB; the server "
            "must ask app networks for passwords (scram-sha-256, not trust); empty: the addon is not provided"
        ),
    )
    postgresql_addon_host: str = Field(
        default="", description="PostgreSQL host as app containers reach it; empty: the admin URL's host"
    )
    postgresql_addon_port: int = Field(
        default=0, ge=0, le=65535, description="PostgreSQL port as app containers reach it; 0: the admin URL's port"
    )

    # Backups: where archives are written, how long they are kept, when a `creating` one is abandoned.
    backup_dir: Path | None = Field(
        default=None, description="backup target directory; empty: `backups` under data_dir"
    )
    backup_keep_last: int = Field(default=7, ge=1, le=10_000, description="keep this many newest backups per app")
    backup_keep_daily_days: int = Field(
        default=30, ge=0, le=3650, description="and the newest backup of each of this many days"
    )
    backup_stale_hours: float = Field(
        default=6.0, gt=0, description="a `creating` backup this old whose task is gone ends `error`"
    )

    # History: how long finished tasks, eventlog entries and notifications are kept (beat prunes daily).
    retain_tasks_days: int = Field(
        default=180, ge=1, le=36500, description="finished tasks older than this go (never one a backup names)"
    )
    retain_eventlog_days: int = Field(
        default=365, ge=1, le=36500, description="eventlog entries older than this go (unless a notification needs one)"
    )
    retain_notifications_days: int = Field(
        default=180, ge=1, le=36500, description="notifications older than this go (alerts stay until cleared)"
    )
    history_batch_rows: int = Field(default=5000, ge=100, le=100_000, description="rows deleted per transaction")
    history_prune_hours: float = Field(default=24.0, gt=0, description="how often beat prunes the history")

    # The platform itself: its releases (update) and its shared services (platformstart).
    release_url: str = Field(default="", description="release tarball URL (file://, http(s)://); empty: none set")
    release_public_key: str = Field(
        default="", description="base64 Ed25519 public key; set: a release must carry a valid `.sig`"
    )
    release_max_bytes: int = Field(default=2 << 30, gt=0, description="a larger release download is refused")
    infra_manifest: Path | None = Field(
        default=None, description="JSON infra list platformstart uses before any update set one"
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value and value.split("://", 1)[0] not in _SUPPORTED_DB_SCHEMES:
            raise ValueError(
                f"scheme must be one of {', '.join(_SUPPORTED_DB_SCHEMES)} (got {value.split(':', 1)[0]!r})"
            )
        return value

    @field_validator("mysql_addon_url", "postgresql_addon_url")
    @classmethod
    def _addon_admin_url(cls, value: str, info: ValidationInfo) -> str:
        schemes = _ADDON_SCHEMES[str(info.field_name)]
        if value and value.split("://", 1)[0] not in schemes:
            raise ValueError(f"must start with {' or '.join(s + '://' for s in schemes)}")
        return value

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: str) -> str:
        if value and value.split("://", 1)[0] not in _SUPPORTED_BROKER_SCHEMES:
            raise ValueError(
                f"scheme must be one of {', '.join(_SUPPORTED_BROKER_SCHEMES)} (got {value.split(':', 1)[0]!r})"
            )
        return value

    @field_validator("broker_transport_options", "time_limits", mode="before")
    @classmethod
    def _json_object(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return {}
        try:
            parsed = json.loads(value)
        except ValueError as err:
            raise ValueError(f'must be a JSON object like {{"apptask": 3600}} ({err})') from None
        if not isinstance(parsed, dict):
            raise ValueError(f'must be a JSON object like {{"apptask": 3600}}, not {type(parsed).__name__}')
        return parsed

    @field_validator("time_limits")
    @classmethod
    def _limit_keys(cls, value: dict[str, float]) -> dict[str, float]:
        for key, seconds in value.items():
            if not _LIMIT_KEY.match(key):
                raise ValueError(f"{key!r} is not a task kind or kind.operation, like 'apptask' or 'apptask.backup'")
            if seconds < 0:
                raise ValueError(f"{key!r}: a time limit is seconds >= 0 (0: no limit), got {seconds}")
        return value

    @field_validator("backup_at")
    @classmethod
    def _hour_minute(cls, value: str) -> str:
        value = value.strip()
        if value and not _HH_MM.fullmatch(value):
            raise ValueError(
                f"must be a UTC time HH:MM like 02:00, or empty to turn nightly backups off (got {value!r})"
            )
        return value

    @field_validator("admin_emails", mode="before")
    @classmethod
    def _split_emails(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("admin_emails")
    @classmethod
    def _plausible_emails(cls, value: list[str]) -> list[str]:
        for address in value:
            if "@" not in address or any(c.isspace() for c in address):
                raise ValueError(f"{address!r} is not an email address")
        return value

    @field_validator("flower_password")
    @classmethod
    def _no_placeholder(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value().lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("is a placeholder; choose a real secret")
        return value

    @model_validator(mode="after")
    def _secrets_in_production(self) -> Settings:
        if self.env == "production" and not self.flower_password.get_secret_value():
            raise ValueError(f"{ENV_PREFIX}FLOWER_PASSWORD must be set when {ENV_PREFIX}ENV=production")
        return self

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> Settings:
        if self.heartbeat_seconds and self.heartbeat_seconds >= self.lock_lease_seconds:
            raise ValueError(
                f"{ENV_PREFIX}HEARTBEAT_SECONDS ({self.heartbeat_seconds}) must be shorter than "
                f"{ENV_PREFIX}LOCK_LEASE_SECONDS ({self.lock_lease_seconds})"
            )
        return self

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'boxtasks.db'}"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_is_redis(self) -> bool:
        return self.effective_broker_url.split("://", 1)[0] in ("redis", "rediss")

    def time_limits_for(self, kind: str, operation: object = None) -> tuple[float, float] | None:
        """(soft, hard) seconds for one run of a task of `kind` (an apptask: of `operation`), or None."""
        limits = {**DEFAULT_TIME_LIMITS, **self.time_limits}
        keys = [f"{kind}.{operation}"] if isinstance(operation, str) else []
        soft = next((limits[k] for k in [*keys, kind] if k in limits), None)
        if not soft:
            return None
        return soft, soft + self.time_limit_grace_seconds

    @property
    def backup_time(self) -> tuple[int, int] | None:
        """(hour, minute) UTC of the nightly full backup, or None when it is off."""
        if not self.backup_at:
            return None
        hour, minute = self.backup_at.split(":")
        return int(hour), int(minute)

    @property
    def resolved_backup_dir(self) -> Path:
        """Where backups are written: `backup_dir`, or `backups` under the data dir."""
        if self.backup_dir is not None:
            return self.backup_dir.expanduser().resolve()
        return self.resolved_data_dir / "backups"

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat_seconds or self.lock_lease_seconds / 3


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    field = "_".join(str(part) for part in first["loc"]) if first["loc"] else ""
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{ENV_PREFIX}{field.upper()}: {message}" if field else message


def load_settings(**overrides: object) -> Settings:
    """Read the environment now; a bad value raises ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from err


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once on first use."""
    return load_settings()
