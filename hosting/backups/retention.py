"""Which backups to keep: the newest N of each app (and of the box), and the newest of each day for D days.

`plan` is pure (rows in, {id: reason} out), so the policy is tested without files or a database.
Never discarded: a `creating` backup (stale cleanup's business), a backup an archive points at, and
an app backup that a kept box backup depends on. Failed backups go once they are older than the
stale threshold, so an admin still sees last night's failure in the morning.

`apply` discards in three steps that survive a crash: the reason is written first, then the file is
deleted, then the row; a row left with a reason is finished by the next run.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update

from config import Settings
from hosting.backups import fileformat
from hosting.backups.store import file_of
from hosting.context import TaskContext
from hosting.events import eventlog
from models import Archive, Backup, db_utcnow

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    type: str
    app_id: str | None
    state: str
    created_at: dt.datetime
    depends_on: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Policy:
    keep_last: int
    keep_daily_days: int
    #: Failed backups older than this are discarded.
    error_grace: dt.timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            settings.backup_keep_last,
            settings.backup_keep_daily_days,
            dt.timedelta(hours=settings.backup_stale_hours),
        )


def plan(items: Iterable[Item], policy: Policy, *, now: dt.datetime, protected: Iterable[str] = ()) -> dict[str, str]:
    """The backups to discard, each with the reason."""
    items = list(items)
    keep = set(protected)
    discard: dict[str, str] = {}
    # Box backups first: the app backups a kept box backup depends on are kept with it.
    boxes = [i for i in items if i.type == "box"]
    _decide(boxes, policy, now, keep, discard)
    for box in boxes:
        if box.id not in discard:
            keep.update(box.depends_on)
    apps = [i for i in items if i.type != "box"]
    by_app: dict[str | None, list[Item]] = defaultdict(list)
    for item in apps:
        by_app[item.app_id].append(item)
    for group in by_app.values():
        _decide(group, policy, now, keep, discard)
    return discard


def _decide(group: Sequence[Item], policy: Policy, now: dt.datetime, keep: set[str], discard: dict[str, str]) -> None:
    normal = sorted((i for i in group if i.state == "normal"), key=lambda i: (i.created_at, i.id), reverse=True)
    kept = {i.id for i in normal[: policy.keep_last]}
    first_day = (now - dt.timedelta(days=policy.keep_daily_days)).date()
    seen_days: set[dt.date] = set()
    for item in normal:  # newest first: the first of each day is that day's newest
        day = item.created_at.date()
        if policy.keep_daily_days and day > first_day and day not in seen_days:
            seen_days.add(day)
            kept.add(item.id)
    for item in normal:
        if item.id not in kept and item.id not in keep:
            discard[item.id] = (
                f"retention: not among the newest {policy.keep_last} and not the newest of a day "
                f"in the last {policy.keep_daily_days} days"
            )
    for item in group:
        if item.state == "error" and item.id not in keep and now - item.created_at > policy.error_grace:
            discard[item.id] = "retention: a failed backup, kept for a while to be seen, now removed"


def apply(ctx: TaskContext, settings: Settings, *, now: dt.datetime | None = None) -> dict[str, str]:
    """Discard what `plan` says (and finish discards a crash left half-done); returns {id: reason}."""
    with ctx.fenced() as conn:
        db_now = now or conn.execute(select(db_utcnow())).scalar_one()
        rows = conn.execute(
            select(Backup.id, Backup.type, Backup.app_id, Backup.state, Backup.created_at, Backup.depends_on)
        ).all()
        protected = set(conn.execute(select(Archive.backup_id)).scalars())
        pending: dict[str, str] = {
            r.id: str(r.discard_reason)
            for r in conn.execute(select(Backup.id, Backup.discard_reason).where(Backup.discard_reason.is_not(None)))
        }
        items = [Item(r.id, r.type, r.app_id, r.state, r.created_at, tuple(r.depends_on or ())) for r in rows]
        decided = plan(
            (i for i in items if i.id not in pending), Policy.from_settings(settings), now=db_now, protected=protected
        )
        for bid, reason in decided.items():
            conn.execute(update(Backup).where(Backup.id == bid).values(discard_reason=reason[:255]))
    victims: Mapping[str, str] = {**pending, **decided}
    if not victims:
        return {}
    with ctx.fenced() as conn:
        paths = dict(conn.execute(select(Backup.id, Backup.path).where(Backup.id.in_(list(victims)))).all())
    for path in paths.values():
        fileformat.remove(file_of(settings, path))
    with ctx.fenced() as conn:
        conn.execute(delete(Backup).where(Backup.id.in_(list(paths))))
        eventlog.record(
            conn, eventlog.Action.BACKUP_CLEANUP, source={"taskId": ctx.task_id}, data={"discarded": dict(victims)}
        )
    logger.info("retention discarded %d backups", len(paths))
    return {bid: victims[bid] for bid in paths}
