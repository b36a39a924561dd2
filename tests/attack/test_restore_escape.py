"""A backup archive cannot write outside the app: crafted archives (checksum matching their row) driven
through the real restore and clone on the private dockerd, over SQLite and MariaDB.

Each crafted archive is a real app backup's, rewritten with one hostile member: the restore must end in
a CorruptBackupError naming that member, write nothing outside the app (nor anything at all), and leave
the app as it was: installed, its container running, its data byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import update

from hosting import CorruptBackupError, ReleaseVerifyError
from hosting.backups import appbackup, restore
from hosting.platformops import release
from models import Backup
from tests.appkit import Kit, new_app_id
from tests.backupkit import backup_row, install, make_release, tree, write_tree

pytestmark = [pytest.mark.docker]

UP = "../" * 40  # more than any temp path is deep: from wherever it is extracted, this reaches "/"

Member = tuple[tarfile.TarInfo, bytes | None]


def _file(name: str, data: bytes = b"pwned\n", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _special(name: str, kind: bytes, *, linkname: str = "", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    return info, None


#: name -> (hostile members appended to a genuine backup, given the directory outside; the member named).
ATTACKS: dict[str, Callable[[Path], tuple[list[Member], str]]] = {
    "absolute name": lambda out: ([_file(str(out / "pwned"))], str(out / "pwned")),
    "dotdot name": lambda out: ([_file(f"data/{UP}{str(out).lstrip('/')}/pwned")], "data/../"),
    "symlink out, then a file through it": lambda out: (
        [_special("data/escape", tarfile.SYMTYPE, linkname=UP + str(out).lstrip("/")), _file("data/escape/pwned")],
        "data/escape",
    ),
    "absolute symlink": lambda out: ([_special("data/escape", tarfile.SYMTYPE, linkname=str(out))], "data/escape"),
    "file through an inside link": lambda out: (
        [_special("data/inside", tarfile.SYMTYPE, linkname="a"), _file("data/inside/pwned")],
        "data/inside/pwned",
    ),
    "hardlink out, then a file through it": lambda out: (
        [_special("data/hl", tarfile.LNKTYPE, linkname=str(out / "victim.txt")), _file("data/hl")],
        "data/hl",
    ),
    "links chained out, each inside by its text": lambda out: (
        [
            _special("data/x/y/f", tarfile.SYMTYPE, linkname="e/../../.."),
            _special("data/x/y/e", tarfile.SYMTYPE, linkname="d/../.."),
            _special("data/x/y/d", tarfile.SYMTYPE, linkname=".."),
        ],
        "data/x/y/f",
    ),
    "setuid file": lambda out: ([_file("data/suid", b"#!/bin/sh\n", mode=0o4755)], "data/suid"),
    "setgid directory": lambda out: ([_special("data/shared", tarfile.DIRTYPE, mode=0o2775)], "data/shared"),
    "sticky directory": lambda out: ([_special("data/tmp", tarfile.DIRTYPE, mode=0o1777)], "data/tmp"),
    "device node": lambda out: ([_special("data/null", tarfile.CHRTYPE, mode=0o666)], "data/null"),
    "fifo": lambda out: ([_special("data/pipe", tarfile.FIFOTYPE)], "data/pipe"),
}


def _craft(kit: Kit, bid: str, genuine_bytes: bytes, hostile: list[Member]) -> None:
    """The backup's archive: its genuine members first, then `hostile`; the row's size and sum made to match."""
    path = kit.settings.resolved_backup_dir / backup_row(kit, bid).path
    buf = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(genuine_bytes), mode="r:gz") as genuine,
        tarfile.open(fileobj=buf, mode="w:gz") as tar,
    ):
        for member in genuine.getmembers():
            tar.addfile(member, genuine.extractfile(member) if member.isfile() else None)
        for info, data in hostile:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    path.write_bytes(raw)
    with kit.engine.begin() as conn:
        conn.execute(
            update(Backup).where(Backup.id == bid).values(size=len(raw), checksum=hashlib.sha256(raw).hexdigest())
        )


def _outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir(exist_ok=True)
    (out / "victim.txt").write_text("untouched\n")
    return out


def _refused(call: Callable[[], object], member: str) -> str | None:
    """None when `call` raised a CorruptBackupError that says "corrupt" and names `member`; else what happened."""
    try:
        call()
    except CorruptBackupError as err:
        if "corrupt" not in str(err) or member not in str(err):
            return f"unclear error: {err}"
        return None
    except Exception as err:
        return f"not refused as corrupt: {err.__class__.__name__}: {err}"
    return "not refused"


@pytest.mark.docker
def test_a_hostile_archive_is_refused_by_restore_and_clone_and_nothing_is_written(kit: Kit, tmp_path: Path) -> None:
    out = _outside(tmp_path)
    app_id = new_app_id("victim")
    first = install(kit, app_id)
    data = kit.box.app_dir(app_id) / "data"
    write_tree(data)
    bid = kit.run(appbackup.backup, app_id)["backupId"]
    genuine = (kit.settings.resolved_backup_dir / backup_row(kit, bid).path).read_bytes()
    (data / "after-backup").write_text("newer than the backup")
    before, outside_before = tree(data), tree(out)

    problems: dict[str, list[str]] = {}
    for name, attack in ATTACKS.items():
        hostile, member = attack(out)
        _craft(kit, bid, genuine, hostile)
        found = problems.setdefault(name, [])
        if (why := _refused(lambda: kit.run(restore.restore, app_id, backupId=bid), member)) is not None:
            found.append(f"restore: {why}")
        app = kit.app(app_id)
        if (app.installation_state, app.error, app.container_id) != ("installed", None, first["containerId"]):
            found.append(f"app left {app.installation_state}: {app.error}")
        clone_id = new_app_id("clone")
        clone = lambda: kit.run(restore.clone, clone_id, backupId=bid, location=clone_id)  # noqa: E731, B023
        if (why := _refused(clone, member)) is not None:
            found.append(f"clone: {why}")
        if kit.leftovers(clone_id) != dict.fromkeys(kit.leftovers(clone_id), 0):
            found.append(f"clone left {kit.leftovers(clone_id)}")
        if tree(out) != outside_before or list(tmp_path.rglob("pwned")):
            found.append("wrote outside the app")
        if tree(data) != before:
            found.append("the app's data changed")
        if [p.name for p in kit.box.apps_dir.iterdir() if p.name.startswith(".")]:
            found.append("left a staging directory")
    assert {name: found for name, found in problems.items() if found} == {}
    assert kit.inspect(str(first["containerId"]))["State"]["Running"]


@pytest.mark.docker
def test_a_backup_leaves_out_what_a_restore_would_refuse_and_restores(kit: Kit, tmp_path: Path) -> None:
    """What an app leaves in its data that cannot be restored safely is not archived, so its backups restore."""
    app_id = new_app_id("odd")
    install(kit, app_id)
    data = kit.box.app_dir(app_id) / "data"
    write_tree(data)
    (data / "suid").write_text("#!/bin/sh\n")
    os.chmod(data / "suid", 0o4755)
    (data / "shared").mkdir(mode=0o755)
    os.chmod(data / "shared", 0o3775)
    os.mkfifo(data / "pipe")
    (data / "to-host").symlink_to(tmp_path)
    (data / "up-and-out").symlink_to("../../../..")
    bid = kit.run(appbackup.backup, app_id)["backupId"]
    (data / "blob.bin").write_bytes(b"changed after the backup")

    kit.run(restore.restore, app_id, backupId=bid)
    restored = tree(data)
    assert restored["suid"][:2] == ("file", 0o755) and restored["shared"][:2] == ("dir", 0o775)
    assert not {"pipe", "to-host", "up-and-out"} & restored.keys()
    assert restored["link-to-deep"] == ("link", "a/b/c/deep.txt")  # a link inside stays


def test_a_release_with_a_member_outside_its_target_is_refused(tmp_path: Path) -> None:
    """The platform update reads releases the same way: a hostile member is refused before anything runs."""
    from config import load_settings

    settings = load_settings(data_dir=tmp_path / "box")
    url = make_release(tmp_path / "rel", "9.9.9", [])
    path = Path(url.removeprefix("file://"))
    with tarfile.open(path, "r:gz") as genuine:
        members = [(m, genuine.extractfile(m).read() if m.isfile() else None) for m in genuine.getmembers()]  # type: ignore[union-attr]
    hostile = [*members, _file("/etc/boxtasks-pwned")]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in hostile:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(buf.getvalue())
    Path(f"{path}.sha256").write_text(hashlib.sha256(buf.getvalue()).hexdigest() + "\n")
    with pytest.raises(ReleaseVerifyError, match=r"corrupt: member '/etc/boxtasks-pwned' has an absolute"):
        release.load(url, tmp_path / "work", settings)
