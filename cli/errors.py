"""The cli package's error tree."""

from __future__ import annotations


class CliError(Exception):
    """A command cannot do what was asked; the message is the one line the user sees."""
