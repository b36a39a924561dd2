"""Watch Docker's event stream for app containers killed for lack of memory, and notify.

Run it in a long-lived process: `watch_oom(box, engine, stop=event)` reads one event stream;
`watch_forever` reads it again after the engine restarts or drops the stream, from where it left off.
celery beat runs `watch_forever` in a thread (`tasks.schedules`): beat is the one process per
deployment, and a deployment has one Docker engine, so every OOM is recorded once.
An app that keeps running out of memory (its restart policy brings it back) is notified once per
`repeat_after` seconds; every OOM is still written to the eventlog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from hosting.apps.docker_engine import LABEL_APP_ID
from hosting.box import Box
from hosting.events import notify
from hosting.events.eventlog import Action, record
from hosting.events.notify import Outcome

logger = logging.getLogger(__name__)


def watch_oom(
    box: Box,
    engine: Engine,
    *,
    duration: float | None = None,
    stop: threading.Event | None = None,
    repeat_after: float = 3600.0,
    on_outcome: Callable[[str, Outcome], None] | None = None,
    since: float | None = None,
    last_notified: dict[str, float] | None = None,
) -> int:
    """Consume OOM events of app containers until `stop` is set or `duration` seconds passed.

    Returns how many OOM events were recorded. `on_outcome(app_id, outcome)` is called after each.
    `since` (epoch seconds, default now) replays what the engine saw from then on; `last_notified`
    carries the quiet periods over from an earlier stream.
    """
    if duration is None and stop is None:
        raise ValueError("watch_oom needs a stop event or a duration, or it never returns")
    start = time.time()
    until = start + duration if duration is not None else None
    stream = box.docker.events(
        filters={"type": ["container"], "event": ["oom"], "label": [LABEL_APP_ID]},
        since=start if since is None else since,
        until=until,
    )
    stop = stop or threading.Event()
    done = threading.Event()

    def closer() -> None:
        # The stream blocks its reader; closing it from here is how a stop request gets through.
        while not done.wait(0.2):
            if stop.is_set() or (until is not None and time.time() >= until):
                _close(stream)
                return

    threading.Thread(target=closer, name="oom-watch-closer", daemon=True).start()
    last_notified = {} if last_notified is None else last_notified
    recorded = 0
    try:
        for event in stream:
            attrs = (event.get("Actor") or {}).get("Attributes") or {}
            app_id = attrs.get(LABEL_APP_ID)
            if not app_id:
                continue
            container_id = str((event.get("Actor") or {}).get("ID") or event.get("id") or "")
            recorded += 1
            now = time.monotonic()
            quiet = now - last_notified.get(app_id, -repeat_after) < repeat_after
            outcome = _record(engine, app_id, container_id, notify_too=not quiet)
            if not quiet:
                last_notified[app_id] = now
            logger.warning("app %s ran out of memory (container %s)", app_id, container_id[:12])
            if on_outcome is not None:
                on_outcome(app_id, outcome)
            if stop.is_set():
                break
    except Exception as err:
        if not stop.is_set() and (until is None or time.time() < until):
            raise
        logger.debug("event stream closed: %s", err)
    finally:
        done.set()
        _close(stream)
    return recorded


def watch_forever(
    box: Box,
    engine: Engine,
    *,
    stop: threading.Event,
    retry_seconds: float = 10.0,
    on_outcome: Callable[[str, Outcome], None] | None = None,
) -> int:
    """`watch_oom` until `stop` is set, opening the stream again whenever it ends or fails.

    A stream that ended by itself (the engine restarted) delivered everything up to its end: the
    next starts there. After a failure the next stream starts where the last good one ended, so an
    OOM while the engine or the database was away is still recorded (at least once: events a
    failed stream had recorded are replayed). An engine that cannot be reached is asked again
    every `retry_seconds`. Returns how many OOM events were recorded.
    """
    recorded = 0
    since = time.time()
    quiet: dict[str, float] = {}
    failures = 0
    while not stop.is_set():
        try:
            recorded += watch_oom(box, engine, stop=stop, since=since, last_notified=quiet, on_outcome=on_outcome)
            since = time.time()
            failures = 0
        except Exception as err:
            failures += 1
            # Said once at warning level, then quietly: an engine that is down stays down a while.
            log = logger.warning if failures == 1 else logger.debug
            log("OOM watch on %s failed (%s); trying again every %.0fs", box.docker.base_url, err, retry_seconds)
            stop.wait(retry_seconds)
            continue
        stop.wait(min(retry_seconds, 1.0))
    return recorded


def _record(engine: Engine, app_id: str, container_id: str, *, notify_too: bool) -> Outcome:
    with engine.begin() as conn:
        if notify_too:
            return notify.app_oom(conn, app_id=app_id, container_id=container_id)
        return Outcome(record(conn, Action.APP_OOM, source={"app_id": app_id}, data={"containerId": container_id}))


def _close(stream: object) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # closing a stream another thread reads may race; either way it ends
            logger.debug("closing the event stream", exc_info=True)
