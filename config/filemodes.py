"""Modes for what the platform keeps on disk: its data, backups and database are its owner's alone.

Backups hold the app's data and box backups the whole platform database (app env values, addon and
mail passwords), so files are made 0600 and directories 0700 *when created* (`os.open`/`mkdir` with
the mode), never chmod-ed after the bytes are already there for another local user to read.
Here (the bottom of the dependency chain) so that `models` (the SQLite file) and `hosting` share it.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> Path:
    """Make `path` and every missing parent 0700 (existing ones are left as they are); return it.

    `Path.mkdir(parents=True, mode=...)` gives the mode to the last component only: the parents it
    makes get the process's default (0755 under the usual umask), which is the leak this avoids.
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for component in reversed(missing):
        try:
            component.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            if not component.is_dir():
                raise
    return path


def create_private_file(path: Path) -> int:
    """Create `path` (which must not exist) 0600 for writing; the open file descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE)
