"""The task runner without Celery: claim, wait, wake, fail, stop, and recovery of a dead run."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from sqlalchemy import Engine, update

from frontdoor.queries import task_view
from lockman import lock_set
from models import Task, records
from tasks.errors import TaskStopped
from tasks.runner import Outcome, RunContext, Runtime, execute
from tests.lostanswer import lose_first_answer

PLAN = lock_set({"platform": "S", "app:a": "X"})


def _task(engine: Engine) -> str:
    return records.create(engine, kind="apptask", queue="apptask", args={"app_id": "a"}, app_id="a")


def test_runs_once_and_records_the_result(runtime: tuple[Runtime, list[str]], engine: Engine) -> None:
    rt, _ = runtime
    task_id = _task(engine)

    def body(ctx: RunContext) -> dict[str, Any]:
        ctx.progress(50, "half way")
        assert records.get(engine, task_id).message == "half way"  # type: ignore[union-attr]
        return {"ok": True}

    result = execute(rt, task_id, "apptask", PLAN, body)
    assert result.outcome is Outcome.SUCCEEDED
    row = records.get(engine, task_id)
    assert row is not None and row.state == "succeeded" and row.result == {"ok": True} and row.percent == 100
    # The same message again (a redelivery) does not run the body a second time.
    again = execute(rt, task_id, "apptask", PLAN, lambda ctx: pytest.fail("ran twice"))
    assert again.outcome is Outcome.SKIPPED
    assert rt.manager.snapshot().table.owners() == set()


def test_blocked_task_waits_with_reason_and_is_woken_on_release(
    runtime: tuple[Runtime, list[str]], engine: Engine
) -> None:
    rt, woken = runtime
    first, second = _task(engine), _task(engine)
    seen: dict[str, Any] = {}

    def holder(ctx: RunContext) -> None:
        result = execute(rt, second, "apptask", PLAN, lambda c: pytest.fail("second ran while first held"))
        seen["second"] = result
        seen["row"] = records.get(engine, second)

    assert execute(rt, first, "apptask", PLAN, holder).outcome is Outcome.SUCCEEDED
    assert seen["second"].outcome is Outcome.WAITING
    assert seen["row"].state == "waiting"
    assert seen["row"].message == f"Waiting for apptask (task {first[:8]}…) to release app:a"
    assert woken == [second]
    # The wake-up runs it now.
    assert execute(rt, second, "apptask", PLAN, lambda c: "done").outcome is Outcome.SUCCEEDED


def test_a_task_that_waited_starts_when_its_locks_are_granted_and_shows_the_wait_apart(
    runtime: tuple[Runtime, list[str]], engine: Engine
) -> None:
    """A restart that waited for its app's backup is not listed as running during that backup."""
    rt, _ = runtime
    first, second = _task(engine), _task(engine)
    seen: dict[str, Any] = {}

    def holder(ctx: RunContext) -> None:
        seen["second"] = execute(rt, second, "apptask", PLAN, lambda c: pytest.fail("ran while first held"))
        seen["waiting"] = records.get(engine, second)
        time.sleep(1.0)  # the first task's work, while the second waits

    assert execute(rt, first, "apptask", PLAN, holder).outcome is Outcome.SUCCEEDED
    assert seen["second"].outcome is Outcome.WAITING
    waiting = seen["waiting"]
    assert waiting.state == "waiting" and waiting.started_at is None, "claimed, then blocked: not started"
    assert task_view(waiting).waited_seconds is None, "still waiting: the wait is not over"
    assert execute(rt, second, "apptask", PLAN, lambda c: "done").outcome is Outcome.SUCCEEDED
    done, held = records.get(engine, second), records.get(engine, first)
    assert done is not None and held is not None
    assert done.started_at >= held.finished_at, "its work began once the first task's locks were free"
    view = task_view(done)
    assert view.waited_seconds is not None and view.waited_seconds >= 0.9
    assert view.waited_seconds == pytest.approx((done.started_at - done.created_at).total_seconds(), abs=0.001)


def test_failure_and_stop_end_the_task_and_free_its_locks(runtime: tuple[Runtime, list[str]], engine: Engine) -> None:
    rt, _ = runtime
    failing, stopped = _task(engine), _task(engine)

    def fail(ctx: RunContext) -> None:
        raise ValueError("disk full")

    def stop(ctx: RunContext) -> None:
        raise TaskStopped("SIGTERM")

    assert execute(rt, failing, "apptask", PLAN, fail).outcome is Outcome.FAILED
    row = records.get(engine, failing)
    assert row is not None and row.state == "failed" and "disk full" in row.error
    assert execute(rt, stopped, "apptask", PLAN, stop).outcome is Outcome.CANCELLED
    assert records.get(engine, stopped).state == "cancelled"  # type: ignore[union-attr]
    assert rt.manager.snapshot().table.owners() == set()


def test_message_for_a_dead_run_interrupts_it_and_frees_its_locks(
    runtime: tuple[Runtime, list[str]], engine: Engine
) -> None:
    rt, _ = runtime
    dead = _task(engine)
    assert records.claim(engine, dead, worker="gone@host", pid=1).claimed
    assert rt.manager.heartbeat(dead)
    rt.manager.try_acquire(dead, PLAN, label="apptask")
    with engine.begin() as conn:  # its heartbeat went silent long ago
        conn.execute(update(Task).where(Task.id == dead).values(heartbeat_at=dt.datetime(2000, 1, 1)))
    result = execute(rt, dead, "apptask", PLAN, lambda c: pytest.fail("a dead run must not be restarted"))
    assert result.outcome is Outcome.SKIPPED
    row = records.get(engine, dead)
    assert row is not None and row.state == "interrupted" and "stopped heart-beating" in row.error
    assert dead not in rt.manager.snapshot().table.owners()


def test_live_run_is_never_duplicated(runtime: tuple[Runtime, list[str]], engine: Engine) -> None:
    rt, _ = runtime
    alive = _task(engine)
    assert records.claim(engine, alive, worker="other@host", pid=7).claimed
    result = execute(rt, alive, "apptask", PLAN, lambda c: pytest.fail("second copy"))
    assert result.outcome is Outcome.SKIPPED and result.message == "another copy is alive"
    assert records.get(engine, alive).state == "running"  # type: ignore[union-attr]


def test_a_waiting_write_whose_answer_was_lost_keeps_the_task_waiting(
    runtime: tuple[Runtime, list[str]], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `waiting` write lands, then its connection drops before the answer: sent again, it
    matches nothing, and the runner must see that the row is its own, still waiting in the queue
    (not a stop, which would take it out of the lock queue)."""
    rt, _ = runtime
    holder, blocked = _task(engine), _task(engine)
    calls = lose_first_answer(monkeypatch, "to_waiting")

    def body(ctx: RunContext) -> None:
        result = execute(rt, blocked, "apptask", PLAN, lambda c: pytest.fail("ran while app:a was held"))
        assert result.outcome is Outcome.WAITING, result
        assert rt.manager.snapshot().table.waiter_of(blocked) is not None

    assert execute(rt, holder, "apptask", PLAN, body).outcome is Outcome.SUCCEEDED
    assert len(calls) == 2
    assert records.get(engine, blocked).state == "waiting"  # type: ignore[union-attr]


def test_a_waiting_write_whose_task_was_claimed_meanwhile_leaves_it_to_that_claim(
    runtime: tuple[Runtime, list[str]], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, but between the lost answer and the second send a release woke the task and
    another process claimed it: this run steps aside without touching the task's locks."""
    rt, _ = runtime
    holder, blocked = _task(engine), _task(engine)
    # Meanwhile the wake-up of a release, in another process, claims it.
    calls = lose_first_answer(
        monkeypatch, "to_waiting", meanwhile=lambda: records.claim(engine, blocked, worker="other@test", pid=77)
    )

    def body(ctx: RunContext) -> None:
        result = execute(rt, blocked, "apptask", PLAN, lambda c: pytest.fail("ran in the wrong process"))
        assert (result.outcome, result.message) == (Outcome.SKIPPED, "claimed by a wake-up")
        # Its place in the lock queue is the other process's now: not withdrawn here.
        assert rt.manager.snapshot().table.waiter_of(blocked) is not None

    assert execute(rt, holder, "apptask", PLAN, body).outcome is Outcome.SUCCEEDED
    assert len(calls) == 2
    row = records.get(engine, blocked)
    assert row is not None and (row.state, row.worker, row.pid) == ("running", "other@test", 77)
