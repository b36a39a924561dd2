"""The `boxtasks` CLI as a subprocess on the embedded default: its --json contract and its errors.

Following tasks run by real workers (task wait/watch/stop): tests/e2e/test_cli_tasks.py.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from lockman import LockManager
from models.migrate import upgrade
from tests.cli_run import boxtasks
from tests.e2e.harness import Env

MANIFEST = {
    "id": "io.example.app",
    "version": "1.0.0",
    "dockerImage": "busybox:latest",
    "httpPort": 8080,
    "tcpPorts": {"SSH_PORT": {"title": "ssh", "containerPort": 22}},
}


@pytest.fixture
def env(tmp_path: Path) -> Env:
    url = f"sqlite:///{tmp_path / 'boxtasks.db'}"
    upgrade(url)
    e = Env(database_url=url, broker_url="", data_dir=tmp_path)
    e.apply_to_this_process()
    manager = LockManager.from_settings()
    manager.ensure_row()
    manager.dispose()
    return e


def _one_line_error(result: object) -> str:
    err = result.err  # type: ignore[attr-defined]
    assert result.out == "", result.out  # type: ignore[attr-defined]
    assert err.startswith("boxtasks: ") and err.count("\n") == 1, err
    return str(err)


def test_install_prints_the_task_and_lists_it(env: Env, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(MANIFEST))
    started = boxtasks(
        "app",
        "install",
        "--manifest",
        str(manifest),
        "--location",
        "blog",
        "--port",
        "SSH_PORT=2222",
        "--cpu-shares",
        "256",
        "--cpu-quota",
        "50",
        "--memory",
        str(64 * 1024 * 1024),
        "--json",
    )
    assert started.code == 0, started.err
    body = started.json()
    assert set(body) == {"task_id", "app_id"}

    listed = boxtasks("task", "list", "--json")
    assert listed.code == 0, listed.err
    (task,) = listed.json()
    for key in ("id", "type", "app_id", "state", "percent", "message", "created_at", "started_at", "finished_at"):
        assert key in task
    assert (task["id"], task["type"], task["app_id"], task["state"]) == (
        body["task_id"],
        "apptask",
        body["app_id"],
        "queued",
    )
    assert task["created_at"].endswith("Z") and task["started_at"] is None
    assert task["args"]["options"] == {
        "manifest": MANIFEST,
        "location": "blog",
        "ports": {"SSH_PORT": 2222},
        "cpuShares": 256,
        "cpuQuota": 50,
        "memoryLimit": 64 * 1024 * 1024,
    }
    shown = boxtasks("--json", "task", "show", body["task_id"])
    assert shown.json()["id"] == body["task_id"]
    human = boxtasks("task", "list")
    assert body["task_id"] in human.out and "apptask:install" in human.out

    stopped = boxtasks("task", "stop", body["task_id"], "--json")
    assert stopped.json() == {"task_id": body["task_id"], "state": "cancelled"}
    assert boxtasks("task", "wait", body["task_id"]).code == 1


def _fails_deep_down(depth: int) -> None:
    if depth:
        _fails_deep_down(depth - 1)
    raise ValueError("port 2222 is taken by app blog")


def test_show_of_a_failed_task_prints_the_error_in_one_line_and_where_to_read_more(env: Env) -> None:
    from lockman import lock_set
    from models import get_engine, records
    from tasks.runner import Outcome, Runtime, execute

    engine, manager = get_engine(), LockManager.from_settings()
    try:
        rt = Runtime(
            manager=manager,
            engine=engine,
            worker="node@test",
            pid=4242,
            lease=dt.timedelta(seconds=30),
            heartbeat_interval=1.0,
            wake=lambda ids: None,
        )
        task_id = records.create(engine, kind="apptask", queue="apptask", args={"app_id": "a"}, app_id="a")
        result = execute(rt, task_id, "apptask", lock_set({"app:a": "X"}), lambda ctx: _fails_deep_down(20))
    finally:
        manager.dispose()
    assert result.outcome is Outcome.FAILED

    shown = boxtasks("task", "show", task_id)
    assert shown.code == 0, shown.err
    assert "error:       ValueError: port 2222 is taken by app blog\n" in shown.out
    assert f"`boxtasks task show {task_id} --traceback`" in shown.out
    assert f"`boxtasks task logs {task_id}`" in shown.out
    assert "Traceback" not in shown.out and len(shown.out.splitlines()) < 20, shown.out

    full = boxtasks("task", "show", task_id, "--traceback")
    assert "Traceback (most recent call last)" in full.out and "_fails_deep_down" in full.out
    assert full.out.rstrip().endswith("ValueError: port 2222 is taken by app blog")

    view = boxtasks("--json", "task", "show", task_id).json()
    assert (
        view["error"].startswith("Traceback") and view["error_summary"] == "ValueError: port 2222 is taken by app blog"
    )
    assert view["waited_seconds"] is not None and view["waited_seconds"] >= 0


def test_refusals_are_one_line_and_non_zero(env: Env, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(MANIFEST))
    reserved = boxtasks("app", "install", "--manifest", str(manifest), "--location", "blog", "--port", "SSH_PORT=22")
    assert reserved.code == 1 and "reserved for SSH" in _one_line_error(reserved)
    missing = boxtasks("app", "install", "--manifest", str(tmp_path / "nope.json"), "--location", "blog")
    assert missing.code == 2 and "cannot read manifest" in _one_line_error(missing)
    bad_port = boxtasks("app", "install", "--manifest", str(manifest), "--location", "blog", "--port", "SSH_PORT")
    assert bad_port.code == 1 and "NAME=VALUE" in _one_line_error(bad_port)
    no_app = boxtasks("app", "start", "nope")
    assert no_app.code == 1 and "no app 'nope'" in _one_line_error(no_app)
    no_task = boxtasks("task", "show", "nope", "--json")
    assert no_task.code == 1 and "no task 'nope'" in _one_line_error(no_task)
    assert boxtasks("task").code == 2
    assert boxtasks("app", "install", "--location", "x").code == 2
    assert boxtasks("task", "list", "--state", "sleeping").code == 2
    assert boxtasks("task", "list", "--json").json() == []


def test_token_create_prints_the_token_once(env: Env) -> None:
    made = boxtasks("token", "create", "--name", "ci", "--scope", "write", "--json")
    assert made.code == 0, made.err
    body = made.json()
    assert body["token"].startswith("btk_") and body["scopes"] == ["write"]
    listed = boxtasks("token", "list", "--json").json()
    assert [t["name"] for t in listed] == ["ci"] and "token" not in listed[0]
    assert boxtasks("token", "revoke", body["id"]).code == 0
    assert boxtasks("token", "list", "--json").json() == []


def test_locks_and_backups_in_json(env: Env) -> None:
    assert boxtasks("locks", "--json").json()["holders"] == []
    assert boxtasks("backup", "list", "--json").json() == []
