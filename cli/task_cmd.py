"""`boxtasks task list|show|watch|wait|stop|retry|logs`: follow and stop tasks, straight from the `tasks` table."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from cli.errors import CliError
from cli.output import print_json, print_table
from frontdoor import actions, queries
from frontdoor.schemas import TaskOut
from models import FINAL_STATES, TaskState, get_engine

FINAL = {s.value for s in FINAL_STATES}
POLL_SECONDS = 0.25
BAR_WIDTH = 30


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    task = sub.add_parser("task", help="list, show, watch, wait for and stop tasks", parents=[common])
    tsub = task.add_subparsers(dest="task_command", required=True, metavar="ACTION")

    ls = tsub.add_parser("list", help="tasks, newest first", parents=[common])
    ls.add_argument("--state", action="append", choices=[s.value for s in TaskState], help="repeat for several")
    ls.add_argument("--type", help="apptask, fullbackup, update, platformstart, ...")
    ls.add_argument("--app", dest="app_id", help="only tasks of this app")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ls.set_defaults(handler=list_tasks)

    for name, handler, doc in (
        ("show", show, "one task, all its fields"),
        ("watch", watch, "a live progress bar until the task ends (exit 0 when it succeeded)"),
        ("wait", wait, "wait until the task ends: exit 0 when it succeeded, 1 otherwise"),
        ("stop", stop, "stop a task (SIGTERM, then SIGKILL after the grace period)"),
        ("retry", retry, "start a failed, interrupted or cancelled task again (its arguments checked again)"),
    ):
        p = tsub.add_parser(name, help=doc, parents=[common])
        p.add_argument("task_id", metavar="ID")
        if name in {"watch", "wait"}:
            p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds (exit 1)")
        if name == "stop":
            p.add_argument("--no-wait", action="store_true", help="send SIGTERM and return at once")
        if name == "show":
            p.add_argument("--traceback", action="store_true", help="the whole error (a traceback), not its last line")
        p.set_defaults(handler=handler)

    lg = tsub.add_parser(
        "logs", help="the task's own log lines (with --follow: until it ends, exit 0 if it succeeded)", parents=[common]
    )
    lg.add_argument("task_id", metavar="ID")
    lg.add_argument("-f", "--follow", action="store_true", help="print new lines as they come until the task ends")
    lg.set_defaults(handler=logs)


def list_tasks(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= queries.MAX_LIMIT:
        raise CliError(f"--limit must be 1-{queries.MAX_LIMIT}")
    rows = queries.list_tasks(
        get_engine(), state=args.state or (), type=args.type, app_id=args.app_id, limit=args.limit
    )
    if args.json:
        print_json(rows)
        return 0
    print_table(
        ["ID", "TYPE", "APP", "STATE", "%", "MESSAGE", "CREATED"],
        [(r.id, _kind(r), r.app_id or "-", r.state, r.percent, _cut(r.message), r.created_at) for r in rows],
        empty="no tasks",
    )
    return 0


def show(args: argparse.Namespace) -> int:
    row = queries.get_task(get_engine(), args.task_id)
    if args.json:
        print_json(row)
        return 0
    fields = row.model_dump(mode="json")
    for key in ("id", "type", "app_id", "state", "percent", "message", "worker", "pid", "created_at"):
        sys.stdout.write(f"{key + ':':<12} {fields[key] if fields[key] is not None else '-'}\n")
    for key in ("started_at", "finished_at"):
        sys.stdout.write(f"{key + ':':<12} {fields[key] or '-'}\n")
    if row.waited_seconds is not None:
        before = "its work began" if row.started_at else "it ended"
        sys.stdout.write(f"{'waited:':<12} {row.waited_seconds:.1f}s before {before} (queued, waiting for locks)\n")
    sys.stdout.write(f"{'args:':<12} {json.dumps(row.args)}\n")
    if row.locks:
        sys.stdout.write(f"{'locks:':<12} {json.dumps(row.locks)}\n")
    if row.result is not None:
        sys.stdout.write(f"{'result:':<12} {json.dumps(row.result)}\n")
    if row.error and args.traceback:
        sys.stdout.write(f"error:\n{row.error}\n")
    elif row.error:
        sys.stdout.write(f"{'error:':<12} {row.error_summary}\n")
        more = f"`boxtasks task logs {row.id}`"
        if row.error.strip() != row.error_summary:
            more = f"`boxtasks task show {row.id} --traceback`, {more}"
        sys.stdout.write(f"{'':<12} more: {more}\n")
    return 0


def wait(args: argparse.Namespace) -> int:
    row = _follow(args.task_id, args.timeout, on_change=None)
    if args.json:
        print_json(row)
    else:
        sys.stdout.write(f"{row.state}: {row.message}\n")
    return 0 if row.state == TaskState.SUCCEEDED.value else 1


def watch(args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty() and not args.json

    def show_change(row: TaskOut) -> None:
        if args.json:
            sys.stdout.write(
                json.dumps(row.model_dump(mode="json", include={"id", "state", "percent", "message"})) + "\n"
            )
        else:
            line = render_bar(row)
            sys.stdout.write(("\r\x1b[2K" + line) if tty else line + "\n")
        sys.stdout.flush()

    row = _follow(args.task_id, args.timeout, on_change=show_change)
    if tty:
        sys.stdout.write("\n")
    return 0 if row.state == TaskState.SUCCEEDED.value else 1


def stop(args: argparse.Namespace) -> int:
    state = actions.stop(get_engine(), args.task_id, wait=not args.no_wait)
    if args.json:
        print_json({"task_id": args.task_id, "state": state})
    else:
        sys.stdout.write(f"task {args.task_id}: {state}\n")
    return 0


def retry(args: argparse.Namespace) -> int:
    from cli.app_cmd import started
    from cli.platform_cmd import already_under_way
    from frontdoor.errors import DuplicateError

    try:
        result = actions.retry(get_engine(), args.task_id)
    except DuplicateError as err:
        return already_under_way(args, err)
    return started(args, f"retry of {args.task_id}", result)


def logs(args: argparse.Namespace) -> int:
    from frontdoor import tasklines  # reads the worker's log store: imports `tasks` (and Celery)

    engine = get_engine()
    if not args.follow:
        if args.json:
            print_json(tasklines.lines(engine, args.task_id))
            return 0
        queries.get_task(engine, args.task_id)
        for chunk in tasklines.text(engine, args.task_id):
            sys.stdout.write(chunk)
        return 0
    follower = tasklines.Follower(engine, args.task_id)
    while not follower.done:
        chunk = follower.poll()
        if chunk:
            sys.stdout.write(chunk)
            sys.stdout.flush()
        time.sleep(tasklines.POLL_SECONDS)
    return 0 if follower.state == TaskState.SUCCEEDED.value else 1


def render_bar(row: TaskOut) -> str:
    percent = max(0, min(100, int(row.percent or 0)))
    done = BAR_WIDTH * percent // 100
    return f"[{'#' * done}{'.' * (BAR_WIDTH - done)}] {percent:3d}% {row.state}: {row.message}"


def _follow(task_id: str, timeout: float | None, *, on_change: Any) -> TaskOut:
    engine = get_engine()
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: tuple[Any, ...] | None = None
    while True:
        row = queries.get_task(engine, task_id)
        current = (row.state, row.percent, row.message)
        if on_change is not None and current != seen:
            on_change(row)
        seen = current
        if row.state in FINAL:
            return row
        if deadline is not None and time.monotonic() >= deadline:
            raise CliError(f"task {task_id} is still {row.state} after {timeout:g}s ({row.message})")
        time.sleep(POLL_SECONDS)


def _kind(row: TaskOut) -> str:
    operation = (row.args or {}).get("operation")
    return f"{row.type}:{operation}" if row.type == "apptask" and operation else row.type


def _cut(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
