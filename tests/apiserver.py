"""A real uvicorn server running the REST API on loopback, for the API and fuzz tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.e2e.harness import REPO, Env, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ApiServer:
    url: str
    log: Path

    def get(self, path: str, token: str | None = None, **kwargs: object) -> requests.Response:
        return requests.get(self.url + path, headers=_auth(token), timeout=30, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, token: str | None = None, **kwargs: object) -> requests.Response:
        return requests.post(self.url + path, headers=_auth(token), timeout=30, **kwargs)  # type: ignore[arg-type]

    def delete(self, path: str, token: str | None = None) -> requests.Response:
        return requests.delete(self.url + path, headers=_auth(token), timeout=30)


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextmanager
def running_api(env: Env, log_dir: Path, *, extra: dict[str, str] | None = None) -> Iterator[ApiServer]:
    port = free_port()
    log = log_dir / f"api-{port}.log"
    variables = {**os.environ, **env.variables(), **(extra or {}), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*argv, "--port", str(port)], cwd=REPO, env=variables, stdout=out, stderr=subprocess.STDOUT
        )
    server = ApiServer(f"http://127.0.0.1:{port}", log)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the API exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return server.get("/api/v1/openapi.json").status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, timeout=60, interval=0.2, what=f"the API on port {port}")
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
