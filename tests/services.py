"""Real services for the tests: a fresh, migrated database per backend and session.

A service that is down skips its tests locally, but fails them under CI=true, where a skip
would hide a missing install or start step.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from models.migrate import upgrade

MARIADB_ADMIN = os.environ.get("BOXTASKS_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")
POSTGRES_ADMIN = os.environ.get("BOXTASKS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
#: The broker's default vhost: tests take a vhost of their own (`rabbitmq_vhost`), never this one.
RABBITMQ_URL = os.environ.get("BOXTASKS_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("BOXTASKS_TEST_REDIS", "redis://127.0.0.1:6379/0")

BACKENDS = ("sqlite", "mariadb", "postgres")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(host: str, port: int, what: str) -> None:
    if not port_open(host, port):
        message = f"{what} is not reachable on {host}:{port}"
        if in_ci():
            pytest.fail(message + " (CI=true: a missing service is a failure, not a skip)")
        pytest.skip(message)


@contextmanager
def fresh_database(backend: str, tmp_dir: Path) -> Iterator[str]:
    """Create an empty database on `backend`, migrate it, yield its URL, drop it afterwards."""
    name = f"bt_{uuid.uuid4().hex[:10]}"
    if backend == "sqlite":
        url = f"sqlite:///{tmp_dir / (name + '.db')}"
        upgrade(url)
        yield url
        return
    if backend == "mariadb":
        require("127.0.0.1", 3306, "MariaDB")
        admin_url, url = MARIADB_ADMIN, f"{MARIADB_ADMIN}/{name}"
        create, drop = f"CREATE DATABASE {name} CHARACTER SET utf8mb4", f"DROP DATABASE IF EXISTS {name}"
    elif backend == "postgres":
        require("127.0.0.1", 5432, "PostgreSQL")
        admin_url, url = f"{POSTGRES_ADMIN}/postgres", f"{POSTGRES_ADMIN}/{name}"
        create, drop = f"CREATE DATABASE {name}", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    else:
        raise ValueError(backend)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(create))
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(drop))
        admin.dispose()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of this session's own, deleted afterwards: two runs on one machine never
    take each other's messages. Made with `rabbitmqctl` (the broker runs on this machine)."""
    require("127.0.0.1", 5672, "RabbitMQ")
    if shutil.which("rabbitmqctl") is None:
        message = "rabbitmqctl is not installed: a test session needs it to make its own RabbitMQ vhost"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    name = f"bt_{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"{RABBITMQ_URL.rstrip('/')}/{name}"
    finally:
        _rabbitmqctl("delete_vhost", name)
