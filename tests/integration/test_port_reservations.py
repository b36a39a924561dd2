"""The database, not a check-then-write, keeps two apps off one port; and migration 0002 on every backend."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, delete, insert, inspect, select

from hosting import PortConflictError
from hosting.apps import ports
from hosting.apps.ports import Binding
from models import App, Base, PortReservation
from models.migrate import downgrade, upgrade
from tests.services import fresh_database


def _app(conn, app_id: str) -> None:
    conn.execute(
        insert(App).values(
            id=app_id,
            app_store_id="io.t.app",
            manifest={},
            version="1.0.0",
            location=app_id,
            installation_state="pending_install",
            run_state="running",
            cpu_shares=512,
            cpu_quota=100,
            memory_limit=0,
            env={},
            notes="",
            operators=[],
            checklist={},
            enable_backup=True,
            enable_mailbox=False,
        )
    )


def test_overlapping_reservations_collide_in_the_database(db_url: str) -> None:
    """A holds an open transaction with ports 47000-47001; B's insert of 47001 waits, then fails when A commits."""
    engine = create_engine(db_url, connect_args={"timeout": 30} if db_url.startswith("sqlite") else {})
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        _app(conn, a)
        _app(conn, b)
    outcome: list[BaseException | None] = []
    b_started = threading.Event()

    def reserve_b() -> None:
        try:
            with engine.begin() as conn:
                b_started.set()
                ports.reserve(conn, b, [Binding("GAME_PORT", 47001, 2, "tcp", 7000)])
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    try:
        with engine.begin() as conn_a:
            ports.reserve(conn_a, a, [Binding("SSH_PORT", 47000, 2, "tcp", 22)])
            thread = threading.Thread(target=reserve_b)
            thread.start()
            b_started.wait(10)
            thread.join(1.0)  # B is blocked on A's uncommitted rows (or has not reached them yet)
        thread.join(60)
        assert len(outcome) == 1 and isinstance(outcome[0], PortConflictError), outcome
        assert f"port 47001/tcp for GAME_PORT is already used by app {a} (SSH_PORT)" in str(outcome[0])
        with engine.connect() as conn:
            held = conn.execute(select(PortReservation.port, PortReservation.app_id).order_by(PortReservation.port))
            assert [tuple(r) for r in held if r.port in (47000, 47001, 47002)] == [(47000, a), (47001, a)]
        # The same port on the other protocol is free.
        with engine.begin() as conn:
            ports.reserve(conn, b, [Binding("GAME_PORT", 47001, 1, "udp", 7000)])
    finally:
        with engine.begin() as conn:
            conn.execute(delete(App).where(App.id.in_([a, b])))
        engine.dispose()


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("sqlite"),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
def test_migration_0002_upgrades_downgrades_and_matches_the_models(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
                assert {"port_reservations", "app_addons"} <= set(inspect(conn).get_table_names())
            downgrade(url, "0001")
            with engine.connect() as conn:
                names = set(inspect(conn).get_table_names())
                assert "port_reservations" not in names and "app_addons" not in names
                assert "error_operation" not in {c["name"] for c in inspect(conn).get_columns("apps")}
            upgrade(url)
            with engine.connect() as conn:
                assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        finally:
            engine.dispose()
