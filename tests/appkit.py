"""Helpers for the hosting tests: a box on the private dockerd, task contexts with real lock grants,
and a real SMTP server on loopback (aiosmtpd). Import the fixtures into a test module to use them.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select

from config import Settings, load_settings
from hosting import Box, LocalContext
from hosting.apps.docker_engine import LABEL_APP_ID
from lockman import LockManager
from models import App, AppAddon, Event, Notification, PortBinding, PortReservation
from tests.dockerd import Dockerd
from tests.owners import add_owner

MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manifest(image: str, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "io.boxtasks.testapp",
        "version": "1.0.0",
        "title": "Test app",
        "dockerImage": image,
        "httpPort": 8080,
        "tcpPorts": {
            "SSH_PORT": {"title": "SSH", "description": "git over ssh", "containerPort": 2222},
            "RANGE_PORT": {"title": "A range", "containerPort": 7000, "portCount": 3},
        },
        "udpPorts": {"VOICE_PORT": {"title": "Voice", "containerPort": 9987}},
        "addons": {"localstorage": {}, "sendmail": {}, "recvmail": {}},
        "memoryLimit": 32 * MIB,
    }
    doc.update(overrides)
    return doc


@dataclass
class SmtpSink:
    port: int
    messages: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server on loopback that keeps what it receives."""
    from aiosmtpd.controller import Controller

    sink = SmtpSink(port=free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@dataclass
class Kit:
    box: Box
    engine: Engine
    manager: LockManager
    dockerd: Dockerd
    data_dir: Path

    @property
    def settings(self) -> Settings:
        return self.box.settings

    @contextmanager
    def ctx(self, app_id: str) -> Iterator[LocalContext]:
        """A task context holding an apptask's locks on `app_id`, released afterwards."""
        owner = add_owner(self.engine, kind="apptask")
        grant = self.manager.acquire(owner, {"platform": "S", f"app:{app_id}": "X"}, timeout=60)
        try:
            yield LocalContext(self.manager, grant)
        finally:
            self.manager.release(owner)

    def run(self, fn: Any, app_id: str, **options: Any) -> Any:
        with self.ctx(app_id) as ctx:
            return fn(ctx, app_id, box=self.box, **options)

    def app(self, app_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(App.__table__).where(App.id == app_id)).first()

    def rows(self, model: Any, app_id: str) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(model.__table__).where(model.app_id == app_id)))

    def leftovers(self, app_id: str) -> dict[str, int]:
        """Everything an app may leave behind; all zero after a refusal or an uninstall."""
        return {
            "app": int(self.app(app_id) is not None),
            "bindings": len(self.rows(PortBinding, app_id)),
            "reservations": len(self.rows(PortReservation, app_id)),
            "addons": len(self.rows(AppAddon, app_id)),
            "containers": len(self.containers(app_id)),
            "data_dir": int(self.box.app_dir(app_id).exists()),
        }

    def containers(self, app_id: str) -> list[Any]:
        return list(self.dockerd.client.containers.list(all=True, filters={"label": f"{LABEL_APP_ID}={app_id}"}))

    def inspect(self, container_id: str) -> dict[str, Any]:
        return dict(self.dockerd.client.api.inspect_container(container_id))

    def exec(self, container_id: str, command: str) -> str:
        result = self.dockerd.client.containers.get(container_id).exec_run(["sh", "-c", command])
        assert result.exit_code == 0, result.output
        return str(result.output.decode().strip())

    def events(self, action: str) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(Event.__table__).where(Event.action == action).order_by(Event.id)))

    def notifications(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(Notification.__table__).order_by(Notification.id)))


def new_app_id(prefix: str = "app") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@contextmanager
def open_kit(url: str, dockerd: Dockerd, tmp_path: Path, lock_row: str) -> Iterator[Kit]:
    """A Box on the private dockerd over the database at `url`, with a lock row of its own."""
    settings = load_settings(
        data_dir=tmp_path / "box",
        database_url=url,
        docker_host=dockerd.base_url,
        app_network="none",
        app_stop_timeout_seconds=3,
        app_health_timeout_seconds=10,
        receives_mail=False,
        mail_domain="box.test",
    )
    manager = LockManager(url, row_id=lock_row, lease=120.0)
    manager.ensure_row()
    engine = create_engine(url)
    box = Box.from_settings(settings)
    try:
        yield Kit(box=box, engine=engine, manager=manager, dockerd=dockerd, data_dir=tmp_path / "box")
    finally:
        box.docker.close()
        engine.dispose()
        manager.dispose()


@pytest.fixture
def kit(mariadb_url: str, dockerd: Dockerd, tmp_path: Path, lock_row: str) -> Iterator[Kit]:
    with open_kit(mariadb_url, dockerd, tmp_path, lock_row) as k:
        yield k


def run_threads(*targets: Any) -> list[Any]:
    """Run callables at once (released together by a barrier); each result or raised exception, in order."""
    barrier = threading.Barrier(len(targets))
    results: list[Any] = [None] * len(targets)

    def body(i: int, fn: Any) -> None:
        barrier.wait()
        try:
            results[i] = fn()
        except BaseException as err:
            results[i] = err

    threads = [threading.Thread(target=body, args=(i, fn)) for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results
