"""The box as app operations see it: the settings and the Docker engine, made once per process."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from config import Settings, get_settings
from hosting.apps.docker_engine import DockerEngine


@dataclass
class Box:
    settings: Settings
    docker: DockerEngine

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Box:
        settings = settings or get_settings()
        return cls(settings, DockerEngine(settings.docker_host, timeout=settings.docker_timeout_seconds))

    @property
    def apps_dir(self) -> Path:
        return self.settings.resolved_data_dir / "apps"

    def app_dir(self, app_id: str) -> Path:
        """Where the app's data lives on the host (its `localstorage`)."""
        return self.apps_dir / app_id


@functools.cache
def default_box() -> Box:
    """The process-wide box, from the settings (after a fork, the child makes its own Docker client)."""
    return Box.from_settings()


def resolve(box: object) -> Box:
    """The box an operation was given, or the process-wide one; anything else is a bad option."""
    if box is None:
        return default_box()
    if not isinstance(box, Box):
        from hosting.errors import OptionsError

        raise OptionsError("unknown option 'box': operations take it only from Python, as a hosting.Box")
    return box
