"""Helpers for the backup tests: a data tree to compare byte for byte, contexts of the platform tasks,
releases to update to, and images for infra services. Built on tests.appkit's `Kit`."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import stat
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, text, update

from hosting import LocalContext
from hosting.apps import addons, databases
from hosting.apps import lifecycle as app_ops
from models import App, Backup, PlatformState
from tests.appkit import Kit, manifest
from tests.owners import add_owner
from tests.services import MARIADB_ADMIN, POSTGRES_ADMIN, require


@pytest.fixture
def dbkit(kit: Kit) -> Iterator[Kit]:
    """The kit's box, with the addon servers configured; whatever a test installed is dropped afterwards."""
    require("127.0.0.1", 3306, "MariaDB")
    require("127.0.0.1", 5432, "PostgreSQL")
    settings = kit.settings.model_copy(
        update={"mysql_addon_url": MARIADB_ADMIN, "postgresql_addon_url": POSTGRES_ADMIN + "/postgres"}
    )
    bare = kit.box
    kit.box = dataclasses.replace(bare, settings=settings)
    try:
        yield kit
    finally:
        with kit.engine.connect() as conn:
            app_ids = [r[0] for r in conn.execute(text("SELECT DISTINCT app_id FROM app_addons"))]
            leftover = {a: addons.stored(conn, a) for a in app_ids}
        for configs in leftover.values():
            databases.tear_down(settings, configs)
        kit.box = bare


def write_tree(root: Path, seed: int = 1) -> None:
    """Files of every kind an app leaves: binary, empty, nested, a symlink, odd modes."""
    root.mkdir(parents=True, exist_ok=True)
    rnd = hashlib.sha256(str(seed).encode()).digest()
    (root / "blob.bin").write_bytes(os.urandom(256 * 1024) + rnd)
    (root / "empty").write_bytes(b"")
    nested = root / "a" / "b" / "c"
    nested.mkdir(parents=True, exist_ok=True)
    (nested / "deep.txt").write_text(f"deep {seed}\n")
    (root / "script.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "script.sh", 0o750)
    os.chmod(root / "a", 0o700)
    link = root / "link-to-deep"
    if not link.is_symlink():
        link.symlink_to("a/b/c/deep.txt")
    os.chown(root / "empty", 1234, 4321)


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under root: kind, mode, owner, size, sha256 or link target (byte-for-byte identity)."""
    out: dict[str, tuple[Any, ...]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size, digest, int(st.st_mtime))
    return out


def install(k: Kit, app_id: str, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"manifest": manifest(k.dockerd.image), "location": app_id}
    options.update(overrides)
    return k.run(app_ops.install, app_id, **options)  # type: ignore[no-any-return]


def set_meta(k: Kit, app_id: str, *, notes: str, operators: list[str], checklist: dict[str, Any]) -> None:
    with k.engine.begin() as conn:
        conn.execute(update(App).where(App.id == app_id).values(notes=notes, operators=operators, checklist=checklist))


@contextmanager
def only_these_back_up(engine: Engine, app_ids: list[str]) -> Iterator[None]:
    """Other tests' apps (whose data lives in other temp dirs) sit out a full backup, then are as they were."""
    with engine.begin() as conn:
        others = list(conn.execute(select(App.id).where(App.id.not_in(app_ids), App.enable_backup.is_(True))).scalars())
        if others:
            conn.execute(update(App).where(App.id.in_(others)).values(enable_backup=False))
    try:
        yield
    finally:
        if others:
            with engine.begin() as conn:
                conn.execute(update(App).where(App.id.in_(others)).values(enable_backup=True))


def backup_row(k: Kit, backup_id: str) -> Any:
    with k.engine.connect() as conn:
        return conn.execute(select(Backup.__table__).where(Backup.id == backup_id)).first()


@contextmanager
def task_ctx(k: Kit, plan: dict[str, str], kind: str) -> Iterator[LocalContext]:
    """A context holding a platform task's plan (fullbackup, update, platformstart)."""
    owner = add_owner(k.engine, kind=kind)
    grant = k.manager.acquire(owner, plan, timeout=60)
    try:
        yield LocalContext(k.manager, grant)
    finally:
        k.manager.release(owner)


def reset_platform(k: Kit, *, version: str = "1.0.0", infra: list[dict[str, str]] | None = None) -> None:
    with k.engine.begin() as conn:
        conn.execute(delete(PlatformState))
        conn.execute(insert(PlatformState).values(id="main", version=version, infra=infra or [], ready=False))


def platform_row(k: Kit) -> Any:
    with k.engine.connect() as conn:
        return conn.execute(select(PlatformState.__table__)).one()


def infra_image(k: Kit, name: str, tag: str) -> str:
    """The test image under another name, as an infra service's image."""
    ref = f"boxtasks-test/infra-{name}:{tag}"
    k.dockerd.client.images.get(k.dockerd.image).tag(f"boxtasks-test/infra-{name}", tag)
    return ref


def broken_image(k: Kit, tag: str = "broken") -> str:
    """The test image with a command that does not exist: its containers are created but never start."""
    container = k.dockerd.client.containers.create(k.dockerd.image, network_mode="none")
    try:
        container.commit(repository="boxtasks-test/busybox", tag=tag, conf={"Cmd": ["/bin/no-such-program"]})
    finally:
        container.remove(force=True)
    return f"boxtasks-test/busybox:{tag}"


def make_release(
    directory: Path,
    version: str,
    infra: list[dict[str, str]],
    *,
    corrupt: bool = False,
    wrong_checksum: bool = False,
    signing_key: Any = None,
) -> str:
    """A release tarball with its .sha256 (and .sig), as a file:// URL."""
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (
            ("manifest.json", json.dumps({"version": version, "infra": infra}).encode()),
            ("payload.bin", os.urandom(64 * 1024)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    if corrupt:
        data = data[: len(data) // 2]  # cut in half: a download that broke off
    path = directory / f"release-{version}-{uuid.uuid4().hex[:6]}.tar.gz"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    if wrong_checksum:
        digest = hashlib.sha256(data + b"x").hexdigest()
    Path(f"{path}.sha256").write_text(f"{digest}  {path.name}\n")
    if signing_key is not None:
        Path(f"{path}.sig").write_bytes(base64.b64encode(signing_key.sign(data)))
    return path.as_uri()
