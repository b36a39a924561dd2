"""Infra containers: the platform's shared services (mail, database, ...), each at its version.

An infra manifest is a list of `{"name", "image", "version"}`. `bring_up` makes the engine match
it: a container whose image and version labels match and that runs is kept; one that only stopped
is started; any other is replaced (image fetched first, so a missing image changes nothing).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hosting.apps import docker_engine as de
from hosting.apps.manifest import IMAGE_REF
from hosting.box import Box
from hosting.errors import EngineError, InfraError, InputError

logger = logging.getLogger(__name__)

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
LABEL_INFRA = "boxtasks.infra"
LABEL_INFRA_VERSION = "boxtasks.infra_version"


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    image: str
    version: str

    @property
    def container_name(self) -> str:
        return f"boxtasks-infra-{self.name}"

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "image": self.image, "version": self.version}


def parse(items: object) -> list[Service]:
    """Check an infra manifest; InputError lists every bad entry."""
    if not isinstance(items, list):
        raise InputError("infra must be a list of {name, image, version}")
    problems, services, names = [], [], set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) - {"name", "image", "version"}:
            problems.append(f"infra[{i}]: expected exactly name, image and version")
            continue
        name, image, version = item.get("name"), item.get("image"), item.get("version")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            problems.append(f"infra[{i}].name {name!r}: lowercase letters, digits and '-'")
        elif name in names:
            problems.append(f"infra[{i}].name {name!r} appears twice")
        if not isinstance(image, str) or not IMAGE_REF.fullmatch(image):
            problems.append(f"infra[{i}].image {image!r} is not a Docker image reference")
        if not isinstance(version, str) or not version:
            problems.append(f"infra[{i}].version must be a non-empty string")
        if not problems:
            names.add(str(name))
            services.append(Service(str(name), str(image), str(version)))
    if problems:
        raise InputError("bad infra manifest: " + "; ".join(problems))
    return services


def fetch_images(box: Box, services: Sequence[Service]) -> None:
    """Make sure every image is here before anything is replaced."""
    for service in services:
        box.docker.ensure_image(service.image)


def bring_up(
    box: Box,
    services: Sequence[Service],
    *,
    task_id: str,
    on_step: Callable[[int, str], None] | None = None,
) -> dict[str, str]:
    """Bring each service to its version; {name: kept | started | created | replaced}."""
    fetch_images(box, services)
    done: dict[str, str] = {}
    for i, service in enumerate(services):
        if on_step is not None:
            on_step(i, f"Bringing {service.name} to {service.version}")
        try:
            done[service.name] = _one(box, service, task_id=task_id)
        except EngineError as err:
            raise InfraError(f"infra service {service.name} ({service.image}): {err}") from err
        logger.info("infra %s %s: %s", service.name, service.version, done[service.name])
    return done


def _one(box: Box, service: Service, *, task_id: str) -> str:
    info = box.docker.inspect(service.container_name)
    if info is not None:
        labels = info["Config"].get("Labels") or {}
        same = info["Config"].get("Image") == service.image and labels.get(LABEL_INFRA_VERSION) == service.version
        if same and info["State"].get("Running"):
            return "kept"
        if same:
            box.docker.start(info["Id"])
            return "started"
        box.docker.remove_container(info["Id"], stop_timeout=box.settings.app_stop_timeout_seconds)
    container = box.docker.create(_spec(box, service, task_id=task_id))
    box.docker.start(str(container.id))
    return "created" if info is None else "replaced"


def _spec(box: Box, service: Service, *, task_id: str) -> dict[str, Any]:
    return {
        "image": service.image,
        "name": service.container_name,
        "labels": {
            de.LABEL_MANAGED: "infra",
            LABEL_INFRA: service.name,
            LABEL_INFRA_VERSION: service.version,
            de.LABEL_TASK_ID: task_id,
        },
        "network_mode": box.settings.app_network,
        "restart_policy": {"Name": "unless-stopped"},
        "log_config": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
        "detach": True,
    }
