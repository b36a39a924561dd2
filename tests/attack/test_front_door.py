"""Attacks on the front door (issue #13 items 4, 5, 6, 7, 10): bad input never becomes a task.

The real API (a uvicorn process) and the real CLI (a subprocess) on a fresh database per backend,
with the embedded filesystem broker and no worker: a request that is refused must leave no task
row and change nothing (apps, port bindings, port reservations); one that is accepted has its
task queued and its claim (the app's row, its ports) made in the same transaction.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, create_engine, insert, select

from frontdoor import tokens
from models import App, Backup, PortBinding, PortReservation, Task
from tests.apiserver import ApiServer, running_api
from tests.appkit import Kit, kit
from tests.cli_run import Result, boxtasks
from tests.e2e.harness import Env
from tests.services import fresh_database

__all__ = ["kit"]  # the fixture, for the tests of the task's side

MANIFEST: dict[str, Any] = {
    "id": "io.example.app",
    "version": "1.0.0",
    "dockerImage": "busybox:latest",
    "httpPort": 8080,
    "tcpPorts": {"SSH_PORT": {"title": "ssh", "containerPort": 22}},
}
A2_BACKUP = "app_a2_20260101T000000Z_v1.0.0"
A1_BACKUP = "app_a1_20260101T000000Z_v1.0.0"


@dataclass
class Stack:
    backend: str
    env: Env
    engine: Engine
    api: ApiServer
    write: str
    admin: str

    def cli(self, *args: str) -> Result:
        return boxtasks(*args, env=self.env.variables())


def _backend(name: str) -> Any:
    marks = {"mariadb": [pytest.mark.mariadb], "postgres": [pytest.mark.postgres]}.get(name, [])
    return pytest.param(name, marks=marks, id=name)


def _stack(backend: str, tmp: Path) -> Iterator[Stack]:
    with fresh_database(backend, tmp) as url:
        env = Env(database_url=url, broker_url="", data_dir=tmp / "data")
        engine = create_engine(url)
        _seed(engine)
        write = tokens.create(engine, name="write", scopes=["write"])[1]
        admin = tokens.create(engine, name="admin", scopes=["admin"])[1]
        try:
            with running_api(env, tmp) as api:
                yield Stack(backend, env, engine, api, write, admin)
        finally:
            engine.dispose()


@pytest.fixture(scope="module", params=[_backend("sqlite"), _backend("mariadb")])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The API and the CLI on SQLite (the embedded default) and MariaDB."""
    yield from _stack(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module", params=[_backend("sqlite"), _backend("mariadb"), _backend("postgres")])
def any_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The same on all three backends, for the races."""
    yield from _stack(request.param, tmp_path_factory.mktemp(f"race-{request.param}"))


def _app(app_id: str, location: str) -> dict[str, Any]:
    return {
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
    }


def _seed(engine: Engine) -> None:
    config = {"manifest": MANIFEST, "location": "wiki", "ports": {}, "env": {}, "resources": {}}
    with engine.begin() as conn:
        conn.execute(insert(App), [_app("a1", "blog"), _app("a2", "wiki")])
        conn.execute(insert(PortBinding).values(app_id="a1", env_var="SSH_PORT", host_port=2222, count=1, type="tcp"))
        conn.execute(insert(PortReservation).values(type="tcp", port=2222, app_id="a1", env_var="SSH_PORT"))
        for backup_id, app_id in ((A1_BACKUP, "a1"), (A2_BACKUP, "a2")):
            conn.execute(
                insert(Backup).values(
                    id=backup_id,
                    path=f"{app_id}/1.tgz",
                    type="app",
                    app_id=app_id,
                    version="1.0.0",
                    state="normal",
                    format="tgz",
                    depends_on=[],
                    app_config=config,
                )
            )


def _state(engine: Engine) -> tuple[Any, ...]:
    """Everything a refused request must leave as it was."""
    with engine.connect() as conn:
        return (
            sorted(conn.execute(select(Task.id)).scalars()),
            sorted(tuple(r) for r in conn.execute(select(App.id, App.location, App.installation_state))),
            sorted(tuple(r) for r in conn.execute(select(PortBinding.app_id, PortBinding.host_port))),
            sorted(tuple(r) for r in conn.execute(select(PortReservation.port, PortReservation.app_id))),
        )


def _refused(stack: Stack, path: str, body: Any, status: int, words: str, *, token: str | None = None) -> None:
    before = _state(stack.engine)
    response = stack.api.post(path, token or stack.write, json=body)
    assert response.status_code == status, (path, body, response.text)
    assert words in response.json()["message"], (path, body, response.text)
    assert _state(stack.engine) == before, (path, body, "something changed")


def _cli_refused(stack: Stack, *args: str, words: str, code: int = 1) -> None:
    before = _state(stack.engine)
    result = stack.cli(*args)
    assert result.code == code, (args, result)
    assert result.out == "" and result.err.startswith("boxtasks: ") and result.err.count("\n") == 1, result
    assert "Traceback" not in result.err and words in result.err, (args, result.err)
    assert _state(stack.engine) == before, (args, "something changed")


def _install(location: str, **extra: Any) -> dict[str, Any]:
    return {"manifest": MANIFEST, "location": location, **extra}


# ---------------------------------------------------------------------------- item 4: races


def _fire(api: ApiServer, token: str, bodies: list[dict[str, Any]]) -> list[requests.Response]:
    """All the requests at once, each from its own thread, released together."""
    start = threading.Barrier(len(bodies))

    def one(body: dict[str, Any]) -> requests.Response:
        start.wait()
        return requests.post(
            api.url + "/api/v1/apps/install", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=300
        )

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def test_fifty_installs_at_one_location_one_wins(any_stack: Stack) -> None:
    s = any_stack
    tasks_before = _state(s.engine)[0]
    answers = _fire(s.api, s.write, [_install("race") for _ in range(50)])
    won = [r for r in answers if r.status_code == 202]
    lost = [r for r in answers if r.status_code != 202]
    assert len(won) == 1, [(r.status_code, r.text) for r in answers]
    winner = won[0].json()["app_id"]
    assert {r.status_code for r in lost} == {409}, [r.text for r in lost]
    assert all(f"location 'race' is already used by app {winner}" in r.json()["message"] for r in lost)
    with s.engine.connect() as conn:
        at_race = conn.execute(select(App.id, App.installation_state).where(App.location == "race")).all()
        new_tasks = set(conn.execute(select(Task.id)).scalars()) - set(tasks_before)
    assert [tuple(r) for r in at_race] == [(winner, "pending_install")]
    assert new_tasks == {won[0].json()["task_id"]}


def test_fifty_installs_on_one_port_one_wins(any_stack: Stack) -> None:
    s = any_stack
    tasks_before, apps_before, _, _ = _state(s.engine)
    bodies = [_install(f"port{i}", ports={"SSH_PORT": 3333}) for i in range(50)]
    answers = _fire(s.api, s.write, bodies)
    won = [r for r in answers if r.status_code == 202]
    lost = [r for r in answers if r.status_code != 202]
    assert len(won) == 1, [(r.status_code, r.text) for r in answers]
    winner = won[0].json()["app_id"]
    assert {r.status_code for r in lost} == {409}, [r.text for r in lost]
    assert all(f"port 3333/tcp for SSH_PORT is already used by app {winner}" in r.json()["message"] for r in lost)
    tasks, apps, _, reservations = _state(s.engine)
    assert set(tasks) - set(tasks_before) == {won[0].json()["task_id"]}
    assert {a[0] for a in apps} - {a[0] for a in apps_before} == {winner}
    assert (3333, winner) in reservations and [r for r in reservations if r[0] == 3333] == [(3333, winner)]


# ---------------------------------------------------------------------------- item 7: nothing of a refusal stays


def test_a_refused_install_leaves_no_app_and_no_task(stack: Stack) -> None:
    first = stack.api.post("/api/v1/apps/install", stack.write, json=_install("seven", ports={"SSH_PORT": 4444}))
    assert first.status_code == 202, first.text
    holder = first.json()["app_id"]
    with stack.engine.connect() as conn:
        claimed = conn.execute(select(PortReservation.app_id).where(PortReservation.port == 4444)).scalar()
    assert claimed == holder  # the claim is made with the task's row, not by the task later

    _refused(
        stack,
        "/api/v1/apps/install",
        _install("eight", ports={"SSH_PORT": 4444}),
        409,
        f"already used by app {holder}",
    )
    # The loser holds nothing: its location is free for the next request.
    again = stack.api.post("/api/v1/apps/install", stack.write, json=_install("eight", ports={"SSH_PORT": 4445}))
    assert again.status_code == 202, again.text


def test_a_cancelled_install_gives_back_its_claim(stack: Stack) -> None:
    started = stack.api.post("/api/v1/apps/install", stack.write, json=_install("nine", ports={"SSH_PORT": 4446}))
    assert started.status_code == 202, started.text
    body = started.json()
    with stack.engine.connect() as conn:
        claim = conn.execute(select(App.installation_state).where(App.location == "nine")).scalar()
    assert claim == "pending_install"  # claimed with the task's row
    stopped = stack.api.post(f"/api/v1/tasks/{body['task_id']}/stop", stack.write)
    assert stopped.json()["state"] == "cancelled", stopped.text
    with stack.engine.connect() as conn:
        assert conn.execute(select(App.id).where(App.id == body["app_id"])).first() is None
        assert conn.execute(select(PortReservation.app_id).where(PortReservation.port == 4446)).first() is None
    again = stack.api.post("/api/v1/apps/install", stack.write, json=_install("nine", ports={"SSH_PORT": 4446}))
    assert again.status_code == 202, again.text


def test_configure_claims_its_new_ports_and_a_cancel_gives_them_back(stack: Stack) -> None:
    started = stack.api.post("/api/v1/apps/a1/configure", stack.write, json={"ports": {"SSH_PORT": 4550}})
    assert started.status_code == 202, started.text

    def held() -> list[tuple[int, str]]:
        with stack.engine.connect() as conn:
            rows = conn.execute(
                select(PortReservation.port, PortReservation.app_id).where(PortReservation.app_id == "a1")
            )
            return sorted((r.port, r.app_id) for r in rows)

    assert held() == [(2222, "a1"), (4550, "a1")]  # the old binding stays until the task rebinds
    _refused(stack, "/api/v1/apps/a2/configure", {"ports": {"SSH_PORT": 4550}}, 409, "already used by app a1")
    stopped = stack.api.post(f"/api/v1/tasks/{started.json()['task_id']}/stop", stack.write)
    assert stopped.json()["state"] == "cancelled", stopped.text
    assert held() == [(2222, "a1")]


# ---------------------------------------------------------------------------- item 5: bad input never becomes a task


def test_restore_clone_update_platform_refused_by_the_api(stack: Stack) -> None:
    a = "/api/v1/apps"
    _refused(stack, f"{a}/a1/restore", {"backupId": "nope"}, 404, "no app backup 'nope'")
    _refused(stack, f"{a}/a1/restore", {"backupId": A2_BACKUP}, 404, "of app 'a1'")
    clone = {"backupId": A1_BACKUP}
    _refused(stack, f"{a}/a1/clone", {**clone, "location": "../x"}, 422, "bad location '../x'")
    _refused(stack, f"{a}/a1/clone", {**clone, "location": "wiki"}, 409, "already used by app a2")
    _refused(stack, f"{a}/a1/clone", {**clone, "location": "c1", "ports": {"SSH_PORT": 22}}, 422, "reserved for SSH")
    _refused(stack, f"{a}/a1/clone", {**clone, "location": "c1", "ports": {"NOPE": 4000}}, 422, "no such port")
    _refused(stack, f"{a}/a2/clone", {**clone, "location": "c1"}, 404, "of app 'a2'")
    _refused(stack, f"{a}/a1/update", {"manifest": {"id": "x"}}, 422, "invalid manifest")
    _refused(stack, f"{a}/a1/update", {"manifest": {}}, 422, "invalid manifest")
    _refused(stack, f"{a}/a1/update", {}, 422, "body.manifest")
    _refused(stack, f"{a}/a1/update", {"manifest": {**MANIFEST, "id": "io.other.app"}}, 422, "install it instead")
    p = "/api/v1/platform"
    _refused(stack, f"{p}/backup", {"appIds": ["../../etc", ""]}, 422, "bad app id", token=stack.admin)
    _refused(stack, f"{p}/backup", {"appIds": ["ghost"]}, 404, "no app(s) 'ghost'", token=stack.admin)
    _refused(stack, f"{p}/backup", {"appIds": []}, 422, "appIds", token=stack.admin)
    _refused(stack, f"{p}/start", {"force": True}, 422, "body.force", token=stack.admin)


def test_restore_clone_update_platform_refused_by_the_cli(stack: Stack, tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    _cli_refused(stack, "app", "restore", "a1", "--backup", "nope", words="no app backup 'nope'")
    _cli_refused(stack, "app", "restore", "a1", "--backup", A2_BACKUP, words="of app 'a1'")
    _cli_refused(stack, "app", "clone", "a1", "--backup", A1_BACKUP, "--location", "../x", words="bad location")
    _cli_refused(stack, "app", "clone", "a1", "--backup", A1_BACKUP, "--location", "wiki", words="used by app a2")
    _cli_refused(
        stack, "app", "clone", "a1", "--backup", A1_BACKUP, "--location", "c2", "--port", "SSH_PORT=22", words="SSH"
    )
    _cli_refused(stack, "app", "update", "a1", "--manifest", str(empty), words="invalid manifest")
    _cli_refused(stack, "platform", "backup", "--app", "../../etc", "--app", "", words="bad app id")


def test_every_operation_refuses_unknown_options(stack: Stack) -> None:
    for operation in ("start", "stop", "restart", "repair", "backup", "uninstall"):
        _refused(stack, f"/api/v1/apps/a1/{operation}", {"bogus": 1}, 422, "body.bogus")


# ---------------------------------------------------------------------------- item 6: a trailing newline


def test_a_trailing_newline_is_refused_everywhere(stack: Stack, tmp_path: Path) -> None:
    i = "/api/v1/apps/install"
    _refused(stack, i, _install("blog\n"), 422, "bad location")
    _refused(stack, i, _install("nl", env={"FOO\n": "x"}), 422, "not an env var name")
    for field, value in (("id", "io.example.app\n"), ("version", "1.0.0\n"), ("dockerImage", "busybox\n")):
        _refused(stack, i, {"manifest": {**MANIFEST, field: value}, "location": "nl"}, 422, f"manifest: {field}")
    newline_port = {**MANIFEST, "tcpPorts": {"SSH_PORT\n": {"title": "ssh"}}}
    _refused(stack, i, {"manifest": newline_port, "location": "nl"}, 422, "not an env var name")
    _refused(stack, i, _install("nl", appId="x\n"), 422, "appId")
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(MANIFEST))
    _cli_refused(
        stack, "app", "install", "--manifest", str(manifest), "--location", "nl", "--app-id", "x\n", words="bad app id"
    )
    _cli_refused(stack, "app", "install", "--manifest", str(manifest), "--location", "nl\n", words="bad location")
    _cli_refused(stack, "app", "start", "a1\n", words="bad app id")


# ---------------------------------------------------------------------------- item 10: limits and answers


def test_a_large_body_is_413_and_stored_nowhere(stack: Stack) -> None:
    huge = _install("big", env={"BIG": "x" * (10 << 20)})
    _refused(stack, "/api/v1/apps/install", huge, 413, "larger than 1048576 bytes")

    def chunks() -> Iterator[bytes]:
        yield b'{"manifest": {"id": "io.example.app", "pad": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}, "location": "big"}'

    before = _state(stack.engine)
    response = requests.post(
        stack.api.url + "/api/v1/apps/install",
        data=chunks(),
        headers={"Authorization": f"Bearer {stack.write}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413, response.text
    assert _state(stack.engine) == before


def test_deep_nesting_is_422_not_a_database_error(stack: Stack) -> None:
    deep: Any = "x"
    for _ in range(40):
        deep = {"k": deep}
    _refused(stack, "/api/v1/apps/install", _install("deep") | {"manifest": {**MANIFEST, "x": deep}}, 422, "deeper")
    before = _state(stack.engine)
    very_deep = '{"manifest": ' + "[" * 100_000 + "]" * 100_000 + ', "location": "deep"}'
    response = requests.post(
        stack.api.url + "/api/v1/apps/install",
        data=very_deep,
        headers={"Authorization": f"Bearer {stack.write}", "Content-Type": "application/json"},
        timeout=60,
    )
    # The JSON decoder gives up on it (FastAPI's 400): a refusal, never a crash or a stored row.
    assert response.status_code == 400 and "parsing the body" in response.json()["message"], response.text
    assert _state(stack.engine) == before


def test_numbers_are_strict_and_cpu_bounds_are_true(stack: Stack, tmp_path: Path) -> None:
    i = "/api/v1/apps/install"
    _refused(stack, i, _install("num", cpuQuota=True), 422, "cpuQuota")
    _refused(stack, i, _install("num", memoryLimit=False), 422, "memoryLimit")
    _refused(stack, i, _install("num", ports={"SSH_PORT": True}), 422, "ports.SSH_PORT")
    _refused(stack, "/api/v1/apps/a1/configure", {"cpuShares": True}, 422, "cpuShares")
    _refused(stack, i, _install("num", cpuQuota=200_000), 422, "cpuQuota 200000 is outside 1-102400")
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(MANIFEST))
    args = ("app", "install", "--manifest", str(manifest), "--location", "num", "--cpu-quota", "200000")
    _cli_refused(stack, *args, words="cpuQuota 200000 is outside 1-102400")
    result = stack.cli(*args)
    assert "this host has" not in result.err and "1048576" not in result.err, result.err


def test_a_manifest_file_that_is_not_utf8_json_is_one_line(stack: Stack, tmp_path: Path) -> None:
    latin = tmp_path / "latin.json"
    latin.write_bytes(json.dumps({**MANIFEST, "title": "café"}, ensure_ascii=False).encode("latin-1"))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    for path, words in ((latin, "not UTF-8"), (deep, "deeper than")):
        _cli_refused(stack, "app", "install", "--manifest", str(path), "--location", "file", words=words, code=2)


# ---------------------------------------------------------------------------- the task takes over the claim


def _claim_as_the_front_door(kit: Kit, app_id: str, options: dict[str, Any]) -> str:
    """What `frontdoor.actions.install` writes (task row, app row, ports in one transaction), without the broker."""
    from hosting.apps import claims, ports
    from hosting.apps.manifest import parse_manifest
    from models import records

    doc = parse_manifest(options["manifest"])
    bindings = ports.check_ports(doc, options.get("ports", {}))
    values = {"app_store_id": doc.id, "manifest": options["manifest"], "version": doc.version}
    values["location"] = options["location"]

    def claim(conn: Any, task_id: str) -> None:
        claims.claim_new_app(conn, app_id, "install", values, bindings, task_id=task_id)

    args = {"app_id": app_id, "operation": "install", "options": options}
    return records.create(kit.engine, kind="apptask", queue="apptask", args=args, app_id=app_id, claim=claim)


def test_the_install_task_takes_over_the_front_doors_claim(kit: Kit) -> None:
    from hosting.apps import lifecycle
    from tests.appkit import free_port, new_app_id
    from tests.appkit import manifest as app_manifest

    app_id, port = new_app_id(), free_port()
    options = {"manifest": app_manifest(kit.dockerd.image), "location": app_id, "ports": {"SSH_PORT": port}}
    _claim_as_the_front_door(kit, app_id, options)
    assert kit.app(app_id).installation_state == "pending_install"
    result = kit.run(lifecycle.install, app_id, **options)
    assert result["installationState"] == "installed" and result["ports"] == {"SSH_PORT": port}
    kit.run(lifecycle.uninstall, app_id)
    assert set(kit.leftovers(app_id).values()) == {0}


def test_a_task_that_refuses_gives_the_claim_back(kit: Kit) -> None:
    """The Docker host's memory is known only to the task: past it, the task refuses and frees the claim."""
    from hosting import ResourceError
    from hosting.apps import lifecycle
    from tests.appkit import free_port, new_app_id
    from tests.appkit import manifest as app_manifest

    app_id, port = new_app_id(), free_port()
    options = {
        "manifest": app_manifest(kit.dockerd.image),
        "location": app_id,
        "ports": {"SSH_PORT": port},
        "memoryLimit": 1 << 49,
    }
    _claim_as_the_front_door(kit, app_id, options)
    assert kit.leftovers(app_id)["reservations"] == 1
    with pytest.raises(ResourceError, match="more than the host has"):
        kit.run(lifecycle.install, app_id, **options)
    assert set(kit.leftovers(app_id).values()) == {0}
