"""The app's data directory on the host, under the settings' data dir: made on install, gone on uninstall."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from config.filemodes import private_dir
from hosting.errors import StorageError

logger = logging.getLogger(__name__)


def make(path: Path) -> Path:
    """Create the directory (and its parents) if missing; the app's data survives a repair or retry.

    The parents (the platform's data dir, `apps`, the app's own) are 0700: no other local user reaches
    an app's files. `data` itself is 0755, what the app in its container expects of a fresh volume.
    """
    try:
        private_dir(path)
        (path / "data").mkdir(exist_ok=True, mode=0o755)
    except OSError as err:
        raise StorageError(
            f"cannot create the app data directory {path}: {err.strerror}; check BOXTASKS_DATA_DIR and free space"
        ) from err
    return path / "data"


def remove(path: Path) -> bool:
    """Delete the directory and everything in it; False when it was not there."""
    if not path.exists():
        return False
    try:
        shutil.rmtree(path)
    except OSError as err:
        raise StorageError(f"cannot delete the app data directory {path}: {err.strerror}") from err
    logger.info("removed app data %s", path)
    return True
