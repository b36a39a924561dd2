"""The alert checks (disk space, backup configuration) and the beat schedule, on a fresh SQLite database."""

from __future__ import annotations

import datetime as dt
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, insert, select, update

from config import load_settings
from config.celery import beat_schedule
from hosting.events import alerts
from models import App, Backup, Notification
from models.migrate import upgrade

Usage = namedtuple("Usage", "total used free")
GIB = 1024**3


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    upgrade(url)
    eng = create_engine(url)
    yield eng
    eng.dispose()


def _alerts(engine: Engine) -> dict[str, tuple[int, str, bool]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Notification.alert_kind, Notification.id, Notification.message, Notification.acknowledged).where(
                Notification.alert_kind.is_not(None)
            )
        ).all()
    return {str(r[0]): (r[1], r[2], bool(r[3])) for r in rows}


def test_disk_space_alert_is_raised_once_kept_and_cleared(engine: Engine, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", disk_min_free_percent=10)
    low = Usage(100 * GIB, 95 * GIB, 5 * GIB)
    with engine.begin() as conn:
        result, outcome = alerts.disk_space(conn, settings, usage=lambda _: low)
    assert result.state == "raised" and outcome is not None
    alert_id, message, _ = _alerts(engine)["disk_space"]
    assert "Only 5% of the disk" in message and str(tmp_path / "data") in message
    with engine.begin() as conn:
        conn.execute(update(Notification).where(Notification.id == alert_id).values(acknowledged=True))
    slightly_lower = Usage(100 * GIB, 95 * GIB + 1000, 5 * GIB - 1000)
    with engine.begin() as conn:
        alerts.disk_space(conn, settings, usage=lambda _: slightly_lower)
    assert _alerts(engine)["disk_space"] == (alert_id, message, True)  # same alert, still acknowledged
    with engine.begin() as conn:
        result, _ = alerts.disk_space(conn, settings, usage=lambda _: Usage(100 * GIB, 50 * GIB, 50 * GIB))
    assert result.state == "cleared" and "disk_space" not in _alerts(engine)
    with engine.begin() as conn:
        result, _ = alerts.disk_space(conn, settings, usage=lambda _: Usage(100 * GIB, 50 * GIB, 50 * GIB))
    assert result.state == "ok"


def test_backup_config_alert(engine: Engine, tmp_path: Path) -> None:
    off = load_settings(data_dir=tmp_path, backup_at="")
    with engine.begin() as conn:
        result, _ = alerts.backup_config(conn, off)
    assert result.state == "raised" and "BOXTASKS_BACKUP_AT is empty" in result.message

    on = load_settings(data_dir=tmp_path, backup_at="02:00", backup_max_age_hours=48)
    with engine.begin() as conn:
        result, _ = alerts.backup_config(conn, on)
    assert result.state == "cleared"  # no app yet: nothing to back up

    long_ago = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=3)
    with engine.begin() as conn:
        conn.execute(
            insert(App).values(
                id="a1",
                app_store_id="x",
                manifest={},
                version="1.0.0",
                location="a1",
                created_at=long_ago,
                updated_at=long_ago,
                installation_state="installed",
                run_state="running",
                cpu_shares=512,
                cpu_quota=100,
                memory_limit=1,
                env={},
                notes="",
                operators=[],
                checklist={},
                enable_backup=True,
                enable_mailbox=False,
            )
        )
        result, _ = alerts.backup_config(conn, on)
    assert result.state == "raised" and "No full backup succeeded in the last 48 hours (never)" in result.message
    with engine.begin() as conn:
        conn.execute(insert(Backup).values(id="box1", path="p", type="box", version="1", state="normal", depends_on=[]))
        result, _ = alerts.backup_config(conn, on)
    assert result.state == "cleared" and _alerts(engine) == {}


def test_run_checks_runs_each_in_its_own_transaction(engine: Engine, tmp_path: Path) -> None:
    results = alerts.run_checks(engine, load_settings(data_dir=tmp_path, backup_at=""))
    assert {r.kind.value for r in results} == {"disk_space", "backup_config"}
    assert "backup_config" in _alerts(engine)


def test_beat_schedule() -> None:
    schedule = beat_schedule(load_settings(backup_at="03:30", alert_check_seconds=60))
    assert schedule["lock-sweep"]["task"] == "boxtasks.sweep"
    assert schedule["alert-checks"] == {"task": "boxtasks.check_alerts", "schedule": 60.0}
    nightly = schedule["nightly-full-backup"]
    assert nightly["task"] == "boxtasks.nightly_fullbackup"
    assert nightly["schedule"].hour == {3} and nightly["schedule"].minute == {30}
    assert "nightly-full-backup" not in beat_schedule(load_settings(backup_at=""))
