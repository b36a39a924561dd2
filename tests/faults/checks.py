"""What every fault test checks afterwards: every task final and truthful, no leaked lock, no overlap.

Also a stream of tasks sent from a thread while a test breaks something, as the API would send them.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from lockman import LockManager, LockTable
from models import FINAL_STATES, Task, get_engine
from tasks.client import enqueue
from tests.e2e.harness import Worker
from tests.e2e.kinds import steps_file, trace_file

FINAL = {s.value for s in FINAL_STATES}
#: How a task that failed because of the database says so.
NAMES_THE_DATABASE = re.compile(
    r"mysql|mariadb|database|lost connection|can't connect|server has gone away|connection was killed", re.IGNORECASE
)


def new_app() -> str:
    return f"a{uuid.uuid4().hex[:8]}"


def all_tasks() -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(Task.__table__).order_by(Task.created_at)))


def describe(rows: Iterable[Any]) -> str:
    return "\n".join(
        f"  {r.id} {r.type} {r.app_id} {r.state} worker={r.worker} pid={r.pid}: {r.message} | {(r.error or '')[-300:]}"
        for r in rows
    )


def tails(workers: Sequence[Worker], lines: int = 25) -> str:
    return "\n".join(f"--- {w.nodename} ({w.log})\n{w.tail(lines)}" for w in workers)


def wait_all_final(workers: Sequence[Worker], *, timeout: float) -> list[Any]:
    """Every row of the (private) tasks table in a final state; the rows. Fails naming the ones that are not."""
    deadline = time.monotonic() + timeout
    while True:
        rows = all_tasks()
        pending = [r for r in rows if r.state not in FINAL]
        if not pending:
            return rows
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{len(pending)} task(s) not final after {timeout}s:\n{describe(pending)}\n{tails(workers)}"
            )
        time.sleep(0.2)


def lock_table() -> LockTable:
    manager = LockManager.from_settings()
    try:
        return manager.snapshot().table
    finally:
        manager.dispose()


def assert_no_leaked_lock(*, timeout: float = 15.0) -> None:
    """The lock row has no holder and no waiter (a task's release follows its final write by a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        table = lock_table()
        if not table.owners():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"locks leaked: holders {table.holders}, waiters {table.waiters}")
        time.sleep(0.2)


def assert_truthful(rows: Iterable[Any], *, allowed: set[str], because: re.Pattern[str]) -> None:
    """Every task final in an allowed state; a task that did not succeed says why, matching `because`."""
    wrong = [r for r in rows if r.state not in allowed]
    assert not wrong, f"tasks in states other than {sorted(allowed)}:\n{describe(wrong)}"
    silent = [r for r in rows if r.state != "succeeded" and not because.search(f"{r.message}\n{r.error or ''}")]
    assert not silent, f"tasks that did not succeed and do not say why ({because.pattern}):\n{describe(silent)}"
    for r in rows:
        if r.state == "succeeded":
            assert r.result is not None and r.error is None, f"succeeded without a result:\n{describe([r])}"


def spans(app_id: str) -> list[dict[str, Any]]:
    path = trace_file(app_id)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_no_overlap(app_ids: Iterable[str]) -> int:
    """No two bodies of `t_traced` on one app ran at once; the number of spans checked."""
    checked = 0
    for app_id in app_ids:
        ordered = sorted(spans(app_id), key=lambda s: s["start"])
        for before, after in itertools.pairwise(ordered):
            assert after["start"] >= before["end"], f"two tasks on app {app_id} overlapped: {before} and {after}"
        checked += len(ordered)
    return checked


@dataclass
class Stream:
    """Sends `kind` tasks round-robin over `apps` from a thread until stopped; keeps what was sent and refused."""

    kind: str
    apps: Sequence[str]
    args: dict[str, Any]
    interval: float = 0.15
    sent: list[tuple[float, str]] = field(default_factory=list)
    refused: list[tuple[float, BaseException]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Stream:
        self._thread = threading.Thread(target=self._run, name=f"stream-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            app_id = self.apps[i % len(self.apps)]
            i += 1
            try:
                task_id = enqueue(self.kind, {"app_id": app_id, **self.args}, app_id=app_id, queue="apptask")
                self.sent.append((time.time(), task_id))
            except Exception as err:  # what a client sees while a service is down
                self.refused.append((time.time(), err))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            assert not self._thread.is_alive(), "the stream thread hangs in enqueue()"


def wait_succeeded(count: int, *, timeout: float, workers: Sequence[Worker]) -> None:
    """At least `count` tasks succeeded (the stream flows)."""
    deadline = time.monotonic() + timeout
    while sum(r.state == "succeeded" for r in all_tasks()) < count:
        if time.monotonic() >= deadline:
            raise AssertionError(f"fewer than {count} tasks succeeded in {timeout}s:\n{tails(workers)}")
        time.sleep(0.2)


def steps(app_id: str) -> list[dict[str, Any]]:
    """The steps of work `t_steps` tasks logged on `app_id`, in the order they were logged."""
    path = steps_file(app_id)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def working_spans(app_id: str) -> list[tuple[float, float, str]]:
    """Per task, from its first to its last logged step on `app_id`: (first, last, task), by first."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for s in steps(app_id):
        first.setdefault(s["task"], s["t"])
        last[s["task"]] = s["t"]
    return sorted((first[t], last[t], t) for t in first)


def assert_never_two_working(app_ids: Iterable[str]) -> int:
    """No step of one task on an app falls between the first and the last step of another; the steps checked."""
    checked = 0
    for app_id in app_ids:
        spans_ = working_spans(app_id)
        for (_, end, before), (start, _, after) in itertools.pairwise(spans_):
            assert start > end, (
                f"two tasks worked on app {app_id} at once: {after} stepped at {start:.3f}, "
                f"before {before} took its last step at {end:.3f} ({end - start:.3f}s later)"
            )
        checked += len(steps(app_id))
    return checked
