"""The app manifest: what an app declares about itself (image, ports, addons, memory), validated once.

Validation errors come back as one `ManifestError` listing every bad field by its JSON path, so the
packager can fix them all in one go.
"""

from __future__ import annotations

import re
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
#: How many ports one env var may bind.
MAX_PORT_COUNT = 1000
#: How deep a manifest may nest (objects and arrays): well under what the databases' JSON accepts
#: (MariaDB refuses past 32 levels), and far more than any packager writes (the format needs 4).
MAX_DEPTH = 16

Protocol = Literal["tcp", "udp"]
ADDONS = ("localstorage", "mysql", "postgresql", "recvmail", "redis", "sendmail")


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class PortSpec(_Model):
    """One env var's ports: the app listens on `container_port` .. +`port_count`-1."""

    title: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=500)
    #: None: the app listens on the host port itself (the env var tells it which).
    container_port: int | None = Field(default=None, ge=1, le=65535)
    port_count: int = Field(default=1, ge=1, le=MAX_PORT_COUNT)

    @model_validator(mode="after")
    def _range_fits(self) -> PortSpec:
        if self.container_port is not None and self.container_port + self.port_count - 1 > 65535:
            raise ValueError(f"containerPort {self.container_port} + portCount {self.port_count} passes 65535")
        return self


class Manifest(_Model):
    """The fields boxtasks acts on; others (title, author, ...) are kept as given and ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)

    id: str = Field(min_length=3, max_length=255)
    version: str = Field(min_length=1, max_length=64)
    image: str = Field(min_length=1, max_length=512)
    http_port: int = Field(ge=1, le=65535)
    tcp_ports: dict[str, PortSpec] = Field(default_factory=dict)
    udp_ports: dict[str, PortSpec] = Field(default_factory=dict)
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

    @field_validator("image")
    @classmethod
    def _image_ref(cls, value: str) -> str:
        if not IMAGE_REF.fullmatch(value):
            raise ValueError("must be a Docker image reference, like 'registry.example.com/app:1.2.3'")
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
    def _known_addons(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = sorted(set(value) - set(ADDONS))
        if unknown:
            raise ValueError(f"unknown addon(s) {', '.join(unknown)}; supported: {', '.join(ADDONS)}")
        return value

    @model_validator(mode="after")
    def _one_protocol_per_env(self) -> Manifest:
        both = sorted(set(self.tcp_ports) & set(self.udp_ports))
        if both:
            raise ValueError(f"env var(s) {', '.join(both)} declared in both tcpPorts and udpPorts")
        return self

    def port_spec(self, env_var: str) -> tuple[Protocol, PortSpec] | None:
        """The declared ports behind `env_var` and their protocol, or None when undeclared."""
        if env_var in self.tcp_ports:
            return "tcp", self.tcp_ports[env_var]
        if env_var in self.udp_ports:
            return "udp", self.udp_ports[env_var]
        return None

    def declared_ports(self) -> list[str]:
        return sorted([*self.tcp_ports, *self.udp_ports])


def describe_validation(err: ValidationError, *, prefix: str = "") -> str:
    """Every error of `err` on one line each: `path: message`."""
    lines = []
    for item in err.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(document)"
        message = str(item["msg"]).removeprefix("Value error, ")
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
    try:
        if isinstance(document, str | bytes):
            return Manifest.model_validate_json(document)
        return Manifest.model_validate(document)
    except ValidationError as err:
        raise ManifestError(f"invalid manifest: {describe_validation(err)}") from err
