"""A box on the private dockerd over SQLite and MariaDB (PostgreSQL adds nothing to what is tested here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.appkit import Kit, open_kit
from tests.dockerd import Dockerd


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"), pytest.param("mariadb", marks=[pytest.mark.mariadb])])
def kit(
    request: pytest.FixtureRequest, _databases: dict[str, str], dockerd: Dockerd, tmp_path: Path, lock_row: str
) -> Iterator[Kit]:
    """tests.appkit's kit, on the backend of the parameter, with a lock row of its own."""
    with open_kit(_databases[request.param], dockerd, tmp_path, lock_row) as k:
        yield k
