"""Request and response shapes of the front door: the REST API's OpenAPI document, the CLI's --json.

Requests use the seed's camelCase names (`ports`, `cpuShares`, `cpuQuota`, `memoryLimit`) and refuse
unknown keys, so a misspelt option is an error, not a silent default. The deeper checks (a manifest's
fields, reserved ports, env names) are hosting's, run by `frontdoor.actions` before a task is made.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic.alias_generators import to_camel

# Pydantic checks these with its Rust regex engine, where `$` is the end of the text (under
# Python's `re`, `$` also matches before a final newline: there, use `fullmatch`).
APP_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: Backup and archive ids are usable in routes: no "/" (and nothing unprintable).
ITEM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$"
ENV_PORTS_DOC = "env var -> host port, for the ports the manifest declares (tcpPorts/udpPorts)"
#: The bounds are checked by `hosting.apps.resources.check_limits`, for the API and the CLI alike.
CPU_SHARES_DOC = "relative CPU weight under contention, 2-262144"
CPU_QUOTA_DOC = "hard CPU limit, percent of one CPU (100 = 1 core), at most 100 x the Docker host's CPUs"
MEMORY_DOC = "bytes, swap included; at least 32 MiB (or the manifest's memoryLimit), at most the Docker host's memory"


class _Request(BaseModel):
    """Strict: `true` is not a number, `"1"` is not an integer, and an unknown key is an error."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True)


class InstallRequest(_Request):
    manifest: dict[str, Any] = Field(
        description="the app's manifest (CloudronManifest.json: id, version, httpPort, tcpPorts, addons, ...)"
    )
    image: StrictStr | None = Field(
        default=None,
        max_length=512,
        description="the image to run, when the manifest has no dockerImage (wins over it)",
    )
    location: StrictStr = Field(max_length=255, description="where the app lives, like 'blog' (DNS labels)")
    app_id: StrictStr | None = Field(default=None, pattern=APP_ID_PATTERN, description="made up when left out")
    app_store_id: StrictStr | None = Field(default=None, max_length=255)
    ports: dict[str, StrictInt | None] = Field(
        default_factory=dict,
        description=ENV_PORTS_DOC
        + "; a port left out gets its defaultValue when enabledByDefault, null leaves it unbound",
    )
    cpu_shares: StrictInt | None = Field(default=None, description=CPU_SHARES_DOC)
    cpu_quota: StrictInt | None = Field(default=None, description=CPU_QUOTA_DOC)
    memory_limit: StrictInt | None = Field(default=None, description=MEMORY_DOC)
    env: dict[str, StrictStr] = Field(default_factory=dict, description="extra env vars for the app")


class ConfigureRequest(_Request):
    """Fields left out stay as they are; at least one must be given."""

    ports: dict[str, StrictInt] | None = Field(default=None, description=ENV_PORTS_DOC)
    cpu_shares: StrictInt | None = Field(default=None, description=CPU_SHARES_DOC)
    cpu_quota: StrictInt | None = Field(default=None, description=CPU_QUOTA_DOC)
    memory_limit: StrictInt | None = Field(default=None, description=MEMORY_DOC)
    env: dict[str, StrictStr] | None = None


class UpdateRequest(_Request):
    manifest: dict[str, Any] = Field(description="the manifest of the version to update to")
    image: StrictStr | None = Field(default=None, max_length=512, description="as for install")


class RestoreRequest(_Request):
    backup_id: StrictStr = Field(pattern=ITEM_ID_PATTERN)


class CloneRequest(_Request):
    backup_id: StrictStr = Field(pattern=ITEM_ID_PATTERN)
    location: StrictStr = Field(max_length=255)
    app_id: StrictStr | None = Field(default=None, pattern=APP_ID_PATTERN, description="id of the new app")
    ports: dict[str, StrictInt] = Field(default_factory=dict, description=ENV_PORTS_DOC)


class NoOptions(_Request):
    """start, stop, restart, repair, uninstall and backup take no options."""


class PlatformUpdateRequest(_Request):
    release_url: StrictStr | None = Field(default=None, max_length=2048, pattern=r"^https?://[!-~]+$")


class FullBackupRequest(_Request):
    app_ids: list[StrictStr] | None = Field(
        default=None, min_length=1, max_length=1000, description="app ids; default: every app"
    )


# ---------------------------------------------------------------------------- responses


class ErrorOut(BaseModel):
    error: str = Field(description="a short code: invalid, unauthorized, forbidden, not_found, conflict, ...")
    message: str = Field(description="what went wrong and what to do")
    task_id: str | None = Field(
        default=None, description="409 from a platform task already under way: that task's id, to follow"
    )


class StartedOut(BaseModel):
    task_id: str
    app_id: str | None
    url: str


class StopOut(BaseModel):
    task_id: str
    state: str = Field(description="the task's state now; a running task gets SIGTERM, then SIGKILL after the grace")


TaskState = Literal["queued", "waiting", "running", "succeeded", "failed", "cancelled", "interrupted"]


class TaskOut(BaseModel):
    id: str
    type: str
    app_id: str | None
    state: str
    percent: int
    message: str
    error: str | None
    result: Any = None
    args: dict[str, Any]
    queue: str
    worker: str | None
    pid: int | None
    locks: dict[str, Any]
    #: The task this one retries (`POST /tasks/{id}/retry`), if any.
    retry_of: str | None = None
    created_at: str | None
    started_at: str | None = Field(description="when its work began: the claim that got its locks")
    finished_at: str | None
    heartbeat_at: str | None
    stop_requested_at: str | None
    waited_seconds: float | None = Field(
        default=None,
        description=(
            "seconds from created_at until its work began (queued for a worker, then waiting for locks), "
            "or until it ended if it never began; null while it is still queued or waiting"
        ),
    )
    error_summary: str | None = Field(
        default=None, description="the error's last line (the whole traceback is in `error`)"
    )


class LogEntryOut(BaseModel):
    at: str | None
    source: str
    message: str


class LogLineOut(BaseModel):
    """One line of a task's own log (`frontdoor.tasklines`)."""

    seq: int
    at: str | None
    level: str
    line: str


class PortBindingOut(BaseModel):
    hostPort: int
    count: int
    type: str


class AppOut(BaseModel):
    """An app, with the seed's names (`portBindings` out, where requests take `ports`)."""

    id: str
    appStoreId: str
    manifest: dict[str, Any]
    version: str
    location: str
    installationState: str
    runState: str
    error: dict[str, Any] | None
    containerId: str | None
    cpuShares: int
    cpuQuota: int
    memoryLimit: int
    portBindings: dict[str, PortBindingOut]
    enableBackup: bool
    createdAt: str | None
    updatedAt: str | None


class BackupOut(BaseModel):
    id: str
    type: str
    app_id: str | None
    version: str
    state: str
    format: str
    size: int | None
    checksum: str | None
    depends_on: list[str]
    app_config: dict[str, Any] | None
    error: str | None
    created_at: str | None


class ArchiveOut(BaseModel):
    id: str
    backup_id: str
    app_id: str
    app_config: dict[str, Any]
    has_icon: bool
    created_at: str | None


class EventOut(BaseModel):
    id: int
    action: str
    source: dict[str, Any]
    data: dict[str, Any]
    created_at: str | None


class NotificationOut(BaseModel):
    id: int
    event_id: int | None
    alert_kind: str | None
    title: str
    message: str
    acknowledged: bool
    created_at: str | None


class LockTaskOut(BaseModel):
    type: str
    state: str
    message: str
    app_id: str | None


class HolderOut(BaseModel):
    owner: str
    label: str
    name: str
    mode: str
    token: int
    task: LockTaskOut | None


class WaiterOut(BaseModel):
    owner: str
    label: str
    seq: int
    locks: dict[str, str]
    nested: bool
    blocked_by: list[str] = Field(description="why it waits, in words")
    blocking_locks: list[str]
    task: LockTaskOut | None


class LocksOut(BaseModel):
    version: int
    holders: list[HolderOut]
    waiters: list[WaiterOut]


class CapabilitiesOut(BaseModel):
    app_operations: list[str] = Field(description="app operations this server runs now")
    platform_tasks: list[str] = Field(description="platform tasks this server runs now")
    addons: list[str] = Field(description="addons an app's manifest may ask for here; any other is refused")
    manifest_versions: list[int] = Field(description="manifestVersion values accepted")
