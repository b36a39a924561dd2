"""What tasks do to the server, one subpackage per concern.

- `hosting.apps`: apps and their containers (operations, manifest, options, state, ports, resources,
  mail addons, the Docker engine);
- `hosting.backups`: backups, archives, restore and clone, retention, the box and full backups;
- `hosting.platformops`: the platform's own release, update, start and shared infra;
- `hosting.events`: the eventlog, notifications, alerts, email, the OOM watch, history pruning.

At the top: `errors`, `context` (what an operation is given), `box` (the box's settings and Docker),
`datadir`, and `operations` (the registry `apptask` runs app operations from).

Nothing here imports Celery or HTTP: operations take a `TaskContext` and are tested without Celery.
Nothing heavy happens at import: no settings are read and no Docker client is made until asked.
"""

from __future__ import annotations

from hosting.apps.lifecycle import configure, install, repair, restart, start, stop, uninstall
from hosting.apps.manifest import Manifest, parse_manifest
from hosting.apps.oom import watch_oom
from hosting.apps.ports import RESERVED_PORTS
from hosting.apps.state import OPERATIONS as STATE_TABLE
from hosting.apps.state import InstallState, RunState
from hosting.box import Box, default_box
from hosting.context import LocalContext, TaskContext
from hosting.errors import (
    AddonNotProvidedError,
    AddonServerError,
    BackupError,
    BackupNotFoundError,
    BusyError,
    ConflictError,
    ContainerError,
    CorruptBackupError,
    DumpError,
    EngineError,
    EngineUnavailableError,
    HostingError,
    ImageError,
    InfraError,
    InputError,
    LocationConflictError,
    ManifestError,
    NotFoundError,
    NotifyError,
    OptionsError,
    PortConflictError,
    PortError,
    ReleaseError,
    ReleaseVerifyError,
    ResourceError,
    StateConflictError,
    StorageError,
)
from hosting.events.notify import (
    AlertKind,
    Outcome,
    app_oom,
    app_update_available,
    app_updated,
    backup_finished,
    backup_run_finished,
    cert_renewal_failed,
    clear_alert,
    deliver,
    platform_update_available,
    platform_updated,
    raise_alert,
    report,
)

__all__ = [
    # errors
    "AddonServerError",
    "AddonNotProvidedError",
    "BackupError",
    "BackupNotFoundError",
    "BusyError",
    "ConflictError",
    "ContainerError",
    "CorruptBackupError",
    "DumpError",
    "EngineError",
    "EngineUnavailableError",
    "HostingError",
    "ImageError",
    "InfraError",
    "InputError",
    "LocationConflictError",
    "ManifestError",
    "NotFoundError",
    "NotifyError",
    "OptionsError",
    "PortConflictError",
    "PortError",
    "ReleaseError",
    "ReleaseVerifyError",
    "ResourceError",
    "StateConflictError",
    "StorageError",
    # running an operation
    "Box",
    "LocalContext",
    "TaskContext",
    "default_box",
    # app operations
    "configure",
    "install",
    "repair",
    "restart",
    "start",
    "stop",
    "uninstall",
    # app state and manifests
    "STATE_TABLE",
    "InstallState",
    "Manifest",
    "RESERVED_PORTS",
    "RunState",
    "parse_manifest",
    # eventlog, notifications, alerts, email
    "AlertKind",
    "Outcome",
    "app_oom",
    "app_update_available",
    "app_updated",
    "backup_finished",
    "backup_run_finished",
    "cert_renewal_failed",
    "clear_alert",
    "deliver",
    "platform_update_available",
    "platform_updated",
    "raise_alert",
    "report",
    "watch_oom",
]
