"""The platform's own state: its version, the infra it should run, and whether it is ready.

One row (`platform_state.id = "main"`), made on first read: the version is the installed package's,
the infra list comes from `BOXTASKS_INFRA_MANIFEST` (a JSON file) until an update records one.
`ready` is false while platformstart brings the platform up, true after; other code reads it with
`is_ready`. (apptasks need not: platformstart holds `platform` X, so they wait for it anyway.)
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from config import Settings
from hosting.errors import InputError
from models import PlatformState, db_utcnow

logger = logging.getLogger(__name__)

ROW = "main"


@dataclass(frozen=True, slots=True)
class State:
    version: str
    infra: list[dict[str, Any]]
    ready: bool


def installed_version() -> str:
    try:
        return importlib.metadata.version("boxtasks")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def initial_infra(settings: Settings) -> list[dict[str, Any]]:
    """The infra list before any update recorded one: the manifest file, or nothing."""
    if settings.infra_manifest is None:
        return []
    try:
        doc = json.loads(settings.infra_manifest.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read BOXTASKS_INFRA_MANIFEST {settings.infra_manifest}: {err}") from err
    items = doc.get("infra", []) if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise InputError(f"BOXTASKS_INFRA_MANIFEST {settings.infra_manifest}: expected a list of infra services")
    return items


def current(conn: Connection, settings: Settings) -> State:
    """The state row, made with the defaults when there is none yet."""
    row = conn.execute(select(PlatformState.__table__).where(PlatformState.id == ROW)).first()
    if row is None:
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(PlatformState).values(
                        id=ROW, version=installed_version(), infra=initial_infra(settings), ready=False
                    )
                )
        except IntegrityError:
            pass  # made by someone else at the same moment
        row = conn.execute(select(PlatformState.__table__).where(PlatformState.id == ROW)).one()
    return State(row.version, list(row.infra or []), bool(row.ready))


def record_update(conn: Connection, settings: Settings, *, version: str, infra: list[dict[str, Any]]) -> None:
    current(conn, settings)
    conn.execute(
        update(PlatformState)
        .where(PlatformState.id == ROW)
        .values(version=version, infra=infra, updated_at=db_utcnow())
    )


def set_infra(conn: Connection, settings: Settings, infra: list[dict[str, Any]]) -> None:
    current(conn, settings)
    conn.execute(update(PlatformState).where(PlatformState.id == ROW).values(infra=infra, updated_at=db_utcnow()))


def set_ready(conn: Connection, settings: Settings, ready: bool) -> None:
    current(conn, settings)
    conn.execute(
        update(PlatformState)
        .where(PlatformState.id == ROW)
        .values(ready=ready, ready_at=db_utcnow() if ready else None, updated_at=db_utcnow())
    )


def is_ready(engine: Engine) -> bool:
    """Whether platformstart finished bringing the platform up (false before the first one)."""
    with engine.connect() as conn:
        ready = conn.execute(select(PlatformState.ready).where(PlatformState.id == ROW)).scalar()
    return bool(ready)
