"""The dumps inside an app backup: which the archive holds (reserved `addons/`, regular files of known names
only), and the refusal of a backup without a dump the app needs. No services: archives in a temp dir."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from config import load_settings
from hosting.backups import fileformat, store
from hosting.backups.appconfig import AppConfig
from hosting.backups.restore import check_dumps
from hosting.errors import BackupError, CorruptBackupError

MANIFEST = {"id": "io.example.app", "version": "1.0.0", "image": "x/y:1", "httpPort": 80}


def _backup(tmp_path: Path, files: dict[str, bytes], *, raw: bytes | None = None) -> tuple[Any, Any]:
    """An app backup row and its settings: an archive of `data/` and `files`, written as the writer writes."""
    settings = load_settings(data_dir=tmp_path)
    rel = "apps/a1/app_a1_x_v1.tar.gz"
    dest = settings.resolved_backup_dir / rel
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "f").write_text("x")
    if raw is None:
        srcs = {}
        for name, body in files.items():
            src = tmp_path / name.replace("/", "_")
            src.write_bytes(body)
            srcs[name] = src
        written = fileformat.write(dest, fileformat.Contents(dirs={"data": data}, files=srcs, documents={}))
        size, sha = written.size, written.sha256
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(raw)
        size, sha = len(raw), None
    return SimpleNamespace(path=rel, checksum=sha, size=size, type="app"), settings


def test_the_dumps_an_archive_holds_are_named_by_addon(tmp_path: Path) -> None:
    row, settings = _backup(tmp_path, {"addons/mysql.sql": b"-- mysql", "addons/postgresql.sql": b"-- pg"})
    path, dumps = store.verify_app(settings, row)
    assert path.is_file() and dumps == {"mysql": "addons/mysql.sql", "postgresql": "addons/postgresql.sql"}
    row, settings = _backup(tmp_path / "none", {})
    assert store.verify_app(settings, row)[1] == {}


@pytest.mark.parametrize("name", ["addons/evil.sh", "addons/mysql.sql/x", "addons/redis.rdb"])
def test_anything_else_under_addons_makes_the_archive_corrupt(tmp_path: Path, name: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member, kind in (("data", tarfile.DIRTYPE), ("addons", tarfile.DIRTYPE), (name, tarfile.REGTYPE)):
            if "/" in member and member.count("/") > 1:
                info = tarfile.TarInfo(member.rsplit("/", 1)[0])
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            info = tarfile.TarInfo(member)
            info.type = kind
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    row, settings = _backup(tmp_path, {}, raw=buf.getvalue())
    with pytest.raises(CorruptBackupError, match="not a database dump"):
        store.verify_app(settings, row)


#: Settings with both database servers configured (nothing connects to them here).
SERVERS = load_settings(
    mysql_addon_url="mysql+pymysql://root@127.0.0.1:3306",
    postgresql_addon_url="postgresql+psycopg://postgres@127.0.0.1",
)


def test_a_backup_without_a_dump_the_manifest_needs_is_refused_naming_it() -> None:
    both = {**MANIFEST, "addons": {"mysql": {}, "postgresql": {}, "localstorage": {}}}
    with pytest.raises(BackupError, match=r"no dump of the app's mysql, postgresql databases, .*nothing was changed"):
        check_dumps("b1", both, {}, SERVERS)
    with pytest.raises(BackupError, match=r"no dump of the app's postgresql database, "):
        check_dumps("b1", both, {"mysql": "addons/mysql.sql"}, SERVERS)
    with pytest.raises(BackupError, match="redis"):  # never dumped (not provided): such a backup never restores it
        check_dumps("b1", {**MANIFEST, "addons": {"redis": {}}}, {}, SERVERS)
    check_dumps("b1", both, {"mysql": "addons/mysql.sql", "postgresql": "addons/postgresql.sql"}, SERVERS)
    check_dumps("b1", {**MANIFEST, "addons": {"localstorage": {}}}, {}, SERVERS)  # no database: nothing to hold
    check_dumps("b1", None, {}, SERVERS)  # a backup with no config at all: the caller uses the app's own manifest
    # An optional addon this server does not provide: the app runs without it, and needs no dump of it.
    check_dumps("b1", {**MANIFEST, "addons": {"redis": {"optional": True}}}, {}, SERVERS)


def test_the_config_records_the_dumps_and_an_old_document_has_none() -> None:
    assert AppConfig.from_json({"appId": "a1"}).database_dumps is None
    config = AppConfig(app_id="a1", database_dumps=["mysql"])
    assert config.to_json()["databaseDumps"] == ["mysql"]
    assert AppConfig.from_json(config.to_json()).database_dumps == ["mysql"]
