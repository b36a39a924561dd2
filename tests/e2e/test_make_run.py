"""`boxtasks run` (what `make run` calls) on the embedded default: starts, serves Flower, stops on Ctrl-C."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

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
    env.update(BOXTASKS_DATA_DIR=str(tmp_path / "var"), BOXTASKS_FLOWER_PORT="15755")
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
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0, log.read_text()[-2000:]
    assert _processes_with(f"BOXTASKS_DATA_DIR={tmp_path / 'var'}") == []


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
