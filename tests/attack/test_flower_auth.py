"""Flower's password stays off command lines (`boxtasks run`, compose), and Flower never serves open.

A command line is world-readable (`/proc/<pid>/cmdline`); an environment is readable by its owner
only. Flower reads `FLOWER_BASIC_AUTH` itself; started by hand with no auth it must refuse to start.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tasks.flower_auth import REFUSAL, UNSAFE_ENV
from tests.apiserver import free_port
from tests.e2e.harness import REPO, VENV_BIN, wait_for
from tests.unit.test_compose import COMPOSE, SECRETS, _config

pytestmark = [pytest.mark.slow]

PASSWORD = "attack-flower-pw-5c1f"


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any boxtasks or Flower setting, on the embedded default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOXTASKS_", "FLOWER_"))}
    env["BOXTASKS_DATA_DIR"] = str(tmp_path / "var")
    env.update(extra)
    return env


def _status(url: str, credentials: str | None) -> int:
    request = urllib.request.Request(url)
    if credentials is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, ConnectionError):
        return 0


def _flower(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    args = [str(VENV_BIN / "celery"), "-A", "tasks", "flower", "--address=127.0.0.1", f"--port={port}"]
    with open(log, "wb") as out:
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def stopper() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            found.append(child)
            todo.append(child)
    return found


def test_flower_without_auth_refuses_to_start(tmp_path: Path, stopper: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    log = tmp_path / "flower.log"
    proc = _flower(_clean_env(tmp_path), port, log)
    stopper.append(proc)
    code = proc.wait(timeout=180)
    assert code != 0, log.read_text()[-2000:]
    assert REFUSAL in log.read_text().splitlines()
    assert _status(f"http://127.0.0.1:{port}/api/workers", None) == 0


def test_flower_with_auth_in_its_environment(tmp_path: Path, stopper: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    proc = _flower(_clean_env(tmp_path, FLOWER_BASIC_AUTH=f"admin:{PASSWORD}"), port, tmp_path / "flower.log")
    stopper.append(proc)
    url = f"http://127.0.0.1:{port}/api/workers"
    wait_for(lambda: _status(url, f"admin:{PASSWORD}") == 200, timeout=180, interval=0.5, what="flower answering")
    assert _status(url, None) == 401
    assert _status(url, "admin:wrong") == 401
    assert _status(f"http://127.0.0.1:{port}/", None) == 401  # the UI too
    assert PASSWORD not in _cmdline(proc.pid)


def test_flower_open_only_when_asked_explicitly(tmp_path: Path, stopper: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    log = tmp_path / "flower.log"
    proc = _flower(_clean_env(tmp_path, **{UNSAFE_ENV: "1"}), port, log)
    stopper.append(proc)
    # The UI (Flower itself keeps its /api closed unless FLOWER_UNAUTHENTICATED_API is set too).
    url = f"http://127.0.0.1:{port}/"
    wait_for(lambda: _status(url, None) == 200, timeout=180, interval=0.5, what="flower answering")
    assert "without authentication" in log.read_text()


def test_boxtasks_run_keeps_the_password_off_command_lines(tmp_path: Path) -> None:
    flower_port, api_port = free_port(), free_port()
    env = _clean_env(
        tmp_path,
        BOXTASKS_FLOWER_PASSWORD=PASSWORD,
        BOXTASKS_FLOWER_PORT=str(flower_port),
        BOXTASKS_API_PORT=str(api_port),
        BOXTASKS_WORKER_CONCURRENCY="1",
    )
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(VENV_BIN / "boxtasks"), "run"], cwd=REPO, env=env, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{flower_port}/api/workers"
        wait_for(lambda: _status(url, f"admin:{PASSWORD}") == 200, timeout=180, interval=0.5, what="flower")
        assert _status(url, None) == 401
        started = _descendants(proc.pid)
        lines = {pid: _cmdline(pid) for pid in [proc.pid, *started]}
        assert any(" flower" in line for line in lines.values()), lines
        assert any(" worker" in line for line in lines.values()), lines
        assert [line for line in lines.values() if PASSWORD in line] == []
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    assert code == 0, log.read_text()[-2000:]


def _words(command: object) -> str:
    return " ".join(command) if isinstance(command, list) else str(command or "")


def test_compose_keeps_the_password_off_command_lines() -> None:
    spec = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    for name, service in spec["services"].items():
        command = _words(service.get("command"))
        assert "PASSWORD" not in command and "basic-auth" not in command, (name, command)
    flower = spec["services"]["flower"]["environment"]
    assert flower["FLOWER_BASIC_AUTH"].startswith("admin:${FLOWER_PASSWORD:?")
    # The service keeps the shared settings (a `environment:` of its own replaces, not merges, by default).
    assert flower["BOXTASKS_ENV"] == "production" and "BOXTASKS_DATABASE_URL" in flower


def test_compose_renders_the_password_only_into_flowers_environment() -> None:
    done = _config({name: f"secret-{name.lower()}" for name in SECRETS})
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    for name, service in services.items():
        assert "secret-flower_password" not in _words(service.get("command")), name
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "admin:secret-flower_password"
