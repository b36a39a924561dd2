"""Real manifests at the front doors (a real uvicorn API on loopback, and the CLI as a subprocess).

Embedded default (SQLite + kombu's filesystem broker) and no worker: what is accepted stays queued.
A refusal (an addon this server does not provide, no image) leaves no task row, app row or port.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from config import get_settings
from frontdoor import tokens
from hosting.apps import capabilities
from hosting.apps.capabilities import addon_refusal
from hosting.backups.appconfig import AppConfig
from lockman import LockManager
from models import App, Backup, PortReservation, Task, get_engine
from models.migrate import upgrade
from tests.apiserver import ApiServer, running_api
from tests.cli_run import boxtasks
from tests.e2e.harness import Env
from tests.unit.test_manifest_corpus import ADDONS_BEYOND_CORE, CORPUS

BUSYBOX = "busybox:latest"
GAME = {
    "id": "io.example.game",
    "version": "1.0.0",
    "manifestVersion": 2,
    "httpPort": 8080,
    "tcpPorts": {
        "GAME_PORT": {"title": "game", "defaultValue": 27015, "containerPort": 27015},
        "RCON_PORT": {"title": "rcon", "defaultValue": 27020, "enabledByDefault": False},
        "QUERY_PORT": {"title": "query", "defaultValue": 27030, "readOnly": True},
    },
    "udpPorts": {"VOICE_PORT": {"title": "voice", "defaultValue": 27100, "portCount": 4}},
    "addons": {"localstorage": {}},
    "title": "A game server",
}
LDAP_OIDC = {**GAME, "id": "io.example.sso", "tcpPorts": {}, "udpPorts": {}}
LDAP_OIDC["addons"] = {"localstorage": {}, "ldap": {}, "oidc": {"loginRedirectUri": "/cb"}}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    data = tmp_path_factory.mktemp("manifests")
    url = f"sqlite:///{data / 'boxtasks.db'}"
    upgrade(url)
    e = Env(database_url=url, broker_url="", data_dir=data, extra={"BOXTASKS_LOCK_ROW": "main"})
    e.apply_to_this_process()
    manager = LockManager.from_settings()
    manager.ensure_row()
    manager.dispose()
    with get_engine().begin() as conn:
        config = AppConfig(app_id="old", manifest={**LDAP_OIDC, "dockerImage": BUSYBOX}, version="1.0.0")
        conn.execute(
            insert(Backup).values(
                id="app_old_sso",
                path="old/1.tgz",
                type="app",
                app_id="old",
                version="1.0.0",
                state="normal",
                format="tgz",
                depends_on=[],
                app_config=config.to_json(),
            )
        )
    return e


@pytest.fixture(scope="module")
def toks(env: Env) -> dict[str, str]:
    return {scope: tokens.create(get_engine(), name=f"test {scope}", scopes=[scope])[1] for scope in tokens.SCOPES}


@pytest.fixture(scope="module")
def api(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(env, tmp_path_factory.mktemp("api-log")) as server:
        yield server


@pytest.fixture(autouse=True)
def _this_env(env: Env) -> None:
    env.apply_to_this_process()


def _counts() -> tuple[int, int, int]:
    with get_engine().connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(Task)).scalar_one(),
            conn.execute(select(func.count()).select_from(App)).scalar_one(),
            conn.execute(select(func.count()).select_from(PortReservation)).scalar_one(),
        )


def _task_options(api: ApiServer, toks: dict[str, str], url: str) -> dict[str, Any]:
    return dict(api.get(url, toks["read"]).json()["args"]["options"])


def _one_line_error(result: Any) -> str:
    assert result.code == 1 and result.out == "", result
    assert result.err.startswith("boxtasks: ") and result.err.count("\n") == 1, result.err
    return str(result.err.removeprefix("boxtasks: ").rstrip("\n"))


def test_capabilities_list_the_provided_addons(api: ApiServer, toks: dict[str, str]) -> None:
    caps = api.get("/api/v1/platform/capabilities", toks["read"]).json()
    assert caps["addons"] == sorted(capabilities.provided(get_settings())) and caps["manifest_versions"] == [2]
    assert "install" in caps["app_operations"]
    schema = api.get("/api/v1/openapi.json").json()["components"]["schemas"]["CapabilitiesOut"]
    assert {"addons", "manifest_versions"} <= set(schema["required"])
    cli = boxtasks("platform", "capabilities", "--json")
    assert cli.code == 0 and cli.json() == caps
    text = boxtasks("platform", "capabilities")
    assert (
        text.code == 0 and f"addons:           {' '.join(sorted(capabilities.provided(get_settings())))}\n" in text.out
    )
    assert "manifestVersion:  2\n" in text.out


def test_every_corpus_manifest_is_accepted_or_refused_for_its_addons(api: ApiServer, toks: dict[str, str]) -> None:
    accepted = 0
    for name in sorted(ADDONS_BEYOND_CORE):
        doc = json.loads((CORPUS / f"{name}.json").read_text(encoding="utf-8"))
        declared = [*doc.get("tcpPorts", {}), *doc.get("udpPorts", {})]
        # The corpus shares default ports (two XMPP servers): each install here leaves them unbound.
        body: dict[str, Any] = {"manifest": doc, "location": f"corpus-{name}", "ports": dict.fromkeys(declared)}
        if not doc.get("dockerImage"):
            body["image"] = BUSYBOX
        before = _counts()
        response = api.post("/api/v1/apps/install", toks["write"], json=body)
        missing = [a for a in ADDONS_BEYOND_CORE[name] if a not in capabilities.provided(get_settings())]
        if missing:
            assert response.status_code == 422, (name, response.text)
            assert response.json() == {"error": "invalid", "message": addon_refusal(doc["id"], missing, get_settings())}
            assert _counts() == before, name
        else:
            assert response.status_code == 202, (name, response.text)
            options = _task_options(api, toks, response.json()["url"])
            assert options["manifest"] == {**doc, "dockerImage": doc.get("dockerImage") or BUSYBOX}
            accepted += 1
    assert accepted >= 5


def test_unprovided_addons_are_refused_before_any_task(api: ApiServer, toks: dict[str, str], tmp_path: Path) -> None:
    refusal = addon_refusal("io.example.sso", ["ldap", "oidc"], get_settings())
    before = _counts()
    body = {"manifest": LDAP_OIDC, "image": BUSYBOX, "location": "sso"}
    response = api.post("/api/v1/apps/install", toks["write"], json=body)
    assert response.status_code == 422 and response.json()["message"] == refusal
    # Clone from a backup whose manifest asks for them: refused too, for the new app.
    clone = api.post("/api/v1/apps/old/clone", toks["write"], json={"backupId": "app_old_sso", "location": "sso2"})
    assert clone.status_code == 422 and clone.json()["message"] == refusal
    manifest = tmp_path / "sso.json"
    manifest.write_text(json.dumps(LDAP_OIDC))
    cli = boxtasks("app", "install", "--manifest", str(manifest), "--image", BUSYBOX, "--location", "sso")
    assert _one_line_error(cli) == refusal
    cli = boxtasks("app", "clone", "old", "--backup", "app_old_sso", "--location", "sso3")
    assert _one_line_error(cli) == refusal
    assert _counts() == before


def test_update_to_a_manifest_with_unprovided_addons_is_refused(
    api: ApiServer, toks: dict[str, str], tmp_path: Path
) -> None:
    game = {**GAME, "tcpPorts": {}, "udpPorts": {}}
    started = api.post(
        "/api/v1/apps/install", toks["write"], json={"manifest": game, "image": BUSYBOX, "location": "upd"}
    )
    assert started.status_code == 202, started.text
    app_id = started.json()["app_id"]
    before = _counts()
    newer = {**game, "version": "1.1.0", "addons": {"localstorage": {}, "redis": {}, "turn": {}}}
    missing = sorted(a for a in ("redis", "turn") if a not in capabilities.provided(get_settings()))
    refusal = addon_refusal("io.example.game", missing, get_settings())
    response = api.post(f"/api/v1/apps/{app_id}/update", toks["write"], json={"manifest": newer, "image": BUSYBOX})
    assert response.status_code == 422 and response.json()["message"] == refusal
    manifest = tmp_path / "newer.json"
    manifest.write_text(json.dumps(newer))
    assert (
        _one_line_error(boxtasks("app", "update", app_id, "--manifest", str(manifest), "--image", BUSYBOX)) == refusal
    )
    # No image anywhere: refused, naming both ways to give one.
    plain = {**game, "version": "1.1.0"}
    response = api.post(f"/api/v1/apps/{app_id}/update", toks["write"], json={"manifest": plain})
    assert response.status_code == 422 and '--image (CLI) or "image" in the request body' in response.json()["message"]
    assert _counts() == before
    # With one, the task gets the manifest as it will be stored.
    response = api.post(
        f"/api/v1/apps/{app_id}/update", toks["write"], json={"manifest": plain, "image": "busybox:1.36"}
    )
    assert response.status_code == 202, response.text
    options = _task_options(api, toks, response.json()["url"])
    assert options == {"manifest": {**plain, "dockerImage": "busybox:1.36"}}


def test_the_image_comes_from_the_manifest_or_the_installer(
    api: ApiServer, toks: dict[str, str], tmp_path: Path
) -> None:
    game = {**GAME, "id": "io.example.img", "tcpPorts": {}, "udpPorts": {}}
    before = _counts()
    response = api.post("/api/v1/apps/install", toks["write"], json={"manifest": game, "location": "img"})
    assert response.status_code == 422
    assert response.json()["message"] == (
        'no image to run: the manifest has no dockerImage; give one: --image (CLI) or "image" in the request body (API)'
    )
    manifest = tmp_path / "game.json"
    manifest.write_text(json.dumps(game))
    cli = boxtasks("app", "install", "--manifest", str(manifest), "--location", "img")
    assert _one_line_error(cli) == response.json()["message"]
    assert _counts() == before
    body = {"manifest": {**game, "dockerImage": BUSYBOX}, "location": "img"}
    from_manifest = api.post("/api/v1/apps/install", toks["write"], json=body)
    assert from_manifest.status_code == 202, from_manifest.text
    options = _task_options(api, toks, from_manifest.json()["url"])
    assert options["manifest"]["dockerImage"] == BUSYBOX and "image" not in options
    cli = boxtasks(
        "app", "install", "--manifest", str(manifest), "--location", "img2", "--image", "busybox:1.36", "--json"
    )
    assert cli.code == 0, cli.err
    options = _task_options(api, toks, f"/api/v1/tasks/{cli.json()['task_id']}")
    assert options["manifest"]["dockerImage"] == "busybox:1.36"
    with get_engine().connect() as conn:
        stored = conn.execute(select(App.manifest).where(App.id == cli.json()["app_id"])).scalar_one()
    assert stored == {**game, "dockerImage": "busybox:1.36"}
    # Shown back as stored: every field the packager wrote, documented or not, acted on or not.
    shown = api.get(f"/api/v1/apps/{cli.json()['app_id']}", toks["read"]).json()["manifest"]
    assert shown == stored and shown["title"] == "A game server"


def _reserved(app_id: str) -> list[tuple[str, int, str]]:
    with get_engine().connect() as conn:
        rows = conn.execute(
            select(PortReservation.type, PortReservation.port, PortReservation.env_var)
            .where(PortReservation.app_id == app_id)
            .order_by(PortReservation.type, PortReservation.port)
        )
        return [(r.type, r.port, r.env_var) for r in rows]


def test_default_ports_are_claimed_with_the_task(api: ApiServer, toks: dict[str, str], tmp_path: Path) -> None:
    body = {"manifest": GAME, "image": BUSYBOX, "location": "game"}
    response = api.post("/api/v1/apps/install", toks["write"], json=body)
    assert response.status_code == 202, response.text
    app_id = response.json()["app_id"]
    options = _task_options(api, toks, response.json()["url"])
    # Every declared port resolved: defaults filled in, RCON_PORT (not enabled by default) unbound.
    assert options["ports"] == {"GAME_PORT": 27015, "QUERY_PORT": 27030, "RCON_PORT": None, "VOICE_PORT": 27100}
    assert _reserved(app_id) == [
        ("tcp", 27015, "GAME_PORT"),
        ("tcp", 27030, "QUERY_PORT"),
        *[("udp", p, "VOICE_PORT") for p in range(27100, 27104)],
    ]
    # A second install wants the same defaults: 409 naming the holder, nothing left behind.
    before = _counts()
    again = api.post("/api/v1/apps/install", toks["write"], json={**body, "location": "game2"})
    assert again.status_code == 409 and f"already used by app {app_id}" in again.json()["message"]
    # readOnly: the fixed port or nothing.
    moved = {**body, "location": "game2", "ports": {"QUERY_PORT": 28030}}
    refused = api.post("/api/v1/apps/install", toks["write"], json=moved)
    assert refused.status_code == 422
    assert "QUERY_PORT: the manifest fixes this port at 27030 (readOnly)" in refused.json()["message"]
    assert _counts() == before
    # Asked for, and defaults moved or left off (CLI: ENV=off), it installs beside the first.
    manifest = tmp_path / "game.json"
    manifest.write_text(json.dumps(GAME))
    argv = ["app", "install", "--manifest", str(manifest), "--image", BUSYBOX, "--location", "game3", "--json"]
    ports = ["GAME_PORT=28015", "QUERY_PORT=off", "RCON_PORT=28020", "VOICE_PORT=28100"]
    cli = boxtasks(*argv, *[a for p in ports for a in ("--port", p)])
    assert cli.code == 0, cli.err
    assert _reserved(cli.json()["app_id"]) == [
        ("tcp", 28015, "GAME_PORT"),
        ("tcp", 28020, "RCON_PORT"),
        *[("udp", p, "VOICE_PORT") for p in range(28100, 28104)],
    ]
