"""The hosting package's error tree: one base, and a branch per kind of answer a user gets.

- `InputError`: the request itself is wrong (bad manifest, port, resource, env); fix it and ask again.
- `ConflictError`: the request is fine but the box says no right now (port taken, wrong state,
  or `BusyError`: the database lost a race; issue it again).
- `NotFoundError`: no such app.
- `EngineError`: Docker failed (unreachable, image missing, container refused); the app is left in
  state `error` with the reason, and the same operation can be issued again.
- `StorageError`: the app's data directory could not be made or removed (same: `error`, retry).
- `AddonNotProvidedError` (an `InputError`): the app asks for an addon this server does not provide.
- `HealthError`: the app started but did not answer its health check in time (`error`, retry).
- `AddonServerError`: a database addon server failed (unreachable, refused); the app is left in `error`, retry.
- `NotifyError`: admin email could not be sent.
- `BackupError`: a backup could not be made, read or restored (`CorruptBackupError`: its archive
  fails its checksum or holds a member that would land outside its target; nothing was restored).
  `DumpError`: the platform database could not be dumped.
- `ReleaseError`: a platform release could not be fetched or failed verification; nothing changed.
- `InfraError`: an infra container could not be brought to its version.

Library errors are wrapped with `raise ... from err`, and every message says what to do next.
"""

from __future__ import annotations


class HostingError(Exception):
    """Base of every error raised by `hosting`."""


# ---------------------------------------------------------------------------- bad input


class InputError(HostingError, ValueError):
    """The request is malformed; nothing was changed. The message names the field and the fix."""


class ManifestError(InputError):
    """The app manifest does not validate."""


class PortError(InputError):
    """A requested host port is out of range, reserved by the platform, or not declared by the manifest."""


class ResourceError(InputError):
    """cpuShares, cpuQuota or memoryLimit is out of its range."""


class OptionsError(InputError):
    """Unknown or malformed options for an operation (env, location, a misspelt key)."""


# ---------------------------------------------------------------------------- conflicts


class ConflictError(HostingError):
    """The request is valid but collides with the box as it is; nothing was changed."""


class PortConflictError(ConflictError):
    """A host port is already held by another app (on the same protocol)."""


class LocationConflictError(ConflictError):
    """Another app already lives at that location."""


class StateConflictError(ConflictError):
    """The app's installation state does not allow this operation now."""

    def __init__(self, message: str, *, app_id: str, operation: str, state: str) -> None:
        super().__init__(message)
        self.app_id = app_id
        self.operation = operation
        self.state = state


class BusyError(ConflictError):
    """The database gave up on a write that raced another (deadlock, lock wait); issuing it again works."""


class NotFoundError(HostingError, LookupError):
    """No app by that id."""


# ---------------------------------------------------------------------------- the engine


class EngineError(HostingError):
    """Docker could not do what the operation needed."""


class EngineUnavailableError(EngineError):
    """The Docker engine does not answer at the configured address."""


class ImageError(EngineError):
    """The app's image is neither present nor pullable."""

    def __init__(self, message: str, *, image: str) -> None:
        super().__init__(message)
        self.image = image


class ContainerError(EngineError):
    """Docker refused to create, start, stop or remove an app's container."""


# ---------------------------------------------------------------------------- addons


class HealthError(HostingError):
    """The app's container started but its healthCheckPath did not answer 2xx in time (the app is left in `error`)."""


class AddonNotProvidedError(InputError):
    """The manifest asks for an addon this server does not provide (`hosting.apps.capabilities`)."""


class AddonServerError(HostingError):
    """A database addon server refused to make, copy or drop an app's database or user (the app is left in
    `error`; the same operation can be issued again once the server answers)."""


# ---------------------------------------------------------------------------- notifications


class NotifyError(HostingError):
    """An admin email could not be delivered."""


class StorageError(HostingError):
    """The app's data directory could not be made or removed."""


# ---------------------------------------------------------------------------- backups and the platform


class BackupError(HostingError):
    """A backup could not be made, listed, restored or deleted; the message says which and why."""


class BackupNotFoundError(BackupError, NotFoundError):
    """No backup (or archive) by that id, or not one this app can use."""


class CorruptBackupError(BackupError):
    """The backup's archive is missing, truncated, fails its checksum, or has a member that would land outside
    its target (absolute, `..`, a link out, a device, a set-uid mode): it is refused, nothing was restored."""


class DumpError(BackupError):
    """The platform's own database could not be dumped (the dump tool is missing or failed)."""


class ReleaseError(HostingError):
    """A platform release could not be fetched, or is not one this platform may install; nothing changed."""


class ReleaseVerifyError(ReleaseError):
    """The release's checksum or signature does not match, or its tarball or manifest is corrupt."""


class InfraError(EngineError):
    """An infra container (a shared service) could not be brought to its version."""
