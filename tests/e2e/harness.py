"""Real Celery worker processes for the end-to-end tests, and the client side pointed at them.

Workers are `celery -A tasks worker -I tests.e2e.kinds` subprocesses in their own session (so a
test can SIGKILL a worker's whole process group); the test process talks to the same database and
broker through `tasks.client`, exactly as the API and CLI do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kombu import pools as kombu_pools

from config import get_settings
from config.celery import QUEUES, celery_config
from models import FINAL_STATES
from models import engine as models_engine
from tasks import records
from tasks.celery import app

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
FINAL = {s.value for s in FINAL_STATES}


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass
class Env:
    """Settings shared by the test process and its workers."""

    database_url: str
    broker_url: str
    data_dir: Path
    lease: float = 4.0
    heartbeat: float = 0.5
    extra: dict[str, str] = field(default_factory=dict)

    def variables(self) -> dict[str, str]:
        env = {
            "BOXTASKS_DATA_DIR": str(self.data_dir),
            "BOXTASKS_LOCK_LEASE_SECONDS": str(self.lease),
            "BOXTASKS_HEARTBEAT_SECONDS": str(self.heartbeat),
            "BOXTASKS_STOP_GRACE_SECONDS": "3",
            "BOXTASKS_SWEEP_SECONDS": "1",
        }
        if self.database_url:
            env["BOXTASKS_DATABASE_URL"] = self.database_url
        if self.broker_url:
            env["BOXTASKS_BROKER_URL"] = self.broker_url
        env.update(self.extra)
        return env

    def apply_to_this_process(self) -> None:
        """Point settings, the engine and the Celery app of the test process at this environment."""
        for key in list(os.environ):
            if key.startswith("BOXTASKS_"):
                del os.environ[key]
        os.environ.update(self.variables())
        get_settings.cache_clear()
        if models_engine.get_engine.cache_info().currsize:
            models_engine.get_engine().dispose()
        models_engine.get_engine.cache_clear()
        models_engine._sessionmaker.cache_clear()
        from tasks import locking

        locking._process_runtime.cache_clear()
        before = app.conf.broker_url
        app.conf.update(celery_config(get_settings()))
        if app.conf.broker_url != before:
            # Connections made for another broker must not be reused for this one.
            kombu_pools.reset()  # type: ignore[no-untyped-call]
            app._pool = None
            app.amqp._producer_pool = None


class Worker:
    """One `celery worker` subprocess (a node), started and stopped by a test."""

    def __init__(
        self,
        env: Env,
        log_dir: Path,
        *,
        name: str = "w1",
        concurrency: int = 2,
        queues: Iterable[str] = QUEUES,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.env = env
        self.name = name
        self.nodename = f"{name}@boxtasks-test"
        self.log = log_dir / f"worker-{name}-{int(time.time() * 1000)}.log"
        self.args = [
            str(VENV_BIN / "celery"),
            "-A",
            "tasks",
            "worker",
            "-I",
            "tests.e2e.kinds",
            "-Q",
            ",".join(queues),
            "-n",
            self.nodename,
            "--without-mingle",
            "--without-gossip",
            "-l",
            "info",
            *([] if any(a.startswith("--autoscale") for a in extra_args) else ["-c", str(concurrency)]),
            *extra_args,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready_timeout: float = 60.0) -> Worker:
        env = {**os.environ, **self.env.variables(), "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(
            self._ready, timeout=ready_timeout, interval=0.2, what=f"worker {self.nodename} ready (log {self.log})"
        )
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"worker {self.nodename} exited with {self.proc.returncode}:\n{self.tail()}")
        return " ready." in self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill_all(self) -> None:
        """SIGKILL the main process and every child: a host that dies."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
        except ProcessLookupError:
            pass


def row(task_id: str) -> Any:
    from models import get_engine

    found = records.get(get_engine(), task_id)
    assert found is not None, f"no row for task {task_id}"
    return found


def wait_state(task_id: str, *states: str, timeout: float = 60.0) -> Any:
    wanted = set(states) or FINAL
    return wait_for(
        lambda: (r := row(task_id)) is not None and r.state in wanted and r,
        timeout=timeout,
        what=f"task {task_id} in {sorted(wanted)} (now {row(task_id).state}: {row(task_id).message})",
    )


def purge_queues() -> None:
    """Drop messages a crashed earlier run left in the shared queues."""
    for queue in QUEUES:
        with app.connection_for_write() as conn:
            try:
                conn.default_channel.queue_purge(queue)
            except Exception:  # a queue that does not exist yet has nothing to purge
                continue
