"""The options of each app operation, as the API sends them (camelCase JSON), checked before anything is done.

A misspelt key is refused (not ignored), so `{"port": ...}` does not silently install without ports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from hosting.apps.manifest import Manifest, describe_validation
from hosting.errors import OptionsError

#: App ids as lock names and container names allow them.
APP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Where an app lives: DNS labels, or "" for the bare domain.
LOCATION = re.compile(r"^$|^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
#: Env vars the platform sets itself; an app's user env may not override them.
PLATFORM_ENV_PREFIX = "BOX_"
MAX_ENV_VALUE = 4096


class _Options(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class InstallOptions(_Options):
    """`image` names the image when the manifest has no `dockerImage` (or overrides it); `ports`
    maps an env var to a host port, or to None to leave a port bound by default unbound."""

    manifest: dict[str, Any]
    image: StrictStr | None = Field(default=None, min_length=1, max_length=512)
    location: StrictStr = Field(max_length=255)
    app_store_id: StrictStr = Field(default="", max_length=255)
    ports: dict[str, StrictInt | None] = Field(default_factory=dict)
    cpu_shares: StrictInt | None = None
    cpu_quota: StrictInt | None = None
    memory_limit: StrictInt | None = None
    env: dict[str, StrictStr] = Field(default_factory=dict)


class ConfigureOptions(_Options):
    """Each field left out stays as it is; at least one must be given."""

    ports: dict[str, StrictInt] | None = None
    cpu_shares: StrictInt | None = None
    cpu_quota: StrictInt | None = None
    memory_limit: StrictInt | None = None
    env: dict[str, StrictStr] | None = None

    @model_validator(mode="after")
    def _something(self) -> ConfigureOptions:
        if not self.model_fields_set:
            raise ValueError("nothing to configure: give ports, cpuShares, cpuQuota, memoryLimit or env")
        return self

    @property
    def only_limits(self) -> bool:
        return self.ports is None and self.env is None


class NoOptions(_Options):
    """start, stop, restart, repair and backup take no options."""


class UninstallOptions(_Options):
    """`archive`: back up first and keep an archive to restore the app from later (icons are base64)."""

    archive: bool = False
    icon: StrictStr | None = Field(default=None, max_length=4 << 20)
    app_store_icon: StrictStr | None = Field(default=None, max_length=4 << 20)


class RestoreOptions(_Options):
    """From a backup of this app; or, when the app is gone, from an archive (a new app under this id)."""

    backup_id: StrictStr | None = Field(default=None, min_length=1, max_length=128)
    archive_id: StrictStr | None = Field(default=None, min_length=1, max_length=128)
    location: StrictStr | None = Field(default=None, max_length=255)
    ports: dict[str, StrictInt] | None = None

    @model_validator(mode="after")
    def _source(self) -> RestoreOptions:
        if not self.backup_id and not self.archive_id:
            raise ValueError("give backupId (a backup of this app) or archiveId")
        return self


class CloneOptions(_Options):
    """A new app from a backup (or an archive): its own location and ports."""

    backup_id: StrictStr | None = Field(default=None, min_length=1, max_length=128)
    archive_id: StrictStr | None = Field(default=None, min_length=1, max_length=128)
    location: StrictStr = Field(max_length=255)
    ports: dict[str, StrictInt] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> CloneOptions:
        if bool(self.backup_id) == bool(self.archive_id):
            raise ValueError("give exactly one of backupId and archiveId")
        return self


class UpdateOptions(_Options):
    """The new manifest (and its image, as install takes it); `force` skips the backup taken first."""

    manifest: dict[str, Any]
    image: StrictStr | None = Field(default=None, min_length=1, max_length=512)
    force: bool = False


M = TypeVar("M", bound=_Options)


def parse(model: type[M], operation: str, options: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(dict(options))
    except ValidationError as err:
        raise OptionsError(f"bad options for {operation}: {describe_validation(err)}") from err


def check_app_id(app_id: str) -> str:
    if not isinstance(app_id, str) or not APP_ID.fullmatch(app_id):
        raise OptionsError(
            f"bad app id {app_id!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return app_id


def check_location(location: str) -> str:
    if not LOCATION.fullmatch(location):
        raise OptionsError(
            f"bad location {location!r}: use lowercase DNS labels (a-z, 0-9, '-') separated by dots, like 'blog'"
        )
    return location


def check_env(env: Mapping[str, str], manifest: Manifest) -> dict[str, str]:
    """User env vars: valid names, sane values, none that the platform or the app's ports set."""
    problems = []
    ports = set(manifest.declared_ports())
    for name, value in sorted(env.items()):
        if not ENV_VAR.fullmatch(name):
            problems.append(f"{name!r} is not an env var name (letters, digits, '_'; not starting with a digit)")
        elif name.startswith(PLATFORM_ENV_PREFIX):
            problems.append(f"{name} is set by the platform ({PLATFORM_ENV_PREFIX}*); choose another name")
        elif name in ports:
            problems.append(f"{name} is the app's port variable; set it through ports")
        elif len(value) > MAX_ENV_VALUE or "\x00" in value:
            problems.append(f"{name}: value must be at most {MAX_ENV_VALUE} characters, without NUL")
    if problems:
        raise OptionsError("env refused: " + "; ".join(problems))
    return dict(env)
