"""`boxtasks run` (`make run`): migrate, then start worker, beat, Flower and the API; Ctrl-C stops them all.

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
from dataclasses import dataclass, field
from pathlib import Path

from cli import api_cmd
from cli.errors import CliError
from config import Settings, get_settings
from config.celery import QUEUES
from frontdoor import tokens
from models import get_engine
from models.migrate import upgrade

logger = logging.getLogger(__name__)


@dataclass
class Service:
    name: str
    argv: list[str]
    #: Variables added to this service's environment (secrets go here, never in `argv`).
    env: dict[str, str] = field(default_factory=dict)
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


def admin_token(settings: Settings) -> Path | None:
    """Development: an admin API token made once and kept in a 0600 file under the data dir.

    Production: none is made; one must exist already (`boxtasks token create --scope admin`).
    """
    engine = get_engine()
    if settings.env == "production":
        if not tokens.has_admin(engine):
            raise CliError(
                "no admin API token: make one with `boxtasks token create --name admin --scope admin` "
                "(BOXTASKS_ENV=production makes none by itself)"
            )
        return None
    path = settings.resolved_data_dir / "api-admin-token"
    if path.exists() and tokens.exists(engine, path.read_text().strip()):
        return path
    _, token = tokens.create(engine, name="make run (development admin)", scopes=["admin"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return path


def services(settings: Settings, password: str) -> list[Service]:
    """What `run` starts. Flower's password goes through its environment (`FLOWER_BASIC_AUTH`, read by
    Flower itself): on the command line, `/proc/<pid>/cmdline` would show it to every local user."""
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
            ],
            env={"FLOWER_BASIC_AUTH": f"{settings.flower_user}:{password}"},
        ),
        Service("api", [sys.executable, *api_cmd.argv(settings.api_address, settings.api_port)]),
    ]


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    upgrade(settings.effective_database_url)
    password, password_file = flower_password(settings)
    token_file = admin_token(settings)
    started = services(settings, password)
    for service in started:
        env = {**os.environ, **service.env} if service.env else None
        service.proc = subprocess.Popen(service.argv, env=env, start_new_session=True)
    token_where = f"admin token in {token_file}" if token_file else "tokens from `boxtasks token create`"
    where = f"password in {password_file}" if password_file else "password from BOXTASKS_FLOWER_PASSWORD"
    api = f"http://{settings.api_address}:{settings.api_port}"
    sys.stdout.write(
        f"boxtasks is running on {settings.effective_database_url.split('@')[-1]} "
        f"with broker {settings.effective_broker_url.split('@')[-1]}\n"
        f"  Flower:  http://{settings.flower_address}:{settings.flower_port}/  (user {settings.flower_user}, {where})\n"
        f"  API:     {api}/api/v1/  ({token_where})\n"
        f"  Docs:    {api}/api/v1/docs\n"
        f"  Metrics: {api}/metrics\n"
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
