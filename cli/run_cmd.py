"""`boxtasks run` (`make run`): migrate, then start worker, beat and Flower; Ctrl-C stops them all.

With nothing configured it runs on the embedded default (SQLite + filesystem broker under the
data dir); with BOXTASKS_DATABASE_URL / BOXTASKS_BROKER_URL set, against those.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from config import Settings, get_settings
from config.celery import QUEUES
from models.migrate import upgrade

logger = logging.getLogger(__name__)


@dataclass
class Service:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None


def flower_password(settings: Settings) -> tuple[str, Path | None]:
    """The configured password, or (development only) one made once and kept under the data dir."""
    configured = settings.flower_password.get_secret_value()
    if configured:
        return configured, None
    path = settings.resolved_data_dir / "flower-password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(18) + "\n")
        path.chmod(0o600)
    return path.read_text().strip(), path


def services(settings: Settings, password: str) -> list[Service]:
    celery = [sys.executable, "-m", "celery", "-A", "tasks"]
    return [
        Service(
            "worker",
            [*celery, "worker", "-Q", ",".join(QUEUES), "-c", str(settings.worker_concurrency), "-l", "info"],
        ),
        Service("beat", [*celery, "beat", "-l", "info"]),
        Service(
            "flower",
            [
                *celery,
                "flower",
                f"--address={settings.flower_address}",
                f"--port={settings.flower_port}",
                f"--basic-auth={settings.flower_user}:{password}",
            ],
        ),
    ]


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    upgrade(settings.effective_database_url)
    password, password_file = flower_password(settings)
    started = services(settings, password)
    for service in started:
        service.proc = subprocess.Popen(service.argv, start_new_session=True)
    where = f"password in {password_file}" if password_file else "password from BOXTASKS_FLOWER_PASSWORD"
    sys.stdout.write(
        f"boxtasks is running on {settings.effective_database_url.split('@')[-1]} "
        f"with broker {settings.effective_broker_url.split('@')[-1]}\n"
        f"  Flower:  http://{settings.flower_address}:{settings.flower_port}/  (user {settings.flower_user}, {where})\n"
        "  Stop:    Ctrl-C\n"
    )
    sys.stdout.flush()
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    exit_code = 0
    while not stopping:
        for service in started:
            assert service.proc is not None
            if service.proc.poll() is not None:
                sys.stderr.write(f"boxtasks: {service.name} exited with {service.proc.returncode}; stopping\n")
                stopping, exit_code = True, 1
        time.sleep(0.5)
    _terminate(started)
    return exit_code


def _terminate(started: list[Service], grace: float = 20.0) -> None:
    # SIGTERM to each main process only: Celery's warm shutdown lets running tasks finish and
    # stops its own pool; the process group gets SIGKILL only if that takes too long.
    for service in started:
        if service.proc is not None and service.proc.poll() is None:
            service.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for service in started:
        if service.proc is None:
            continue
        try:
            service.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(service.proc.pid, signal.SIGKILL)
            service.proc.wait()
