"""The seed's notification and email rules, on every database backend, with a real SMTP server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, delete, select

from config import Settings, load_settings
from hosting import notify
from hosting.notify import AlertKind
from models import Event, Notification
from tests.appkit import SmtpSink, smtp_sink

__all__ = ["smtp_sink"]  # the fixture, imported for this module

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """Overrides the shared `engine`: the same database, emptied of news first."""
    eng = create_engine(db_url)
    with eng.begin() as conn:  # the session's database is shared: start each test from no news
        conn.execute(delete(Notification))
        conn.execute(delete(Event))
    yield eng
    eng.dispose()


@pytest.fixture
def settings(smtp_sink: SmtpSink) -> Settings:
    return load_settings(
        smtp_host="127.0.0.1", smtp_port=smtp_sink.port, smtp_from="box@box.test", admin_emails="a@box.test,b@box.test"
    )


def _notifications(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(Notification.title).order_by(Notification.id)).scalars())


def _subjects(sink: SmtpSink) -> list[str]:
    return [env.content.decode().split("Subject: ", 1)[1].split("\r\n", 1)[0] for env in sink.messages]


@pytest.mark.parametrize(("days", "news"), [(11, False), (10, False), (9, True)])
def test_cert_renewal_failure_is_news_only_under_ten_days(
    engine: Engine, settings: Settings, smtp_sink: SmtpSink, days: int, news: bool
) -> None:
    outcome = notify.report(
        engine,
        settings,
        notify.cert_renewal_failed,
        settings=settings,
        domain="blog.box.test",
        expires_at=NOW + dt.timedelta(days=days),
        error="ACME challenge failed",
        now=NOW,
    )
    assert outcome.notified is news
    assert len(_notifications(engine)) == int(news)
    if news:
        assert _subjects(smtp_sink) == ["[boxtasks] Certificate of blog.box.test could not be renewed"]
        assert sorted(smtp_sink.messages[0].rcpt_tos) == ["a@box.test", "b@box.test"]
    else:
        assert smtp_sink.messages == []
    with engine.connect() as conn:  # the eventlog records it either way
        assert conn.execute(select(Event.action)).scalars().all() == ["cert.renewal"]


def test_backup_failure_is_news_on_the_fifth_failure_in_a_row(
    engine: Engine, settings: Settings, smtp_sink: SmtpSink
) -> None:
    def finished(error: str | None) -> notify.Outcome:
        return notify.report(engine, settings, notify.backup_finished, settings=settings, backup_id="b", error=error)

    assert not finished(None).notified
    for _ in range(4):
        assert not finished("disk full").notified
    assert _notifications(engine) == [] and smtp_sink.messages == []
    fifth = finished("disk full")
    assert fifth.notified and _notifications(engine) == ["The last 5 backups failed"]
    assert _subjects(smtp_sink) == ["[boxtasks] The last 5 backups failed"]
    # A success breaks the run: four more failures are not news again.
    finished(None)
    for _ in range(4):
        assert not finished("disk full").notified
    assert len(_notifications(engine)) == 1


def test_notification_only_rules(engine: Engine, settings: Settings, smtp_sink: SmtpSink) -> None:
    with engine.begin() as conn:
        outcomes = [
            notify.app_oom(conn, app_id="a1", container_id="c1"),
            notify.app_updated(conn, app_id="a1", from_version="1.0.0", to_version="1.1.0"),
            notify.platform_update_available(conn, version="9.1.0"),
        ]
        silent = notify.app_update_available(conn, app_id="a1", version="1.2.0")
    for outcome in outcomes:
        notify.deliver(settings, outcome)
    assert all(o.notified and o.emails == () for o in outcomes)
    assert not silent.notified
    assert _notifications(engine) == [
        "App a1 ran out of memory",
        "App a1 was updated to 1.1.0",
        "Platform update 9.1.0 is available",
    ]
    assert smtp_sink.messages == []
    with engine.connect() as conn:
        actions = conn.execute(select(Event.action).order_by(Event.id)).scalars().all()
    assert actions == ["app.oom", "app.update", "platform.update_available", "app.update_available"]


def test_alerts_are_one_per_kind_and_cleared(engine: Engine, settings: Settings, smtp_sink: SmtpSink) -> None:
    def alert(message: str) -> notify.Outcome:
        return notify.report(
            engine,
            settings,
            notify.raise_alert,
            settings=settings,
            kind=AlertKind.DISK_SPACE,
            title="Disk almost full",
            message=message,
        )

    first = alert("95% used")
    again = alert("95% used")
    worse = alert("99% used")
    assert first.notification_id == again.notification_id == worse.notification_id
    assert len(smtp_sink.messages) == 1, "email when raised, not when repeated"
    with engine.connect() as conn:
        rows = conn.execute(select(Notification.alert_kind, Notification.message)).all()
    assert [tuple(r) for r in rows] == [("disk_space", "99% used")]

    notify.report(
        engine, settings, notify.raise_alert, settings=settings, kind=AlertKind.REBOOT, title="Reboot", message=""
    )
    assert len(smtp_sink.messages) == 1, "a reboot alert waits on the dashboard"
    with engine.begin() as conn:
        assert notify.clear_alert(conn, AlertKind.DISK_SPACE)
        assert not notify.clear_alert(conn, AlertKind.DISK_SPACE)
    assert _notifications(engine) == ["Reboot"]


def test_email_off_without_smtp_host_and_undeliverable_email_does_not_raise(engine: Engine) -> None:
    off = load_settings(smtp_host="", admin_emails="a@box.test")
    outcome = notify.report(
        engine, off, notify.cert_renewal_failed, settings=off, domain="d", expires_at=NOW, error="x", now=NOW
    )
    assert outcome.notified and outcome.emails == ()
    dead = load_settings(smtp_host="127.0.0.1", smtp_port=1, admin_emails="a@box.test")
    outcome = notify.report(
        engine, dead, notify.cert_renewal_failed, settings=dead, domain="d", expires_at=NOW, error="x", now=NOW
    )
    assert len(outcome.emails) == 1 and notify.deliver(dead, outcome) == 0
