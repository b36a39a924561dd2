"""The cli package's error tree."""

from __future__ import annotations


class CliError(Exception):
    """A command cannot do what was asked; the message is the one line the user sees."""

    exit_code = 1


class UsageError(CliError):
    """An argument is unusable (a manifest file that cannot be read as JSON): exit 2, as argparse does."""

    exit_code = 2
