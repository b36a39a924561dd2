"""Flower, started with basic auth, shows our tasks with their progress; its revoke is a stop."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.client import enqueue
from tests.e2e.harness import REPO, VENV_BIN, Env, Worker, row, wait_for, wait_state

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq]

USER, PASSWORD = "admin", "flower-test-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(url: str, *, method: str = "GET", auth: bool = True) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if auth:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            try:
                return response.status, json.loads(body) if body else None
            except ValueError:
                return response.status, body.decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, None
    except (urllib.error.URLError, ConnectionError):
        return 0, None


@pytest.fixture
def flower(e2e_env: Env, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = tmp_path / "flower.log"
    env = {**os.environ, **e2e_env.variables()}
    args = [
        str(VENV_BIN / "celery"),
        "-A",
        "tasks",
        "flower",
        "--address=127.0.0.1",
        f"--port={port}",
        f"--basic-auth={USER}:{PASSWORD}",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _call(f"{base}/healthcheck", auth=False)[0] == 200, timeout=60, interval=0.3, what="flower up")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_flower_lists_tasks_with_progress_and_needs_auth(flower: str, start_worker: Callable[..., Worker]) -> None:
    assert _call(f"{flower}/api/tasks", auth=False)[0] == 401
    start_worker(concurrency=2)
    app_id = f"a{uuid.uuid4().hex[:8]}"
    task_id = enqueue("t_app", {"app_id": app_id, "seconds": 4.0}, app_id=app_id, queue="apptask")

    def shown_with_progress() -> Any:
        status, tasks = _call(f"{flower}/api/tasks")
        task = (tasks or {}).get(task_id)
        return status == 200 and task and task["state"] == "PROGRESS" and task

    task = wait_for(shown_with_progress, timeout=30, interval=0.3, what="flower shows progress")
    assert task["name"] == "boxtasks.t_app"
    assert "app_id" in str(task["kwargs"]) and app_id in str(task["kwargs"])
    assert "%" in str(task["result"]) and "step" in str(task["result"])
    wait_state(task_id, "succeeded", timeout=30)


def test_revoke_through_flower_behaves_like_stop(flower: str, start_worker: Callable[..., Worker]) -> None:
    start_worker(concurrency=2)
    app_id = f"a{uuid.uuid4().hex[:8]}"
    holder = enqueue("t_app", {"app_id": app_id, "seconds": 60.0}, app_id=app_id, queue="apptask")
    wait_for(lambda: row(holder).percent > 0, timeout=30, what="holder working")
    waiter = enqueue("t_app", {"app_id": app_id, "seconds": 0.1}, app_id=app_id, queue="apptask")
    wait_state(waiter, "waiting")
    status, _ = _call(f"{flower}/api/task/revoke/{holder}?terminate=true&signal=SIGTERM", method="POST")
    assert status == 200
    r = wait_state(holder, "cancelled", timeout=30)
    assert r.message == "Stopped"
    wait_state(waiter, "succeeded", timeout=30)
