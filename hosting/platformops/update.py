"""Updating the platform: fetch and verify a release, back up, then (under `platform` X) apply it.

The task holds `task:update` X throughout. Its three steps (called by `tasks.kinds.update`):

1. `prepare`: fetch, checksum, signature, manifest, newer than what runs. No locks beyond the task's
   own; a bad release is refused here and nothing has changed.
2. `back_up`: the full backup, taken *before* `platform` X, the way fullbackup takes it: `platform` S,
   then each app's lock one at a time (`hosting.backups.fullbackup.back_up_apps`), then the box backup; then
   `platform` S is given back. App tasks keep running meanwhile (only the app being copied waits),
   which holding `platform` X for the whole backup would not allow. Nested requests never queue
   behind waiters, so this cannot deadlock with an app task or a platformstart queued meanwhile.
3. `apply` (the caller took `platform` X, so no app task runs): fetch the new infra images (a missing
   one changes nothing), replace the infra containers whose image or version changed, record the new
   version and infra, and notify.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from typing import Any

from hosting.backups import boxbackup
from hosting.backups.fullbackup import apps_to_back_up, back_up_apps, backup_app_for_full_backup
from hosting.box import Box, resolve
from hosting.context import TaskContext
from hosting.errors import BackupError, ReleaseError
from hosting.events import notify
from hosting.platformops import infra, release
from hosting.platformops import state as platform_state

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prepared:
    release: release.Release
    from_version: str


def prepare(ctx: TaskContext, release_url: str | None, *, box: Box | None = None) -> Prepared:
    """Fetch and verify the release; refuse one that is bad or not newer. Changes nothing."""
    box = resolve(box)
    url = release_url or box.settings.release_url
    ctx.progress(2, f"Fetching release {url or '(none configured)'}")
    work = box.settings.resolved_data_dir / "releases" / ctx.task_id
    try:
        rel = release.load(url, work, box.settings)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    with ctx.fenced() as conn:
        running = platform_state.current(conn, box.settings).version
    if release.version_key(rel.version) <= release.version_key(running):
        shutil.rmtree(work, ignore_errors=True)
        raise ReleaseError(
            f"release {rel.version} is not newer than the running platform {running}: refused; nothing was changed"
        )
    ctx.progress(10, f"Release {rel.version} verified (sha256 {rel.sha256[:12]}{', signed' if rel.signed else ''})")
    return Prepared(rel, running)


def back_up(ctx: TaskContext, prepared: Prepared, *, box: Box | None = None) -> dict[str, Any]:
    """The full backup before the update: `platform` S and app locks one at a time, like fullbackup."""

    box = resolve(box)
    ctx.progress(12, "Waiting for the platform to be free for a backup")
    ctx.acquire_more({"platform": "S"})
    try:
        report = back_up_apps(
            ctx, apps_to_back_up(ctx), lambda c, a: backup_app_for_full_backup(c, a, box=box), start=12, end=50
        )
        failed = {a: r["error"] for a, r in report.results.items() if "error" in r}
        if failed:
            raise BackupError(
                "the backup before the update failed for "
                + ", ".join(f"{a} ({e})" for a, e in sorted(failed.items()))
                + "; the update was not applied"
            )
        depends = [r["backupId"] for r in report.results.values() if "backupId" in r]
        ctx.progress(50, "Backing up the platform's database")
        record = boxbackup.create_box_backup(ctx, box, depends_on=depends, version=prepared.from_version)
    finally:
        ctx.release_some(["platform"])
    ctx.progress(58, f"Backed up as {record.id}")
    return {"boxBackupId": record.id, "appBackups": depends}


def apply(ctx: TaskContext, prepared: Prepared, *, box: Box | None = None, backup: Any = None) -> dict[str, Any]:
    """The update proper, under `platform` X: infra to the release's versions, then the version recorded."""
    box = resolve(box)
    rel = prepared.release
    ctx.progress(62, "Fetching the release's infra images")
    infra.fetch_images(box, rel.infra)
    changed = infra.bring_up(
        box,
        rel.infra,
        task_id=ctx.task_id,
        on_step=lambda i, msg: ctx.progress(65 + 25 * i // max(1, len(rel.infra)), msg),
    )
    with ctx.fenced() as conn:
        platform_state.record_update(conn, box.settings, version=rel.version, infra=[s.as_dict() for s in rel.infra])
        outcome = notify.platform_updated(
            conn, from_version=prepared.from_version, to_version=rel.version, source={"taskId": ctx.task_id}
        )
    notify.deliver(box.settings, outcome)
    shutil.rmtree(rel.path.parent, ignore_errors=True)
    ctx.progress(100, f"Platform updated from {prepared.from_version} to {rel.version}")
    return {
        "fromVersion": prepared.from_version,
        "toVersion": rel.version,
        "sha256": rel.sha256,
        "signed": rel.signed,
        "infra": changed,
        "backup": backup,
    }
