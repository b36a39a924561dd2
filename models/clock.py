"""`db_utcnow()`: the database's own clock, in UTC, with microseconds.

Liveness of lock holders is judged on this clock only, never a worker's, so hosts with
skewed clocks agree on who is dead.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from models.types import UTCDateTime


class db_utcnow(FunctionElement[Any]):
    """Read back as naive UTC (`UTCDateTime`), like the columns it fills."""

    type = UTCDateTime()
    inherit_cache = True
    name = "db_utcnow"


@compiles(db_utcnow)
def _default(element: db_utcnow, compiler: Any, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(db_utcnow, "mysql")
@compiles(db_utcnow, "mariadb")
def _mysql(element: db_utcnow, compiler: Any, **kw: Any) -> str:
    return "UTC_TIMESTAMP(6)"


@compiles(db_utcnow, "postgresql")
def _postgresql(element: db_utcnow, compiler: Any, **kw: Any) -> str:
    # clock_timestamp(), not now(): now() is frozen at the start of the transaction.
    return "(clock_timestamp() AT TIME ZONE 'UTC')"


@compiles(db_utcnow, "sqlite")
def _sqlite(element: db_utcnow, compiler: Any, **kw: Any) -> str:
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now'))"
