"""Backups, restore, clone, archives, app update and the full backup: hosting on a LocalContext,
the private dockerd, real MariaDB, real archives in the backup directory."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update

from hosting import (
    BackupError,
    ContainerError,
    CorruptBackupError,
    StateConflictError,
)
from hosting.apps import lifecycle
from hosting.apps.update import update_app
from hosting.backups import appbackup, archives, fullbackup, restore, store
from hosting.backups.fullbackup import back_up_apps
from models import Archive, Backup
from tests.appkit import Kit, kit, manifest, new_app_id
from tests.backupkit import (
    backup_row,
    broken_image,
    install,
    only_these_back_up,
    set_meta,
    task_ctx,
    tree,
    write_tree,
)

pytestmark = [pytest.mark.docker, pytest.mark.mariadb]
__all__ = ["kit"]  # the fixture, imported for this module

FULLBACKUP_PLAN = {"task:fullbackup": "X", "platform": "S"}


def data_dir(k: Kit, app_id: str) -> Path:
    return k.box.app_dir(app_id) / "data"


# ---------------------------------------------------------------------------- backup and restore


def test_backup_then_restore_brings_the_data_back_byte_for_byte(kit: Kit) -> None:
    app_id = new_app_id()
    first = install(kit, app_id, ports={"SSH_PORT": 43022})
    write_tree(data_dir(kit, app_id))
    kit.exec(str(first["containerId"]), "echo from-the-app > /app/data/app-wrote")
    before = tree(data_dir(kit, app_id))

    result = kit.run(appbackup.backup, app_id)
    row = backup_row(kit, result["backupId"])
    assert "/" not in row.id and row.id.startswith(f"app_{app_id}_") and row.id.endswith("_v1.0.0")
    assert row.state == "normal" and row.type == "app" and row.format == "tgz" and row.path != row.id
    archive_file = kit.settings.resolved_backup_dir / row.path
    assert row.size == archive_file.stat().st_size
    assert row.checksum == hashlib.sha256(archive_file.read_bytes()).hexdigest()
    assert row.app_config["ports"] == {"SSH_PORT": 43022}
    assert row.app_config["resources"]["memoryLimit"] > 0
    assert kit.app(app_id).installation_state == "installed"
    assert [e.data["backupId"] for e in kit.events("backup.finish")][-1] == row.id

    # The app moves on: files change, vanish, appear.
    (data_dir(kit, app_id) / "blob.bin").write_bytes(b"overwritten")
    (data_dir(kit, app_id) / "a" / "b" / "c" / "deep.txt").unlink()
    (data_dir(kit, app_id) / "new-file").write_text("not in the backup")

    restored = kit.run(restore.restore, app_id, backupId=row.id)
    assert restored["installationState"] == "installed" and restored["runState"] == "running"
    assert tree(data_dir(kit, app_id)) == before
    assert kit.exec(str(restored["containerId"]), "cat /app/data/app-wrote") == "from-the-app"
    assert [e.data["ok"] for e in kit.events("app.restore") if e.source["appId"] == app_id] == [True]


@pytest.mark.parametrize("damage", ["flip-a-byte", "truncate"])
def test_a_corrupt_archive_is_refused_and_the_app_is_left_as_it_was(kit: Kit, damage: str) -> None:
    app_id = new_app_id()
    first = install(kit, app_id)
    write_tree(data_dir(kit, app_id))
    bid = kit.run(appbackup.backup, app_id)["backupId"]
    (data_dir(kit, app_id) / "after-backup").write_text("newer than the backup")
    now = tree(data_dir(kit, app_id))

    path = kit.settings.resolved_backup_dir / backup_row(kit, bid).path
    raw = bytearray(path.read_bytes())
    if damage == "flip-a-byte":
        raw[len(raw) // 2] ^= 0xFF
    else:
        del raw[len(raw) * 2 // 3 :]
    path.write_bytes(bytes(raw))

    with pytest.raises(CorruptBackupError, match="refused"):
        kit.run(restore.restore, app_id, backupId=bid)
    app = kit.app(app_id)
    assert (app.installation_state, app.error, app.container_id) == ("installed", None, first["containerId"])
    assert kit.inspect(str(first["containerId"]))["State"]["Running"]
    assert tree(data_dir(kit, app_id)) == now
    # ... and a clone from it is refused before the new app exists.
    clone_id = new_app_id("clone")
    with pytest.raises(CorruptBackupError):
        kit.run(restore.clone, clone_id, backupId=bid, location=clone_id)
    assert kit.leftovers(clone_id) == dict.fromkeys(kit.leftovers(clone_id), 0)


def test_clone_copies_notes_operators_and_checklist_as_of_the_backup(kit: Kit) -> None:
    source = new_app_id("src")
    install(kit, source, ports={"SSH_PORT": 44022})
    write_tree(data_dir(kit, source), seed=7)
    backed_up = tree(data_dir(kit, source))
    set_meta(kit, source, notes="as backed up", operators=["alice"], checklist={"dns": {"done": True}})
    bid = kit.run(appbackup.backup, source)["backupId"]
    set_meta(kit, source, notes="changed later", operators=["bob"], checklist={"dns": {"done": False}})
    (data_dir(kit, source) / "later").write_text("after the backup")

    clone_id = new_app_id("clone")
    with kit.ctx(clone_id) as ctx:  # the clone's lock is its own new app id; the source is not locked
        result = restore.clone(ctx, clone_id, box=kit.box, backupId=bid, location=clone_id, ports={"SSH_PORT": 44023})
    assert result["fromApp"] == source and result["ports"] == {"SSH_PORT": 44023}
    clone = kit.app(clone_id)
    assert (clone.notes, clone.operators, clone.checklist) == ("as backed up", ["alice"], {"dns": {"done": True}})
    assert clone.location == clone_id and clone.installation_state == "installed"
    assert tree(data_dir(kit, clone_id)) == backed_up
    assert kit.inspect(str(result["containerId"]))["State"]["Running"]
    # The source is as it was.
    src = kit.app(source)
    assert (src.notes, src.operators, src.location) == ("changed later", ["bob"], source)
    assert (data_dir(kit, source) / "later").exists()
    # A clone cannot take the source's location.
    with pytest.raises(Exception, match="location"):
        kit.run(restore.clone, new_app_id("clone"), backupId=bid, location=source)


# ---------------------------------------------------------------------------- archives


def test_uninstall_with_archive_then_restore_from_the_archive_then_delete_it(kit: Kit) -> None:
    app_id = new_app_id()
    install(kit, app_id, ports={"SSH_PORT": 45022})
    write_tree(data_dir(kit, app_id), seed=3)
    saved = tree(data_dir(kit, app_id))
    set_meta(kit, app_id, notes="archived app", operators=["carol"], checklist={})

    gone = kit.run(lifecycle.uninstall, app_id, archive=True, icon="iVBORw0KGgo=")
    assert gone["uninstalled"] and gone["archiveId"] and gone["backupId"]
    assert kit.leftovers(app_id) == dict.fromkeys(kit.leftovers(app_id), 0)
    listed = {a["id"]: a for a in archives.list_archives(kit.engine)}
    entry = listed[gone["archiveId"]]
    assert entry["appId"] == app_id and entry["hasIcon"] and entry["appConfig"]["notes"] == "archived app"
    assert backup_row(kit, gone["backupId"]).state == "normal"

    back = kit.run(restore.restore, app_id, archiveId=gone["archiveId"])
    assert back["installationState"] == "installed" and back["ports"] == {"SSH_PORT": 45022}
    assert kit.app(app_id).notes == "archived app" and kit.app(app_id).location == app_id
    assert tree(data_dir(kit, app_id)) == saved

    file = kit.settings.resolved_backup_dir / backup_row(kit, gone["backupId"]).path
    deleted = archives.delete_archive(kit.engine, kit.settings, gone["archiveId"])
    assert deleted["backupDeleted"] and not file.exists() and backup_row(kit, gone["backupId"]) is None
    with kit.engine.connect() as conn:
        assert conn.execute(select(Archive.id).where(Archive.id == gone["archiveId"])).first() is None


# ---------------------------------------------------------------------------- notifications


def test_the_fifth_failed_backup_in_a_row_notifies_and_the_fourth_does_not(kit: Kit) -> None:
    app_id = new_app_id()
    install(kit, app_id)
    blocker = kit.data_dir / "not-a-directory"
    blocker.write_text("the backup target cannot be made here")
    kit.box.settings = kit.settings.model_copy(update={"backup_dir": blocker})
    # A success first (the app's series is its own, but a clean start says so).
    kit.box.settings = kit.settings.model_copy(update={"backup_dir": kit.data_dir / "backups-ok"})
    kit.run(appbackup.backup, app_id)
    kit.box.settings = kit.settings.model_copy(update={"backup_dir": blocker})
    titles_before = [n.title for n in kit.notifications()]
    for attempt in range(1, 6):
        with pytest.raises(BackupError):
            kit.run(appbackup.backup, app_id)
        new = [n.title for n in kit.notifications()][len(titles_before) :]
        if attempt < 5:
            assert new == [], f"attempt {attempt} notified"
    assert new == [f"The last 5 backups of app {app_id} failed"]  # five runs of this app's backup task
    # The app itself is fine, and each failed backup is recorded as such.
    assert kit.app(app_id).installation_state == "installed"
    with kit.engine.connect() as conn:
        states = conn.execute(select(Backup.state).where(Backup.app_id == app_id).order_by(Backup.id)).scalars()
        assert list(states) == ["normal"] + ["error"] * 5


# ---------------------------------------------------------------------------- app update


def test_update_backs_up_then_replaces_the_container_and_notifies(kit: Kit) -> None:
    app_id = new_app_id()
    first = install(kit, app_id, ports={"SSH_PORT": 46022})
    write_tree(data_dir(kit, app_id), seed=5)
    data = tree(data_dir(kit, app_id))
    kit.dockerd.client.images.get(kit.dockerd.image).tag("boxtasks-test/busybox", "1.1.0")

    result = kit.run(update_app, app_id, manifest=manifest("boxtasks-test/busybox:1.1.0", version="1.1.0"))
    assert (result["fromVersion"], result["toVersion"]) == ("1.0.0", "1.1.0")
    assert backup_row(kit, result["backupId"]).state == "normal"
    assert backup_row(kit, result["backupId"]).version == "1.0.0"
    app = kit.app(app_id)
    assert (app.version, app.installation_state) == ("1.1.0", "installed")
    assert app.container_id != first["containerId"] and len(kit.containers(app_id)) == 1
    info = kit.inspect(app.container_id)
    assert info["State"]["Running"] and info["Config"]["Image"] == "boxtasks-test/busybox:1.1.0"
    assert info["Name"] == f"/boxtasks-app-{app_id}"
    assert info["HostConfig"]["PortBindings"]["2222/tcp"][0]["HostPort"] == "46022"
    assert tree(data_dir(kit, app_id)) == data
    assert [n.title for n in kit.notifications()][-1] == f"App {app_id} was updated to 1.1.0"


def test_an_update_whose_new_version_does_not_start_leaves_error_and_the_old_one_running(kit: Kit) -> None:
    app_id = new_app_id()
    first = install(kit, app_id)
    image = broken_image(kit)
    with pytest.raises(ContainerError, match="old version runs again"):
        kit.run(update_app, app_id, manifest=manifest(image, version="2.0.0"), force=True)
    app = kit.app(app_id)
    assert app.installation_state == "error" and app.error_operation == "update"
    assert "did not start" in app.error["message"] and app.version == "1.0.0"
    containers = kit.containers(app_id)
    assert [c.id for c in containers] == [first["containerId"]]
    assert kit.inspect(str(first["containerId"]))["State"]["Running"]
    with pytest.raises(StateConflictError):
        kit.run(appbackup.backup, app_id)  # an app in error is not backed up until repaired or updated


# ---------------------------------------------------------------------------- the full backup


def test_full_backup_makes_app_backups_and_a_box_backup_that_depends_on_them(kit: Kit) -> None:
    ids = [new_app_id("fb"), new_app_id("fb")]
    for i, app_id in enumerate(ids):
        install(kit, app_id)
        write_tree(data_dir(kit, app_id), seed=i)
    with only_these_back_up(kit.engine, ids), task_ctx(kit, FULLBACKUP_PLAN, "fullbackup") as ctx:
        listed = fullbackup.apps_to_back_up(ctx)
        report = back_up_apps(ctx, listed, lambda c, a: fullbackup.backup_app_for_full_backup(c, a, box=kit.box))
        result = fullbackup.finish_full_backup(ctx, report, box=kit.box)
    assert sorted(listed) == sorted(ids)
    percents = [p for p, _ in ctx.reports]
    assert percents == sorted(percents) and percents[-1] == 100
    box_row = backup_row(kit, result["boxBackupId"])
    assert box_row.type == "box" and box_row.state == "normal"
    assert sorted(box_row.depends_on) == sorted(result["appBackups"]) and len(result["appBackups"]) == 2
    for bid in result["appBackups"]:
        assert backup_row(kit, bid).state == "normal"
    # The dump is mysqldump's, and lists the app backups too.
    with tarfile.open(kit.settings.resolved_backup_dir / box_row.path) as tar:
        sql = tar.extractfile("database.sql").read().decode()  # type: ignore[union-attr]
        assert "CREATE TABLE `apps`" in sql and ids[0] in sql
        assert sorted(tar.getnames()) == ["box.json", "database.sql"]
    # An archive's backup that a box backup depends on outlives the archive.
    with kit.engine.begin() as conn:
        conn.execute(
            insert(Archive).values(
                id=f"archive_{ids[0]}", backup_id=result["appBackups"][0], app_id=ids[0], app_config={}
            )
        )
    kept = archives.delete_archive(kit.engine, kit.settings, f"archive_{ids[0]}")
    assert not kept["backupDeleted"] and kept["backupNeededBy"] == [f"box backup {box_row.id}"]


def test_stale_creating_backups_are_marked_error_once_their_task_is_gone(kit: Kit) -> None:
    app_id = new_app_id()
    install(kit, app_id)
    from tests.owners import add_owner, set_state

    live = add_owner(kit.engine, kind="apptask")
    dead = add_owner(kit.engine, kind="apptask")
    set_state(kit.engine, dead, "interrupted")
    for owner in (live, dead):
        with kit.engine.begin() as conn:
            conn.execute(
                insert(Backup).values(
                    id=f"app_{app_id}_{owner}",
                    path=f"apps/{app_id}/{owner}.tar.gz",
                    type="app",
                    app_id=app_id,
                    version="1.0.0",
                    state="creating",
                    format="tgz",
                    depends_on=[],
                    task_id=owner,
                )
            )
    partial = kit.settings.resolved_backup_dir / "apps" / app_id / f".partial-{dead}.tar.gz"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"half an archive")
    dumps = {o: partial.parent / f"{store.dumps_prefix(f'app_{app_id}_{o}')}x1" for o in (live, dead)}
    for d in dumps.values():  # the database dumps each had made when it stopped
        d.mkdir()
        (d / "mysql.sql").write_text("-- a dump")
    import datetime as dt

    with kit.engine.begin() as conn:
        cleaned = store.cleanup_stale(conn, kit.settings, older_than=dt.timedelta(0))
    assert f"app_{app_id}_{dead}" in cleaned and f"app_{app_id}_{live}" not in cleaned
    assert backup_row(kit, f"app_{app_id}_{dead}").state == "error"
    assert backup_row(kit, f"app_{app_id}_{live}").state == "creating"
    assert not partial.exists()
    assert not dumps[dead].exists() and (dumps[live] / "mysql.sql").exists()


def test_restore_refuses_another_apps_backup_and_a_failed_one(kit: Kit) -> None:
    a, b = new_app_id(), new_app_id()
    install(kit, a)
    install(kit, b)
    bid = kit.run(appbackup.backup, a)["backupId"]
    with pytest.raises(BackupError, match="clone it"):
        kit.run(restore.restore, b, backupId=bid)
    with kit.engine.begin() as conn:
        conn.execute(update(Backup).where(Backup.id == bid).values(state="error"))
    with pytest.raises(BackupError, match="not normal"):
        kit.run(restore.restore, a, backupId=bid)
    assert kit.app(a).installation_state == "installed" and kit.app(b).installation_state == "installed"
