"""The rig of `bench/task_rates.py`: its own database, its own queues, worker subprocesses, an event log.

Nothing here is shared with another run: the database (`bt_bench_<random>`), the lock row in it,
the queues (`bench_<run>_<kind>`) and the worker node name carry the run's id, so benchmarks and
tests that other people run on the same MariaDB and RabbitMQ neither see nor disturb this one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Self

from celery.events.receiver import EventReceiver
from kombu import pools as kombu_pools
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from config import get_settings
from config.celery import celery_config
from models import engine as models_engine
from models.migrate import upgrade
from tasks.celery import app

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.02,
    what: str = "",
    failure: type[Exception] = TimeoutError,
) -> Any:
    """The first true value of `predicate`, asked every `interval` s; `failure` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise failure(f"timed out after {timeout:g}s waiting for {what or predicate}")
        time.sleep(interval)


# ----------------------------------------------------------------------------- the database


@contextmanager
def bench_database(server_url: str) -> Iterator[str]:
    """A fresh database on the server at `server_url`, migrated; dropped afterwards."""
    base = make_url(server_url)
    backend = base.get_backend_name()
    name = f"bt_bench_{uuid.uuid4().hex[:8]}"
    if backend in ("mysql", "mariadb"):
        admin: URL = base.set(database=None)
        create, drop = f"CREATE DATABASE {name} CHARACTER SET utf8mb4", f"DROP DATABASE IF EXISTS {name}"
    elif backend == "postgresql":
        admin = base.set(database=base.database or "postgres")
        create, drop = f"CREATE DATABASE {name}", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    else:
        raise SystemExit(f"unsupported database {backend!r}: use MariaDB/MySQL or PostgreSQL")
    url = base.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(create))
    finally:
        engine.dispose()
    try:
        upgrade(url)
        yield url
    finally:
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(drop))
        finally:
            engine.dispose()


# ----------------------------------------------------------------------------- settings of this process


def apply_environment(variables: dict[str, str]) -> None:
    """Point this process's settings, engine and Celery app at the bench's database and broker."""
    for key in list(os.environ):
        if key.startswith("BOXTASKS_"):
            del os.environ[key]
    os.environ.update(variables)
    get_settings.cache_clear()
    if models_engine.get_engine.cache_info().currsize:
        models_engine.get_engine().dispose()
    models_engine.get_engine.cache_clear()
    models_engine._sessionmaker.cache_clear()
    from tasks import locking

    locking._process_runtime.cache_clear()
    app.conf.update(celery_config(get_settings()))
    # Connections made for another broker must not be reused for this one.
    kombu_pools.reset()  # type: ignore[no-untyped-call]
    app._pool = None
    app.amqp._producer_pool = None


def delete_queues(names: Sequence[str]) -> None:
    with app.connection_for_write() as conn:
        for name in names:
            with suppress(Exception):  # never declared: nothing to delete
                conn.default_channel.queue_delete(name)


# ----------------------------------------------------------------------------- a worker node


class Worker:
    """One `celery worker` subprocess (a node) in a session of its own: stopping it stops its whole group.

    The one rig for the benchmarks and the end-to-end and fault tests (`tests/e2e/harness.Worker`
    names its nodes and kinds for the tests). `concurrency=None` leaves the pool size to
    `extra_args` (`--autoscale`); a worker that dies or never gets ready raises `failure`.
    """

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        *,
        nodename: str,
        queues: Sequence[str],
        concurrency: int | None,
        kinds_module: str = "bench.kinds",
        extra_args: Sequence[str] = (),
        failure: type[Exception] = RuntimeError,
    ) -> None:
        self.env = env
        self.log = log
        self.nodename = nodename
        self.failure = failure
        self.args = [
            str(VENV_BIN / "celery"),
            "-A",
            "tasks",
            "worker",
            "-I",
            kinds_module,
            "-Q",
            ",".join(queues),
            "-n",
            nodename,
            *([] if concurrency is None else ["-c", str(concurrency)]),
            "--without-mingle",
            "--without-gossip",
            "-l",
            "info",
            *extra_args,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready_timeout: float = 90.0) -> Self:
        # Only this worker's settings: none inherited from whoever runs the rig.
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOXTASKS_")}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + ready_timeout
        while not self._ready():
            if time.monotonic() >= deadline:
                raise self.failure(f"worker {self.nodename} not ready after {ready_timeout:g}s (log {self.log})")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise self.failure(f"worker {self.nodename} exited with {self.proc.returncode}:\n{self.tail()}")
        return " ready." in self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        """The worker's main process (and its process group)."""
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[int]:
        """Pids of the pool processes (children of the main worker process)."""
        if self.proc is None:
            return []
        main = self.proc.pid
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == main:
                found.append(int(stat.parent.name))
        return found

    def kill_all(self) -> None:
        """SIGKILL the main process and every child at once: a host that dies."""
        if self.proc is not None and self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group (a warm shutdown), then SIGKILL it if it lingers."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"worker {self.nodename} did not stop within {timeout:g}s: SIGKILL to its group")
        # Whatever is left of the group (the main process or a straggling child) goes now.
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


# ----------------------------------------------------------------------------- worker events


class _Receiver(EventReceiver):  # type: ignore[misc]
    ready: threading.Event

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any, wakeup: bool = True, **kw: Any) -> None:
        self.ready.set()


class EventLog:
    """Collects the Celery events of one worker node (its timestamps, in its clock: this host's).

    Used to count completions of the bare tasks without a result backend (`task-succeeded`),
    and to see which locked tasks waited (`task-waiting`, sent by `tasks.locking`).
    """

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        #: task id -> event type -> the first such event's timestamp.
        self.stamps: dict[str, dict[str, float]] = defaultdict(dict)
        self.counts: dict[str, int] = defaultdict(int)
        self._cond = threading.Condition()
        self._receiver: _Receiver | None = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> EventLog:
        ready = threading.Event()

        def run() -> None:
            try:
                with app.connection_for_read() as conn:
                    receiver = _Receiver(conn, handlers={"*": self._on_event}, app=app)
                    receiver.ready = ready
                    self._receiver = receiver
                    receiver.capture(limit=None, timeout=None, wakeup=False)
            except BaseException as err:  # reported by wait_*; the thread must not die silently
                self.error = err
                ready.set()

        self._thread = threading.Thread(target=run, name="bench-events", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("the event receiver did not start consuming")
        if self.error is not None:
            raise RuntimeError(f"event receiver failed: {self.error}")
        return self

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("hostname") != self.hostname:
            return
        task_id = event.get("uuid")
        kind = str(event.get("type", ""))
        if not task_id:
            return
        with self._cond:
            self.stamps[task_id].setdefault(kind, float(event.get("timestamp", time.time())))
            self.counts[kind] += 1
            self._cond.notify_all()

    def done(self, task_ids: Sequence[str]) -> tuple[int, int]:
        """How many of `task_ids` succeeded, and how many failed, per their events."""
        with self._cond:
            ok = sum(1 for t in task_ids if "task-succeeded" in self.stamps.get(t, {}))
            bad = sum(1 for t in task_ids if "task-failed" in self.stamps.get(t, {}))
        return ok, bad

    def wait_done(self, task_ids: Sequence[str], timeout: float) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                ok, bad = self.done(task_ids)
                if ok + bad >= len(task_ids) or time.monotonic() >= deadline or self.error is not None:
                    return ok, bad
                self._cond.wait(timeout=0.2)

    def stamp(self, task_id: str, kind: str) -> float | None:
        with self._cond:
            return self.stamps.get(task_id, {}).get(kind)


# ----------------------------------------------------------------------------- how a run ends


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def raise_on_sigterm(signum: int, frame: object) -> None:
    """Installed for SIGTERM, so that a stopped bench still stops its worker and drops its database."""
    raise SystemExit(f"stopped by signal {signum}")


def record_failure(
    result: dict[str, Any], err: BaseException, worker: Worker | None, expected: tuple[type[BaseException], ...]
) -> None:
    """A run that went wrong: one line in `result["errors"]`; the worker's log tail (for an error the bench
    expects) or the traceback (for any other) on stderr."""
    if isinstance(err, KeyboardInterrupt | SystemExit):
        result["errors"].append(f"interrupted: {err or type(err).__name__}")
        return
    result["errors"].append(f"{type(err).__name__}: {err}")
    if not isinstance(err, expected):
        log("".join(traceback.format_exception(err)))
    elif worker is not None:
        log(f"worker log ({worker.log}), last lines:\n{worker.tail()}")


def finish_run(
    result: dict[str, Any],
    meta: dict[str, Any],
    *,
    started: float,
    scratch: Path,
    as_json: bool,
    render: Callable[[dict[str, Any]], str],
) -> int:
    """Print the report (JSON or the table); keep the scratch directory (logs) only when something failed."""
    meta["load_after"] = load_average()
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    result["meta"] = meta
    if result["errors"]:
        log(f"logs kept in {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result) if as_json else render(result))
    return 1 if result["errors"] else 0
