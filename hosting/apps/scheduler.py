"""The `scheduler` addon: an app's cron jobs, each run as a task (`appcron`) inside the app's container.

The manifest declares them (Cloudron's format)::

    "addons": {"scheduler": {"update_feeds": {"schedule": "*/5 * * * *", "command": "/app/code/feeds.sh"}}}

A beat entry sends a tick every minute (`tasks.schedules`); the tick asks `send_due` which jobs are due
in the minute it stands for, and enqueues one task per job and minute. The task's id is derived from
(app, job, minute), so a second tick for the same minute meets the first one's row (the primary key)
and sends nothing. A job whose previous run is still queued, waiting or running is not sent again
(one run waits behind a long restore, not one per minute). The task holds `app:A` S: jobs of one
app run beside each other, never inside an apptask (X), and wait for one to end.

Schedules are five cron fields, read by `croniter` (minute hour day-of-month month day-of-week, in UTC;
month 1-12 as in standard cron). Runs missed while beat was down are not made up, as with cron.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from croniter import croniter
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from hosting.apps.docker_engine import DockerEngine
from hosting.apps.state import InstallState, RunState
from hosting.box import resolve
from hosting.context import TaskContext
from hosting.errors import ContainerError, ManifestError
from models import App, Task, TaskState

logger = logging.getLogger(__name__)
#: The job's own output goes to the task's log under this name, at INFO whatever the worker's log level.
output_logger = logging.getLogger("appcron")
output_logger.setLevel(logging.INFO)

#: The task kind that runs one job once (`tasks.kinds.appcron`).
KIND = "appcron"
#: The addon's name in a manifest's `addons`.
SCHEDULER = "scheduler"
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_COMMAND = 4096
#: An app in these states gets no job sent: it has no data yet, is going away, or waits for a person.
#: Other pending states (backup, restore, update, ...) pass: the job queues behind the apptask's lock.
_NO_JOBS = frozenset(
    {InstallState.ERROR, InstallState.PENDING_INSTALL, InstallState.PENDING_CLONE, InstallState.PENDING_UNINSTALL}
)
_UNDER_WAY = (TaskState.QUEUED.value, TaskState.WAITING.value, TaskState.RUNNING.value)
#: Fixed namespace of run ids: uuid5(namespace, "app\njob\nminute") names one run of one job.
_RUN_NAMESPACE = uuid.UUID("5b0c3a52-7f0e-4f57-9a55-2c1f7a0d6e11")
#: The running job's last output line goes to its message at most this often.
_MESSAGE_EVERY = 2.0
#: Runs the command (`$1`) with `sh -c` after saying its pid: `docker exec` makes that process a session
#: and process-group leader, so a stopped run can end the command and everything it started. Its stderr
#: goes to its stdout: one pipe keeps the lines in the order they were written (two pipes need not).
_PID_LINE = b"boxtasks-pid "
_WRAPPER = ("/bin/sh", "-c", 'echo "boxtasks-pid $$"; exec /bin/sh -c "$1" 2>&1', "sh")
#: SIGTERM to SIGKILL for the command of a run that was stopped.
_KILL_GRACE = 5.0


class SchedulerError(ManifestError):
    """The manifest's `scheduler` section is malformed; the message names the job and the fix."""


class JobFailedError(ContainerError):
    """The job's command ended with a non-zero exit code."""

    def __init__(self, job: str, exit_code: int) -> None:
        super().__init__(f"job {job!r} exited with code {exit_code}; its output is in this task's log")
        self.job = job
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    schedule: str
    command: str

    def is_due(self, minute: dt.datetime) -> bool:
        """Whether the schedule fires in this minute (UTC)."""
        return bool(croniter.match(self.schedule, minute))


def parse_jobs(section: object) -> list[Job]:
    """The jobs of a `scheduler` section, checked; SchedulerError names the first bad one."""
    if section is None:
        return []
    if not isinstance(section, Mapping):
        raise SchedulerError(
            'addons.scheduler must be an object of jobs, e.g. {"feeds": {"schedule": "*/5 * * * *", "command": "..."}}'
        )
    jobs = []
    for name, spec in section.items():
        if not isinstance(name, str) or not _JOB_NAME.match(name):
            raise SchedulerError(
                f"scheduler job name {name!r}: use 1-64 letters, digits, '_', '.', '-', starting with a letter or digit"
            )
        if not isinstance(spec, Mapping):
            raise SchedulerError(f"scheduler job {name!r} must be an object with 'schedule' and 'command'")
        unknown = sorted(set(spec) - {"schedule", "command"})
        if unknown:
            raise SchedulerError(f"scheduler job {name!r}: unknown field(s) {', '.join(map(str, unknown))}")
        jobs.append(Job(name, _schedule(name, spec.get("schedule")), _command(name, spec.get("command"))))
    return jobs


def _schedule(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SchedulerError(f"scheduler job {name!r} needs a 'schedule', five cron fields like '*/5 * * * *'")
    fields = value.split()
    if len(fields) != 5:
        raise SchedulerError(
            f"scheduler job {name!r}: schedule {value!r} has {len(fields)} field(s); give five "
            "(minute hour day-of-month month day-of-week), no seconds"
        )
    schedule = " ".join(fields)
    if not croniter.is_valid(schedule):
        raise SchedulerError(
            f"scheduler job {name!r}: schedule {value!r} is not a cron schedule (minute 0-59, hour 0-23, "
            "day 1-31, month 1-12, weekday 0-6; '*', ranges 1-3,5 and steps */2)"
        )
    return schedule


def _command(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SchedulerError(f"scheduler job {name!r} needs a non-empty 'command' (run with sh -c in the app)")
    if len(value) > _MAX_COMMAND or "\x00" in value:
        raise SchedulerError(f"scheduler job {name!r}: command is longer than {_MAX_COMMAND} characters or has NUL")
    return value


def jobs_of(manifest: Mapping[str, Any] | None) -> list[Job]:
    """The scheduler jobs an app's stored manifest declares (none without the addon)."""
    addons = (manifest or {}).get("addons") or {}
    if not isinstance(addons, Mapping):
        return []
    return parse_jobs(addons.get(SCHEDULER))


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """For the front door: refuse a manifest whose scheduler section is bad (SchedulerError, a 4xx)."""
    jobs_of(manifest)


# ---------------------------------------------------------------------------- sending (the tick)


def tick_minute(at: dt.datetime) -> dt.datetime:
    """The minute a tick sent at `at` stands for: `at` in UTC, seconds dropped."""
    if at.tzinfo is not None:
        at = at.astimezone(dt.UTC)
    return at.replace(second=0, microsecond=0, tzinfo=dt.UTC)


def run_id(app_id: str, job: str, minute: dt.datetime) -> str:
    """The task id of one run: the same app, job and minute always give the same id."""
    return str(uuid.uuid5(_RUN_NAMESPACE, f"{app_id}\n{job}\n{tick_minute(minute):%Y-%m-%dT%H:%MZ}"))


@dataclass(frozen=True, slots=True)
class Run:
    """One job of one app, due in one minute: what the tick enqueues."""

    app_id: str
    job: str
    minute: dt.datetime

    @property
    def task_id(self) -> str:
        return run_id(self.app_id, self.job, self.minute)

    @property
    def args(self) -> dict[str, Any]:
        return {"app_id": self.app_id, "job": self.job, "minute": f"{self.minute:%Y-%m-%dT%H:%MZ}"}


@dataclass
class TickReport:
    minute: dt.datetime
    sent: list[str]
    #: Already sent for this minute (a second tick) or still under way from an earlier one.
    already: list[str]
    busy: list[str]
    #: Apps whose stored manifest has a bad scheduler section (logged; their jobs are not sent).
    bad: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "minute": f"{self.minute:%Y-%m-%dT%H:%MZ}",
            "sent": self.sent,
            "already": self.already,
            "busy": self.busy,
            "bad": self.bad,
        }


def due_runs(engine: Engine, minute: dt.datetime, *, bad: list[str] | None = None) -> list[Run]:
    """The runs due in `minute` for every app that runs (`running`, not in install, uninstall or error)."""
    minute = tick_minute(minute)
    with engine.connect() as conn:
        apps = conn.execute(
            select(App.id, App.manifest).where(
                App.run_state == RunState.RUNNING.value,
                App.installation_state.not_in(sorted(s.value for s in _NO_JOBS)),
            )
        ).all()
    runs: list[Run] = []
    for app_id, manifest in apps:
        try:
            jobs = jobs_of(manifest)
        except SchedulerError as err:
            logger.warning("app %s: its scheduler jobs are not run: %s", app_id, err)
            if bad is not None:
                bad.append(app_id)
            continue
        runs.extend(Run(app_id, job.name, minute) for job in jobs if job.is_due(minute))
    return runs


def _under_way(engine: Engine, app_ids: Iterable[str]) -> set[tuple[str, str]]:
    """(app, job) pairs with a run queued, waiting or running."""
    ids = sorted(set(app_ids))
    if not ids:
        return set()
    with engine.connect() as conn:
        rows = conn.execute(
            select(Task.app_id, Task.args).where(Task.type == KIND, Task.state.in_(_UNDER_WAY), Task.app_id.in_(ids))
        ).all()
    return {(str(a), str(args.get("job"))) for a, args in rows if isinstance(args, dict)}


def send_due(engine: Engine, minute: dt.datetime, enqueue: Callable[[Run], object]) -> TickReport:
    """Enqueue each job due in `minute` once: `enqueue(run)` records the task under `run.task_id`.

    A run whose id exists already (IntegrityError from the row's primary key) was sent by another
    tick for the same minute; a job with a run still under way is skipped.
    """
    report = TickReport(tick_minute(minute), [], [], [], [])
    runs = due_runs(engine, minute, bad=report.bad)
    busy = _under_way(engine, (r.app_id for r in runs))
    for run in runs:
        label = f"{run.app_id}/{run.job}"
        if (run.app_id, run.job) in busy:
            report.busy.append(label)
            continue
        try:
            enqueue(run)
        except IntegrityError:
            report.already.append(label)
            continue
        report.sent.append(label)
    if report.sent or report.busy:
        logger.info(
            "scheduler %s: sent %s; still under way, not sent again: %s",
            report.as_dict()["minute"],
            ", ".join(report.sent) or "none",
            ", ".join(report.busy) or "none",
        )
    return report


# ---------------------------------------------------------------------------- running (the task)


def run_job(ctx: TaskContext, app_id: str, job_name: str, *, box: object = None) -> dict[str, Any]:
    """Run one job in the app's container, its output into the task's log; JobFailedError on a non-zero exit.

    Called under `app:A` S, so no apptask changes the app meanwhile: what is read here holds for
    the run. An app stopped, gone, or no longer declaring the job since the run was sent is skipped.
    """
    resolved = resolve(box)
    with ctx.fenced() as conn:
        app = conn.execute(
            select(App.installation_state, App.run_state, App.manifest, App.container_id).where(App.id == app_id)
        ).first()
    skip = _why_skip(app, job_name)
    if skip is not None:
        ctx.progress(100, f"Skipped: {skip}")
        return {"job": job_name, "skipped": skip}
    assert app is not None
    job = next(j for j in jobs_of(app.manifest) if j.name == job_name)
    if not app.container_id:
        raise ContainerError(f"app {app_id} has no container to run job {job_name!r} in; run repair")
    ctx.progress(0, f"Running {job_name}")
    output = _Output(ctx, job_name)
    started = _now()
    container_id = str(app.container_id)
    try:
        exit_code = resolved.docker.exec_run(container_id, [*_WRAPPER, job.command], on_output=output.feed)
    except BaseException:
        # Stopped, timed out, lost its lease, or Docker failed: the command must not go on in the
        # container once this task gives `app:A` back.
        if output.pid is not None:
            _end_command(resolved.docker, container_id, output.pid)
        raise
    output.close()
    if exit_code != 0:
        raise JobFailedError(job_name, exit_code)
    return {"job": job_name, "exit_code": 0, "lines": output.lines, "started_at": started, "ended_at": _now()}


def _end_command(docker: DockerEngine, container_id: str, pid: int) -> None:
    """SIGTERM the command's process group in the container, SIGKILL what is left after `_KILL_GRACE` seconds."""

    def in_container(script: str) -> int:
        return docker.exec_run(container_id, ["/bin/sh", "-c", script], on_output=lambda _: None)

    try:
        in_container(f"kill -TERM -{pid}")
        deadline = time.monotonic() + _KILL_GRACE
        while time.monotonic() < deadline:
            if in_container(f"kill -0 -{pid} 2>/dev/null") != 0:
                logger.info("job's process group %d in container %s ended on SIGTERM", pid, container_id[:12])
                return
            time.sleep(0.2)
        in_container(f"kill -KILL -{pid}")
        logger.warning("job's process group %d in container %s killed (SIGKILL)", pid, container_id[:12])
    except Exception:
        logger.warning("could not end job's process group %d in container %s", pid, container_id[:12], exc_info=True)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _why_skip(app: Any, job_name: str) -> str | None:
    if app is None:
        return "the app is gone"
    if app.installation_state != InstallState.INSTALLED.value or app.run_state != RunState.RUNNING.value:
        return f"the app is {app.installation_state}, {app.run_state}"
    try:
        names = {j.name for j in jobs_of(app.manifest)}
    except SchedulerError as err:
        return f"its manifest's scheduler section is bad: {err}"
    if job_name not in names:
        return f"the app's manifest no longer has job {job_name!r}"
    return None


class _Output:
    """Splits the command's output into lines, logs each (the task's log keeps them), shows the last one."""

    def __init__(self, ctx: TaskContext, job: str) -> None:
        self._ctx = ctx
        self._job = job
        self._partial = b""
        self._shown = time.monotonic()
        self.lines = 0
        #: The command's pid in the container, from the wrapper's first line (never logged).
        self.pid: int | None = None
        self._first = True

    def feed(self, chunk: bytes) -> None:
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        for raw in complete:
            if self._first:
                self._first = False
                said = raw.removeprefix(_PID_LINE)
                if said != raw and said.isdigit():
                    self.pid = int(said)
                    continue
            self._line(raw)

    def close(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = b""

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        self.lines += 1
        output_logger.info("%s", text)
        now = time.monotonic()
        if now - self._shown >= _MESSAGE_EVERY:
            self._shown = now
            self._ctx.progress(50, f"Running {self._job}: {text[:200]}")
