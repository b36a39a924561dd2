"""When did the database server start? Asked of the real servers, as `models.liveness` asks it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, select

from models import db_utcnow, liveness


def test_server_start_is_in_the_past_and_stable(engine: Engine) -> None:
    with engine.connect() as conn:
        now = conn.execute(select(db_utcnow())).scalar_one()
        assert isinstance(now, dt.datetime) and now.tzinfo is None  # naive UTC on every backend
        first = liveness.server_started_at(conn, now)
        again = liveness.server_started_at(conn, now)
    if engine.dialect.name == "sqlite":
        assert first is None  # no server, so no downtime of its own to forgive
        return
    assert first is not None and again is not None
    assert first <= now
    # Whole seconds of uptime on MySQL/MariaDB: two asks agree to the second.
    assert abs(first - again) <= dt.timedelta(seconds=1)
