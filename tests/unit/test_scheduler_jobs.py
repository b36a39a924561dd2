"""The scheduler section of a manifest: what is accepted, what is refused and why, which minutes a job runs in."""

from __future__ import annotations

import datetime as dt

import pytest

from hosting.apps.scheduler import (
    Job,
    Run,
    SchedulerError,
    jobs_of,
    parse_jobs,
    run_id,
    tick_minute,
    validate_manifest,
)
from hosting.errors import InputError


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def test_cloudrons_shape_is_read() -> None:
    manifest = {
        "addons": {
            "localstorage": {},
            "scheduler": {"update_feeds": {"schedule": "*/5 * * * *", "command": "/app/code/update_feed.sh"}},
        }
    }
    assert jobs_of(manifest) == [Job("update_feeds", "*/5 * * * *", "/app/code/update_feed.sh")]


def test_no_addon_no_jobs() -> None:
    assert jobs_of({}) == []
    assert jobs_of({"addons": {"localstorage": {}}}) == []
    assert jobs_of(None) == []
    assert parse_jobs({}) == []


def test_schedule_whitespace_is_normalised() -> None:
    (job,) = parse_jobs({"a": {"schedule": "  0   3 * * 1-5 ", "command": "true"}})
    assert job.schedule == "0 3 * * 1-5"


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ([], "must be an object of jobs"),
        ({"": {"schedule": "* * * * *", "command": "x"}}, "job name ''"),
        ({"bad name": {"schedule": "* * * * *", "command": "x"}}, "job name 'bad name'"),
        ({"-x": {"schedule": "* * * * *", "command": "x"}}, "starting with a letter or digit"),
        ({"j": "* * * * * x"}, "must be an object with 'schedule' and 'command'"),
        ({"j": {"command": "x"}}, "needs a 'schedule'"),
        ({"j": {"schedule": "", "command": "x"}}, "needs a 'schedule'"),
        ({"j": {"schedule": "* * * *", "command": "x"}}, "has 4 field(s); give five"),
        ({"j": {"schedule": "0 * * * * *", "command": "x"}}, "no seconds"),
        ({"j": {"schedule": "61 * * * *", "command": "x"}}, "is not a cron schedule"),
        ({"j": {"schedule": "* 24 * * *", "command": "x"}}, "is not a cron schedule"),
        ({"j": {"schedule": "every minute of the day", "command": "x"}}, "is not a cron schedule"),
        ({"j": {"schedule": "* * * * *"}}, "needs a non-empty 'command'"),
        ({"j": {"schedule": "* * * * *", "command": "   "}}, "needs a non-empty 'command'"),
        ({"j": {"schedule": "* * * * *", "command": ["ls"]}}, "needs a non-empty 'command'"),
        ({"j": {"schedule": "* * * * *", "command": "a\x00b"}}, "has NUL"),
        ({"j": {"schedule": "* * * * *", "command": "x", "user": "root"}}, "unknown field(s) user"),
    ],
)
def test_bad_sections_are_refused_with_the_reason(section: object, says: str) -> None:
    with pytest.raises(SchedulerError) as err:
        parse_jobs(section)
    assert says in str(err.value)
    # A front door answers InputError with a 4xx.
    assert isinstance(err.value, InputError)


def test_validate_manifest_is_what_a_front_door_calls() -> None:
    validate_manifest({"addons": {"scheduler": {"ok": {"schedule": "0 * * * *", "command": "true"}}}})
    validate_manifest({"id": "io.example.none"})
    with pytest.raises(SchedulerError, match="job 'nightly'"):
        validate_manifest({"addons": {"scheduler": {"nightly": {"schedule": "0 25 * * *", "command": "true"}}}})


@pytest.mark.parametrize(
    ("schedule", "due", "not_due"),
    [
        ("* * * * *", ["2026-12-08 00:00", "2026-12-08 13:37"], []),
        ("*/5 * * * *", ["2026-12-08 00:00", "2026-12-08 00:55"], ["2026-12-08 00:01", "2026-12-08 00:59"]),
        ("30 2 * * *", ["2026-12-08 02:30"], ["2026-12-08 02:31", "2026-12-08 03:30"]),
        ("0 9 * * 1-5", ["2026-12-07 09:00"], ["2026-12-06 09:00"]),  # a Monday; a Sunday
        ("15 0 1 * *", ["2026-12-01 00:15"], ["2026-12-02 00:15"]),
        ("0,30 8-9 * 12 *", ["2026-12-08 08:30", "2026-12-08 09:00"], ["2026-11-08 08:30", "2026-12-08 10:00"]),
    ],
)
def test_minutes_a_job_runs_in(schedule: str, due: list[str], not_due: list[str]) -> None:
    job = Job("j", schedule, "true")
    assert all(job.is_due(_at(m)) for m in due)
    assert not any(job.is_due(_at(m)) for m in not_due)


def test_a_late_tick_stands_for_the_minute_it_was_sent_in() -> None:
    sent = _at("2026-12-08 10:04:59.900")
    assert tick_minute(sent) == _at("2026-12-08 10:04")
    # A tick sent with a UTC offset still means the same UTC minute.
    other_zone = dt.datetime(2026, 12, 8, 11, 4, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert tick_minute(other_zone) == _at("2026-12-08 10:04")


def test_run_ids_name_one_job_of_one_app_in_one_minute() -> None:
    minute = _at("2026-12-08 10:05")
    same = run_id("a1", "feeds", minute)
    assert run_id("a1", "feeds", _at("2026-12-08 10:05:42")) == same
    assert len({same, run_id("a1", "feeds", _at("2026-12-08 10:06")), run_id("a2", "feeds", minute)}) == 3
    assert run_id("a1", "other", minute) != same
    run = Run("a1", "feeds", minute)
    assert run.task_id == same
    assert run.args == {"app_id": "a1", "job": "feeds", "minute": "2026-12-08T10:05Z"}


def test_beat_stamps_each_tick_with_the_minute_it_sends_it_in() -> None:
    """The entry as beat keeps it (pickled in its schedule file) and the kwargs as beat evaluates them when sending."""
    import pickle

    from celery import beat
    from celery.schedules import crontab

    from config.celery import SCHEDULER_TICK_EXPIRES, beat_schedule
    from config.settings import load_settings
    from tasks.celery import app

    spec = beat_schedule(load_settings())["scheduler-tick"]
    assert spec["task"] == "boxtasks.scheduler_tick"
    assert spec["options"] == {"expires": SCHEDULER_TICK_EXPIRES}
    entry = beat.ScheduleEntry(name="scheduler-tick", app=app, **spec)
    kept = pickle.loads(pickle.dumps(entry))
    before = dt.datetime.now(dt.UTC)
    kwargs = beat._evaluate_entry_kwargs(kept.kwargs)
    after = dt.datetime.now(dt.UTC)
    sent = dt.datetime.fromisoformat(kwargs["sent_at"])
    assert before <= sent <= after
    assert tick_minute(sent) in {tick_minute(before), tick_minute(after)}
    # Every minute, on the minute.
    assert kept.schedule == crontab()
