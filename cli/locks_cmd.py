"""`boxtasks locks`: who holds what, who waits, and why (the report is `frontdoor.queries.locks_report`).

`boxtasks locks release --owner TASK` frees the locks of an owner that is dead by the lock
manager's own rule (its task ended or is gone, or it holds locks and its heartbeat is older than
the lease) and wakes the waiters that can go now: what the periodic sweep would do for it, at
once. An owner that may still be alive is refused: its locks are never taken from under it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from cli.errors import CliError
from cli.output import print_json, print_table
from frontdoor.queries import locks_report
from lockman import LockManager
from lockman.store import LockStore
from models import FINAL_STATES, PROCESSLESS_STATES, get_engine


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    locks = sub.add_parser("locks", help="lock holders and waiters, and why they wait", parents=[common])
    locks.set_defaults(handler=run)
    lsub = locks.add_subparsers(dest="locks_command", required=False, metavar="ACTION")
    release_cmd = lsub.add_parser(
        "release",
        help="free the locks of a dead owner (its task ended, or its heartbeat is older than the lease)",
        parents=[common],
    )
    release_cmd.add_argument("--owner", required=True, metavar="TASK", help="the task id that holds the locks")
    release_cmd.set_defaults(handler=release)


def run(args: argparse.Namespace) -> int:
    manager = LockManager.from_settings()
    try:
        snap = manager.snapshot()
    finally:
        manager.dispose()
    report = locks_report(snap.table, snap.version, get_engine())
    if args.json:
        print_json(report)
        return 0
    print_table(
        ["LOCK", "MODE", "HOLDER", "TASK", "TOKEN"],
        [(h.name, h.mode, h.label, h.owner, h.token) for h in report.holders],
        empty="no locks held",
    )
    print_table(
        ["#", "TASK", "KIND", "WANTS", "WHY"],
        [
            (
                w.seq,
                w.owner,
                w.label,
                " ".join(f"{n}:{m}" for n, m in w.locks.items()),
                "; ".join(w.blocked_by) or "ready",
            )
            for w in report.waiters
        ],
        empty="no waiters",
    )
    return 0


def release(args: argparse.Namespace) -> int:
    from models import records

    owner: str = args.owner
    engine = get_engine()
    manager = LockManager.from_settings()
    try:
        snap = manager.snapshot()
        held = snap.table.held_by(owner)
        queued = snap.table.waiter_of(owner) is not None
        row = records.get(engine, owner)
        if not held and not queued:
            if row is None:
                raise CliError(f"no task {owner!r} and no lock entry of it; `boxtasks locks` lists the owners")
            return _print(args, owner, row.state, row.state, "", [], [], None, note="holds no lock and waits for none")
        now = snap.now
        if now is None:  # a fresh read always carries the database clock
            raise CliError("could not read the database clock; try again")
        with engine.connect() as conn:
            dead = LockStore(manager.row_id).dead_owners(conn, [owner], now=now, lease=manager.lease)
        if owner not in dead:
            raise CliError(_refusal(owner, row, held=bool(held), now=now, lease=manager.lease))
        reason = _death(row, now=now, lease=manager.lease)
        before = None if row is None else str(row.state)
        if row is not None and row.state not in {s.value for s in FINAL_STATES}:
            # The row goes final first, as the sweep does: should the eviction below fail, the
            # next writer this owner blocks drops it anyway.
            records.interrupt(engine, [owner], reason=f"its locks were released by `boxtasks locks release`: {reason}")
        freed = manager.evict([owner])
    finally:
        manager.dispose()
    after_row = records.get(engine, owner)
    after = None if after_row is None else str(after_row.state)
    woken, wake_error = _wake([w.owner for w in freed.ready])
    released = [{"name": h.name, "mode": h.mode.value, "token": h.token} for h in freed.released]
    return _print(args, owner, before, after, reason, released, woken, wake_error, left_queue=queued)


def _death(row: Any, *, now: dt.datetime, lease: dt.timedelta) -> str:
    if row is None:
        return "its task row is gone"
    if row.state in {s.value for s in FINAL_STATES}:
        return f"its task ended ({row.state})"
    age = _heartbeat_age(row, now)
    if age is None:
        return "it holds locks and never stamped a heartbeat"
    return f"its heartbeat is {age:.0f}s old, past the {lease.total_seconds():g}s lease"


def _refusal(owner: str, row: Any, *, held: bool, now: dt.datetime, lease: dt.timedelta) -> str:
    state = str(row.state)
    if not held and state in {s.value for s in PROCESSLESS_STATES}:
        return (
            f"refusing: task {owner} is {state} and only waits (it holds nothing and has no process); "
            f"to take it out of the queue, stop it: `boxtasks task stop {owner}`"
        )
    if state in {s.value for s in PROCESSLESS_STATES}:
        return (
            f"refusing: task {owner} is {state} and parked: it keeps its locks while it waits for more, "
            f"without a process, and resumes when they are free; to end it, stop it: `boxtasks task stop {owner}`"
        )
    age = _heartbeat_age(row, now)
    left = lease.total_seconds() - (age or 0.0)
    return (
        f"refusing: task {owner} is {state} on {row.worker or '?'} pid {row.pid or '?'} and its heartbeat is "
        f"{age or 0.0:.0f}s old (lease {lease.total_seconds():g}s): it may still be working. Stop it with "
        f"`boxtasks task stop {owner}`; if its worker is gone, its locks can be released in {max(0.0, left):.0f}s "
        f"(the sweep does it by itself)"
    )


def _heartbeat_age(row: Any, now: dt.datetime) -> float | None:
    if row.heartbeat_at is None:
        return None
    return float((now - row.heartbeat_at).total_seconds())


def _wake(owners: list[str]) -> tuple[list[str], str | None]:
    if not owners:
        return [], None
    from tasks.client import wake

    try:
        return wake(owners), None
    except Exception as err:  # the locks are free already; the periodic sweep wakes them
        return [], f"{type(err).__name__}: {err}"


def _print(
    args: argparse.Namespace,
    owner: str,
    before: str | None,
    after: str | None,
    reason: str,
    released: list[dict[str, Any]],
    woken: list[str],
    wake_error: str | None,
    *,
    left_queue: bool = False,
    note: str = "",
) -> int:
    if args.json:
        print_json(
            {
                "owner": owner,
                "state_before": before,
                "state": after,
                "reason": reason or None,
                "released": released,
                "left_queue": left_queue,
                "woken": woken,
                "wake_error": wake_error,
            }
        )
        return 0
    if note:
        sys.stdout.write(f"task {owner} ({after}) {note}: nothing to release\n")
        return 0
    names = ", ".join(f"{r['name']} ({r['mode']})" for r in released) or "no lock"
    queue_note = "; it left the wait queue" if left_queue else ""
    state = f"{before} -> {after}" if before != after else str(after)
    sys.stdout.write(f"released {names} of task {owner} [{state}]: {reason}{queue_note}\n")
    if woken:
        sys.stdout.write(f"woke {len(woken)} waiter(s): {', '.join(woken)}\n")
    if wake_error:
        sys.stdout.write(f"could not wake the waiters now ({wake_error}); the periodic sweep wakes them\n")
    return 0
