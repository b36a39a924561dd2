"""Column types that behave alike on MariaDB/MySQL, PostgreSQL and SQLite."""

from __future__ import annotations

from sqlalchemy import JSON, DateTime, Text
from sqlalchemy.dialects import mysql

#: Naive UTC timestamps with microseconds (MySQL's DATETIME drops them unless asked).
UTCDateTime = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

#: Long text: MySQL's TEXT stops at 64 KiB, which a task log or an error can pass.
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

#: JSON documents; MariaDB stores them as LONGTEXT with a validity check.
JSONDoc = JSON().with_variant(mysql.JSON(), "mysql", "mariadb")
