"""Shared fixtures: one suite over SQLite, MariaDB and PostgreSQL; real services only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from lockman import LockManager
from tests.dockerd import Dockerd, running_dockerd
from tests.services import BACKENDS, fresh_database, rabbitmq_vhost


@pytest.fixture(scope="session")
def _databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One migrated database per backend, made on first use and dropped at the end of the session."""
    made: dict[str, str] = {}
    stack = []
    tmp = tmp_path_factory.mktemp("db")

    class _Lazy(dict[str, str]):
        def __missing__(self, backend: str) -> str:
            cm = fresh_database(backend, Path(tmp))
            url = cm.__enter__()
            stack.append(cm)
            self[backend] = url
            return url

    lazy = _Lazy(made)
    yield lazy
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def _backend_param(name: str) -> object:
    marks = {"mariadb": [pytest.mark.mariadb], "postgres": [pytest.mark.postgres]}.get(name, [])
    return pytest.param(name, marks=marks, id=name)


@pytest.fixture(params=[_backend_param(b) for b in BACKENDS])
def db_url(request: pytest.FixtureRequest, _databases: dict[str, str]) -> str:
    """A migrated database URL, once per backend."""
    return _databases[request.param]


@pytest.fixture
def mariadb_url(_databases: dict[str, str]) -> str:
    return _databases["mariadb"]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def lock_row() -> str:
    """A lock row of its own for each test, so tests never see each other's locks."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def manager(db_url: str, lock_row: str) -> Iterator[LockManager]:
    m = LockManager(db_url, row_id=lock_row, lease=2.0)
    m.ensure_row()
    yield m
    m.dispose()


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """The URL of a RabbitMQ vhost made for this test session and deleted at its end."""
    with rabbitmq_vhost() as url:
        yield url


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """A private Docker engine with the busybox test image (skips locally, fails under CI, when missing)."""
    with running_dockerd() as engine:
        yield engine
