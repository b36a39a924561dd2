"""The config package's error tree."""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the variable and the fix."""
