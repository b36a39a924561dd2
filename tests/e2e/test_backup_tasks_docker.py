"""Backups and the platform tasks end to end: the real tasks in worker processes, on the private dockerd."""

from __future__ import annotations

import datetime as dt
import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from config import get_settings
from hosting.backups import store
from models import App, Backup, PlatformState, get_engine
from tasks.client import enqueue
from tests.appkit import manifest
from tests.backupkit import make_release, only_these_back_up
from tests.dockerd import Dockerd
from tests.e2e.harness import Env, Worker, row, wait_for, wait_state

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq, pytest.mark.docker]

MIB = 1024 * 1024


def _op(app_id: str, operation: str, **options: Any) -> str:
    return enqueue("apptask", {"app_id": app_id, "operation": operation, "options": options}, app_id=app_id)


def _install(dockerd: Dockerd, app_id: str, *, data_mib: int = 0) -> None:
    done = wait_state(
        _op(app_id, "install", manifest=manifest(dockerd.image), location=app_id), "succeeded", "failed", timeout=120
    )
    assert done.state == "succeeded", done.error
    if data_mib:
        data = get_settings().resolved_data_dir / "apps" / app_id / "data"
        with open(data / "random.bin", "wb") as f:  # incompressible: gzip takes its time over it
            for _ in range(data_mib):
                f.write(os.urandom(MIB))


def _backups_of(app_id: str) -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(Backup.__table__).where(Backup.app_id == app_id)))


def _docker_env(env: Env, dockerd: Dockerd) -> None:
    env.extra.update(BOXTASKS_DOCKER_HOST=dockerd.base_url, BOXTASKS_APP_NETWORK="none")
    env.apply_to_this_process()


def test_fullbackup_runs_beside_an_apptask_on_another_app(
    dockerd: Dockerd, e2e_env: Env, start_worker: Callable[..., Worker]
) -> None:
    _docker_env(e2e_env, dockerd)
    start_worker(concurrency=2)
    tag = uuid.uuid4().hex[:6]
    big = [f"fb{tag}a", f"fb{tag}b"]
    other = f"other{tag}"
    for app_id in big:
        _install(dockerd, app_id, data_mib=30)
    _install(dockerd, other)

    full = enqueue("fullbackup", {"app_ids": big})
    wait_for(lambda: row(full).state == "running" and row(full).percent > 0, timeout=60, what="fullbackup running")
    stop = wait_state(_op(other, "stop"), "succeeded", "failed", timeout=60)
    assert stop.state == "succeeded", stop.error
    assert row(full).state == "running", "the app task had to wait for the full backup"

    done = wait_state(full, "succeeded", "failed", timeout=180)
    assert done.state == "succeeded", done.error
    assert stop.finished_at < done.finished_at and done.started_at < stop.finished_at
    result = done.result
    assert sorted(backups_id.split("_")[1] for backups_id in result["appBackups"]) == sorted(big)
    with get_engine().connect() as conn:
        box = conn.execute(select(Backup.__table__).where(Backup.id == result["boxBackupId"])).one()
    assert box.state == "normal" and sorted(box.depends_on) == sorted(result["appBackups"])


def test_a_worker_killed_mid_backup_leaves_no_backup_marked_normal(
    dockerd: Dockerd, e2e_env: Env, start_worker: Callable[..., Worker]
) -> None:
    _docker_env(e2e_env, dockerd)
    start_worker(concurrency=1)
    app_id = f"kill{uuid.uuid4().hex[:6]}"
    _install(dockerd, app_id, data_mib=60)

    task = _op(app_id, "backup")
    partial_dir = get_settings().resolved_backup_dir / "apps" / app_id
    wait_for(
        lambda: any(p.name.startswith(".partial-") and p.stat().st_size > MIB for p in partial_dir.glob("*")),
        timeout=60,
        what="the archive half written",
    )
    pid = row(task).pid
    assert pid, "the running task records its process"
    os.kill(pid, signal.SIGKILL)
    ended = wait_state(task, "interrupted", "failed", timeout=60)
    assert ended.state == "interrupted"

    [left] = _backups_of(app_id)
    assert left.state == "creating", "a killed backup must never be marked normal"
    final = get_settings().resolved_backup_dir / left.path
    assert not final.exists()
    # The beat's (or the next full backup's) cleanup turns it into an error and removes the temp file.
    with get_engine().begin() as conn:
        assert left.id in store.cleanup_stale(conn, get_settings(), older_than=dt.timedelta(0))
    assert [b.state for b in _backups_of(app_id)] == ["error"]
    assert not any(partial_dir.glob(".partial-*"))
    with get_engine().connect() as conn:  # the dead backup no longer holds the app in pending_backup
        assert conn.execute(select(App.installation_state).where(App.id == app_id)).scalar() == "installed"

    # The app is not stuck: backing it up again works and it is installed afterwards.
    again = wait_state(_op(app_id, "backup"), "succeeded", "failed", timeout=120)
    assert again.state == "succeeded", again.error
    assert sorted(b.state for b in _backups_of(app_id)) == ["error", "normal"]


def test_update_and_platformstart_through_the_worker(
    dockerd: Dockerd, e2e_env: Env, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    _docker_env(e2e_env, dockerd)
    name = f"svc{uuid.uuid4().hex[:6]}"
    image = f"boxtasks-test/infra-{name}"
    dockerd.client.images.get(dockerd.image).tag(image, "1.0.0")
    dockerd.client.images.get(dockerd.image).tag(image, "2.0.0")
    infra_file = tmp_path / "infra.json"
    infra_file.write_text(f'[{{"name": "{name}", "image": "{image}:1.0.0", "version": "1.0.0"}}]')
    e2e_env.extra.update(BOXTASKS_INFRA_MANIFEST=str(infra_file))
    _docker_env(e2e_env, dockerd)
    with get_engine().begin() as conn:
        conn.execute(delete(PlatformState))
    start_worker(concurrency=2)

    started = wait_state(enqueue("platformstart", {}), "succeeded", "failed", timeout=120)
    assert started.state == "succeeded", started.error
    assert started.result["infra"] == {name: "created"} and started.result["ready"] is True

    url = make_release(tmp_path / "rel", "9.0.0", [{"name": name, "image": f"{image}:2.0.0", "version": "2.0.0"}])
    with only_these_back_up(get_engine(), []):
        updated = wait_state(enqueue("update", {"release_url": url}), "succeeded", "failed", timeout=180)
    assert updated.state == "succeeded", updated.error
    assert updated.result["toVersion"] == "9.0.0" and updated.result["infra"] == {name: "replaced"}
    assert dockerd.client.containers.get(f"boxtasks-infra-{name}").attrs["Config"]["Image"] == f"{image}:2.0.0"

    refused = wait_state(enqueue("update", {"release_url": url}), "succeeded", "failed", timeout=120)
    assert refused.state == "failed" and "not newer" in refused.error


def test_clone_from_the_front_door_runs_under_the_new_apps_lock(
    dockerd: Dockerd, e2e_env: Env, start_worker: Callable[..., Worker]
) -> None:
    from frontdoor import actions
    from frontdoor.errors import MissingError

    _docker_env(e2e_env, dockerd)
    start_worker(concurrency=2)
    source = f"app{uuid.uuid4().hex[:8]}"
    _install(dockerd, source)
    with get_engine().begin() as conn:
        conn.execute(update(App).where(App.id == source).values(notes="as at backup time"))
    backed = wait_state(_op(source, "backup"), "succeeded", "failed", timeout=120)
    assert backed.state == "succeeded", backed.error
    (backup,) = _backups_of(source)
    with get_engine().begin() as conn:
        conn.execute(update(App).where(App.id == source).values(notes="changed later"))
    with pytest.raises(MissingError, match=r"no app backup .* of app .someotherapp."):
        actions.clone(get_engine(), "someotherapp", {"backupId": backup.id, "location": "nowhere"})
    started = actions.clone(get_engine(), source, {"backupId": backup.id, "location": f"{source}-copy"})
    assert started.app_id != source
    done = wait_state(started.task_id, "succeeded", "failed", timeout=120)
    assert done.state == "succeeded", done.error
    assert done.app_id == started.app_id
    with get_engine().connect() as conn:
        notes = conn.execute(select(App.notes).where(App.id == started.app_id)).scalar_one()
    assert notes == "as at backup time"
