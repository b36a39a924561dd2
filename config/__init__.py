"""Settings for every boxtasks process, read from BOXTASKS_* environment variables."""

from __future__ import annotations

from config.errors import ConfigError
from config.settings import Settings, get_settings, load_settings

__all__ = [
    # errors
    "ConfigError",
    # settings
    "Settings",
    "get_settings",
    "load_settings",
]
