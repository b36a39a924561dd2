"""The app manifest (`CloudronManifest.json`, the format packagers write), validated once.

The format's published reference is the contract: every documented top-level field is accepted and
kept as given (and shown back with the app), whether boxtasks acts on it or not. Keys the reference
does not name are kept too (packagers' manifests carry a few, like `developmentMode`); they change
nothing here. Validation errors come back as one `ManifestError` listing every bad field by its JSON
path, so the packager can fix them all in one go.

Which addons this server provides is not the format's business: the model accepts any addon name,
and `hosting.apps.capabilities.check_addons` refuses the ones this server cannot set up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from hosting.errors import ManifestError

#: Env var names an app may declare for its ports (and the user may set).
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")
#: Reverse-domain app ids (`io.example.app`), as app stores name them.
APP_ID = re.compile(r"^[a-z0-9][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")
#: A Docker image reference: [registry[:port]/]name[:tag][@digest].
IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
SEMVER = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
ADDON_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
#: How many ports one env var may bind.
MAX_PORT_COUNT = 1000
#: How deep a manifest may nest (objects and arrays): well under what the databases' JSON accepts
#: (MariaDB refuses past 32 levels), and far more than any packager writes (the format needs 4).
MAX_DEPTH = 16
#: The manifestVersion this server reads. 1 is the retired format: refused, with the reason.
MANIFEST_VERSION = 2

#: Top-level fields of the format's reference. All are kept as given; the ones boxtasks acts on
#: are typed on `Manifest` below, the rest (store listing, SSO, backup hooks, ...) are carried.
DOCUMENTED_FIELDS = frozenset(
    {
        "addons", "aliasableDomain", "author", "backupCommand", "capabilities", "changelog", "checklist",
        "configurePath", "contactEmail", "description", "documentationUrl", "dockerImage", "forumUrl",
        "healthCheckPath", "httpPort", "httpPorts", "icon", "iconUrl", "id", "logPaths", "manifestVersion",
        "maxBoxVersion", "mediaLinks", "memoryLimit", "minBoxVersion", "multiDomain", "optionalSso",
        "packageUrl", "packagerName", "packagerUrl", "persistentDirs", "postInstallMessage", "restoreCommand",
        "runtimeDirs", "tagline", "tags", "targetBoxVersion", "tcpPorts", "title", "udpPorts",
        "upstreamVersion", "version", "website",
    }
)  # fmt: skip

Protocol = Literal["tcp", "udp"]

#: What a missing required field means, for the refusal.
_MISSING = {
    "id": "a manifest names its app with a reverse-domain id, like 'io.example.app'",
    "version": "a manifest gives the package's semantic version, like '1.0.0'",
    "httpPort": "a manifest gives the port its app serves HTTP on, like 8000",
    "title": "each port needs a title to show the installer",
}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class PortSpec(_Model):
    """One env var's ports: the app listens on `container_port` .. +`port_count`-1.

    Port specs are a closed set of keys: a misspelt one (`defaultvalue`) would change which host
    ports are bound without a word, so it is refused, not carried.
    """

    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    #: None: the app listens on the host port itself (the env var tells it which).
    container_port: int | None = Field(default=None, ge=1, le=65535)
    port_count: int = Field(default=1, ge=1, le=MAX_PORT_COUNT)
    #: The host port used when the installer gives none.
    default_value: int | None = Field(default=None, ge=1, le=65535)
    #: False: bound only when the installer asks for it.
    enabled_by_default: bool = True
    #: True: the host port is `default_value`, and no other.
    read_only: bool = False

    @model_validator(mode="after")
    def _range_fits(self) -> PortSpec:
        for name, start in (("containerPort", self.container_port), ("defaultValue", self.default_value)):
            if start is not None and start + self.port_count - 1 > 65535:
                raise ValueError(f"{name} {start} + portCount {self.port_count} passes 65535")
        if self.read_only and self.default_value is None:
            raise ValueError("readOnly fixes the host port at defaultValue, so it needs a defaultValue")
        return self


class Manifest(_Model):
    """The fields boxtasks acts on, typed; every other field is kept as given (`model_extra`)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)

    id: str = Field(min_length=3, max_length=255)
    version: str = Field(min_length=1, max_length=64)
    manifest_version: int = MANIFEST_VERSION
    #: The image as the platform stores it with the manifest; None: the installer names it.
    docker_image: str | None = Field(default=None, min_length=1, max_length=512)
    http_port: int = Field(ge=1, le=65535)
    health_check_path: str = Field(default="/", min_length=1, max_length=1024)
    tcp_ports: dict[str, PortSpec] = Field(default_factory=dict)
    udp_ports: dict[str, PortSpec] = Field(default_factory=dict)
    #: Secondary HTTP services on their own domains: kept, not routed by boxtasks.
    http_ports: dict[str, Any] = Field(default_factory=dict)
    addons: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: Bytes the app needs at least; 0: the platform default.
    memory_limit: int = Field(default=0, ge=0)

    @field_validator("id")
    @classmethod
    def _reverse_domain(cls, value: str) -> str:
        if not APP_ID.fullmatch(value):
            raise ValueError("must be a reverse-domain name in lowercase, like 'io.example.app'")
        return value

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER.fullmatch(value):
            raise ValueError("must be a semantic version, like '1.2.3'")
        return value

    @field_validator("manifest_version")
    @classmethod
    def _format_version(cls, value: int) -> int:
        if value == 1:
            raise ValueError(
                "1 is the retired manifest format, which this server does not read: "
                f"port the manifest to manifestVersion {MANIFEST_VERSION}"
            )
        if value != MANIFEST_VERSION:
            raise ValueError(f"this server reads manifestVersion {MANIFEST_VERSION}, not {value}")
        return value

    @field_validator("docker_image")
    @classmethod
    def _image_ref(cls, value: str | None) -> str | None:
        if value is not None and not IMAGE_REF.fullmatch(value):
            raise ValueError("must be a Docker image reference, like 'registry.example.com/app:1.2.3'")
        return value

    @field_validator("health_check_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be a URL path, like '/' or '/health'")
        return value

    @field_validator("tcp_ports", "udp_ports")
    @classmethod
    def _env_names(cls, value: dict[str, PortSpec]) -> dict[str, PortSpec]:
        for name in value:
            if not ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an env var name (A-Z, 0-9, _; starting with a letter)")
        return value

    @field_validator("addons")
    @classmethod
    def _addon_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        bad = sorted(name for name in value if not ADDON_NAME.fullmatch(name))
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))} is not an addon name")
        return value

    @model_validator(mode="after")
    def _one_protocol_per_env(self) -> Manifest:
        both = sorted(set(self.tcp_ports) & set(self.udp_ports))
        if both:
            raise ValueError(f"env var(s) {', '.join(both)} declared in both tcpPorts and udpPorts")
        return self

    @property
    def image(self) -> str:
        """The image to run; the front door refuses a manifest stored without one, so this is a guard."""
        if self.docker_image is None:
            raise ManifestError(f"manifest of {self.id} {self.version} names no dockerImage: {NO_IMAGE_FIX}")
        return self.docker_image

    def unknown_fields(self) -> list[str]:
        """Top-level keys the format's reference does not name (kept, and acted on by nothing)."""
        return sorted(set(self.model_extra or {}) - DOCUMENTED_FIELDS)

    def port_spec(self, env_var: str) -> tuple[Protocol, PortSpec] | None:
        """The declared ports behind `env_var` and their protocol, or None when undeclared."""
        if env_var in self.tcp_ports:
            return "tcp", self.tcp_ports[env_var]
        if env_var in self.udp_ports:
            return "udp", self.udp_ports[env_var]
        return None

    def declared_ports(self) -> list[str]:
        return sorted([*self.tcp_ports, *self.udp_ports])


NO_IMAGE_FIX = 'give one: --image (CLI) or "image" in the request body (API)'


def with_image(document: Mapping[str, Any], image: str | None) -> dict[str, Any]:
    """The manifest as stored: `dockerImage` is the installer's image when given, else the manifest's own.

    One of them is required (ManifestError naming both ways to give it).
    """
    stored = dict(document)
    if image is not None:
        stored["dockerImage"] = image
    if not stored.get("dockerImage"):
        parse_manifest(stored)  # a manifest with other faults: name those first
        raise ManifestError(f"no image to run: the manifest has no dockerImage; {NO_IMAGE_FIX}")
    return stored


def describe_validation(err: ValidationError, *, prefix: str = "") -> str:
    """Every error of `err` on one line each: `path: message`."""
    lines = []
    for item in err.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(document)"
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "missing":
            last = str(item["loc"][-1]) if item["loc"] else ""
            message = f"missing: {_MISSING[last]}" if last in _MISSING else "missing: this field is required"
        lines.append(f"{prefix}{path}: {message}")
    return "; ".join(lines)


def json_depth(document: object) -> int:
    """How deep `document` nests (a scalar is 0, `{}` is 1), without recursion: any depth is safe to ask."""
    deepest = 0
    stack: list[tuple[object, int]] = [(document, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list | tuple):
            children = list(item)
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_depth(document: object, *, what: str, limit: int = MAX_DEPTH) -> None:
    """Refuse a document nested deeper than `limit` (ManifestError), before it is stored anywhere."""
    if json_depth(document) > limit:
        raise ManifestError(f"{what} nests deeper than {limit} levels: flatten it")


def parse_manifest(document: object) -> Manifest:
    """Validate a manifest (a dict, as stored, or a JSON string); raise ManifestError naming each bad field."""
    if isinstance(document, Manifest):
        return document
    if not isinstance(document, str | bytes):
        check_depth(document, what="the manifest")
        if isinstance(document, Mapping) and "image" in document and "dockerImage" not in document:
            # Stored by boxtasks before it read the format's own name: apps, backups and archives keep it.
            document = {("dockerImage" if k == "image" else k): v for k, v in document.items()}
    try:
        if isinstance(document, str | bytes):
            return Manifest.model_validate_json(document)
        return Manifest.model_validate(document)
    except ValidationError as err:
        raise ManifestError(f"invalid manifest: {describe_validation(err)}") from err
