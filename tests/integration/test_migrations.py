"""`models.migrate`: upgrading twice changes nothing, and the way down and back up works, on each backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, inspect, select
from sqlalchemy.engine import Engine

from models import LockRow, Task
from models.migrate import alembic_config, downgrade, upgrade
from tests.owners import add_owner
from tests.services import BACKENDS, fresh_database

pytestmark = pytest.mark.parametrize(
    "backend",
    [
        pytest.param(b, marks={"mariadb": [pytest.mark.mariadb], "postgres": [pytest.mark.postgres]}.get(b, []))
        for b in BACKENDS
    ],
)


def schema(engine: Engine) -> dict[str, Any]:
    """Tables, their columns (name, nullability) and index names: what a migration changes."""
    insp = inspect(engine)
    return {
        table: {
            "columns": sorted((c["name"], c["nullable"]) for c in insp.get_columns(table)),
            "indexes": sorted(str(i["name"]) for i in insp.get_indexes(table)),
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
        }
        for table in sorted(insp.get_table_names())
    }


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one_or_none()


def test_upgrade_twice_is_idempotent(backend: str, tmp_path: Path) -> None:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    with fresh_database(backend, tmp_path) as url:  # made and upgraded once
        engine = create_engine(url)
        try:
            first = schema(engine)
            assert {"tasks", "locks", "alembic_version"} <= set(first)
            assert current_revision(engine) == head
            owner = add_owner(engine)
            upgrade(url)
            assert schema(engine) == first
            assert current_revision(engine) == head
            with engine.connect() as conn:
                rows = conn.execute(select(LockRow.id, LockRow.data, LockRow.version)).all()
                tasks = conn.execute(select(func.count()).select_from(Task)).scalar_one()
            assert [(r.id, r.data, r.version) for r in rows] == [("main", {"holders": [], "waiters": [], "seq": 0}, 0)]
            assert tasks == 1, f"the second upgrade lost data (task {owner})"
        finally:
            engine.dispose()


def test_downgrade_then_upgrade_restores_the_schema(backend: str, tmp_path: Path) -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    revisions = [r.revision for r in script.walk_revisions()]  # head first
    with fresh_database(backend, tmp_path) as url:
        engine = create_engine(url)
        try:
            at_head = schema(engine)
            # One step at a time down to the first revision, then to nothing.
            for below in [*revisions[1:], None]:
                downgrade(url, below or "base")
                assert current_revision(engine) == below
            assert set(schema(engine)) <= {"alembic_version"}, f"left behind: {set(schema(engine))}"
            upgrade(url)
            assert current_revision(engine) == revisions[0]
            assert schema(engine) == at_head
            with engine.connect() as conn:
                assert conn.execute(select(LockRow.id)).scalars().all() == ["main"]
        finally:
            engine.dispose()
