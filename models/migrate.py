"""Alembic, driven from code: `boxtasks db upgrade` and the test fixtures call `upgrade()`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.exc import SQLAlchemyError

from models.errors import MigrationError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would read "%" in a password as a reference.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at `url` to `revision`; running it again changes nothing."""
    try:
        command.upgrade(alembic_config(url), revision)
    except SQLAlchemyError as err:
        raise MigrationError(
            f"cannot migrate the database: {err.__class__.__name__}: {getattr(err, 'orig', None) or err}"
        ) from err


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
