"""The backup target fills up mid-archive: a backup task on an app with more data than fits.

The target is a filesystem of its own, 8 MiB (tests/faults/servers.py `small_filesystem`); the app
holds 16 MiB of incompressible data. The backup must fail cleanly and say that the target is full;
no backup row may be `normal`, no partial file may stay behind, and the app must keep running.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from config import get_settings
from hosting.apps.docker_engine import LABEL_APP_ID
from models import App, Backup, get_engine
from tasks.client import enqueue
from tests.appkit import manifest
from tests.dockerd import Dockerd
from tests.e2e.harness import Env, Worker, wait_state
from tests.faults.checks import assert_no_leaked_lock, describe, tails
from tests.faults.servers import small_filesystem

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq, pytest.mark.docker]

MIB = 1024 * 1024


@pytest.fixture
def backup_target() -> Iterator[Path]:
    with small_filesystem(8) as mount:
        yield mount


def _op(app_id: str, operation: str, **options: Any) -> str:
    return enqueue("apptask", {"app_id": app_id, "operation": operation, "options": options}, app_id=app_id)


def _backups(app_id: str) -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(Backup.__table__).where(Backup.app_id == app_id)))


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "lost+found")


def test_backup_to_a_full_target_fails_cleanly(
    dockerd: Dockerd, backup_target: Path, fault_env: Env, start_worker: Callable[..., Worker]
) -> None:
    fault_env.extra.update(
        BOXTASKS_DOCKER_HOST=dockerd.base_url, BOXTASKS_APP_NETWORK="none", BOXTASKS_BACKUP_DIR=str(backup_target)
    )
    fault_env.apply_to_this_process()
    workers = [start_worker(name="full1", concurrency=1)]
    app_id = f"full{uuid.uuid4().hex[:6]}"
    installed = wait_state(_op(app_id, "install", manifest=manifest(dockerd.image), location=app_id), timeout=120)
    assert installed.state == "succeeded", describe([installed])
    data = get_settings().resolved_data_dir / "apps" / app_id / "data" / "random.bin"
    with open(data, "wb") as f:  # incompressible: the archive is as big as the data
        for _ in range(16):
            f.write(os.urandom(MIB))

    failed = wait_state(_op(app_id, "backup"), timeout=120)
    assert failed.state == "failed", f"{describe([failed])}\n{tails(workers)}"
    assert "No space left on device" in failed.error and "free space" in failed.error, failed.error
    assert [b.state for b in _backups(app_id)] == ["error"]
    assert "No space left on device" in _backups(app_id)[0].error
    assert _files(backup_target) == [], "a partial archive stayed on the target"
    with get_engine().connect() as conn:
        assert conn.execute(select(App.installation_state).where(App.id == app_id)).scalar() == "installed"
    [container] = dockerd.client.containers.list(filters={"label": f"{LABEL_APP_ID}={app_id}"})
    container.reload()
    assert container.status == "running"
    assert_no_leaked_lock()

    # Once the data fits again, the same app backs up fine: nothing was left stuck.
    data.unlink()
    again = wait_state(_op(app_id, "backup"), timeout=120)
    assert again.state == "succeeded", f"{describe([again])}\n{tails(workers)}"
    assert sorted(b.state for b in _backups(app_id)) == ["error", "normal"]
    assert [p.name for p in _files(backup_target)] == [f"{again.result['backupId']}.tar.gz"]
    assert_no_leaked_lock()
