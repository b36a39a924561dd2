"""The platform tasks' domain code: update (release fetch, verify, backup, apply) and platformstart,
on a LocalContext holding the tasks' lock plans, the private dockerd and real MariaDB."""

from __future__ import annotations

import base64
import http.server
import threading
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from hosting import ReleaseError, ReleaseVerifyError
from hosting.platformops import start as platform_start
from hosting.platformops import state as platform_state
from hosting.platformops import update as platform_update
from models import Backup
from tests.appkit import Kit, kit, new_app_id
from tests.backupkit import (
    backup_row,
    infra_image,
    install,
    make_release,
    only_these_back_up,
    platform_row,
    reset_platform,
    task_ctx,
)

pytestmark = [pytest.mark.docker, pytest.mark.mariadb]
__all__ = ["kit"]  # the fixture, imported for this module

UPDATE_PLAN = {"task:update": "X"}
START_PLAN = {"task:platformstart": "X", "platform": "X"}


def _infra(k: Kit, name: str, version: str) -> dict[str, str]:
    return {"name": name, "image": infra_image(k, name, version), "version": version}


def _infra_container(k: Kit, name: str) -> Any:
    return k.dockerd.client.containers.get(f"boxtasks-infra-{name}")


def _run_update(k: Kit, url: str) -> dict[str, Any]:
    """The update task's body as tasks.kinds runs it, on a LocalContext."""
    with task_ctx(k, UPDATE_PLAN, "update") as ctx:
        prepared = platform_update.prepare(ctx, url, box=k.box)
        backup = platform_update.back_up(ctx, prepared, box=k.box)
        ctx.acquire_more({"platform": "X"})
        return platform_update.apply(ctx, prepared, box=k.box, backup=backup)


@pytest.fixture
def release_dir(tmp_path: Path) -> Path:
    return tmp_path / "releases"


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A plain HTTP server on loopback serving a directory: a release server."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------- update


def test_a_good_release_backs_up_then_replaces_changed_infra_and_records_the_version(
    kit: Kit, http_root: tuple[Path, str]
) -> None:
    mail, cache = f"mail-{uuid.uuid4().hex[:6]}", f"cache-{uuid.uuid4().hex[:6]}"
    old_infra = [_infra(kit, mail, "1.0.0"), _infra(kit, cache, "1.0.0")]
    reset_platform(kit, version="1.0.0", infra=old_infra)
    with task_ctx(kit, START_PLAN, "platformstart") as ctx:
        platform_start.start(ctx, box=kit.box)
    cache_id = _infra_container(kit, cache).id
    app_id = new_app_id()
    install(kit, app_id)

    new_infra = [_infra(kit, mail, "1.1.0"), old_infra[1]]
    root, base = http_root
    file_url = make_release(root, "1.1.0", new_infra)
    url = f"{base}/{Path(file_url).name}"  # served over HTTP on loopback
    with only_these_back_up(kit.engine, [app_id]):
        result = _run_update(kit, url)

    assert (result["fromVersion"], result["toVersion"]) == ("1.0.0", "1.1.0")
    assert result["infra"] == {mail: "replaced", cache: "kept"}
    row = platform_row(kit)
    assert row.version == "1.1.0" and row.infra == new_infra
    mail_container = _infra_container(kit, mail)
    assert mail_container.attrs["Config"]["Image"] == new_infra[0]["image"]
    assert mail_container.attrs["Config"]["Labels"]["boxtasks.infra_version"] == "1.1.0"
    assert mail_container.status == "running" and _infra_container(kit, cache).id == cache_id
    # The full backup came first: the app's backup, and a box backup at the old version listing it.
    box_backup = backup_row(kit, result["backup"]["boxBackupId"])
    assert box_backup.state == "normal" and box_backup.version == "1.0.0"
    assert box_backup.depends_on == result["backup"]["appBackups"] and len(box_backup.depends_on) == 1
    assert backup_row(kit, box_backup.depends_on[0]).app_id == app_id
    assert [n.title for n in kit.notifications()][-1] == "The platform was updated to 1.1.0"
    assert kit.app(app_id).installation_state == "installed"


@pytest.mark.parametrize("problem", ["corrupt", "wrong-checksum", "not-newer", "unsigned", "bad-signature"])
def test_a_bad_release_is_refused_and_nothing_changes(kit: Kit, release_dir: Path, problem: str) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    mail = f"mail-{uuid.uuid4().hex[:6]}"
    infra = [_infra(kit, mail, "1.0.0")]
    reset_platform(kit, version="1.0.0", infra=infra)
    with task_ctx(kit, START_PLAN, "platformstart") as ctx:
        platform_start.start(ctx, box=kit.box)
    before_container = _infra_container(kit, mail).id
    with kit.engine.connect() as conn:
        backups_before = conn.execute(Backup.__table__.select()).all()

    trusted, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    if problem in ("unsigned", "bad-signature"):
        raw = trusted.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        kit.box.settings = kit.settings.model_copy(update={"release_public_key": base64.b64encode(raw).decode()})
    new_infra = [_infra(kit, mail, "2.0.0")]
    url = make_release(
        release_dir,
        "1.0.0" if problem == "not-newer" else "2.0.0",
        new_infra,
        corrupt=problem == "corrupt",
        wrong_checksum=problem == "wrong-checksum",
        signing_key=other if problem == "bad-signature" else None,
    )
    expected = {
        "corrupt": (ReleaseVerifyError, "corrupt"),
        "wrong-checksum": (ReleaseVerifyError, "does not match its published checksum"),
        "not-newer": (ReleaseError, "not newer"),
        "unsigned": (ReleaseError, r"\.sig"),
        "bad-signature": (ReleaseVerifyError, "not signed by the configured release key"),
    }[problem]
    with only_these_back_up(kit.engine, []), pytest.raises(expected[0], match=expected[1]):
        _run_update(kit, url)
    row = platform_row(kit)
    assert (row.version, row.infra) == ("1.0.0", infra)
    assert _infra_container(kit, mail).id == before_container
    with kit.engine.connect() as conn:
        assert conn.execute(Backup.__table__.select()).all() == backups_before, "a refused release backed up"


def test_a_signed_release_is_accepted_with_the_key(kit: Kit, release_dir: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    reset_platform(kit, version="1.0.0", infra=[])
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kit.box.settings = kit.settings.model_copy(update={"release_public_key": base64.b64encode(raw).decode()})
    with task_ctx(kit, UPDATE_PLAN, "update") as ctx:
        prepared = platform_update.prepare(ctx, make_release(release_dir, "1.2.0", [], signing_key=key), box=kit.box)
    assert prepared.release.signed and prepared.release.version == "1.2.0"


# ---------------------------------------------------------------------------- platformstart


def test_platformstart_brings_infra_to_its_versions_starts_apps_and_marks_ready(kit: Kit) -> None:
    mail, cache = f"mail-{uuid.uuid4().hex[:6]}", f"cache-{uuid.uuid4().hex[:6]}"
    reset_platform(kit, version="1.0.0", infra=[_infra(kit, mail, "1.0.0"), _infra(kit, cache, "1.0.0")])
    running, stopped = new_app_id(), new_app_id()
    first = install(kit, running)
    install(kit, stopped)
    from hosting.apps import lifecycle

    kit.run(lifecycle.stop, stopped)
    # A reboot: the running app's container is down; the platform is not ready.
    kit.dockerd.client.containers.get(str(first["containerId"])).stop(timeout=1)
    assert not platform_state.is_ready(kit.engine)

    with task_ctx(kit, START_PLAN, "platformstart") as ctx:
        result = platform_start.start(ctx, box=kit.box)
    assert result["infra"] == {mail: "created", cache: "created"}
    assert result["apps"][running] == "started" and stopped not in result["apps"]
    assert kit.inspect(str(first["containerId"]))["State"]["Running"]
    assert not kit.inspect(str(kit.app(stopped).container_id))["State"]["Running"]
    assert platform_state.is_ready(kit.engine)
    cache_id = _infra_container(kit, cache).id

    # An infra version change (as an update records it): only the changed service is replaced.
    with kit.engine.begin() as conn:
        platform_state.set_infra(conn, kit.settings, [_infra(kit, mail, "1.1.0"), _infra(kit, cache, "1.0.0")])
    kit.dockerd.client.containers.get(str(kit.app(running).container_id)).remove(force=True)  # even gone
    with task_ctx(kit, START_PLAN, "platformstart") as ctx:
        again = platform_start.start(ctx, box=kit.box)
    assert again["infra"] == {mail: "replaced", cache: "kept"}
    assert again["apps"][running] == "rebuilt"
    assert _infra_container(kit, mail).attrs["Config"]["Labels"]["boxtasks.infra_version"] == "1.1.0"
    assert _infra_container(kit, cache).id == cache_id
    assert kit.inspect(str(kit.app(running).container_id))["State"]["Running"]
    assert platform_state.is_ready(kit.engine)
    percents = [p for p, _ in ctx.reports]
    assert percents == sorted(percents) and percents[-1] == 100
