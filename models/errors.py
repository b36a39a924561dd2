"""The models package's error tree."""

from __future__ import annotations


class ModelError(Exception):
    """Base of every error raised by `models`."""


class MigrationError(ModelError):
    """The schema could not be brought up to date; the message carries the database's reason."""
