"""The REST API through a real uvicorn server on loopback: auth, every route, refusals before a task exists.

Embedded default (SQLite + kombu's filesystem broker) and no worker: what is enqueued stays queued,
which is what these tests look at. Tasks that run end to end: tests/e2e/test_make_run.py.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from cli.errors import CliError
from config import load_settings
from frontdoor import tokens
from lockman import LockManager
from models import (
    ApiToken,
    App,
    Archive,
    Backup,
    Event,
    Notification,
    PortBinding,
    PortReservation,
    TaskState,
    get_engine,
    records,
)
from models.migrate import upgrade
from tests.apiserver import ApiServer, running_api
from tests.e2e.harness import Env

MANIFEST = {
    "id": "io.example.app",
    "version": "1.0.0",
    "dockerImage": "busybox:latest",
    "httpPort": 8080,
    "tcpPorts": {"SSH_PORT": {"title": "ssh", "containerPort": 22}},
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    data = tmp_path_factory.mktemp("api")
    url = f"sqlite:///{data / 'boxtasks.db'}"
    upgrade(url)
    e = Env(database_url=url, broker_url="", data_dir=data, extra={"BOXTASKS_LOCK_ROW": "main"})
    e.apply_to_this_process()
    manager = LockManager.from_settings()
    manager.ensure_row()
    manager.dispose()
    _seed()
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
    """Other modules repoint the test process; point it back at this module's database."""
    env.apply_to_this_process()


def _app(app_id: str, location: str, **values: Any) -> dict[str, Any]:
    row = {
        "id": app_id,
        "app_store_id": "io.example.app",
        "manifest": MANIFEST,
        "version": "1.0.0",
        "location": location,
        "installation_state": "installed",
        "run_state": "running",
        "cpu_shares": 512,
        "cpu_quota": 100,
        "memory_limit": 256 * 1024 * 1024,
        "env": {},
        "notes": "",
        "operators": [],
        "checklist": {},
        "enable_backup": True,
        "enable_mailbox": False,
    }
    row.update(values)
    return row


def _seed() -> None:
    with get_engine().begin() as conn:
        conn.execute(insert(App), [_app("a1", "blog"), _app("a2", "wiki"), _app("a3", "chat")])
        conn.execute(
            insert(App),
            [
                _app(
                    "broken",
                    "broken",
                    installation_state="error",
                    error={"message": "pull failed"},
                    error_operation="install",
                )
            ],
        )
        conn.execute(insert(PortBinding).values(app_id="a1", env_var="SSH_PORT", host_port=2222, count=1, type="tcp"))
        conn.execute(insert(PortReservation).values(type="tcp", port=2222, app_id="a1", env_var="SSH_PORT"))
        conn.execute(
            insert(Backup).values(
                id="app_a1_20260101T000000Z_v1.0.0",
                path="a1/1.tgz",
                type="app",
                app_id="a1",
                version="1.0.0",
                state="normal",
                format="tgz",
                depends_on=[],
            )
        )
        conn.execute(
            insert(Archive).values(id="arch1", backup_id="app_a1_20260101T000000Z_v1.0.0", app_id="gone", app_config={})
        )
        conn.execute(
            insert(Archive).values(
                id="arch2", backup_id="app_a1_20260101T000000Z_v1.0.0", app_id="gone2", app_config={}
            )
        )
        inserted = conn.execute(insert(Event).values(action="app.install", source={"appId": "a1"}, data={"ok": True}))
        event_id = inserted.inserted_primary_key[0]  # type: ignore[index]
        conn.execute(
            insert(Notification).values(event_id=event_id, title="App a1 was updated", message="", acknowledged=False)
        )


# ---------------------------------------------------------------------------- auth


def test_no_token_is_401_and_unknown_token_is_401(api: ApiServer, toks: dict[str, str]) -> None:
    response = api.get("/api/v1/tasks")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "boxtasks token create" in response.json()["message"]
    assert api.get("/api/v1/tasks", "btk_" + "x" * 43).status_code == 401
    assert api.get("/api/v1/tasks", toks["admin"] + "x").status_code == 401
    assert requests_with_basic(api).status_code == 401


def requests_with_basic(api: ApiServer) -> Any:
    import requests

    return requests.get(api.url + "/api/v1/tasks", headers={"Authorization": "Basic YTpi"}, timeout=10)


def test_scopes_are_403_with_what_is_needed(api: ApiServer, toks: dict[str, str]) -> None:
    assert api.get("/api/v1/apps", toks["read"]).status_code == 200
    refused = api.post("/api/v1/apps/a1/restart", toks["read"])
    assert refused.status_code == 403
    assert "needs 'write'" in refused.json()["message"]
    assert api.post("/api/v1/platform/start", toks["write"]).status_code == 403
    assert api.delete("/api/v1/archives/arch1", toks["write"]).status_code == 403
    with get_engine().connect() as conn:
        used = conn.execute(select(ApiToken.last_used_at).where(ApiToken.name == "test read")).scalar_one()
    assert used is not None


def test_tokens_are_kept_as_hashes_only(env: Env, toks: dict[str, str]) -> None:
    with get_engine().connect() as conn:
        stored = conn.execute(select(ApiToken.token_hash)).scalars().all()
    assert tokens.hash_token(toks["admin"]) in stored
    assert not any(t in stored for t in toks.values())


# ---------------------------------------------------------------------------- reading


def test_read_routes(api: ApiServer, toks: dict[str, str]) -> None:
    t = toks["read"]
    apps = api.get("/api/v1/apps", t).json()
    assert {a["id"] for a in apps} >= {"a1", "a2", "broken"}
    a1 = api.get("/api/v1/apps/a1", t).json()
    assert a1["portBindings"] == {"SSH_PORT": {"hostPort": 2222, "count": 1, "type": "tcp"}}
    assert a1["cpuShares"] == 512 and a1["createdAt"].endswith("Z")
    assert api.get("/api/v1/apps/nope", t).status_code == 404
    assert api.get("/api/v1/apps/bad%20id", t).status_code == 422

    backups = api.get("/api/v1/backups?app_id=a1", t).json()
    assert [b["id"] for b in backups] == ["app_a1_20260101T000000Z_v1.0.0"]
    assert api.get("/api/v1/backups/app_a1_20260101T000000Z_v1.0.0", t).json()["state"] == "normal"
    assert api.get("/api/v1/backups/nope", t).status_code == 404
    assert {a["id"] for a in api.get("/api/v1/archives", t).json()} >= {"arch1"}

    events = api.get("/api/v1/eventlog?action=app.install", t).json()
    assert events and events[0]["source"] == {"appId": "a1"}
    notes = api.get("/api/v1/notifications?acknowledged=false", t).json()
    assert notes and notes[0]["title"] == "App a1 was updated"

    caps = api.get("/api/v1/platform/capabilities", t).json()
    assert "install" in caps["app_operations"]
    assert api.get("/api/v1/openapi.json").json()["paths"]["/api/v1/apps/install"]
    assert "text/html" in api.get("/api/v1/docs").headers["content-type"]

    unknown = api.get("/api/v1/tasks?state=sleeping", t)
    assert unknown.status_code == 422 and "query.state" in unknown.json()["message"]
    assert api.get("/api/v1/tasks?limit=0", t).status_code == 422
    missing_route = api.get("/api/v2/tasks", t)
    assert missing_route.status_code == 404 and "/api/v1" in missing_route.json()["message"]


def test_acknowledge_a_notification(api: ApiServer, toks: dict[str, str]) -> None:
    note = api.get("/api/v1/notifications", toks["read"]).json()[0]
    done = api.post(f"/api/v1/notifications/{note['id']}/acknowledge", toks["write"])
    assert done.status_code == 200 and done.json()["acknowledged"] is True
    assert api.post("/api/v1/notifications/999999/acknowledge", toks["write"]).status_code == 404


def test_archives_delete_and_restore(api: ApiServer, toks: dict[str, str]) -> None:
    assert api.delete("/api/v1/archives/arch2", toks["admin"]).status_code == 204
    assert api.delete("/api/v1/archives/arch2", toks["admin"]).status_code == 404
    restore = api.post("/api/v1/archives/arch1/restore", toks["write"])
    assert restore.status_code == 202, restore.text


# ---------------------------------------------------------------------------- starting work


def test_install_refuses_bad_input_before_a_task_exists(api: ApiServer, toks: dict[str, str]) -> None:
    t = toks["write"]
    before = len(records_all())
    cases = [
        ({"manifest": {"id": "x"}, "location": "shop"}, 422, "invalid manifest"),
        ({"manifest": MANIFEST, "location": "Shop!"}, 422, "bad location"),
        ({"manifest": MANIFEST, "location": "shop", "ports": {"SSH_PORT": 22}}, 422, "reserved for SSH"),
        ({"manifest": MANIFEST, "location": "shop", "ports": {"NOPE": 4000}}, 422, "declares no such port"),
        ({"manifest": MANIFEST, "location": "shop", "memoryLimit": 10}, 422, "memoryLimit"),
        ({"manifest": MANIFEST, "location": "shop", "port": {}}, 422, "body.port"),
        ({"manifest": MANIFEST}, 422, "body.location"),
        ({"manifest": MANIFEST, "location": "blog"}, 409, "used by app a1"),
        ({"manifest": MANIFEST, "location": "shop", "ports": {"SSH_PORT": 2222}}, 409, "used by app a1"),
        ({"manifest": MANIFEST, "location": "shop", "appId": "a2"}, 409, "cannot install app a2"),
    ]
    for body, status, words in cases:
        response = api.post("/api/v1/apps/install", t, json=body)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["message"], (body, response.text)
    assert api.post("/api/v1/apps/install", t, data="{not json").status_code == 422
    assert len(records_all()) == before


def records_all() -> list[Any]:
    from models import Task

    with get_engine().connect() as conn:
        return list(conn.execute(select(Task.id)).all())


def test_install_starts_a_task(api: ApiServer, toks: dict[str, str]) -> None:
    body = {"manifest": MANIFEST, "location": "shop", "ports": {"SSH_PORT": 2223}, "cpuShares": 256, "cpuQuota": 50}
    response = api.post("/api/v1/apps/install", toks["write"], json=body)
    assert response.status_code == 202, response.text
    started = response.json()
    assert set(started) == {"task_id", "app_id", "url"}
    assert started["url"] == f"/api/v1/tasks/{started['task_id']}"
    task = api.get(started["url"], toks["read"]).json()
    assert task["type"] == "apptask" and task["state"] == "queued" and task["app_id"] == started["app_id"]
    assert task["args"]["operation"] == "install"
    assert task["args"]["options"]["ports"] == {"SSH_PORT": 2223}
    assert task["args"]["options"]["cpuShares"] == 256
    log = api.get(started["url"] + "/log", toks["read"]).json()
    assert log[0]["message"] == "Queued"
    listed = api.get(f"/api/v1/tasks?app_id={started['app_id']}&type=apptask&state=queued", toks["read"]).json()
    assert [t["id"] for t in listed] == [started["task_id"]]


def test_app_operations(api: ApiServer, toks: dict[str, str]) -> None:
    t = toks["write"]
    started = api.post("/api/v1/apps/a2/restart", t)
    assert started.status_code == 202 and started.json()["app_id"] == "a2"
    assert api.post("/api/v1/apps/nope/start", t).status_code == 404
    conflict = api.post("/api/v1/apps/broken/start", t)
    assert conflict.status_code == 409
    assert "in error after a failed install" in conflict.json()["message"]
    assert api.post("/api/v1/apps/broken/repair", t).status_code == 202
    assert api.post("/api/v1/apps/a3/configure", t, json={}).status_code == 422
    assert api.post("/api/v1/apps/a3/configure", t, json={"ports": {"SSH_PORT": 2222}}).status_code == 409
    assert api.post("/api/v1/apps/a3/configure", t, json={"cpuShares": 1024}).status_code == 202
    caps = api.get("/api/v1/platform/capabilities", toks["read"]).json()
    assert {"backup", "update", "restore", "clone"} <= set(caps["app_operations"])
    assert set(caps["platform_tasks"]) == {"fullbackup", "update", "platformstart"}
    for operation, body in (("backup", None), ("update", {"manifest": MANIFEST}), ("restore", {"backupId": "x1"})):
        response = api.post(f"/api/v1/apps/a1/{operation}", t, json=body)
        assert response.status_code in (202, 404, 409), response.text
    for path in ("backup", "update", "start"):
        response = api.post(f"/api/v1/platform/{path}", toks["admin"])
        assert response.status_code == 202, response.text


def test_stop_a_queued_task(api: ApiServer, toks: dict[str, str]) -> None:
    started = api.post("/api/v1/apps/a1/stop", toks["write"]).json()
    stopped = api.post(f"/api/v1/tasks/{started['task_id']}/stop", toks["write"])
    assert stopped.status_code == 202 and stopped.json() == {"task_id": started["task_id"], "state": "cancelled"}
    assert api.get(started["url"], toks["read"]).json()["state"] == "cancelled"
    assert api.post(f"/api/v1/tasks/{started['task_id']}/stop", toks["write"]).json()["state"] == "cancelled"
    assert api.post("/api/v1/tasks/nope/stop", toks["write"]).status_code == 404


# ---------------------------------------------------------------------------- locks and metrics


def test_locks_and_metrics_show_who_waits_for_what(api: ApiServer, toks: dict[str, str]) -> None:
    engine = get_engine()
    holder = records.create(engine, kind="fullbackup", queue="backup", args={}, app_id=None)
    waiter = records.create(engine, kind="apptask", queue="apptask", args={}, app_id="a1")
    records.claim(engine, holder, worker="test", pid=1)
    manager = LockManager.from_settings()
    try:
        manager.try_acquire(holder, {"platform": "S", "app:a1": "X"}, label="fullbackup")
        manager.try_acquire(waiter, {"platform": "S", "app:a1": "X"}, label="apptask")
        records.set_message(engine, waiter, "Waiting for fullbackup")
        with engine.begin() as conn:
            from sqlalchemy import update

            from models import Task

            conn.execute(update(Task).where(Task.id == waiter).values(state="waiting"))
        report = api.get("/api/v1/locks", toks["read"]).json()
        (entry,) = [w for w in report["waiters"] if w["owner"] == waiter]
        assert entry["blocking_locks"] == ["app:a1"]
        assert entry["blocked_by"][0].startswith("Waiting for fullbackup (task ")
        assert entry["task"]["state"] == "waiting"
        text = api.get("/metrics").text
        assert 'boxtasks_waiting_tasks{lock="app:a1"} 1.0' in text
        assert 'boxtasks_lock_holders{lock="app:a1",mode="X"} 1.0' in text
        assert 'boxtasks_tasks{state="waiting",type="apptask"} 1.0' in text
        assert "boxtasks_database_up 1.0" in text
        assert "boxtasks_lock_writes_total" in text
    finally:
        manager.release(holder)
        manager.release(waiter)
        manager.dispose()
        for task_id in (holder, waiter):
            records.finish(engine, task_id, TaskState.CANCELLED, message="test over")
    # What workers record with a task's final state feeds the acquire histogram and retry count.
    done = records.create(engine, kind="apptask", queue="apptask", args={}, app_id=None)
    records.finish(
        engine, done, TaskState.SUCCEEDED, message="Done", locks={"acquire_ms": 3.0, "cas_retries": 2, "token": 1}
    )
    text = api.get("/metrics").text
    assert 'boxtasks_lock_acquire_seconds_bucket{le="0.005"}' in text
    assert 'boxtasks_lock_acquire_seconds_bucket{le="0.0025"} 0.0' in text
    assert "boxtasks_lock_cas_retries 2.0" in text


def test_metrics_can_require_a_token(env: Env, tmp_path: Path, toks: dict[str, str]) -> None:
    with running_api(env, tmp_path, extra={"BOXTASKS_METRICS_PUBLIC": "false"}) as server:
        assert server.get("/metrics").status_code == 401
        assert server.get("/metrics", toks["read"]).status_code == 200


# ---------------------------------------------------------------------------- the admin token of `make run`


def test_admin_token_file_in_development_and_none_in_production(env: Env, tmp_path: Path) -> None:
    from cli.run_cmd import admin_token

    settings = load_settings(data_dir=tmp_path)
    path = admin_token(settings)
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert admin_token(settings) == path and path.read_text().strip() == token  # made once, then reused
    info = tokens.verify(get_engine(), token)
    assert info is not None and info.allows("admin")
    with get_engine().begin() as conn:
        from sqlalchemy import delete

        conn.execute(delete(ApiToken).where(ApiToken.scopes.is_not(None)))
    production = load_settings(data_dir=tmp_path / "p", env="production", flower_password="s3cret-flower")
    with pytest.raises(CliError, match="boxtasks token create"):
        admin_token(production)


_REPO = Path(__file__).resolve().parents[2]


def _documented_get_paths() -> set[str]:
    """Every GET path README.md and docs/*.md name that has no placeholder, as a full path."""
    import re

    found: set[str] = set()
    for page in [_REPO / "README.md", *sorted((_REPO / "docs").glob("*.md"))]:
        text = page.read_text()
        found.update(re.findall(r"(/api/v1[^\s`)'\"]*|/metrics\b)", text))
        for route in re.findall(r"`GET\s+(/[^`\s]*)`", text):
            path = route.split("?")[0]
            found.add(path if path.startswith(("/api/v1", "/metrics")) else "/api/v1" + path)
    return {p.rstrip(".,;:") for p in found if not re.search(r"[{<]", p)}


def test_every_url_the_project_names_answers(api: ApiServer) -> None:
    """The API's own index (public: it names only what the public OpenAPI names), every link in it,
    and every GET path the README and docs name: none is a 404."""
    index = api.get("/api/v1/")
    assert index.status_code == 200, index.text
    body = index.json()
    assert api.get("/api/v1").json() == body  # without the slash too (a redirect)
    assert body["openapi"] == "/api/v1/openapi.json" and body["docs"] == "/api/v1/docs"
    assert {"tasks", "apps", "backups", "archives", "locks", "eventlog", "notifications"} <= set(body["links"])
    assert "platform/capabilities" in body["links"]
    linked = {body["docs"], body["openapi"], body["metrics"], *body["links"].values()}
    documented = _documented_get_paths()
    assert {"/api/v1/", "/api/v1/openapi.json", "/api/v1/docs", "/metrics", "/api/v1/tasks"} <= documented
    read = tokens.create(get_engine(), name="urls", scopes=["read"])[1]  # other tests here drop tokens
    for path in sorted(linked | documented):
        answer = api.get(path, read)
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text[:200]}"
    assert api.get("/api/v1/tasks").status_code == 401  # the index is public; the data is not
