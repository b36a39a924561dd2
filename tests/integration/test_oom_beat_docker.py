"""celery beat watches the real Docker engine for OOM kills: nothing but `celery -A tasks beat` has to run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from hosting.apps import lifecycle
from models import Event, Notification
from tests.appkit import MIB, Kit, kit, manifest, new_app_id
from tests.e2e.harness import REPO, VENV_BIN

pytestmark = [pytest.mark.docker, pytest.mark.mariadb]
__all__ = ["kit"]  # the fixture, imported for this module


def _wait(what: str, timeout: float, check: object) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f}s")


def test_beat_records_an_oom_kill_of_an_app(kit: Kit, mariadb_url: str, tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BOXTASKS_")},
        "BOXTASKS_DATABASE_URL": mariadb_url,
        "BOXTASKS_DATA_DIR": str(tmp_path / "beat"),
        "BOXTASKS_DOCKER_HOST": kit.dockerd.base_url,
        "BOXTASKS_BACKUP_AT": "",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "beat.log"
    with open(log, "wb") as out:
        beat = subprocess.Popen(
            [str(VENV_BIN / "celery"), "-A", "tasks", "beat", "--loglevel", "INFO"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    app_id = new_app_id("beathog")
    try:
        _wait("beat did not start its OOM watch", 90, lambda: "for app containers killed" in log.read_text())
        time.sleep(1.0)  # the watch thread opens its stream just after it logs
        # 128 MiB under a 32 MiB limit (the test image's HOG_MB): the kernel kills the app's process.
        kit.run(
            lifecycle.install,
            app_id,
            manifest=manifest(kit.dockerd.image, memoryLimit=32 * MIB),
            location=app_id,
            memoryLimit=32 * MIB,
            env={"HOG_MB": "128"},
        )

        def notified() -> bool:
            with kit.engine.connect() as conn:
                titles = conn.execute(select(Notification.title)).scalars().all()
            return f"App {app_id} ran out of memory" in titles

        _wait(f"no OOM notification from beat:\n{log.read_text()[-3000:]}", 120, notified)
        with kit.engine.connect() as conn:
            sources = conn.execute(select(Event.source).where(Event.action == "app.oom")).scalars().all()
        assert [s for s in sources if s.get("app_id") == app_id], "the OOM is in the eventlog"
    finally:
        beat.send_signal(signal.SIGTERM)
        try:
            beat.wait(timeout=30)
        except subprocess.TimeoutExpired:
            beat.kill()
        kit.run(lifecycle.uninstall, app_id)
