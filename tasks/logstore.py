"""The `task_logs` table: append a task's lines (bounded), read them back as text.

Written by the capture in the worker (`tasks.tasklog`), read by the API and the CLI; no Celery here.
A task keeps its first `head` lines and its last `tail` lines: the writer deletes the middle as the
task goes on, and a reader shows the hole as one line saying how many were dropped.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, insert, select

from models import TaskLogLine

logger = logging.getLogger(__name__)

#: Lines a reader takes per query.
READ_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Line:
    seq: int
    at: dt.datetime
    level: str
    line: str


@dataclass(frozen=True, slots=True)
class Bounds:
    """How much of one task's log is kept: its first `head` lines and its last `tail` lines."""

    head: int
    tail: int

    def dropped(self, seq: int, last: int) -> bool:
        """Whether line `seq` falls in the middle once `last` lines have been written."""
        return self.head < seq <= last - self.tail


def last_seq(engine: Engine, task_id: str) -> int:
    """The highest line number written for the task so far (0 for none)."""
    with engine.connect() as conn:
        found = conn.execute(select(func.max(TaskLogLine.seq)).where(TaskLogLine.task_id == task_id)).scalar()
    return int(found or 0)


def append(engine: Engine, task_id: str, lines: Sequence[Line], bounds: Bounds) -> None:
    """Write `lines` (numbered by the caller) and drop what the bounds no longer keep, in one transaction.

    Raises the database's IntegrityError when another writer took one of these numbers (a second copy
    of the task logging at the same time): the caller numbers again from `last_seq`.
    """
    if not lines:
        return
    last = lines[-1].seq
    with engine.begin() as conn:
        conn.execute(
            insert(TaskLogLine),
            [{"task_id": task_id, "seq": x.seq, "at": x.at, "level": x.level, "line": x.line} for x in lines],
        )
        if last > bounds.head + bounds.tail:
            conn.execute(
                delete(TaskLogLine).where(
                    TaskLogLine.task_id == task_id,
                    TaskLogLine.seq > bounds.head,
                    TaskLogLine.seq <= last - bounds.tail,
                )
            )


def read(engine: Engine, task_id: str, *, after: int = 0, limit: int = READ_BATCH) -> list[Line]:
    """The task's lines numbered above `after`, oldest first."""
    stmt = (
        select(TaskLogLine.seq, TaskLogLine.at, TaskLogLine.level, TaskLogLine.line)
        .where(TaskLogLine.task_id == task_id, TaskLogLine.seq > after)
        .order_by(TaskLogLine.seq)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [Line(r.seq, r.at, r.level, r.line) for r in conn.execute(stmt).all()]


def read_all(engine: Engine, task_id: str, *, after: int = 0) -> Iterable[list[Line]]:
    """Every line above `after`, a batch at a time (a log can hold thousands)."""
    while True:
        batch = read(engine, task_id, after=after)
        if batch:
            yield batch
            after = batch[-1].seq
        if len(batch) < READ_BATCH:
            return


def render(lines: Iterable[Line], *, after: int = 0) -> tuple[str, int]:
    """Text for `lines` (which follow line `after`), with a note where lines were dropped; and the last seq."""
    out = []
    for x in lines:
        if x.seq > after + 1:
            out.append(f"[... {x.seq - after - 1} lines dropped: a task keeps its first and its last lines ...]\n")
        stamp = x.at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{x.at.microsecond // 1000:03d}Z"
        out.append(f"{stamp} {x.level:<7} {x.line}\n")
        after = x.seq
    return "".join(out), after
