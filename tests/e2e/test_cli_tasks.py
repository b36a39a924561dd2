"""`boxtasks task list|show|watch|wait|stop` against real workers on MariaDB + RabbitMQ.

The tasks are the test kinds of tests/e2e/kinds.py, enqueued through `tasks.client` as the API does.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from tasks import client
from tests.cli_run import boxtasks
from tests.e2e.harness import REPO, VENV_BIN, Env, Worker, wait_state

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq]


def test_wait_watch_show_list(e2e_env: Env, start_worker: Callable[..., Worker]) -> None:
    start_worker()
    # Long enough that the watcher (a CLI start, over a second on a loaded machine) sees steps go by.
    ok = client.enqueue("t_app", {"app_id": "cli1", "seconds": 6.0}, app_id="cli1")
    watched = boxtasks("task", "watch", ok, timeout=60)
    assert watched.code == 0, watched.err
    lines = watched.out.splitlines()
    assert lines[-1].startswith("[" + "#" * 30 + "] 100% succeeded: Done"), lines
    assert any("app cli1 step" in line for line in lines), lines  # progress messages went by

    assert boxtasks("task", "wait", ok).code == 0
    shown = boxtasks("task", "show", ok, "--json").json()
    assert shown["state"] == "succeeded" and shown["percent"] == 100
    assert shown["started_at"].endswith("Z") and shown["finished_at"].endswith("Z")

    failing = client.enqueue("t_fail", {"app_id": "cli2"}, app_id="cli2")
    waited = boxtasks("task", "wait", failing, "--json", timeout=60)
    assert waited.code == 1 and waited.json()["state"] == "failed"
    assert "app cli2 refused" in waited.json()["error"]

    listed = boxtasks("task", "list", "--json", "--app", "cli1").json()
    assert [t["id"] for t in listed] == [ok]
    assert boxtasks("task", "list", "--json", "--state", "failed").json()[0]["id"] == failing


def test_watch_json_and_stop_a_running_task(e2e_env: Env, start_worker: Callable[..., Worker]) -> None:
    start_worker()
    long = client.enqueue("t_app", {"app_id": "cli3", "seconds": 60}, app_id="cli3")
    wait_state(long, "running", timeout=60)
    watcher = subprocess.Popen(
        [str(VENV_BIN / "boxtasks"), "task", "watch", long, "--json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert watcher.stdout is not None
    first = json.loads(watcher.stdout.readline())  # the watcher is following it
    assert first["state"] == "running"
    stopped = boxtasks("task", "stop", long, "--json", timeout=60)
    assert stopped.code == 0, stopped.err
    assert stopped.json() == {"task_id": long, "state": "cancelled"}
    out, _ = watcher.communicate(timeout=30)
    assert watcher.returncode == 1
    assert json.loads(out.splitlines()[-1])["state"] == "cancelled"
    timed_out = boxtasks(
        "task", "wait", client.enqueue("t_app", {"app_id": "cli4", "seconds": 30}, app_id="cli4"), "--timeout", "0.5"
    )
    assert timed_out.code == 1 and "still" in timed_out.err
