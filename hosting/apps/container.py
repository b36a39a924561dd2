"""What an app's container looks like: built from the app's record alone, so repair can always rebuild it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hosting.apps import docker_engine as de
from hosting.apps.manifest import Manifest
from hosting.apps.ports import Binding
from hosting.apps.resources import Limits

#: Where the localstorage addon puts the app's data directory inside the container.
DATA_MOUNT = "/app/data"


@dataclass(frozen=True, slots=True)
class AppSpec:
    """Everything about one app that its container is made from."""

    app_id: str
    location: str
    manifest: Manifest
    bindings: Sequence[Binding]
    limits: Limits
    env: Mapping[str, str]
    addon_env: Mapping[str, str]
    data_dir: Path


def platform_env(spec: AppSpec) -> dict[str, str]:
    """What every app is told about itself, and each bound port's env var (its first host port)."""
    env = {
        "BOX_APP_ID": spec.app_id,
        "BOX_APP_LOCATION": spec.location,
        "BOX_APP_VERSION": spec.manifest.version,
        "BOX_HTTP_PORT": str(spec.manifest.http_port),
        "BOX_MEMORY_LIMIT": str(spec.limits.memory_limit),
    }
    env.update({b.env_var: str(b.host_port) for b in spec.bindings})
    return env


def create_kwargs(spec: AppSpec, *, network: str, task_id: str) -> dict[str, Any]:
    """Keyword arguments for the docker SDK's `containers.create`."""
    ports: dict[str, int] = {}
    for b in spec.bindings:
        ports.update(b.docker_ports())
    volumes = {}
    if "localstorage" in spec.manifest.addons:
        volumes[str(spec.data_dir)] = {"bind": DATA_MOUNT, "mode": "rw"}
    return {
        "image": spec.manifest.image,
        "name": de.container_name(spec.app_id),
        "hostname": (spec.location or spec.app_id).split(".")[0][:63],
        "environment": {**spec.env, **platform_env(spec), **spec.addon_env},
        "labels": {
            de.LABEL_MANAGED: "app",
            de.LABEL_APP_ID: spec.app_id,
            de.LABEL_MANIFEST_ID: spec.manifest.id,
            de.LABEL_VERSION: spec.manifest.version,
            de.LABEL_LOCATION: spec.location,
            de.LABEL_TASK_ID: task_id,
        },
        "ports": ports,
        "volumes": volumes,
        "network_mode": network,
        "restart_policy": {"Name": "unless-stopped"},
        "log_config": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
        "detach": True,
        **spec.limits.docker_kwargs(),
    }
