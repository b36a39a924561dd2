"""`UTCDateTime` and `db_utcnow()` read back naive UTC, with microseconds, on every backend."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Engine, delete, insert, select

from models import Notification, db_utcnow


def test_database_clock_and_columns_read_naive_utc(engine: Engine) -> None:
    aware = dt.datetime(2026, 3, 1, 14, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    title = f"utc-{uuid.uuid4().hex}"
    with engine.begin() as conn:
        now = conn.execute(select(db_utcnow())).scalar_one()
        conn.execute(insert(Notification).values(title=title, message="utc type", created_at=aware))
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(Notification.created_at).where(Notification.title == title)).scalar_one()
            newest = conn.execute(select(db_utcnow())).scalar_one()
        # The database clock: naive, UTC (close to this host's UTC clock), and moving forward.
        assert isinstance(now, dt.datetime) and now.tzinfo is None
        assert abs(now - dt.datetime.now(dt.UTC).replace(tzinfo=None)) < dt.timedelta(minutes=5)
        assert newest >= now
        # An aware value is stored as UTC and read back naive, microseconds kept.
        assert stored == dt.datetime(2026, 3, 1, 12, 30, 15, 123456)
        assert stored.tzinfo is None
    finally:
        with engine.begin() as conn:
            conn.execute(delete(Notification).where(Notification.title == title))
