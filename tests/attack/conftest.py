"""A box on the private dockerd over SQLite and MariaDB (PostgreSQL adds nothing to what is tested here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from config import load_settings
from hosting import Box
from lockman import LockManager
from tests.appkit import Kit
from tests.dockerd import Dockerd


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"), pytest.param("mariadb", marks=[pytest.mark.mariadb])])
def kit(
    request: pytest.FixtureRequest, _databases: dict[str, str], dockerd: Dockerd, tmp_path: Path, lock_row: str
) -> Iterator[Kit]:
    """tests.appkit's kit, on the backend of the parameter, with a lock row of its own."""
    url = _databases[request.param]
    settings = load_settings(
        data_dir=tmp_path / "box",
        database_url=url,
        docker_host=dockerd.base_url,
        app_network="none",
        app_stop_timeout_seconds=3,
        receives_mail=False,
        mail_domain="box.test",
    )
    manager = LockManager(url, row_id=lock_row, lease=120.0)
    manager.ensure_row()
    engine = create_engine(url)
    box = Box.from_settings(settings)
    try:
        yield Kit(box=box, engine=engine, manager=manager, dockerd=dockerd, data_dir=tmp_path / "box")
    finally:
        box.docker.close()
        engine.dispose()
        manager.dispose()
