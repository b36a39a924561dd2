"""Each task's own log: the `logging` records of its worker process while it runs, kept in `task_logs`.

A `logging.Handler` on the root logger of the pool process buffers the records of a running task
and a thread writes them every `task_log_flush_seconds` (and when the task ends), so a line costs no
round trip of its own, and a worker killed mid-task keeps what was written until then. A record
belongs to the task whose thread made it; a record of another thread (the heartbeat, a helper) to
the task running in this process, if there is just one (the prefork pool runs one at a time).

Only the record's message (and its traceback) is kept: never the task's arguments, which Celery
logs elsewhere with its own records. Records of `sqlalchemy` (whose echo shows statement
parameters) are never kept.

Hooked in by Celery's `task_prerun`/`task_postrun` signals, for locked tasks (those with a row).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from celery import signals
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from tasks import logstore
from tasks.logstore import Bounds, Line

logger = logging.getLogger(__name__)

#: Loggers whose records are never kept (prefixes of their names).
_IGNORED = ("sqlalchemy",)


@dataclass
class _Buffer:
    task_id: str
    #: Lines not yet written, numbered from 1 within this run; `base` is added when they are written.
    pending: list[Line] = field(default_factory=list)
    made: int = 0
    #: The task's last line number before this run, read when the first lines are written
    #: (a task that logs nothing costs no query).
    base: int | None = None


class Capture(logging.Handler):
    """Keeps the records of the tasks running in this process, and writes them in batches."""

    def __init__(self, engine: Engine, bounds: Bounds, *, line_chars: int, flush_seconds: float) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self._engine = engine
        self._bounds = bounds
        self._line_chars = line_chars
        self._flush_seconds = flush_seconds
        self._buffers: dict[str, _Buffer] = {}
        self._threads: dict[int, str] = {}
        self._mutex = threading.Lock()
        self._flush_lock = threading.Lock()
        self._local = threading.local()
        self._stopped = threading.Event()
        self._flusher: threading.Thread | None = None

    # ------------------------------------------------------------------ a task's run

    def begin(self, task_id: str) -> None:
        """Keep what this thread (and, while it is this process's only task, the process) logs for `task_id`."""
        with self._mutex:
            self._buffers.setdefault(task_id, _Buffer(task_id))
            self._threads[threading.get_ident()] = task_id
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_every, name="tasklog-flush", daemon=True)
                self._flusher.start()

    def end(self, task_id: str) -> None:
        """The run is over: write what is left, and keep no more lines for it."""
        with self._mutex:
            for ident in [i for i, t in self._threads.items() if t == task_id]:
                del self._threads[ident]
            buffer = self._buffers.pop(task_id, None)
        if buffer is not None:
            self._write(buffer)

    def close(self) -> None:
        self._stopped.set()
        super().close()

    # ------------------------------------------------------------------ logging

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "writing", False) or record.name.startswith(_IGNORED):
            return
        with self._mutex:
            task_id = self._threads.get(record.thread or 0)
            if task_id is None and len(self._buffers) == 1:
                task_id = next(iter(self._buffers))
            buffer = self._buffers.get(task_id) if task_id is not None else None
        if buffer is None:
            return
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if len(text) > self._line_chars:
            text = text[: self._line_chars - 1] + "…"
        at = dt.datetime.fromtimestamp(record.created, dt.UTC).replace(tzinfo=None)
        with self._mutex:
            buffer.made += 1
            buffer.pending.append(Line(buffer.made, at, record.levelname, text))
            self._trim(buffer)

    def _trim(self, buffer: _Buffer) -> None:
        """While lines cannot be written (a slow or unreachable database), hold no more than the bounds keep."""
        bounds = self._bounds
        if len(buffer.pending) > bounds.head + bounds.tail:
            base = buffer.base or 0
            last = base + buffer.made
            buffer.pending = [x for x in buffer.pending if not bounds.dropped(base + x.seq, last)]

    # ------------------------------------------------------------------ writing

    def flush(self) -> None:
        """Write every running task's pending lines now."""
        with self._mutex:
            buffers = list(self._buffers.values())
        for buffer in buffers:
            self._write(buffer)

    def _flush_every(self) -> None:
        while not self._stopped.wait(self._flush_seconds):
            self.flush()

    def _write(self, buffer: _Buffer) -> None:
        with self._flush_lock:
            with self._mutex:
                taken, buffer.pending = buffer.pending, []
            if not taken:
                return
            # What this thread logs while writing (a warning, the driver) is not a task's line.
            self._local.writing = True
            try:
                self._append(buffer, taken)
            except Exception:
                logger.warning(
                    "task %s: could not write %d log line(s); trying again", buffer.task_id, len(taken), exc_info=True
                )
                with self._mutex:
                    buffer.pending = taken + buffer.pending
                    self._trim(buffer)
            finally:
                self._local.writing = False

    def _append(self, buffer: _Buffer, taken: list[Line]) -> None:
        if buffer.base is None:
            buffer.base = logstore.last_seq(self._engine, buffer.task_id)
        try:
            logstore.append(self._engine, buffer.task_id, self._numbered(buffer.base, taken), self._bounds)
        except IntegrityError:
            # Another process wrote lines of this task meanwhile (a second copy, soon skipped):
            # ours go after its lines.
            buffer.base = logstore.last_seq(self._engine, buffer.task_id) - taken[0].seq + 1
            logstore.append(self._engine, buffer.task_id, self._numbered(buffer.base, taken), self._bounds)

    @staticmethod
    def _numbered(base: int, lines: list[Line]) -> list[Line]:
        return [Line(base + x.seq, x.at, x.level, x.line) for x in lines]


# ---------------------------------------------------------------------------- the worker's hooks

_capture: Capture | None = None
_capture_pid = 0


def process_capture() -> Capture:
    """This process's capture, on the root logger (a forked child makes its own)."""
    global _capture, _capture_pid
    if _capture is None or _capture_pid != os.getpid():
        from config import get_settings
        from models import get_engine

        settings = get_settings()
        if _capture is not None:  # the parent's, inherited by this forked child
            logging.getLogger().removeHandler(_capture)
        _capture = Capture(
            get_engine(),
            Bounds(settings.task_log_head_lines, settings.task_log_tail_lines),
            line_chars=settings.task_log_line_chars,
            flush_seconds=settings.task_log_flush_seconds,
        )
        _capture_pid = os.getpid()
        logging.getLogger().addHandler(_capture)
    return _capture


@signals.task_prerun.connect
def _begin(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    from tasks.locking import LockedTask

    if task_id is None or not isinstance(task, LockedTask):
        return  # the sweep and the schedules: no task row, no log of their own
    try:
        process_capture().begin(task_id)
    except Exception:  # a task runs even if its log cannot be kept
        logger.warning("task %s: its log lines will not be kept", task_id, exc_info=True)


@signals.task_postrun.connect
def _end(task_id: str | None = None, **_: Any) -> None:
    if task_id is not None and _capture is not None and _capture_pid == os.getpid():
        _capture.end(task_id)
