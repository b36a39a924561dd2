"""`boxtasks run` (what `make run` calls) on the embedded default: starts, serves Flower and the API,
runs an app operation end to end through the API, stops on Ctrl-C."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver import free_port
from tests.e2e.harness import REPO, VENV_BIN, wait_for

pytestmark = [pytest.mark.slow]


def _status(url: str, password: str | None) -> int:
    request = urllib.request.Request(url)
    if password is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"admin:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, ConnectionError):
        return 0


def test_run_starts_the_system_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOXTASKS_")}
    api_port = free_port()
    env.update(BOXTASKS_DATA_DIR=str(tmp_path / "var"), BOXTASKS_FLOWER_PORT="15755", BOXTASKS_API_PORT=str(api_port))
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "boxtasks"), "run"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: "Ctrl-C" in log.read_text(), timeout=60, what="startup banner")
        password_file = tmp_path / "var" / "flower-password"
        assert str(password_file) in log.read_text()
        password = password_file.read_text().strip()
        url = "http://127.0.0.1:15755/api/workers"
        wait_for(lambda: _status(url, password) == 200, timeout=60, interval=0.5, what="flower answering")
        assert _status(url, None) == 401
        assert _status(url, "wrong") == 401
        assert (tmp_path / "var" / "boxtasks.db").exists()
        _api_runs_a_task(f"http://127.0.0.1:{api_port}", tmp_path / "var", log)
        _every_printed_url_answers(log, password)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0, log.read_text()[-2000:]
    # The embedded broker's URL names a host: kombu no longer warns of its default at every connection.
    assert "No hostname was supplied" not in log.read_text()
    assert _processes_with(f"BOXTASKS_DATA_DIR={tmp_path / 'var'}") == []


def _every_printed_url_answers(log: Path, password: str) -> None:
    """Each URL the banner prints answers 200 (Flower with its password; the API's index, docs and
    metrics as they are: public)."""
    banner = log.read_text().split("Ctrl-C")[0]
    urls = re.findall(r"https?://[^\s()]+", banner)
    assert len(urls) >= 4, banner
    for url in urls:
        assert _status(url, password if ":15755" in url else None) == 200, (url, banner)


def _processes_with(variable: str) -> list[int]:
    """Processes whose environment holds `variable`: what `run` started and left behind."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if variable.encode() in environ:
            found.append(int(entry.name))
    return found


def _call(url: str, token: str | None, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read() or b"null")
    except (urllib.error.URLError, ConnectionError):
        return 0, None


def _api_runs_a_task(base: str, data_dir: Path, log: Path) -> None:
    """The API serves tasks with the admin token, and an app operation runs through it end to end.

    The operation is `stop` on an app whose container is gone: hosting's real code path (state
    machine, fenced writes, eventlog) with no Docker call, so it runs on the embedded default.
    """
    token_file = data_dir / "api-admin-token"
    assert str(token_file) in log.read_text() and (token_file.stat().st_mode & 0o777) == 0o600
    token = token_file.read_text().strip()
    wait_for(lambda: _call(f"{base}/api/v1/tasks", token)[0] == 200, timeout=60, interval=0.5, what="API up")
    assert _call(f"{base}/api/v1/tasks", None)[0] == 401

    from sqlalchemy import create_engine, insert

    from models import App

    engine = create_engine(f"sqlite:///{data_dir / 'boxtasks.db'}")
    with engine.begin() as conn:
        conn.execute(
            insert(App).values(
                id="run1",
                app_store_id="io.example.app",
                version="1.0.0",
                location="run1",
                manifest={
                    "id": "io.example.app",
                    "version": "1.0.0",
                    "dockerImage": "busybox:latest",
                    "httpPort": 8080,
                },
                installation_state="installed",
                run_state="running",
                cpu_shares=512,
                cpu_quota=100,
                memory_limit=256 * 1024 * 1024,
                env={},
                notes="",
                operators=[],
                checklist={},
                enable_backup=True,
                enable_mailbox=False,
            )
        )
    engine.dispose()
    status, started = _call(f"{base}/api/v1/apps/run1/stop", token, method="POST")
    assert status == 202, started
    assert isinstance(started, dict)
    task_url = base + started["url"]
    final = wait_for(
        lambda: (t := _call(task_url, token)[1]) and t["state"] in ("succeeded", "failed", "interrupted") and t,
        timeout=90,
        interval=0.5,
        what="the stop task to end",
    )
    assert final["state"] == "succeeded", final
    _, app = _call(f"{base}/api/v1/apps/run1", token)
    assert isinstance(app, dict) and app["runState"] == "stopped" and app["installationState"] == "installed"
    _, entries = _call(task_url + "/log", token)
    assert any("app.stop ok" in e["message"] for e in entries), entries
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        assert 'boxtasks_tasks{state="succeeded",type="apptask"} 1.0' in response.read().decode()
