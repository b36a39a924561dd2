"""The liveness rule: silence counts only while the database was up to hear a heartbeat."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import TextualSelect, create_engine

from models.liveness import server_start_query, silent_too_long, started_from
from models.types import UTCDateTime

NOW = dt.datetime(2026, 11, 29, 12, 0, 0)
LEASE = dt.timedelta(seconds=30)
seconds = st.floats(min_value=0, max_value=3600, allow_nan=False)


def ago(s: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=s)


def test_a_fresh_heartbeat_is_alive() -> None:
    assert not silent_too_long(ago(5), now=NOW, lease=LEASE, server_started=None)


def test_a_heartbeat_older_than_the_lease_is_dead_when_the_server_ran_all_along() -> None:
    assert silent_too_long(ago(31), now=NOW, lease=LEASE, server_started=ago(86400))


def test_a_restart_within_the_lease_forgives_the_silence_before_it() -> None:
    # Beat 10 minutes ago, then the database was down until 20 s ago.
    assert not silent_too_long(ago(600), now=NOW, lease=LEASE, server_started=ago(20))


def test_silent_for_a_lease_after_the_restart_is_dead() -> None:
    assert silent_too_long(ago(600), now=NOW, lease=LEASE, server_started=ago(31))


def test_no_heartbeat_at_all_counts_from_the_restart_or_is_dead() -> None:
    assert not silent_too_long(None, now=NOW, lease=LEASE, server_started=ago(5))
    assert silent_too_long(None, now=NOW, lease=LEASE, server_started=None)


@given(beat=seconds, started=seconds)
def test_the_restart_never_makes_a_holder_deader(beat: float, started: float) -> None:
    """Knowing when the server started can only forgive: alive by age stays alive."""
    by_age = silent_too_long(ago(beat), now=NOW, lease=LEASE, server_started=None)
    forgiven = silent_too_long(ago(beat), now=NOW, lease=LEASE, server_started=ago(started))
    assert forgiven <= by_age
    assert forgiven == (min(beat, started) > LEASE.total_seconds())


def test_server_start_from_mysql_uptime_and_postgres_timestamp() -> None:
    assert started_from("mariadb", [("Uptime", "90")], NOW) == ago(90)
    # PostgreSQL's answer is read through UTCDateTime (naive UTC whatever the driver gives).
    assert started_from("postgresql", [(dt.datetime(2026, 11, 29, 12, 0),)], NOW) == dt.datetime(2026, 11, 29, 12, 0)
    query = server_start_query("postgresql")
    assert isinstance(query, TextualSelect) and isinstance(query.selected_columns[0].type, UTCDateTime)
    assert started_from("mysql", [], NOW) is None


def test_utc_type_reads_and_writes_naive_utc() -> None:
    utc = UTCDateTime()
    aware = dt.datetime(2026, 11, 29, 13, 0, 0, 250000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    naive = dt.datetime(2026, 11, 29, 12, 0, 0, 250000)
    for url in ("postgresql+psycopg://", "mysql+pymysql://", "sqlite://"):
        dialect = create_engine(url).dialect  # no connection is made
        assert utc.process_result_value(aware, dialect) == naive
        assert utc.process_result_value("2026-11-29 12:00:00.250", dialect) == naive
        assert utc.process_result_value(None, dialect) is None
        assert utc.process_bind_param(aware, dialect) == naive
