"""An app's config as stored with its backup (and its archive): what clone and restore need besides the data.

Stored as a camelCase JSON document in `backups.app_config` and `archives.app_config`; this model is
its one reader and writer. Every field has a default, so a document written by an older version (or
an archive's `{}`) still reads, and `to_json` gives back only the keys that were there.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from hosting.errors import CorruptBackupError


class _Doc(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class PortBindingConfig(_Doc):
    """One env var's host ports, as the app had them (`portBindings`)."""

    host_port: int
    count: int = 1
    type: str = "tcp"


class ResourcesConfig(_Doc):
    """CPU and memory limits; a key missing from an old document stays missing (None)."""

    cpu_shares: int | None = None
    cpu_quota: int | None = None
    memory_limit: int | None = None

    def as_columns(self) -> dict[str, int]:
        """The `apps` columns these set: only the limits the document has."""
        values = {"cpu_shares": self.cpu_shares, "cpu_quota": self.cpu_quota, "memory_limit": self.memory_limit}
        return {column: value for column, value in values.items() if value is not None}


class AppConfig(_Doc):
    """The app as of its backup: manifest, location, ports, resources, env, notes, operators, checklist, dumps."""

    app_id: str | None = None
    app_store_id: str | None = None
    manifest: dict[str, Any] | None = None
    version: str | None = None
    location: str = ""
    run_state: str = "running"
    notes: str = ""
    operators: list[str] = Field(default_factory=list)
    checklist: dict[str, Any] = Field(default_factory=dict)
    ports: dict[str, int] = Field(default_factory=dict)
    port_bindings: dict[str, PortBindingConfig] = Field(default_factory=dict)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    #: None: the document has no env (an older backup); restore then keeps the app's own.
    env: dict[str, str] | None = None
    enable_backup: bool = True
    enable_mailbox: bool = False
    #: The database addons whose dump the backup holds (`addons/<file>`); None: made before backups held them.
    database_dumps: list[str] | None = None

    @classmethod
    def from_json(cls, document: dict[str, Any] | None) -> AppConfig:
        """Read a stored document; one that does not fit is a damaged backup row, not a crash."""
        try:
            return cls.model_validate(document or {})
        except ValidationError as err:
            raise CorruptBackupError(f"the app config stored with this backup is damaged: {err}") from err

    def to_json(self) -> dict[str, Any]:
        """The stored document: camelCase keys, only those set (an old document keeps its shape)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
