"""Backups are their owner's alone: every file a backup or a box backup makes is 0600 and every directory
0700 (set at creation, so the test runs under the usual 022 umask), and so are the platform's data dir,
the apps' dirs and the SQLite database file. Over SQLite and MariaDB (mysqldump writes the dump)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from hosting.backups import appbackup, boxbackup
from models.engine import make_engine
from tests.appkit import Kit, new_app_id
from tests.backupkit import install, reset_platform, task_ctx, write_tree

FULLBACKUP_PLAN = {"task:fullbackup": "X", "platform": "S"}


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """022, what a service gets by default: a file made without a mode of its own comes out 0644."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _too_open(root: Path) -> dict[str, str]:
    """Every entry under `root` (and root) that is not a 0600 file or a 0700 directory."""
    found = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) != want:
            found[str(path.relative_to(root.parent))] = f"{stat.S_IMODE(st.st_mode):o}"
    return found


@pytest.mark.docker
def test_a_backup_and_a_box_backup_are_readable_by_their_owner_only(kit: Kit) -> None:
    app_id = new_app_id("modes")
    install(kit, app_id)
    write_tree(kit.box.app_dir(app_id) / "data")
    app_backup = kit.run(appbackup.backup, app_id)["backupId"]
    reset_platform(kit)
    with task_ctx(kit, FULLBACKUP_PLAN, "fullbackup") as ctx:
        box_backup = boxbackup.create_box_backup(ctx, kit.box, depends_on=[app_backup])

    backup_dir = kit.settings.resolved_backup_dir
    assert (backup_dir / box_backup.path).is_file() and len(list(backup_dir.rglob("*.tar.gz"))) == 2
    assert _too_open(backup_dir) == {}
    # The platform's data dir and each app's own are closed to others; the app's `data` is its own business.
    for directory in (kit.settings.resolved_data_dir, kit.box.apps_dir, kit.box.app_dir(app_id)):
        assert _mode(directory) == 0o700, directory
    database = make_url(kit.settings.effective_database_url)
    if database.get_backend_name() == "sqlite":
        assert _mode(Path(str(database.database))) == 0o600  # made by make_engine (the fixture's migration)


def test_the_database_dump_is_made_0600(db_url: str, tmp_path: Path) -> None:
    """mysqldump/pg_dump write into a file we made 0600; SQLite's backup too."""
    dump = boxbackup.dump_database(make_url(db_url), tmp_path)
    assert dump.stat().st_size > 0 and _mode(dump) == 0o600


def test_the_sqlite_database_file_and_its_directory_are_private(tmp_path: Path) -> None:
    path = tmp_path / "var" / "deeper" / "boxtasks.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (secret TEXT)")
            conn.exec_driver_sql("INSERT INTO t VALUES ('addon password')")
        made = [p for p in path.parent.iterdir() if p.name.startswith("boxtasks.db")]
        assert {p.name: _mode(p) for p in made} == dict.fromkeys((p.name for p in made), 0o600)
        assert any(p.name.endswith("-wal") for p in made)  # WAL files too, not only the main file
    finally:
        engine.dispose()
    assert _mode(tmp_path / "var") == 0o700 and _mode(tmp_path / "var" / "deeper") == 0o700


def test_an_existing_sqlite_file_left_open_by_an_older_version_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "boxtasks.db"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    os.chmod(path, 0o644)
    make_engine(f"sqlite:///{path}").dispose()
    assert _mode(path) == 0o600
