"""Column types that behave alike on MariaDB/MySQL, PostgreSQL and SQLite."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Text, TypeDecorator
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine


def naive_utc(value: dt.datetime | str | None) -> dt.datetime | None:
    """UTC as a naive datetime, whatever a driver handed back (aware, naive, or SQLite's text).

    `UTCDateTime` applies it to every value it reads and writes; call it yourself only on a value
    read past SQLAlchemy's types (a driver-level fetch, an untyped `text()` column).
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A UTC timestamp with microseconds, read back as a naive UTC datetime on every backend.

    Stored naive (the database's UTC clock, `db_utcnow()`, is naive too); an aware value written is
    turned to UTC first. MySQL's DATETIME drops microseconds unless asked for them (fsp=6).
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        return naive_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        return naive_utc(value)


#: Long text: MySQL's TEXT stops at 64 KiB, which a task log or an error can pass.
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

#: JSON documents; MariaDB stores them as LONGTEXT with a validity check.
JSONDoc = JSON().with_variant(mysql.JSON(), "mysql", "mariadb")
