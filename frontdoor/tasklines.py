"""A task's own log lines as text, for `GET /tasks/{id}/log` and `boxtasks task logs` (HTTP-free).

Following a log: the lines are read after the task's state, so once the state is final no line
written before it is missed; the worker writes its last lines just after the final state (and a
killed worker never does), so a follower reads on for `GRACE_SECONDS` after it sees the task end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from sqlalchemy import Engine, select

from frontdoor import queries
from frontdoor.schemas import LogLineOut
from models import FINAL_STATES, Task
from models.secrets import known_secrets, scrub, secret_values
from tasks import logstore

FINAL = {s.value for s in FINAL_STATES}
POLL_SECONDS = 0.5
GRACE_SECONDS = 1.5


def _secrets(engine: Engine, task_id: str) -> set[str]:
    """What the lines must not show: the task's own secrets and those the box holds now (a line may
    quote one: an exception's text, a driver's message, a dump tool's stderr)."""
    with engine.connect() as conn:
        args = conn.execute(select(Task.args).where(Task.id == task_id)).scalar()
        return known_secrets(conn) | secret_values(args or {})


def text(engine: Engine, task_id: str) -> Iterator[str]:
    """The lines written so far, a batch at a time (the caller has checked that the task exists)."""
    secrets = _secrets(engine, task_id)
    after = 0
    for batch in logstore.read_all(engine, task_id):
        chunk, after = logstore.render(batch, after=after)
        yield str(scrub(chunk, secrets))


def lines(engine: Engine, task_id: str) -> list[LogLineOut]:
    """The lines written so far, for `--json` (MissingError for an unknown task)."""
    queries.get_task(engine, task_id)
    secrets = _secrets(engine, task_id)
    return [
        LogLineOut(seq=x.seq, at=queries.iso(x.at), level=x.level, line=str(scrub(x.line, secrets)))
        for batch in logstore.read_all(engine, task_id)
        for x in batch
    ]


class Follower:
    """Reads a task's new lines, poll by poll, until the task has ended and its last lines are in."""

    def __init__(self, engine: Engine, task_id: str) -> None:
        self.engine = engine
        self.task_id = task_id
        self.after = 0
        self.state = ""
        self._ended_at: float | None = None
        self._secrets: set[str] | None = None

    @property
    def done(self) -> bool:
        return self._ended_at is not None and time.monotonic() - self._ended_at >= GRACE_SECONDS

    def poll(self) -> str:
        """The text of the lines written since the last poll (MissingError for an unknown task)."""
        self.state = queries.get_task(self.engine, self.task_id).state
        if self.state in FINAL and self._ended_at is None:
            self._ended_at = time.monotonic()
        if self._secrets is None:
            self._secrets = _secrets(self.engine, self.task_id)
        chunks = []
        for batch in logstore.read_all(self.engine, self.task_id, after=self.after):
            chunk, self.after = logstore.render(batch, after=self.after)
            chunks.append(chunk)
        return str(scrub("".join(chunks), self._secrets))
