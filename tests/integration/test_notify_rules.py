"""The seed's notification and email rules, on every database backend, with a real SMTP server."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, delete, insert, select

from config import Settings, load_settings
from hosting import BackupError, LocalContext
from hosting.apps.docker_engine import DockerEngine
from hosting.backups import appbackup
from hosting.box import Box
from hosting.events import notify
from hosting.events.notify import AlertKind
from lockman import LockManager
from models import App, Backup, Event, Notification, records
from tasks.runner import Runtime, recover_dead
from tests.appkit import SmtpSink, smtp_sink
from tests.owners import add_owner

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


def _run(engine: Engine, settings: Settings, series: str, error: str | None) -> notify.Outcome:
    return notify.report(
        engine,
        settings,
        notify.backup_run_finished,
        settings=settings,
        task_id=uuid.uuid4().hex,
        series=series,
        error=error,
    )


def _backup(engine: Engine, settings: Settings, app_id: str, error: str | None) -> notify.Outcome:
    source = {"appId": app_id}
    return notify.report(
        engine, settings, notify.backup_finished, settings=settings, backup_id=app_id, error=error, source=source
    )


def test_one_full_backup_of_five_failing_apps_is_not_news(
    engine: Engine, settings: Settings, smtp_sink: SmtpSink
) -> None:
    """The seed's rule counts runs: five failed app backups inside one full backup are one failed run."""
    for app_id in ("a1", "a2", "a3", "a4", "a5"):
        assert not _backup(engine, settings, app_id, "disk full").notified
    assert not _run(engine, settings, notify.FULL_BACKUP_SERIES, "5 apps failed").notified
    assert _notifications(engine) == [] and smtp_sink.messages == []


def test_one_app_failing_five_nights_while_others_succeed_is_news(
    engine: Engine, settings: Settings, smtp_sink: SmtpSink
) -> None:
    for night in range(1, 6):
        _backup(engine, settings, "good1", None)
        _backup(engine, settings, "bad", "disk full")
        _backup(engine, settings, "good2", None)
        outcome = _run(engine, settings, notify.FULL_BACKUP_SERIES, "app bad could not be backed up")
        assert outcome.notified is (night == 5), night
    assert _notifications(engine) == ["The last 5 full backups failed"]
    assert _subjects(smtp_sink) == ["[boxtasks] The last 5 full backups failed"]
    # A success breaks the streak: four more failures are not news again.
    _run(engine, settings, notify.FULL_BACKUP_SERIES, None)
    for _ in range(4):
        assert not _run(engine, settings, notify.FULL_BACKUP_SERIES, "x").notified
    assert len(_notifications(engine)) == 1


def test_each_series_counts_its_own_runs(engine: Engine, settings: Settings, smtp_sink: SmtpSink) -> None:
    a1, a2 = notify.app_series("a1"), notify.app_series("a2")
    for _ in range(4):
        assert not _run(engine, settings, a1, "no space").notified
        assert not _run(engine, settings, a2, "no space").notified
        assert not _run(engine, settings, notify.FULL_BACKUP_SERIES, "no space").notified
    _run(engine, settings, a2, None)  # a2's streak ends; a1's and the full backup's do not
    assert not _run(engine, settings, a2, "no space").notified
    assert _run(engine, settings, a1, "no space").notified
    assert _notifications(engine) == ["The last 5 backups of app a1 failed"]
    assert _subjects(smtp_sink) == ["[boxtasks] The last 5 backups of app a1 failed"]


def test_app_backup_task_runs_are_counted_by_the_backup_operation(
    engine: Engine, db_url: str, settings: Settings, smtp_sink: SmtpSink, tmp_path: Path, lock_row: str
) -> None:
    """The `backup` app operation records its run: a missing data directory fails it, five times is news."""
    box = Box(settings.model_copy(update={"data_dir": tmp_path, "database_url": db_url}), DockerEngine("unix:///none"))
    app_id = f"bk-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(
            insert(App).values(
                id=app_id,
                app_store_id="io.example.bk",
                manifest={"id": "io.example.bk", "version": "1.0.0", "dockerImage": "busybox", "httpPort": 80},
                version="1.0.0",
                location=app_id,
                installation_state="installed",
            )
        )
    manager = LockManager(db_url, row_id=lock_row, lease=60.0)
    manager.ensure_row()

    def backup_once() -> bool:
        owner = add_owner(engine, kind="apptask")
        grant = manager.acquire(owner, {"platform": "S", f"app:{app_id}": "X"}, timeout=60)
        try:
            appbackup.backup(LocalContext(manager, grant), app_id, box=box)
        except BackupError:
            return False
        finally:
            manager.release(owner)
        return True

    try:
        for _ in range(4):
            assert not backup_once()  # no data directory: every run fails
        box.app_dir(app_id).joinpath("data").mkdir(parents=True)
        assert backup_once()
        shutil.rmtree(box.app_dir(app_id))
        for _ in range(4):
            assert not backup_once()
        assert _notifications(engine) == [], "4 failed runs since the last success"
        assert not backup_once()
        assert _notifications(engine) == [f"The last 5 backups of app {app_id} failed"]
        assert len(smtp_sink.messages) == 1
        with engine.connect() as conn:
            runs = conn.execute(select(Event.data).where(Event.action == "backup.run")).scalars().all()
        assert [r["failed"] for r in runs] == [True] * 4 + [False] + [True] * 5
        assert {r["series"] for r in runs} == {f"app:{app_id}"}
    finally:
        manager.dispose()
        with engine.begin() as conn:
            conn.execute(delete(Backup).where(Backup.app_id == app_id))
            conn.execute(delete(App).where(App.id == app_id))


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


def test_an_interrupted_task_is_news_naming_the_task_and_the_app_state(
    engine: Engine, runtime: tuple[Runtime, list[str]]
) -> None:
    """recover_dead (worker lost, host gone, a heartbeat that stopped) raises one notification per interrupted task."""
    rt, _ = runtime
    app_id = f"int-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(
            insert(App).values(
                id=app_id,
                app_store_id="io.example.int",
                manifest={"id": "io.example.int", "version": "1.0.0", "dockerImage": "busybox", "httpPort": 80},
                version="1.0.0",
                location=app_id,
                installation_state="pending_configure",
            )
        )
    dead = records.create(
        engine, kind="apptask", queue="apptask", args={"app_id": app_id, "operation": "configure"}, app_id=app_id
    )
    stopped = records.create(engine, kind="fullbackup", queue="backup", args={}, app_id=None)
    for task_id in (dead, stopped):
        assert records.claim(engine, task_id, worker=rt.worker, pid=rt.pid).claimed
    records.request_stop(engine, stopped)  # asked to stop: it ends cancelled, which is no news
    try:
        assert sorted(recover_dead(rt, [dead, stopped], reason="its worker process died")) == sorted([dead, stopped])
        with engine.connect() as conn:
            notes = conn.execute(select(Notification.title, Notification.message)).all()
            event = conn.execute(select(Event.data).where(Event.action == "task.interrupted")).scalar_one()
        assert [n.title for n in notes] == [f"Task apptask configure of app {app_id} was interrupted"]
        assert dead in notes[0].message and "its worker process died" in notes[0].message
        assert f"App {app_id} is now pending_configure (running)" in notes[0].message
        assert f"boxtasks task retry {dead}" in notes[0].message
        assert event["taskId"] == dead and event["appId"] == app_id
    finally:
        with engine.begin() as conn:
            conn.execute(delete(App).where(App.id == app_id))
